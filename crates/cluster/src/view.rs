//! From gossip and sessions to the gateway's remote targets: pure functions over snapshots.
//!
//! chitchat is the one source of truth for who is alive: a remote inference actor becomes a
//! target only if its node is live in chitchat, says it is `ready`, serves the same model and
//! version as this node, lists the actor in its `actors` key, and the actor has been seen in the
//! ractor process group through a session with that node. A session or process-group entry of a
//! node chitchat calls dead is ignored, however healthy the TCP connection looks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chitchat::{ChitchatId, NodeState};
use senti_routing::{Hop, LoadSource, Target, TargetId};

use crate::keys::{ModelId, NodeKeys};

/// A live node as gossip describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// chitchat's identity: node id, generation, gossip address.
    pub id: ChitchatId,
    /// Its typed keys.
    pub keys: NodeKeys,
}

/// The members in chitchat's live set (this node included).
pub fn members(live: &BTreeMap<ChitchatId, NodeState>) -> Vec<Member> {
    live.iter().map(|(id, state)| Member { id: id.clone(), keys: NodeKeys::read(state) }).collect()
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

/// Why a member contributes no target (shown in `/v1/cluster`).
pub fn exclusion_reason(member: &Member, our_model: &ModelId) -> Option<&'static str> {
    if !member.keys.ready {
        return Some("not ready");
    }
    if member.keys.model_opt.as_ref() != Some(our_model) {
        return Some("serves another model");
    }
    None
}

/// The remote targets: every actor of every usable member other than `self_node` that has a
/// session. `now_unix_ms` dates gossiped loads; `now` is the gateway's clock.
pub fn remote_targets(
    members: &[Member],
    remote_actors: &[RemoteActor],
    self_node: &str,
    our_model: &ModelId,
    now: Instant,
    now_unix_ms: u64,
) -> Vec<Target> {
    let mut targets = Vec::new();
    for member in members {
        if &*member.id.node_id == self_node || exclusion_reason(member, our_model).is_some() {
            continue;
        }
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
                    as_of: now.checked_sub(load.age(now_unix_ms)).unwrap_or(now),
                },
                None => LoadSource::NeverPublished,
            };
            targets.push(Target {
                id: TargetId { node: member.id.node_id.clone(), actor: entry.name.as_str().into() },
                hop: remote.hop.clone(),
                load,
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
    use crate::keys::{ActorEntry, GossipedLoad};

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

    fn m1() -> ModelId {
        ModelId::parse("m@1").unwrap()
    }

    fn member(node: &str, ready: bool, model: &ModelId, backlog: u64) -> Member {
        let load =
            GossipedLoad { backlog_tokens: backlog, queued_texts: 1, tokens_per_sec: 1.0, published_unix_ms: 9_000 };
        Member {
            id: ChitchatId::new(node, 1, ([127, 0, 0, 1], 7280).into()),
            keys: NodeKeys {
                ready,
                http_addr_opt: None,
                actor_addr_opt: None,
                model_opt: Some(model.clone()),
                variant_opt: Some("int8".into()),
                actors: vec![ActorEntry { name: "a0".into(), pid: 7 }, ActorEntry { name: "a1".into(), pid: 8 }],
                loads: vec![("a0".into(), load)],
            },
        }
    }

    fn remote(node: &str, pid: u64) -> RemoteActor {
        RemoteActor { node: node.into(), generation_opt: None, pid, hop: Arc::new(NoHop) }
    }

    #[test]
    fn only_ready_same_model_members_with_sessions_become_targets() {
        let members = vec![
            member("me", true, &m1(), 0),
            member("b", true, &m1(), 640),
            member("c", false, &m1(), 0),
            member("d", true, &ModelId::parse("m@2").unwrap(), 0),
        ];
        let remotes = vec![remote("me", 7), remote("b", 7), remote("b", 8), remote("c", 7), remote("d", 7)];
        let now = Instant::now();
        let targets = remote_targets(&members, &remotes, "me", &m1(), now, 10_000);
        let ids: Vec<String> = targets.iter().map(|t| t.id.to_string()).collect();
        assert_eq!(ids, ["b/a0", "b/a1"]);
        let LoadSource::Gossiped { backlog_tokens, as_of } = &targets[0].load else { panic!("remote") };
        assert_eq!(*backlog_tokens, 640.0);
        assert_eq!(now.duration_since(*as_of), Duration::from_millis(1_000), "published at 9 000, now 10 000");
        assert_eq!(exclusion_reason(&members[2], &m1()), Some("not ready"));
        assert_eq!(exclusion_reason(&members[3], &m1()), Some("serves another model"));
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
}
