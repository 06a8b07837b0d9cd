//! Validation of an opened gossip message before chitchat sees it: a member holding the key still
//! cannot crash or bloat another node.
//!
//! What a decoded message can reach in chitchat 0.13 (each is refused here, see the tests):
//! ```text
//! chitchat                                  trigger                               refused by
//! serialize::deserialize_stream             compressed blocks decompressing to    DecodeLimits (wire.rs):
//!                                           gigabytes (no limit in chitchat)      stream bytes, blocks, items
//! state.rs NodeState::apply_delta           a key-value whose version is above    "semantics": set-max-version
//!   assert!(delta max >= node max)          the node delta's max version          only alone in its node delta
//! delta.rs DeltaSerializer::with_mtu        own digest leaves < 100 bytes of a    member cap x id length bound
//!   assert!(mtu >= 100)                     datagram (every digest entry of a     (GuardLimits::validate), kept
//!                                           peer becomes a node of ours)          across messages (member table)
//! state.rs NodeState::set (own node)        a delta about this node at version    "self_delta", version bound
//!   max_version + 1 overflows, assert!      u64::MAX                              (max_version)
//! memory: node states, keys, values         many nodes / keys / long values,      member cap, keys and bytes
//!                                           one message at a time                 per node (member table)
//! ```
//! Per message, every count and length is capped. Across messages, a member table mirrors the
//! nodes chitchat can hold: chitchat creates a node only for a digest entry, so every node it holds
//! passed through here. The table refuses a message naming a new node when it is full, and counts
//! distinct keys and bytes per node. It forgets a node not named for [`GuardLimits::member_ttl`],
//! which must exceed the time chitchat keeps a silent node (failure detection plus
//! `dead_node_grace_period`): until then the table over-counts, never under-counts.
//!
//! What is not refused: plausible lies. A member holding the key can still claim any key-value or
//! heartbeat for any other node (chitchat has no per-node signatures).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use chitchat::ChitchatId;

use crate::seal::SEAL_OVERHEAD;
use crate::wire::{self, DecodeError, DecodeLimits, DeltaOp, WireMessage, CHITCHAT_HEADER_LEN, MAX_UDP_PAYLOAD};

/// chitchat asserts that a delta has at least this many bytes of room in a datagram.
const CHITCHAT_MIN_DELTA_ROOM: usize = 100;
/// Bytes of a V0 digest entry besides the node id: id length, generation, IPv6 address and port,
/// heartbeat, last GC version, max version.
const DIGEST_ENTRY_FIXED: usize = 2 + 8 + 19 + 24;

/// Caps on what one message and the cluster state may hold. The defaults suit senti (about ten
/// short keys per node) with a wide margin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardLimits {
    /// Most nodes known at once (this node included), and most digest entries or node deltas in
    /// one message.
    pub max_members: usize,
    /// Longest node id, in bytes.
    pub max_node_id_len: usize,
    /// Longest cluster id in a Syn, in bytes.
    pub max_cluster_id_len: usize,
    /// Most distinct keys of one node (across messages) and key-values per node in one message.
    pub max_keys_per_node: usize,
    /// Longest key, in bytes.
    pub max_key_len: usize,
    /// Longest value, in bytes.
    pub max_value_len: usize,
    /// Most key and value bytes of one node (across messages).
    pub max_node_bytes: usize,
    /// Most bytes one message's compressed streams may decompress to.
    pub max_decompressed_bytes: usize,
    /// Most blocks in one stream.
    pub max_blocks: usize,
    /// Highest version, heartbeat or GC version accepted: far above anything a node reaches
    /// (2^48 is 9 000 years at 1 000 changes per second), far below an overflow.
    pub max_version: u64,
    /// A node not named in any digest for this long leaves the member table (see the module doc).
    pub member_ttl: Duration,
}

