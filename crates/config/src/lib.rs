//! senti's configuration: one TOML file, overridden by environment variables, overridden by flags.
//!
//! Every section is a serde struct with `deny_unknown_fields` and its defaults beside it, so a
//! typo in a file is an error that names the key rather than a silently ignored setting. The
//! sections an operator fills in hold about twenty keys (addresses, node id, secrets, model,
//! actors, threads, limits, deadlines, seeds); the tuning values that came out of measurements
//! live in [`AdvancedConfig`] (`[advanced]`), documented as such.
//! [`Config::validate`] checks ranges and names the key it rejects
//! ("`engine.actors` must be at least 1, got 0"). Secrets (auth tokens) are redacted in `Debug`.
//!
//! Environment overrides use `SENTI__<SECTION>__<KEY>=<value>` (double underscores), for example
//! `SENTI__SERVER__LISTEN=0.0.0.0:8080` or `SENTI__ENGINE__ACTORS=2`; the value is read as a TOML
//! value when it parses as one (numbers, booleans, arrays) and as a string otherwise.
//! `SENTI_AUTH_TOKENS=a,b` sets `auth.tokens`, `SENTI_CLUSTER_COOKIE` sets `cluster.cookie` and
//! `SENTI_CLUSTER_KEY_FILE` sets `cluster.key_file` and `SENTI_CLUSTER_TLS_DIR` `cluster.tls_dir`,
//! so secrets need not be written into a file.
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
    /// Gossip membership and remote actors; off by default (one node on its own).
    pub cluster: ClusterConfig,
    /// How the gateway fails over.
    pub routing: RoutingConfig,
    /// `[cache]`
    pub cache: CacheConfig,
    /// Measured tuning values; see [`AdvancedConfig`].
    pub advanced: AdvancedConfig,
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
    /// A request's headers (from a new connection's start, or from the first byte of a request
    /// on a kept-alive one) must all arrive within this, or the connection is closed.
    pub header_timeout_ms: u64,
    /// A request's whole body must arrive within this from the end of its headers, besides
    /// `limits.max_body_bytes`, or the connection is closed.
    pub body_timeout_ms: u64,
    /// A kept-alive connection with no request for this long is closed; so is one whose answer
    /// the client has not read for this long.
    pub idle_timeout_ms: u64,
    /// Most connections served at once; beyond it a new connection gets a 503 and is closed,
    /// while the open ones keep being served. Keep it well below the process's file limit
    /// (`LimitNOFILE` in cluster-config/systemd/senti.service).
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        // Timeouts as nginx and Envoy ship them, give or take: 10 s for headers, 30 s for a body,
        // 60 s of keep-alive idleness. 512 connections leave half of a 1,024 file limit for
        // sessions, gossip, the model and logs.
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            node_id: None,
            shutdown_grace_ms: 30_000,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_connections: 512,
        }
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

/// `[engine]`: how much of the machine inference takes. The batching and hand-off knobs that
/// came out of measurements are in [`AdvancedConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Inference actors on this node; each owns one ONNX Runtime session on its own thread.
    pub actors: usize,
    /// ONNX Runtime intra-op threads per actor.
    pub threads_per_actor: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        // One single-threaded actor per core serves the most texts/s on the default model
        // (docs/benchmarks.md, `make bench-node`).
        Self { actors: 2, threads_per_actor: 1 }
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

/// `[cache]`: the result cache every node keeps in front of its gateway (crates/routing cache.rs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Most bytes the cached results may take (texts' token ids plus scores, estimated per entry);
    /// 0 turns the cache off. In-flight coalescing of identical texts works either way.
    pub max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        // 64 MiB holds about 250k cached short reviews: a small share of a 24 GiB machine.
        Self { max_bytes: 64 * 1024 * 1024 }
    }
}

/// `[auth]`
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accepted bearer tokens; empty means authentication is off. When set, they guard
    /// classification, `/v1/cluster` and (unless `open_metrics`) `/metrics`.
    pub tokens: Vec<String>,
    /// Leave `/metrics` open when tokens are set, for a Prometheus that has no token.
    pub open_metrics: bool,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("open_metrics", &self.open_metrics)
            .finish()
    }
}

