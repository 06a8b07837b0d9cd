//! From gossip and sessions to the gateway's remote targets: pure functions over snapshots.
//!
//! chitchat is the one source of truth for who is alive: a remote inference actor becomes a
//! target only if its node is live in chitchat, says it is `ready`, serves this node's model (the
//! same version, or another version whose `compat` says it reads this node's token ids and labels
//! alike), lists the actor in its `actors` key, and the actor has been seen in the ractor process
//! group through a session with that node. A session or process-group entry of a
//! node chitchat calls dead is ignored, however healthy the TCP connection looks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chitchat::{ChitchatId, NodeState};
use ractor::ActorRef;
use senti_routing::{GatewayMsg, Hop, LoadSource, Target, TargetId};

use crate::keys::{LocalModel, NodeKeys};

/// A live node as gossip describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// chitchat's identity: node id, generation, gossip address.
    pub id: ChitchatId,
    /// Its typed keys.
    pub keys: NodeKeys,
    /// Its gossiped state has not advanced for [`QUIET_LIMIT`] ([`Progress`]).
    pub quiet: bool,
}

/// The members in chitchat's live set (this node included), those in `quiet` marked so.
pub fn members(live: &BTreeMap<ChitchatId, NodeState>, quiet: &HashSet<ChitchatId>) -> Vec<Member> {
    live.iter()
        .map(|(id, state)| Member { id: id.clone(), keys: NodeKeys::read(state), quiet: quiet.contains(id) })
        .collect()
}

/// A live member whose gossiped state has not advanced for this long gets no work. Every node
/// with inference actors publishes its load at least once a second (`advanced.load_max_quiet_ms`),
/// so its state version keeps moving in everyone's view. A node that sends gossip but hears
/// nothing (a one-way link) stays live for chitchat, which counts the heartbeat carried in the
/// digest of each Syn it sends, yet nobody receives its state any more: its version stops.
pub const QUIET_LIMIT: Duration = Duration::from_secs(5);

/// When each live member's gossiped state version last changed, as this node saw it.
#[derive(Debug)]
pub struct Progress {
    limit: Duration,
    seen: HashMap<ChitchatId, (u64, Instant)>,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new(QUIET_LIMIT)
    }
}

impl Progress {
    /// A member is quiet after `limit` without a new version ([`QUIET_LIMIT`] in a node; the
    /// simulator may break the rule on purpose).
    pub fn new(limit: Duration) -> Self {
        Self { limit, seen: HashMap::new() }
    }

    /// Notes each member's state version at `now` and returns those whose version has not
    /// changed for the limit; members no longer in `live` are forgotten.
    pub fn quiet(&mut self, live: &BTreeMap<ChitchatId, NodeState>, now: Instant) -> HashSet<ChitchatId> {
        self.seen.retain(|id, _| live.contains_key(id));
        let mut quiet = HashSet::new();
        for (id, state) in live {
            let version = state.max_version();
            let (seen_version, since) = self.seen.entry(id.clone()).or_insert((version, now));
            if *seen_version != version {
                (*seen_version, *since) = (version, now);
            } else if now.saturating_duration_since(*since) >= self.limit {
                quiet.insert(id.clone());
            }
        }
        quiet
    }
}

/// An inference actor of another node reachable through a ractor_cluster session.
#[derive(Clone)]
pub struct RemoteActor {
    /// The senti node id of the session's peer.
    pub node: String,
    /// The peer's generation, when the transport knows it (a ractor_cluster session's peer name
    /// does): an actor of another incarnation of the node is not a target. `None` matches any
    /// generation (the simulated network, which only holds current incarnations).
    pub generation_opt: Option<u64>,
    /// The actor's pid on that node.
    pub pid: u64,
    /// How to send it work.
    pub hop: Arc<dyn Hop>,
}

/// Another node's gateway reachable through a ractor_cluster session: where this node's idle
/// notices go (senti-routing's notices.rs).
#[derive(Clone)]
pub struct RemoteGateway {
    /// The senti node id of the session's peer.
    pub node: String,
    /// The peer's generation, as for [`RemoteActor::generation_opt`].
    pub generation_opt: Option<u64>,
    /// The gateway actor.
    pub gateway: ActorRef<GatewayMsg>,
}

/// What this node's sessions reach: other nodes' inference actors and gateways.
#[derive(Clone, Default)]
pub struct Remotes {
    /// Inference actors ([`remote_targets`] keeps those of usable members).
    pub actors: Vec<RemoteActor>,
    /// Gateways ([`notice_recipients`] keeps those of nodes whose actors are targets).
    pub gateways: Vec<RemoteGateway>,
}

