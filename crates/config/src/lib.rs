//! senti's configuration: one TOML file, overridden by environment variables, overridden by flags.
//!
//! Every section is a serde struct with `deny_unknown_fields` and its defaults beside it, so a
//! typo in a file is an error that names the key rather than a silently ignored setting.
//! [`Config::validate`] checks ranges and names the key it rejects
//! ("`engine.actors` must be at least 1, got 0"). Secrets (auth tokens) are redacted in `Debug`.
//!
//! Environment overrides use `SENTI__<SECTION>__<KEY>=<value>` (double underscores), for example
//! `SENTI__SERVER__LISTEN=0.0.0.0:8080` or `SENTI__ENGINE__ACTORS=2`; the value is read as a TOML
//! value when it parses as one (numbers, booleans, arrays) and as a string otherwise.
//! `SENTI_AUTH_TOKENS=a,b` sets `auth.tokens`, so tokens need not be written into a file.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A configuration problem, said in terms of the key that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema (unknown key, wrong type).
    #[error("invalid config{origin}: {message}")]
    Parse {
        /// " in FILE" or " from environment".
        origin: String,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config: `{key}` {message}")]
    Invalid {
        /// The dotted key, e.g. `engine.actors`.
        key: &'static str,
        /// What is wrong, with the value that was given.
        message: String,
    },
}

/// The whole configuration of one `senti` node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP server.
    pub server: ServerConfig,
    /// Which model to serve and where ONNX Runtime is.
    pub model: ModelConfig,
    /// Inference actors and their batching queues.
    pub engine: EngineConfig,
    /// Request limits: each one has its own clear error.
    pub limits: LimitsConfig,
    /// Optional bearer-token authentication.
    pub auth: AuthConfig,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API binds.
    pub listen: SocketAddr,
    /// This node's id in logs and the `x-senti-node` header; defaults to the listen address.
    pub node_id: Option<String>,
    /// How long a graceful shutdown waits for in-flight requests before giving up.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 8080)), node_id: None, shutdown_grace_ms: 30_000 }
    }
}

/// `[model]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A model folder with model.toml; absent means the default model embedded in the binary.
    pub path: Option<PathBuf>,
    /// Which ONNX file of the manifest (`fp32`, `int8`); absent means the manifest's default.
    pub variant: Option<String>,
    /// libonnxruntime.so to load; absent means `ORT_DYLIB_PATH`, then the project's cache
    /// (`.cache/onnxruntime/`, filled by `make setup`).
    pub onnxruntime: Option<PathBuf>,
}

/// `[engine]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Inference actors on this node; each owns one ONNX Runtime session on its own thread.
    pub actors: usize,
    /// ONNX Runtime intra-op threads per actor.
    pub threads_per_actor: usize,
    /// Token budget of one batch (padded: longest text in the batch x texts).
    pub max_batch_tokens: usize,
    /// Most texts in one batch.
    pub max_batch_size: usize,
    /// Most texts waiting in one actor's queue; beyond it requests get 429.
    pub queue_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        // Measured on the default model, 2 cores (docs/benchmarks.md, `make bench-node`): one
        // single-threaded actor per core with batching off serves the most texts/s at saturation
        // (0.80 to 0.92 of raw ONNX Runtime, against 0.41 to 0.49 for 1 actor x 2 threads batching
        // up to 64); this small int8 model gains nothing from batching on this CPU. Larger models
        // (StructBERT-base) should raise max_batch_size.
        Self { actors: 2, threads_per_actor: 1, max_batch_tokens: 8192, max_batch_size: 1, queue_capacity: 2048 }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most characters (Unicode scalar values) in one text.
    pub max_text_chars: usize,
    /// Most texts in one `/v1/classify` request.
    pub max_texts: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Deadline of a request, unless the client asks for less (`x-senti-timeout-ms`).
    pub request_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { max_text_chars: 4096, max_texts: 256, max_body_bytes: 2 * 1024 * 1024, request_timeout_ms: 10_000 }
    }
}

/// `[auth]`
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accepted bearer tokens; empty means authentication is off.
    pub tokens: Vec<String>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig").field("tokens", &format_args!("[{} redacted]", self.tokens.len())).finish()
    }
}