/// `[cluster]`: where this node listens and whom it joins. Gossip timing and the failure
/// detector are in [`AdvancedConfig`].
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Join a cluster. Off: the node serves alone and needs none of the settings below.
    pub enabled: bool,
    /// Nodes only gossip with nodes of the same cluster id.
    pub cluster_id: String,
    /// UDP address chitchat binds.
    pub gossip_listen: SocketAddr,
    /// Gossip address other nodes use to reach this one; default `gossip_listen`.
    pub gossip_advertise: Option<SocketAddr>,
    /// Gossip addresses (`host:port`) to join through; this node's own address may be among them.
    pub seeds: Vec<String>,
    /// TCP address the ractor_cluster node server binds (remote inference actors).
    pub actor_listen: SocketAddr,
    /// Actor address other nodes dial; default `actor_listen`.
    pub actor_advertise: Option<SocketAddr>,
    /// HTTP address gossiped to other nodes and shown in `/v1/cluster` (where a client is sent
    /// for another model); default: the host of the gossip advertise address with the port of
    /// `server.listen`.
    pub http_advertise: Option<SocketAddr>,
    /// Shared secret of the ractor_cluster handshake; nodes with another cookie are refused.
    /// Also `SENTI_CLUSTER_COOKIE`. Required when `enabled`: at least [`MIN_COOKIE_CHARS`]
    /// characters and no placeholder.
    pub cookie: String,
    /// File of gossip keys, one `sgk1-...` line each (`senti cluster keygen --out FILE` writes
    /// one): the first seals and opens gossip, the others are only accepted (rotation). Blank
    /// lines and `#` comments are ignored; the file must not be readable by group or others.
    /// Also `SENTI_CLUSTER_KEY_FILE`. Required when `enabled`.
    pub key_file: Option<PathBuf>,
    /// Folder of the remote-actor sessions' TLS files, `ca.crt`, `node.crt` and `node.key`
    /// (`senti cluster tls --out DIR` writes them; `node.key` must not be readable by group or
    /// others): sessions are then mutually authenticated TLS 1.3 with certificates of that CA, and
    /// plaintext connections to `actor_listen` are refused. Unset: plaintext sessions (a warning
    /// at start). Also `SENTI_CLUSTER_TLS_DIR`.
    pub tls_dir: Option<PathBuf>,
}

/// Fewest characters of `cluster.cookie`.
pub const MIN_COOKIE_CHARS: usize = 16;

/// Words that mark a cookie as a placeholder someone forgot to replace (compared in lower case).
const PLACEHOLDER_WORDS: [&str; 8] =
    ["replace-me", "replaceme", "replace_me", "change-me", "changeme", "change_me", "placeholder", "example"];

/// Why `cookie` is unfit to be `cluster.cookie`, if it is.
fn weak_cookie(cookie: &str) -> Option<String> {
    let chars = cookie.chars().count();
    if chars < MIN_COOKIE_CHARS {
        return Some(format!(
            "must be at least {MIN_COOKIE_CHARS} characters, got {chars}: use a long random secret, e.g. `openssl rand -hex 24`"
        ));
    }
    let lower = cookie.to_lowercase();
    if let Some(word) = PLACEHOLDER_WORDS.iter().find(|word| lower.contains(*word)) {
        return Some(format!(
            "is a placeholder (contains `{word}`): replace it with a long random secret, e.g. `openssl rand -hex 24`"
        ));
    }
    let mut distinct: Vec<char> = cookie.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 6 {
        return Some(format!(
            "is weak ({} distinct characters): use a long random secret, e.g. `openssl rand -hex 24`",
            distinct.len()
        ));
    }
    None
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            cluster_id: "senti".into(),
            gossip_listen: SocketAddr::from(([127, 0, 0, 1], 7280)),
            gossip_advertise: None,
            seeds: Vec::new(),
            actor_listen: SocketAddr::from(([127, 0, 0, 1], 7281)),
            actor_advertise: None,
            http_advertise: None,
            cookie: String::new(),
            key_file: None,
            tls_dir: None,
        }
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("enabled", &self.enabled)
            .field("cluster_id", &self.cluster_id)
            .field("gossip_listen", &self.gossip_listen)
            .field("gossip_advertise", &self.gossip_advertise)
            .field("seeds", &self.seeds)
            .field("actor_listen", &self.actor_listen)
            .field("actor_advertise", &self.actor_advertise)
            .field("http_advertise", &self.http_advertise)
            .field("cookie", &if self.cookie.is_empty() { "[unset]" } else { "[redacted]" })
            .field("key_file", &self.key_file)
            .field("tls_dir", &self.tls_dir)
            .finish()
    }
}