impl Default for GuardLimits {
    fn default() -> Self {
        GuardLimits {
            max_members: 128,
            max_node_id_len: 128,
            max_cluster_id_len: 256,
            max_keys_per_node: 256,
            max_key_len: 256,
            max_value_len: 4_096,
            max_node_bytes: 64 << 10,
            max_decompressed_bytes: 2 << 20,
            max_blocks: 512,
            max_version: 1 << 48,
            member_ttl: Duration::from_secs(600),
        }
    }
}

/// Limits that contradict each other or chitchat's datagram budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gossip limits: {0}")]
pub struct LimitsError(String);

impl GuardLimits {
    /// Checks that a digest of `max_members` nodes with the longest ids still leaves chitchat the
    /// room it asserts, sealed, in one datagram; and that no limit is zero.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let digest = 2 + self.max_members * (self.max_node_id_len + DIGEST_ENTRY_FIXED);
        let syn = CHITCHAT_HEADER_LEN + digest + 2 + self.max_cluster_id_len;
        let budget = MAX_UDP_PAYLOAD - SEAL_OVERHEAD - CHITCHAT_MIN_DELTA_ROOM;
        if syn > budget {
            return Err(LimitsError(format!(
                "a digest of {} members with {}-byte ids takes {syn} bytes, over the {budget} a sealed datagram leaves",
                self.max_members, self.max_node_id_len
            )));
        }
        let counts = [
            ("max_members", self.max_members),
            ("max_node_id_len", self.max_node_id_len),
            ("max_keys_per_node", self.max_keys_per_node),
            ("max_key_len", self.max_key_len),
            ("max_node_bytes", self.max_node_bytes),
            ("max_decompressed_bytes", self.max_decompressed_bytes),
            ("max_blocks", self.max_blocks),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, value)| *value == 0) {
            return Err(LimitsError(format!("`{name}` must be > 0")));
        }
        Ok(())
    }

    fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_stream_bytes: self.max_decompressed_bytes,
            max_blocks: self.max_blocks,
            // Digest entries, node ops and key-values of a full message.
            max_items: self.max_members * (2 + self.max_keys_per_node),
        }
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// Not a chitchat message, or over the decode limits.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// A count or length over [`GuardLimits`].
    #[error("{what} is {value}, over the limit of {limit}")]
    Limit {
        /// Which.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// A structure chitchat accepts but asserts on, or never writes.
    #[error("{0}")]
    Semantics(&'static str),
    /// A delta about this node itself (honest peers never send one: this node is the newest
    /// source of its own state).
    #[error("delta about this node")]
    SelfDelta,
    /// The member table is full.
    #[error("{new} new members with {known} known, over the limit of {limit}")]
    Members {
        /// Nodes this message would add.
        new: usize,
        /// Nodes known.
        known: usize,
        /// The cap.
        limit: usize,
    },
    /// A node would hold too many keys or bytes.
    #[error("node {node} would hold {keys} keys and {bytes} bytes, over the limit")]
    NodeState {
        /// The node id.
        node: String,
        /// Its key count after this message.
        keys: usize,
        /// Its bytes after this message.
        bytes: usize,
    },
}

impl GuardError {
    /// The `reason` label of `senti_gossip_rejected_total`.
    pub fn label(&self) -> &'static str {
        match self {
            GuardError::Decode(_) => "decode",
            GuardError::Limit { .. } => "limits",
            GuardError::Semantics(_) => "semantics",
            GuardError::SelfDelta => "self_delta",
            GuardError::Members { .. } => "members",
            GuardError::NodeState { .. } => "node_state",
        }
    }
}

/// What the member table knows about one node.
#[derive(Debug, Default)]
struct Member {
    /// Last time a digest named it (refreshed on every accepted message that does).
    last_named: Option<Instant>,
    /// Never forgotten (this node itself).
    pinned: bool,
    /// Value length per key, keyed by a keyed hash of the key (8 bytes per key whatever its
    /// length; collisions only make the count lenient, and the hash key is per process).
    keys: HashMap<u64, u32>,
    /// Sum of key and value lengths.
    bytes: usize,
}

