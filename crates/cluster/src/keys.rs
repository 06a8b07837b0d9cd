//! Every gossip key senti publishes, its value format, and the typed reads of a member.
//!
//! No other file reads or writes raw gossip strings (docs/gossip-keys.md is the reference).
//! ```text
//! key            value                                      written
//! ready          "true" | "false"                           at start (false), after the known-answer
//!                                                           check (true), at shutdown (false)
//! http_addr      "127.0.0.1:8080"                            at start
//! actor_addr     "127.0.0.1:7281"  (ractor_cluster)          at start
//! model          "senti-zh-small@1.0.0"                      at start
//! variant        "int8"                                      at start
//! compat         "3f0c9a1e22b4d7c8"  (Manifest::compat)      at start
//! actors         "a0=12,a1=13"  (name=ractor pid)            at start
//! load.<actor>   "<backlog_tokens> <queued_texts> <tokens_per_sec> <published_unix_ms>"
//!                                                           by the load publisher (publish.rs)
//! ```
//! The generation (a restart is a new incarnation) is chitchat's own `ChitchatId::generation_id`:
//! the node's start time in unix milliseconds.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::NodeState;

/// `ready`
pub const READY: &str = "ready";
/// `http_addr`
pub const HTTP_ADDR: &str = "http_addr";
/// `actor_addr`
pub const ACTOR_ADDR: &str = "actor_addr";
/// `model`
pub const MODEL: &str = "model";
/// `variant`: the ONNX variant the node's actors run (`int8`, `fp32`). A key of its own, so
/// that nodes reading only `model` (`name@version`) read it as before.
pub const VARIANT: &str = "variant";
/// `compat`: a hash of what token ids and label indices mean for the node's model (tokenizer,
/// window, labels). Actors of another version of the same model take this node's requests only
/// if it matches.
pub const COMPAT: &str = "compat";
/// Longest `variant` or `compat` read from gossip; a longer or non-identifier value reads as absent.
const MAX_IDENTIFIER_CHARS: usize = 32;
/// `actors`
pub const ACTORS: &str = "actors";
/// Prefix of `load.<actor>`.
pub const LOAD_PREFIX: &str = "load.";

/// The key of one actor's load.
pub fn load_key(actor: &str) -> String {
    format!("{LOAD_PREFIX}{actor}")
}

/// Which model a node serves, as the `model` key says: `name@version`. Gateways place work on
/// actors of their own model name whose `compat` matches (view.rs), so that ids tokenized here
/// mean the same thing there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelId {
    /// `name` from model.toml.
    pub name: String,
    /// `version` from model.toml.
    pub version: String,
}

impl ModelId {
    /// Parses `name@version`; `None` if malformed.
    pub fn parse(value: &str) -> Option<Self> {
        let (name, version) = value.rsplit_once('@')?;
        (!name.is_empty() && !version.is_empty()).then(|| Self { name: name.to_owned(), version: version.to_owned() })
    }
}

/// A gossiped `variant` or `compat` if it is a short identifier (letters, digits, `-`, `_`, `.`).
fn parse_identifier(value: &str) -> Option<String> {
    let ok = !value.is_empty()
        && value.len() <= MAX_IDENTIFIER_CHARS
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ok.then(|| value.to_owned())
}

/// The model this node serves, as it announces it and as it judges other nodes' models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModel {
    /// `model`
    pub id: ModelId,
    /// `compat` (`Manifest::compat`).
    pub compat: String,
    /// `variant`
    pub variant: String,
}

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// An inference actor as its node announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorEntry {
    /// Name on its node (`a0`).
    pub name: String,
    /// Its ractor pid on its node (how the remote actor is recognised in the process group).
    pub pid: u64,
}

/// Formats the `actors` value.
pub fn format_actors(actors: &[ActorEntry]) -> String {
    actors.iter().map(|a| format!("{}={}", a.name, a.pid)).collect::<Vec<_>>().join(",")
}

/// Parses the `actors` value; `None` if malformed.
pub fn parse_actors(value: &str) -> Option<Vec<ActorEntry>> {
    if value.is_empty() {
        return Some(Vec::new());
    }
    value
        .split(',')
        .map(|item| {
            let (name, pid) = item.split_once('=')?;
            Some(ActorEntry { name: name.to_owned(), pid: pid.parse().ok()? })
        })
        .collect()
}

/// One actor's load as published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GossipedLoad {
    /// Tokens queued and running.
    pub backlog_tokens: u64,
    /// Texts queued.
    pub queued_texts: u64,
    /// Recent throughput.
    pub tokens_per_sec: f64,
    /// When the publisher read its gauge (its wall clock, unix ms).
    pub published_unix_ms: u64,
}

impl GossipedLoad {
    /// The value string.
    pub fn format(&self) -> String {
        format!("{} {} {:.0} {}", self.backlog_tokens, self.queued_texts, self.tokens_per_sec, self.published_unix_ms)
    }

    /// Parses a value string; `None` if malformed.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split(' ');
        let load = Self {
            backlog_tokens: parts.next()?.parse().ok()?,
            queued_texts: parts.next()?.parse().ok()?,
            tokens_per_sec: parts.next()?.parse().ok()?,
            published_unix_ms: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(load)
    }