impl ClusterConfig {
    /// The gossip address peers use.
    pub fn gossip_advertise_addr(&self) -> SocketAddr {
        self.gossip_advertise.unwrap_or(self.gossip_listen)
    }

    /// The remote-actor address peers dial.
    pub fn actor_advertise_addr(&self) -> SocketAddr {
        self.actor_advertise.unwrap_or(self.actor_listen)
    }

    /// The HTTP address peers and clients are told about: `http_advertise`, else the gossip
    /// advertise host with the port the HTTP server is bound to (`http_bound`, which may be
    /// `0.0.0.0:8080` or an OS-chosen port).
    pub fn http_advertise_addr(&self, http_bound: SocketAddr) -> SocketAddr {
        self.http_advertise.unwrap_or_else(|| {
            let host =
                if http_bound.ip().is_unspecified() { self.gossip_advertise_addr().ip() } else { http_bound.ip() };
            SocketAddr::new(host, http_bound.port())
        })
    }
}

/// `[routing]`: what an operator decides about failover. The placement, hedging and ejection
/// policy's measured weights are in [`AdvancedConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// An attempt not answered within this (or the request's deadline, if sooner) is abandoned
    /// and the request placed again on another actor.
    pub attempt_timeout_ms: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self { attempt_timeout_ms: 3_000 }
    }
}