/// The validator of one gossip socket: limits, this node's id and the member table. Owned by the
/// socket's receive path; nothing else writes it.
#[derive(Debug)]
pub struct Guard {
    limits: GuardLimits,
    self_id_opt: Option<ChitchatId>,
    members: HashMap<ChitchatId, Member>,
    key_hasher: RandomState,
}

impl Guard {
    /// A guard with `limits` (check them with [`GuardLimits::validate`] first). With `self_id`,
    /// deltas about this node are refused and this node always holds a place in the table.
    pub fn new(limits: GuardLimits, self_id_opt: Option<ChitchatId>) -> Guard {
        let mut members = HashMap::new();
        if let Some(self_id) = &self_id_opt {
            members.insert(self_id.clone(), Member { pinned: true, ..Member::default() });
        }
        Guard { limits, self_id_opt, members, key_hasher: RandomState::new() }
    }

    /// Nodes in the member table.
    pub fn known_members(&self) -> usize {
        self.members.len()
    }

    /// Decodes and validates one opened message. On success the member table records it; on
    /// failure nothing changes.
    pub fn check(&mut self, plaintext: &[u8], now: Instant) -> Result<(), GuardError> {
        let message = wire::decode(plaintext, &self.limits.decode_limits())?;
        self.check_message(&message)?;
        self.admit(&message, now)
    }