/// The gateways this node's idle notices go to: those of the members (this incarnation) with at
/// least one actor among `targets`, so a node that could not take the work hears nothing.
pub fn notice_recipients(
    members: &[Member],
    targets: &[Target],
    gateways: &[RemoteGateway],
) -> Vec<ActorRef<GatewayMsg>> {
    gateways
        .iter()
        .filter(|g| {
            members
                .iter()
                .any(|m| *m.id.node_id == g.node && g.generation_opt.is_none_or(|gen| gen == m.id.generation_id))
                && targets.iter().any(|t| *t.id.node == g.node)
        })
        .map(|g| g.gateway.clone())
        .collect()
}

/// Why a member contributes no target (shown in `/v1/cluster`).
pub fn exclusion_reason(member: &Member, ours: &LocalModel) -> Option<&'static str> {
    if !member.keys.ready {
        return Some("not ready");
    }
    if member.quiet {
        return Some("its gossip state has not advanced for 5 s (a one-way link? it may not hear the cluster)");
    }
    let compat = member.keys.compat_opt.as_deref();
    match &member.keys.model_opt {
        // The same name@version from a node that does not announce `compat` (an older binary)
        // is taken at its word; one that announces another `compat` was re-exported under the
        // same version with another tokenizer, window or labels.
        Some(model) if *model == ours.id && compat.is_none_or(|c| c == ours.compat) => None,
        Some(model) if model.name == ours.id.name => {
            (compat != Some(&ours.compat)).then_some("serves a version with another tokenizer, window or labels")
        }
        _ => Some("serves another model"),
    }
}