/// `[advanced]`: tuning values that came out of measurements (docs/benchmarks.md,
/// docs/cluster.md, docs/routing.md). The defaults are what those measurements chose; change one
/// only to repeat or extend such a measurement (`make bench-ab` takes any of them as
/// `SENTI__ADVANCED__<KEY>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdvancedConfig {
    // Engine: batching and the model thread.
    /// Most texts waiting in one actor's queue; beyond it requests get 429.
    pub queue_capacity: usize,
    /// Token budget of one batch (padded: longest text in the batch x texts).
    pub max_batch_tokens: usize,
    /// Most texts in one batch (1: no batching, the fastest on these CPUs for the default model).
    pub max_batch_size: usize,
    /// Hand-offs to an actor's model thread at once: the one it runs plus those staged behind it,
    /// so it starts the next batch without waiting for an actor round trip; 1 turns staging off.
    pub batches_ahead: usize,
    /// Expected milliseconds of one request's consecutive batches handed to the model thread
    /// together (it then reports once); 0 hands over one batch at a time.
    pub handoff_ms: u64,
    /// Whether ONNX Runtime's intra-op threads spin between operators when
    /// `engine.threads_per_actor > 1`.
    pub intra_op_spinning: bool,
    /// Intra-op threads of a second session per actor, for batches that start while no other
    /// batch runs on the node (0: off); kept only if measured at start to be at least 1.25x faster.
    pub threads_when_alone: usize,
    /// Share of a request's time left that the work queued ahead of it may fill before the actor
    /// answers a fast 429 instead of risking a 504.
    pub admission_headroom: f64,
    /// Worker threads of the async runtime (HTTP, tokenizer, actors, gossip); 0: the cores the
    /// model threads leave (`engine.actors` x `engine.threads_per_actor`), at least one
    /// ([`Config::async_threads`]).
    pub async_threads: usize,

    // Gossip and failure detection.
    /// Time between gossip rounds.
    pub gossip_interval_ms: u64,
    /// Phi-accrual threshold above which a silent node is declared dead.
    pub phi_threshold: f64,
    /// Heartbeat interval assumed for a node before any is measured.
    pub failure_initial_interval_ms: u64,
    /// Heartbeat gaps longer than this are left out of the phi statistics.
    pub failure_max_interval_ms: u64,
    /// How long a dead node stays listed (as dead) before it is forgotten.
    pub dead_node_grace_ms: u64,
    /// Least time between two load publications of one actor.
    pub load_publish_interval_ms: u64,
    /// Publish anyway after this long, so a quiet actor's value stays fresh.
    pub load_max_quiet_ms: u64,
    /// Publish only when the backlog changed by more than this fraction (or went to/from zero).
    pub load_hysteresis: f64,
    /// Changes of at most this many tokens are never worth a publication on their own.
    pub load_min_delta_tokens: u64,
    /// Time between two checks that every live member has a remote-actor session (redial).
    pub redial_interval_ms: u64,

    // Routing: placement, failover, hedging, ejection.
    /// Abandon an attempt sooner when it is this many times slower than the recent p99 (at least
    /// `attempt_timeout_min_ms`); 0: every attempt waits `routing.attempt_timeout_ms`.
    pub attempt_timeout_p99_factor: f64,
    /// Floor of the p99-based attempt timeout.
    pub attempt_timeout_min_ms: u64,
    /// Retries allowed per request on average (Envoy-style budget): 0.2 = 20% extra attempts.
    pub retry_budget_ratio: f64,
    /// Retries always allowed, whatever the ratio (a burst allowance for a quiet gateway).
    pub retry_min_reserve: f64,
    /// Hedges allowed per request on average: 0.05 = at most 5% extra attempts.
    pub hedge_budget_ratio: f64,
    /// Most hedges the budget saves up while the gateway is quiet.
    pub hedge_budget_cap: f64,
    /// An attempt slower than this quantile of recent attempts gets a backup on another node.
    pub hedge_quantile: f64,
    /// Never hedge sooner than this.
    pub hedge_min_delay_ms: u64,
    /// A gossiped load value's weight halves every this much age.
    pub trust_half_life_ms: u64,
    /// What one of this gateway's attempts in flight is assumed to cost a target, in tokens.
    pub tokens_per_attempt: f64,
    /// What one recent failure of a target adds to its load estimate, in tokens.
    pub failure_penalty_tokens: f64,
    /// What sending an attempt to another node costs, in tokens of work: a remote actor is chosen
    /// only when its estimate is lower than the best local one by more than this.
    pub remote_hop_cost_tokens: f64,
    /// Consecutive failures (errors or attempt timeouts) that eject an actor from the rotation.
    pub eject_consecutive_failures: u32,
    /// First ejection length; each further ejection doubles it.
    pub eject_base_ms: u64,
    /// Longest ejection.
    pub eject_max_ms: u64,
}