    /// Per-message caps and the rules chitchat asserts on.
    fn check_message(&self, message: &WireMessage) -> Result<(), GuardError> {
        let limits = &self.limits;
        let max_members = limits.max_members as u64;
        if let wire::WireBody::Syn { cluster_id, .. } = &message.body {
            at_most("cluster id length", cluster_id.len() as u64, limits.max_cluster_id_len as u64)?;
        }
        let digest = message.digest();
        at_most("digest entries", digest.len() as u64, max_members)?;
        let mut named = std::collections::HashSet::new();
        for entry in digest {
            self.check_id(&entry.id)?;
            if !named.insert(&entry.id) {
                return Err(GuardError::Semantics("a node appears twice in a digest"));
            }
            at_most("heartbeat", entry.heartbeat, limits.max_version)?;
            at_most("version", entry.max_version, limits.max_version)?;
            at_most("gc version", entry.last_gc_version, limits.max_version)?;
        }
        let delta = message.delta();
        at_most("node deltas", delta.len() as u64, max_members)?;
        for node in delta {
            self.check_id(&node.id)?;
            if self.self_id_opt.as_ref() == Some(&node.id) {
                return Err(GuardError::SelfDelta);
            }
            at_most("gc version", node.last_gc_version, limits.max_version)?;
            at_most("version", node.from_version_excluded, limits.max_version)?;
            at_most("key-values of a node", node.ops.len() as u64, limits.max_keys_per_node as u64)?;
            // The condition of chitchat's `assert!(node_delta.max_version >= self.max_version)`
            // after applying the key-values (the set-max-version rule below implies it).
            let last_key_version = node.ops.iter().filter_map(|op| match op {
                DeltaOp::KeyValue(kv) => Some(kv.version),
                DeltaOp::SetMaxVersion(_) => None,
            });
            if last_key_version.max().is_some_and(|version| version > node.max_version()) {
                return Err(GuardError::Semantics("a key-value above the node delta's max version"));
            }
            for op in &node.ops {
                match op {
                    DeltaOp::KeyValue(kv) => {
                        at_most("key length", kv.key.len() as u64, limits.max_key_len as u64)?;
                        at_most("value length", kv.value.len() as u64, limits.max_value_len as u64)?;
                        at_most("version", kv.version, limits.max_version)?;
                    }
                    DeltaOp::SetMaxVersion(version) => {
                        // chitchat writes set-max-version only for a node without key-values.
                        // After key-values it can lower the node's max version below a key's,
                        // which trips `assert!(node_delta.max_version >= self.max_version)`.
                        if node.ops.len() != 1 {
                            return Err(GuardError::Semantics("set-max-version beside other ops"));
                        }
                        at_most("version", *version, limits.max_version)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn check_id(&self, id: &ChitchatId) -> Result<(), GuardError> {
        at_most("node id length", id.node_id.len() as u64, self.limits.max_node_id_len as u64)
    }

    /// Member caps across messages; records the message if it passes.
    fn admit(&mut self, message: &WireMessage, now: Instant) -> Result<(), GuardError> {
        let ttl = self.limits.member_ttl;
        self.members.retain(|_, member| {
            member.pinned || member.last_named.is_some_and(|at| now.saturating_duration_since(at) < ttl)
        });
        let new = message.digest().iter().filter(|entry| !self.members.contains_key(&entry.id)).count();
        if self.members.len() + new > self.limits.max_members {
            return Err(GuardError::Members { new, known: self.members.len(), limit: self.limits.max_members });
        }
        // Key and byte counts each known (or newly named) node would reach; deltas about nodes
        // neither known nor named are ignored by chitchat, which only updates nodes it holds.
        let mut updates: Vec<(ChitchatId, HashMap<u64, u32>, usize)> = Vec::new();
        for node in message.delta() {
            let member_opt = self.members.get(&node.id);
            if member_opt.is_none() && !message.digest().iter().any(|entry| entry.id == node.id) {
                continue;
            }
            let mut keys: HashMap<u64, u32> = HashMap::new();
            let (mut count, mut bytes) = member_opt.map_or((0, 0), |m| (m.keys.len(), m.bytes));
            for op in &node.ops {
                let DeltaOp::KeyValue(kv) = op else { continue };
                let hash = self.key_hasher.hash_one(&kv.key);
                let value_len = kv.value.len() as u32;
                let previous_opt = keys.get(&hash).or_else(|| member_opt.and_then(|m| m.keys.get(&hash))).copied();
                match previous_opt {
                    Some(previous) => bytes = bytes - previous as usize + value_len as usize,
                    None => {
                        count += 1;
                        bytes += kv.key.len() + value_len as usize;
                    }
                }
                keys.insert(hash, value_len);
            }
            if count > self.limits.max_keys_per_node || bytes > self.limits.max_node_bytes {
                return Err(GuardError::NodeState { node: node.id.node_id.to_string(), keys: count, bytes });
            }
            updates.push((node.id.clone(), keys, bytes));
        }
        for entry in message.digest() {
            self.members.entry(entry.id.clone()).or_default().last_named = Some(now);
        }
        for (id, keys, bytes) in updates {
            let member = self.members.entry(id).or_default();
            member.keys.extend(keys);
            member.bytes = bytes;
        }
        Ok(())
    }
}

fn at_most(what: &'static str, value: u64, limit: u64) -> Result<(), GuardError> {
    if value > limit {
        return Err(GuardError::Limit { what, value, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chitchat::ProtocolVersion;

    use super::*;
    use crate::wire::{encode, DigestEntry, KeyValue, NodeDelta, WireBody};

    fn id(name: &str) -> ChitchatId {
        ChitchatId::new(name.to_owned(), 1, ([10, 0, 0, 1], 7280).into())
    }

    fn entry(name: &str) -> DigestEntry {
        DigestEntry { id: id(name), heartbeat: 5, last_gc_version: 0, max_version: 3 }
    }

    fn kv(key: &str, value: &str, version: u64) -> DeltaOp {
        DeltaOp::KeyValue(KeyValue { key: key.into(), value: value.into(), version, status: 0 })
    }

    fn bytes(body: WireBody) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&WireMessage { version: ProtocolVersion::V0, body }, &mut out);
        out
    }

    fn syn(names: &[&str]) -> Vec<u8> {
        bytes(WireBody::Syn { cluster_id: "c".into(), digest: names.iter().map(|n| entry(n)).collect() })
    }

    fn syn_ack(names: &[&str], node: &str, ops: Vec<DeltaOp>) -> Vec<u8> {
        bytes(WireBody::SynAck {
            digest: names.iter().map(|n| entry(n)).collect(),
            delta: vec![NodeDelta { id: id(node), last_gc_version: 0, from_version_excluded: 0, ops }],
        })
    }

    #[test]
    fn the_default_limits_are_consistent() {
        GuardLimits::default().validate().unwrap();
        let too_many = GuardLimits { max_members: 1_000, ..GuardLimits::default() };
        assert!(too_many.validate().unwrap_err().to_string().contains("1000 members"));
        let zero = GuardLimits { max_blocks: 0, ..GuardLimits::default() };
        assert!(zero.validate().unwrap_err().to_string().contains("max_blocks"));
    }

    /// Random and mutated gossip messages (20,000 in `make test`; `make fuzz`: a million) as a
    /// member holding the key could send them: each is accepted or refused with a reason, never
    /// a panic, and the member cap holds whatever was accepted.
    #[test]
    fn random_and_mutated_messages_are_checked_never_panicked_on() {
        let cases = senti_engine::testsuite::fuzz_cases(20_000);
        let seeds = vec![
            syn(&["self", "a", "b"]),
            syn_ack(&["a"], "a", vec![kv("ready", "true", 1), kv("model", "m@1", 2), kv("load.a0", "12,3", 3)]),
            syn_ack(&["b"], "b", vec![DeltaOp::SetMaxVersion(7)]),
            bytes(WireBody::Ack {
                delta: vec![NodeDelta {
                    id: id("c"),
                    last_gc_version: 0,
                    from_version_excluded: 0,
                    ops: vec![kv("x", "y", 1)],
                }],
            }),
        ];
        let limits = GuardLimits::default();
        let mut guard = Guard::new(limits.clone(), Some(id("self")));
        let now = Instant::now();
        let (mut accepted, mut refused) = (0_u64, 0_u64);
        for bytes in senti_engine::testsuite::fuzz_inputs(&seeds, cases, 11, 512) {
            match guard.check(&bytes, now) {
                Ok(()) => accepted += 1,
                Err(_) => refused += 1,
            }
            assert!(guard.known_members() <= limits.max_members, "{} members known", guard.known_members());
        }
        eprintln!("guard fuzz: {cases} inputs, {accepted} accepted, {refused} refused");
        assert!(accepted > 0 && refused > 0, "the inputs must reach both outcomes");
    }

    #[test]
    fn an_honest_exchange_passes() {
        let mut guard = Guard::new(GuardLimits::default(), Some(id("self")));
        let now = Instant::now();
        guard.check(&syn(&["self", "a", "b"]), now).unwrap();
        guard.check(&syn_ack(&["a"], "a", vec![kv("ready", "true", 1), kv("model", "m@1", 2)]), now).unwrap();
        guard.check(&syn_ack(&["b"], "b", vec![DeltaOp::SetMaxVersion(7)]), now).unwrap();
        assert_eq!(guard.known_members(), 3);
    }

    #[test]
    fn a_key_above_the_nodes_max_version_is_refused() {
        // chitchat: `assert!(node_delta.max_version >= self.max_version)` in NodeState::apply_delta.
        let mut guard = Guard::new(GuardLimits::default(), None);
        let message = syn_ack(&["a"], "a", vec![kv("ready", "false", 1_000), DeltaOp::SetMaxVersion(5)]);
        assert_eq!(
            guard.check(&message, Instant::now()),
            Err(GuardError::Semantics("a key-value above the node delta's max version"))
        );
        // Higher than the key-values, it is still refused: chitchat never writes it.
        let message = syn_ack(&["a"], "a", vec![kv("ready", "false", 1), DeltaOp::SetMaxVersion(5)]);
        assert_eq!(
            guard.check(&message, Instant::now()),
            Err(GuardError::Semantics("set-max-version beside other ops"))
        );
    }

    #[test]
    fn a_delta_about_this_node_is_refused() {
        let mut guard = Guard::new(GuardLimits::default(), Some(id("self")));
        let message = syn_ack(&["a"], "self", vec![kv("ready", "false", 1 << 40)]);
        assert_eq!(guard.check(&message, Instant::now()), Err(GuardError::SelfDelta));
    }

    #[test]
    fn versions_near_overflow_are_refused() {
        let mut guard = Guard::new(GuardLimits::default(), None);
        let message = syn_ack(&["a"], "a", vec![kv("ready", "false", u64::MAX)]);
        assert_eq!(guard.check(&message, Instant::now()).unwrap_err().label(), "limits");
        let mut heartbeat = entry("a");
        heartbeat.heartbeat = u64::MAX;
        let message = bytes(WireBody::Syn { cluster_id: "c".into(), digest: vec![heartbeat] });
        assert_eq!(guard.check(&message, Instant::now()).unwrap_err().label(), "limits");
    }

    #[test]
    fn members_are_capped_across_messages_and_forgotten_after_the_ttl() {
        let limits = GuardLimits { max_members: 4, member_ttl: Duration::from_secs(60), ..GuardLimits::default() };
        let mut guard = Guard::new(limits, Some(id("self")));
        let start = Instant::now();
        guard.check(&syn(&["a", "b"]), start).unwrap();
        guard.check(&syn(&["c"]), start).unwrap();
        // Full: a fifth node is refused, known ones still pass.
        assert_eq!(guard.check(&syn(&["d"]), start), Err(GuardError::Members { new: 1, known: 4, limit: 4 }));
        guard.check(&syn(&["a", "b", "c"]), start + Duration::from_secs(30)).unwrap();
        // `c` named at 0 s and 30 s; `a` renamed at 70 s; at 95 s `b` and `c` are forgotten.
        guard.check(&syn(&["a"]), start + Duration::from_secs(70)).unwrap();
        guard.check(&syn(&["d", "e"]), start + Duration::from_secs(95)).unwrap();
        assert_eq!(guard.known_members(), 4);
    }

    #[test]
    fn keys_and_bytes_per_node_are_capped_across_messages() {
        let limits = GuardLimits { max_keys_per_node: 3, max_node_bytes: 100, ..GuardLimits::default() };
        let mut guard = Guard::new(limits, None);
        let now = Instant::now();
        guard.check(&syn_ack(&["a"], "a", vec![kv("k1", "v", 1), kv("k2", "v", 2)]), now).unwrap();
        // Rewriting a key does not add one.
        guard.check(&syn_ack(&[], "a", vec![kv("k1", "w", 3), kv("k3", "v", 4)]), now).unwrap();
        let fourth = syn_ack(&[], "a", vec![kv("k4", "v", 5)]);
        assert_eq!(guard.check(&fourth, now).unwrap_err().label(), "node_state");
        let long = syn_ack(&[], "a", vec![kv("k1", &"x".repeat(99), 5)]);
        assert_eq!(guard.check(&long, now).unwrap_err().label(), "node_state");
        // A node chitchat does not hold (never named in a digest) is not counted.
        guard.check(&syn_ack(&[], "z", vec![kv("k1", &"x".repeat(99), 1)]), now).unwrap();
        guard.check(&syn_ack(&[], "z", vec![kv("k2", &"x".repeat(99), 2)]), now).unwrap();
    }

    #[test]
    fn per_message_caps_hold() {
        let limits = GuardLimits { max_key_len: 8, max_value_len: 8, ..GuardLimits::default() };
        let mut guard = Guard::new(limits, None);
        let now = Instant::now();
        assert_eq!(
            guard.check(&syn_ack(&["a"], "a", vec![kv(&"k".repeat(9), "v", 1)]), now).unwrap_err().label(),
            "limits"
        );
        assert_eq!(
            guard.check(&syn_ack(&["a"], "a", vec![kv("k", &"v".repeat(9), 1)]), now).unwrap_err().label(),
            "limits"
        );
        let long_id = bytes(WireBody::Syn { cluster_id: "c".into(), digest: vec![entry(&"n".repeat(129))] });
        assert_eq!(guard.check(&long_id, now).unwrap_err().label(), "limits");
        let twice = bytes(WireBody::Syn { cluster_id: "c".into(), digest: vec![entry("a"), entry("a")] });
        assert_eq!(guard.check(&twice, now).unwrap_err().label(), "semantics");
        assert_eq!(guard.known_members(), 0, "refused messages leave no trace");
    }
}