/// The remote targets: every actor of every usable member other than `self_node` that has a
/// session. `now_unix_ms` dates gossiped loads; `now` is the gateway's clock.
pub fn remote_targets(
    members: &[Member],
    remote_actors: &[RemoteActor],
    self_node: &str,
    ours: &LocalModel,
    now: Instant,
    now_unix_ms: u64,
) -> Vec<Target> {
    let mut targets = Vec::new();
    for member in members {
        if &*member.id.node_id == self_node || exclusion_reason(member, ours).is_some() {
            continue;
        }
        let Some(model) = member.keys.model_opt.as_ref().map(|m| Arc::<str>::from(m.to_string())) else {
            continue; // excluded above
        };
        let variant: Arc<str> = member.keys.variant_opt.as_deref().unwrap_or("unknown").into();
        for entry in &member.keys.actors {
            let Some(remote) = remote_actors.iter().find(|r| {
                r.node == *member.id.node_id
                    && r.pid == entry.pid
                    && r.generation_opt.is_none_or(|g| g == member.id.generation_id)
            }) else {
                continue; // no session yet, or the process group has not synced
            };
            let load = match member.keys.load(&entry.name) {
                Some(load) => LoadSource::Gossiped {
                    backlog_tokens: load.backlog_tokens as f64,
                    tokens_per_sec: load.tokens_per_sec,
                    as_of: now.checked_sub(load.age(now_unix_ms)).unwrap_or(now),
                },
                None => LoadSource::NeverPublished,
            };
            targets.push(Target {
                id: TargetId { node: member.id.node_id.clone(), actor: entry.name.as_str().into() },
                hop: remote.hop.clone(),
                load,
                model: model.clone(),
                variant: variant.clone(),
            });
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ractor::RpcReplyPort;
    use senti_engine::{EncodedTexts, InferError, InferResult, RequestId};

    use super::*;
    use crate::keys::{ActorEntry, GossipedLoad, ModelId};

    /// A hop that refuses everything (unit-test stand-in; never sends anything).
    struct NoHop;

    impl Hop for NoHop {
        fn send(
            &self,
            _: Arc<EncodedTexts>,
            _: Instant,
            _: RequestId,
            _: RpcReplyPort<InferResult>,
        ) -> Result<(), InferError> {
            Err(InferError::Unavailable)
        }
    }

    fn m1() -> LocalModel {
        LocalModel { id: ModelId::parse("m@1").unwrap(), compat: "c1".into(), variant: "int8".into() }
    }

    fn version(version: &str, compat: &str) -> LocalModel {
        LocalModel { id: ModelId { version: version.into(), ..m1().id }, compat: compat.into(), ..m1() }
    }

    fn member(node: &str, ready: bool, model: &LocalModel, backlog: u64) -> Member {
        let load =
            GossipedLoad { backlog_tokens: backlog, queued_texts: 1, tokens_per_sec: 1.0, published_unix_ms: 9_000 };
        Member {
            id: ChitchatId::new(node, 1, ([127, 0, 0, 1], 7280).into()),
            keys: NodeKeys {
                ready,
                http_addr_opt: None,
                actor_addr_opt: None,
                model_opt: Some(model.id.clone()),
                variant_opt: Some(model.variant.clone()),
                compat_opt: Some(model.compat.clone()),
                actors: vec![ActorEntry { name: "a0".into(), pid: 7 }, ActorEntry { name: "a1".into(), pid: 8 }],
                loads: vec![("a0".into(), load)],
            },
            quiet: false,
        }
    }

    fn remote(node: &str, pid: u64) -> RemoteActor {
        RemoteActor { node: node.into(), generation_opt: None, pid, hop: Arc::new(NoHop) }
    }

    #[test]
    fn only_ready_members_of_a_compatible_model_with_sessions_become_targets() {
        let other = LocalModel { id: ModelId::parse("n@1").unwrap(), ..m1() };
        let members = vec![
            member("me", true, &m1(), 0),
            member("b", true, &m1(), 640),
            member("c", false, &m1(), 0),
            member("d", true, &version("2", "c2"), 0),
            member("e", true, &version("2", "c1"), 0),
            member("f", true, &other, 0),
            member("g", true, &LocalModel { compat: "c9".into(), ..m1() }, 0),
        ];
        let remotes: Vec<RemoteActor> =
            ["me", "b", "c", "d", "e", "f", "g"].iter().flat_map(|node| [remote(node, 7), remote(node, 8)]).collect();
        let now = Instant::now();
        let targets = remote_targets(&members, &remotes, "me", &m1(), now, 10_000);
        let ids: Vec<String> = targets.iter().map(|t| t.id.to_string()).collect();
        assert_eq!(ids, ["b/a0", "b/a1", "e/a0", "e/a1"], "e serves version 2 with the same compat");
        assert_eq!(&*targets[2].model, "m@2");
        let LoadSource::Gossiped { backlog_tokens, tokens_per_sec, as_of } = &targets[0].load else { panic!("remote") };
        assert_eq!(*backlog_tokens, 640.0);
        assert_eq!(*tokens_per_sec, 1.0, "the rate gossip carries");
        assert_eq!(now.duration_since(*as_of), Duration::from_millis(1_000), "published at 9 000, now 10 000");
        assert_eq!(exclusion_reason(&members[2], &m1()), Some("not ready"));
        assert_eq!(
            exclusion_reason(&members[3], &m1()),
            Some("serves a version with another tokenizer, window or labels")
        );
        assert_eq!(exclusion_reason(&members[4], &m1()), None);
        assert_eq!(exclusion_reason(&members[5], &m1()), Some("serves another model"));
        assert_eq!(
            exclusion_reason(&members[6], &m1()),
            Some("serves a version with another tokenizer, window or labels"),
            "the same version re-exported with another compat"
        );
    }

    #[test]
    fn an_actor_of_another_incarnation_is_not_a_target() {
        let members = vec![member("b", true, &m1(), 0)];
        let old = RemoteActor { generation_opt: Some(0), ..remote("b", 7) };
        let current = RemoteActor { generation_opt: Some(1), ..remote("b", 8) };
        let targets = remote_targets(&members, &[old, current], "me", &m1(), Instant::now(), 10_000);
        let ids: Vec<String> = targets.iter().map(|t| t.id.to_string()).collect();
        assert_eq!(ids, ["b/a1"], "the member's generation is 1");
    }

    #[test]
    fn an_actor_without_a_session_is_not_a_target() {
        let members = vec![member("b", true, &m1(), 0)];
        let targets = remote_targets(&members, &[remote("b", 8)], "me", &m1(), Instant::now(), 10_000);
        assert_eq!(targets.len(), 1);
        assert_eq!(&*targets[0].id.actor, "a1");
    }

    #[test]
    fn a_member_whose_state_stops_advancing_becomes_quiet_and_leaves_routing() {
        let id = ChitchatId::new("b", 1, ([127, 0, 0, 1], 7280).into());
        let mut state = NodeState::for_test();
        state.set("load.a0", "1");
        let live = BTreeMap::from([(id.clone(), state.clone())]);
        let (mut progress, t0) = (Progress::default(), Instant::now());
        assert!(progress.quiet(&live, t0).is_empty());
        assert!(progress.quiet(&live, t0 + QUIET_LIMIT - Duration::from_millis(1)).is_empty());
        assert_eq!(progress.quiet(&live, t0 + QUIET_LIMIT), HashSet::from([id.clone()]), "no new version for 5 s");
        state.set("load.a0", "2");
        let moved = BTreeMap::from([(id.clone(), state)]);
        assert!(progress.quiet(&moved, t0 + QUIET_LIMIT * 2).is_empty(), "a new version: heard from again");
        assert!(progress.quiet(&BTreeMap::new(), t0 + QUIET_LIMIT * 3).is_empty());
        assert!(progress.seen.is_empty(), "members that left are forgotten");

        let quiet = Member { quiet: true, ..member("b", true, &m1(), 0) };
        let reason = exclusion_reason(&quiet, &m1()).unwrap_or_default();
        assert!(reason.contains("one-way"), "{reason}");
        assert!(reason.contains(&format!("for {} s", QUIET_LIMIT.as_secs())), "the reason names the limit: {reason}");
        let targets = remote_targets(&[quiet], &[remote("b", 7)], "me", &m1(), Instant::now(), 10_000);
        assert!(targets.is_empty());
    }
}