impl Default for AdvancedConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 2048,
            max_batch_tokens: 8192,
            max_batch_size: 1,
            batches_ahead: 2,
            handoff_ms: 20,
            intra_op_spinning: true,
            threads_when_alone: 2,
            admission_headroom: 0.8,
            async_threads: 0,
            gossip_interval_ms: 200,
            phi_threshold: 8.0,
            failure_initial_interval_ms: 200,
            failure_max_interval_ms: 2_000,
            dead_node_grace_ms: 60_000,
            load_publish_interval_ms: 100,
            load_max_quiet_ms: 1_000,
            load_hysteresis: 0.1,
            load_min_delta_tokens: 16,
            redial_interval_ms: 500,
            attempt_timeout_p99_factor: 10.0,
            attempt_timeout_min_ms: 500,
            retry_budget_ratio: 0.2,
            retry_min_reserve: 10.0,
            hedge_budget_ratio: 0.05,
            hedge_budget_cap: 10.0,
            hedge_quantile: 0.95,
            hedge_min_delay_ms: 5,
            trust_half_life_ms: 200,
            tokens_per_attempt: 64.0,
            failure_penalty_tokens: 512.0,
            remote_hop_cost_tokens: 128.0,
            eject_consecutive_failures: 5,
            eject_base_ms: 1_000,
            eject_max_ms: 30_000,
        }
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
        fn fraction(key: &'static str, value: f64, min: f64, max: f64) -> Result<(), ConfigError> {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("must be between {min} and {max}, got {value}"),
                });
            }
            Ok(())
        }
        let s = &self.server;
        at_least("server.header_timeout_ms", s.header_timeout_ms, 1)?;
        at_least("server.body_timeout_ms", s.body_timeout_ms, 1)?;
        at_least("server.idle_timeout_ms", s.idle_timeout_ms, 1)?;
        at_least("server.max_connections", s.max_connections as u64, 1)?;
        let e = &self.engine;
        at_least("engine.actors", e.actors as u64, 1)?;
        at_least("engine.threads_per_actor", e.threads_per_actor as u64, 1)?;
        let l = &self.limits;
        at_least("limits.max_text_chars", l.max_text_chars as u64, 1)?;
        at_least("limits.max_texts", l.max_texts as u64, 1)?;
        at_least("limits.max_body_bytes", l.max_body_bytes as u64, 64)?;
        at_least("limits.request_timeout_ms", l.request_timeout_ms, 1)?;
        let a = &self.advanced;
        if l.max_texts > a.queue_capacity {
            return Err(ConfigError::Invalid {
                key: "limits.max_texts",
                message: format!(
                    "must not exceed `advanced.queue_capacity` ({}), got {}: such a request could never be queued",
                    a.queue_capacity, l.max_texts
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
        let c = &self.cluster;
        if c.enabled {
            if c.cookie.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "cluster.cookie",
                    message: "must be set when `cluster.enabled` is true (or SENTI_CLUSTER_COOKIE)".into(),
                });
            }
            if let Some(message) = weak_cookie(&c.cookie) {
                return Err(ConfigError::Invalid { key: "cluster.cookie", message });
            }
            if c.key_file.as_ref().is_none_or(|path| path.as_os_str().is_empty()) {
                return Err(ConfigError::Invalid {
                    key: "cluster.key_file",
                    message: "must be set when `cluster.enabled` is true (or SENTI_CLUSTER_KEY_FILE): a file of \
                              gossip keys, made with `senti cluster keygen --out FILE`"
                        .into(),
                });
            }
            if c.cluster_id.is_empty() {
                return Err(ConfigError::Invalid { key: "cluster.cluster_id", message: "must not be empty".into() });
            }
            for (key, addr) in [
                ("cluster.gossip_advertise", c.gossip_advertise_addr()),
                ("cluster.actor_advertise", c.actor_advertise_addr()),
            ] {
                if addr.ip().is_unspecified() {
                    return Err(ConfigError::Invalid {
                        key,
                        message: format!(
                            "must be set to this machine's address when the listen address is {addr}: peers cannot reach {}",
                            addr.ip()
                        ),
                    });
                }
            }
            if c.http_advertise.is_some_and(|a| a.ip().is_unspecified()) {
                return Err(ConfigError::Invalid {
                    key: "cluster.http_advertise",
                    message: "must be an address clients can reach, not 0.0.0.0 or [::]".into(),
                });
            }
            if c.gossip_listen.port() == 0 || c.actor_listen.port() == 0 {
                return Err(ConfigError::Invalid {
                    key: "cluster.gossip_listen",
                    message: "and `cluster.actor_listen` need fixed ports: peers find them through gossip".into(),
                });
            }
        }
        at_least("routing.attempt_timeout_ms", self.routing.attempt_timeout_ms, 1)?;
        at_least("advanced.queue_capacity", a.queue_capacity as u64, 1)?;
        at_least("advanced.max_batch_size", a.max_batch_size as u64, 1)?;
        at_least("advanced.max_batch_tokens", a.max_batch_tokens as u64, 16)?;
        fraction("advanced.batches_ahead", a.batches_ahead as f64, 1.0, 8.0)?;
        fraction("advanced.handoff_ms", a.handoff_ms as f64, 0.0, 10_000.0)?;
        fraction("advanced.threads_when_alone", a.threads_when_alone as f64, 0.0, 256.0)?;
        fraction("advanced.admission_headroom", a.admission_headroom, 0.05, 1.0)?;
        fraction("advanced.async_threads", a.async_threads as f64, 0.0, 1024.0)?;
        at_least("advanced.gossip_interval_ms", a.gossip_interval_ms, 10)?;
        fraction("advanced.phi_threshold", a.phi_threshold, 0.1, 10_000.0)?;
        at_least("advanced.failure_initial_interval_ms", a.failure_initial_interval_ms, 1)?;
        at_least("advanced.failure_max_interval_ms", a.failure_max_interval_ms, 1)?;
        at_least("advanced.load_publish_interval_ms", a.load_publish_interval_ms, 1)?;
        fraction("advanced.load_hysteresis", a.load_hysteresis, 0.0, 10.0)?;
        at_least("advanced.redial_interval_ms", a.redial_interval_ms, 10)?;
        fraction("advanced.attempt_timeout_p99_factor", a.attempt_timeout_p99_factor, 0.0, 1e6)?;
        at_least("advanced.attempt_timeout_min_ms", a.attempt_timeout_min_ms, 1)?;
        fraction("advanced.retry_budget_ratio", a.retry_budget_ratio, 0.0, 1.0)?;
        fraction("advanced.retry_min_reserve", a.retry_min_reserve, 0.0, 1e6)?;
        fraction("advanced.hedge_budget_ratio", a.hedge_budget_ratio, 0.0, 1.0)?;
        fraction("advanced.hedge_budget_cap", a.hedge_budget_cap, 0.0, 1e6)?;
        fraction("advanced.hedge_quantile", a.hedge_quantile, 0.5, 1.0)?;
        at_least("advanced.trust_half_life_ms", a.trust_half_life_ms, 1)?;
        fraction("advanced.tokens_per_attempt", a.tokens_per_attempt, 0.0, 1e9)?;
        fraction("advanced.failure_penalty_tokens", a.failure_penalty_tokens, 0.0, 1e9)?;
        fraction("advanced.remote_hop_cost_tokens", a.remote_hop_cost_tokens, 0.0, 1e9)?;
        at_least("advanced.eject_consecutive_failures", a.eject_consecutive_failures as u64, 1)?;
        at_least("advanced.eject_base_ms", a.eject_base_ms, 1)?;
        at_least("advanced.eject_max_ms", a.eject_max_ms, a.eject_base_ms)?;
        if self.auth.tokens.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::Invalid { key: "auth.tokens", message: "must not contain empty tokens".into() });
        }
        Ok(())
    }

    /// The node id used in logs and headers.
    pub fn node_id(&self) -> String {
        self.server.node_id.clone().unwrap_or_else(|| self.server.listen.to_string())
    }

    /// Worker threads of the async runtime on a machine of `cores` cores:
    /// `advanced.async_threads`, or by default the cores the model threads leave, but at least
    /// one per [`MODEL_THREADS_PER_ASYNC_WORKER`] model threads. The model threads keep their
    /// cores busy under load; an async worker beyond the cores left only adds wake-ups and
    /// preemptions of a model thread (docs/benchmarks.md), unless the async work itself needs it.
    pub fn async_threads(&self, cores: usize) -> usize {
        let model_threads = self.engine.actors * self.engine.threads_per_actor;
        match self.advanced.async_threads {
            0 => cores.saturating_sub(model_threads).max(model_threads.div_ceil(MODEL_THREADS_PER_ASYNC_WORKER)).max(1),
            threads => threads,
        }
    }
}