    /// Age at `now_unix_ms`; zero if the publisher's clock is ahead of ours.
    pub fn age(&self, now_unix_ms: u64) -> Duration {
        Duration::from_millis(now_unix_ms.saturating_sub(self.published_unix_ms))
    }
}

/// Wall-clock now in unix milliseconds, advanced by tokio's monotonic clock from a base read once
/// per process: monotonic within a node, and driven by virtual time in simulations.
pub fn unix_ms_now() -> u64 {
    static BASE: OnceLock<(u64, tokio::time::Instant)> = OnceLock::new();
    let (base_ms, base_instant) = *BASE.get_or_init(|| {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        (wall, tokio::time::Instant::now())
    });
    base_ms + base_instant.elapsed().as_millis() as u64
}

/// Writes `ready`.
pub fn set_ready(state: &mut NodeState, ready: bool) {
    state.set(READY, ready);
}

/// The typed keys of one node's state. Missing or malformed keys read as `None`/`false`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeKeys {
    /// `ready`
    pub ready: bool,
    /// `http_addr`
    pub http_addr_opt: Option<SocketAddr>,
    /// `actor_addr`
    pub actor_addr_opt: Option<SocketAddr>,
    /// `model`
    pub model_opt: Option<ModelId>,
    /// `variant`
    pub variant_opt: Option<String>,
    /// `compat`
    pub compat_opt: Option<String>,
    /// `actors`
    pub actors: Vec<ActorEntry>,
    /// `load.<actor>` of each listed actor that has published one.
    pub loads: Vec<(String, GossipedLoad)>,
}

impl NodeKeys {
    /// Reads the keys of a node's gossiped state.
    pub fn read(state: &NodeState) -> Self {
        let actors = state.get(ACTORS).and_then(parse_actors).unwrap_or_default();
        let loads = actors
            .iter()
            .filter_map(|a| {
                let load = GossipedLoad::parse(state.get(&load_key(&a.name))?)?;
                Some((a.name.clone(), load))
            })
            .collect();
        Self {
            ready: state.get(READY) == Some("true"),
            http_addr_opt: state.get(HTTP_ADDR).and_then(|v| v.parse().ok()),
            actor_addr_opt: state.get(ACTOR_ADDR).and_then(|v| v.parse().ok()),
            model_opt: state.get(MODEL).and_then(ModelId::parse),
            variant_opt: state.get(VARIANT).and_then(parse_identifier),
            compat_opt: state.get(COMPAT).and_then(parse_identifier),
            actors,
            loads,
        }
    }

    /// The load of one actor, if published.
    pub fn load(&self, actor: &str) -> Option<&GossipedLoad> {
        self.loads.iter().find(|(name, _)| name == actor).map(|(_, load)| load)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn actors_round_trip_and_garbage_is_refused() {
        let actors = vec![ActorEntry { name: "a0".into(), pid: 12 }, ActorEntry { name: "a1".into(), pid: 13 }];
        assert_eq!(format_actors(&actors), "a0=12,a1=13");
        assert_eq!(parse_actors("a0=12,a1=13"), Some(actors));
        assert_eq!(parse_actors("a0=x"), None);
        assert_eq!(parse_actors("a0"), None);
    }

    #[test]
    fn model_ids_round_trip_and_garbage_is_refused() {
        assert_eq!(parse_identifier("int8").as_deref(), Some("int8"));
        for bad in ["", "int8 ", "<script>", &"x".repeat(33)] {
            assert_eq!(parse_identifier(bad), None, "{bad:?}");
        }
        let id = ModelId::parse("senti-zh-small@1.1.0").unwrap();
        assert_eq!((id.name.as_str(), id.version.as_str()), ("senti-zh-small", "1.1.0"));
        assert_eq!(id.to_string(), "senti-zh-small@1.1.0");
        assert_eq!(ModelId::parse("no-version"), None);
        assert_eq!(ModelId::parse("@1"), None);
        assert_eq!(ModelId::parse("m@"), None);
    }

    #[test]
    fn age_never_goes_negative() {
        let load = GossipedLoad { backlog_tokens: 1, queued_texts: 1, tokens_per_sec: 1.0, published_unix_ms: 1_000 };
        assert_eq!(load.age(1_500), Duration::from_millis(500));
        assert_eq!(load.age(900), Duration::ZERO, "publisher's clock ahead of ours");
        assert_eq!(GossipedLoad::parse("1 2 3"), None);
        assert_eq!(GossipedLoad::parse("1 2 3 4 5"), None);
    }

    proptest! {
        #[test]
        fn load_values_round_trip(backlog in 0u64..1 << 40, queued in 0u64..1 << 20, rate in 0u32..1_000_000, at in 0u64..1 << 45) {
            let load = GossipedLoad { backlog_tokens: backlog, queued_texts: queued, tokens_per_sec: rate as f64, published_unix_ms: at };
            prop_assert_eq!(GossipedLoad::parse(&load.format()), Some(load));
        }
    }
}