impl Config {
    /// Reads a TOML file, applies environment overrides from `vars`, and validates.
    pub fn load(
        path_opt: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match path_opt {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                text.parse::<toml::Table>().map_err(|err| ConfigError::Parse {
                    origin: format!(" in {}", path.display()),
                    message: err.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, vars);
        let origin = path_opt.map_or_else(String::new, |p| format!(" in {} (or environment)", p.display()));
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|err: toml::de::Error| ConfigError::Parse { origin, message: err.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML string (no environment) and validates it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|err| ConfigError::Parse { origin: String::new(), message: err.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every range; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn at_least(key: &'static str, value: u64, min: u64) -> Result<(), ConfigError> {
            if value < min {
                return Err(ConfigError::Invalid { key, message: format!("must be at least {min}, got {value}") });
            }
            Ok(())
        }
        let e = &self.engine;
        at_least("engine.actors", e.actors as u64, 1)?;
        at_least("engine.threads_per_actor", e.threads_per_actor as u64, 1)?;
        at_least("engine.max_batch_size", e.max_batch_size as u64, 1)?;
        at_least("engine.max_batch_tokens", e.max_batch_tokens as u64, 16)?;
        at_least("engine.queue_capacity", e.queue_capacity as u64, 1)?;
        let l = &self.limits;
        at_least("limits.max_text_chars", l.max_text_chars as u64, 1)?;
        at_least("limits.max_texts", l.max_texts as u64, 1)?;
        at_least("limits.max_body_bytes", l.max_body_bytes as u64, 64)?;
        at_least("limits.request_timeout_ms", l.request_timeout_ms, 1)?;
        if l.max_texts > e.queue_capacity {
            return Err(ConfigError::Invalid {
                key: "limits.max_texts",
                message: format!(
                    "must not exceed `engine.queue_capacity` ({}), got {}: such a request could never be queued",
                    e.queue_capacity, l.max_texts
                ),
            });
        }
        if let Some(variant) = &self.model.variant {
            if variant.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "model.variant",
                    message: "must not be empty (leave it out for the manifest's default)".into(),
                });
            }
        }
        if self.auth.tokens.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::Invalid { key: "auth.tokens", message: "must not contain empty tokens".into() });
        }
        Ok(())
    }

    /// The node id used in logs and headers.
    pub fn node_id(&self) -> String {
        self.server.node_id.clone().unwrap_or_else(|| self.server.listen.to_string())
    }
}

/// Applies `SENTI__SECTION__KEY=value` and `SENTI_AUTH_TOKENS` overrides to a raw TOML table.
fn apply_env(table: &mut toml::Table, vars: impl IntoIterator<Item = (String, String)>) {
    for (name, raw) in vars {
        if name == "SENTI_AUTH_TOKENS" {
            let tokens = raw
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| toml::Value::String(t.to_owned()))
                .collect();
            section(table, "auth").insert("tokens".into(), toml::Value::Array(tokens));
            continue;
        }
        let Some(path) = name.strip_prefix("SENTI__") else {
            continue;
        };
        let Some((sect, key)) = path.split_once("__") else {
            continue;
        };
        let value = parse_env_value(&raw);
        section(table, &sect.to_ascii_lowercase()).insert(key.to_ascii_lowercase(), value);
    }
}

fn section<'a>(table: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
    let entry = table.entry(name.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    entry.as_table_mut().expect("just made a table. This is a bug.")
}

fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid_and_bind_loopback_8080() {
        let config = Config::load(None, Vec::new()).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert!(config.auth.tokens.is_empty());
    }

    #[test]
    fn env_overrides_numbers_strings_and_tokens() {
        let config = Config::load(
            None,
            env(&[
                ("SENTI__ENGINE__ACTORS", "3"),
                ("SENTI__SERVER__LISTEN", "0.0.0.0:9000"),
                ("SENTI_AUTH_TOKENS", "a, b"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.engine.actors, 3);
        assert_eq!(config.server.listen.port(), 9000);
        assert_eq!(config.auth.tokens, vec!["a", "b"]);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[engine]\nactorz = 2\n").unwrap_err().to_string();
        assert!(err.contains("actorz"), "{err}");
    }

    #[test]
    fn invalid_value_names_the_key() {
        let err = Config::from_toml("[engine]\nactors = 0\n").unwrap_err().to_string();
        assert_eq!(err, "invalid config: `engine.actors` must be at least 1, got 0");
        let err = Config::from_toml("[limits]\nmax_texts = 5000\n").unwrap_err().to_string();
        assert!(err.contains("`limits.max_texts`"), "{err}");
    }

    #[test]
    fn tokens_are_redacted_in_debug() {
        let config = Config::load(None, env(&[("SENTI_AUTH_TOKENS", "s3cret")])).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("1 redacted"));
    }
}

#[cfg(test)]
mod repo_configs {
    use super::*;

    /// Every config file shipped in cluster-config/ parses and validates.
    #[test]
    fn every_shipped_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster-config");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(Some(&path), Vec::new()).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
                checked += 1;
            }
        }
        assert!(checked >= 1, "no config files found in {}", dir.display());
    }

    #[test]
    fn the_spelled_out_single_node_config_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster-config/single-node.toml");
        assert_eq!(Config::load(Some(&path), Vec::new()).unwrap(), Config::default());
    }
}