/// Model threads one async worker is enough for when every core has a model thread: a
/// one-text request costs about 150 us of async work (HTTP, JSON, tokenizer, routing) against
/// about 1.25 ms of inference per core (docs/benchmarks.md, 2 cores), an eighth, so four busy
/// model threads keep one worker about half busy. Machines above 2 cores are not measured.
pub const MODEL_THREADS_PER_ASYNC_WORKER: usize = 4;

/// Applies `SENTI__SECTION__KEY=value` and `SENTI_AUTH_TOKENS` overrides to a raw TOML table.
fn apply_env(table: &mut toml::Table, vars: impl IntoIterator<Item = (String, String)>) {
    for (name, raw) in vars {
        if name == "SENTI_CLUSTER_COOKIE" {
            section(table, "cluster").insert("cookie".into(), toml::Value::String(raw));
            continue;
        }
        if name == "SENTI_CLUSTER_KEY_FILE" {
            section(table, "cluster").insert("key_file".into(), toml::Value::String(raw));
            continue;
        }
        if name == "SENTI_CLUSTER_TLS_DIR" {
            section(table, "cluster").insert("tls_dir".into(), toml::Value::String(raw));
            continue;
        }
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
    fn async_workers_get_the_cores_the_model_threads_leave() {
        let mut config = Config::default();
        assert_eq!(config.async_threads(2), 1, "two 1-thread actors on two cores");
        assert_eq!(config.async_threads(8), 6);
        assert_eq!(config.async_threads(1), 1, "never none");
        config.engine.actors = 16;
        assert_eq!(config.async_threads(16), 4, "one per four model threads when they take every core");
        config.engine.actors = 2;
        config.engine.threads_per_actor = 4;
        assert_eq!(config.async_threads(16), 8);
        config.advanced.async_threads = 3;
        assert_eq!(config.async_threads(2), 3, "set explicitly: taken as is");
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
        let err = Config::from_toml("[advanced]\nadmission_headroom = 1.5\n").unwrap_err().to_string();
        assert_eq!(err, "invalid config: `advanced.admission_headroom` must be between 0.05 and 1, got 1.5");
    }

    /// A cookie long and random enough for the tests.
    const COOKIE: &str = "k3J9xQ2mV7pL4wZ8";

    fn cluster_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(String, String)> {
        let mut pairs = vec![
            ("SENTI__CLUSTER__ENABLED", "true"),
            ("SENTI_CLUSTER_COOKIE", COOKIE),
            ("SENTI_CLUSTER_KEY_FILE", "/etc/senti/cluster.key"),
        ];
        pairs.extend_from_slice(extra);
        env(&pairs)
    }

    #[test]
    fn a_cluster_needs_a_cookie_and_the_cookie_is_redacted() {
        let err = Config::from_toml("[cluster]\nenabled = true\n").unwrap_err().to_string();
        assert!(err.contains("`cluster.cookie`"), "{err}");
        let config = Config::load(None, cluster_env(&[])).unwrap();
        assert!(config.cluster.enabled);
        assert!(!format!("{config:?}").contains(COOKIE));
        let err = Config::from_toml("[advanced]\nhedge_quantile = 1.5\n").unwrap_err().to_string();
        assert!(err.contains("`advanced.hedge_quantile`"), "{err}");
    }

    #[test]
    fn unreachable_advertise_addresses_are_refused_and_http_advertise_is_derived() {
        let base = format!("[cluster]\nenabled = true\ncookie = \"{COOKIE}\"\nkey_file = \"/etc/senti/cluster.key\"\n");
        let err = Config::from_toml(&format!("{base}gossip_listen = \"0.0.0.0:7280\"\n")).unwrap_err().to_string();
        assert!(err.contains("`cluster.gossip_advertise` must be set"), "{err}");
        let err = Config::from_toml(&format!("{base}actor_listen = \"0.0.0.0:7281\"\n")).unwrap_err().to_string();
        assert!(err.contains("`cluster.actor_advertise` must be set"), "{err}");
        let config = Config::from_toml(&format!(
            "{base}gossip_listen = \"0.0.0.0:7280\"\ngossip_advertise = \"10.1.2.3:7280\"\n"
        ))
        .unwrap();
        let bound: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(config.cluster.http_advertise_addr(bound).to_string(), "10.1.2.3:8080");
        let bound: SocketAddr = "127.0.0.5:9000".parse().unwrap();
        assert_eq!(config.cluster.http_advertise_addr(bound).to_string(), "127.0.0.5:9000");
        let config = Config::from_toml(&format!("{base}http_advertise = \"10.9.9.9:80\"\n")).unwrap();
        assert_eq!(config.cluster.http_advertise_addr(bound).to_string(), "10.9.9.9:80");
    }

    #[test]
    fn a_cluster_needs_a_key_file() {
        let err = Config::load(None, env(&[("SENTI__CLUSTER__ENABLED", "true"), ("SENTI_CLUSTER_COOKIE", COOKIE)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`cluster.key_file`") && err.contains("senti cluster keygen"), "{err}");
        let err = Config::load(None, cluster_env(&[("SENTI_CLUSTER_KEY_FILE", "")])).unwrap_err().to_string();
        assert!(err.contains("`cluster.key_file`"), "{err}");
        let config = Config::load(None, cluster_env(&[])).unwrap();
        assert_eq!(config.cluster.key_file.as_deref(), Some(Path::new("/etc/senti/cluster.key")));
        let config = Config::from_toml(&format!(
            "[cluster]\nenabled = true\ncookie = \"{COOKIE}\"\nkey_file = \"keys/gossip.key\"\n"
        ))
        .unwrap();
        assert_eq!(config.cluster.key_file.as_deref(), Some(Path::new("keys/gossip.key")));
        // A node on its own needs none.
        Config::load(None, Vec::new()).unwrap();
    }

    #[test]
    fn weak_and_placeholder_cookies_are_refused() {
        for weak in [
            "c00kie",
            "fifteen-chars-x",
            "replace-me-or-use-SENTI_CLUSTER_COOKIE",
            "CHANGEME-CHANGEME-CHANGEME",
            "an-example-cookie-value",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "abababababababababab",
        ] {
            let err = Config::load(None, cluster_env(&[("SENTI_CLUSTER_COOKIE", weak)])).unwrap_err().to_string();
            assert!(err.contains("`cluster.cookie`"), "{weak}: {err}");
            assert!(!err.contains(weak), "the error repeats the secret: {err}");
        }
        for strong in [COOKIE, "senti-local-demo", "3f09a1c29c1e44b0b5a2d7e81f6c0a93"] {
            Config::load(None, cluster_env(&[("SENTI_CLUSTER_COOKIE", strong)])).unwrap();
        }
        // Cookies are only checked when they are used.
        Config::load(None, env(&[("SENTI_CLUSTER_COOKIE", "short")])).unwrap();
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

    /// Every config file shipped in cluster-config/ parses and validates (lan-node.toml with the
    /// cookie from the environment, as it says).
    #[test]
    fn every_shipped_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster-config");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let vars = if path.ends_with("lan-node.toml") {
                    vec![("SENTI_CLUSTER_COOKIE".to_owned(), "3f09a1c29c1e44b0b5a2d7e81f6c0a93".to_owned())]
                } else {
                    Vec::new()
                };
                Config::load(Some(&path), vars).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
                checked += 1;
            }
        }
        assert!(checked >= 1, "no config files found in {}", dir.display());
    }

    /// The operator's part of the configuration stays small; measured knobs go to `[advanced]`.
    #[test]
    fn about_twenty_keys_outside_advanced() {
        let table = toml::Table::try_from(Config::default()).unwrap();
        let keys: usize = table
            .iter()
            .filter(|(section, _)| section.as_str() != "advanced")
            .map(|(_, value)| value.as_table().map_or(1, toml::Table::len))
            .sum();
        // Options that are unset (node_id, model path, advertise addresses...) serialize to
        // nothing; count them too.
        let unset = ["server.node_id", "model.path", "model.variant", "model.onnxruntime"].len()
            + ["cluster.gossip_advertise", "cluster.actor_advertise", "cluster.http_advertise", "cluster.key_file"]
                .len();
        // The HTTP timeouts and cap, `auth.open_metrics`, `cluster.http_advertise`, `cluster.key_file`
        // and `cache.max_bytes` took it past twenty.
        assert!((18..=32).contains(&(keys + unset)), "{} user-facing keys", keys + unset);
    }

    /// The systemd unit's file limit leaves room above the connection cap for everything else
    /// the node opens (listeners, sessions, ONNX Runtime, logs), so a flood meets the cap first.
    #[test]
    fn the_systemd_file_limit_fits_the_connection_cap() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster-config/systemd/senti.service");
        let unit = std::fs::read_to_string(path).unwrap();
        let limit: usize = unit
            .lines()
            .find_map(|l| l.strip_prefix("LimitNOFILE="))
            .and_then(|v| v.trim().parse().ok())
            .expect("senti.service sets LimitNOFILE");
        let cap = ServerConfig::default().max_connections;
        assert!(limit >= cap + 512, "LimitNOFILE={limit} leaves too little above server.max_connections = {cap}");
    }

    #[test]
    fn the_spelled_out_single_node_config_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster-config/single-node.toml");
        assert_eq!(Config::load(Some(&path), Vec::new()).unwrap(), Config::default());
    }
}
