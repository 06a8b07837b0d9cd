//! ractor_cluster sessions: the node server, the names that identify its sessions, dialing and
//! closing sessions as membership changes, and finding remote actors.
//!
//! Each node runs one `NodeServer` whose handshake checks the shared cookie; this node accepts
//! and dials the TCP (or TLS) connections itself on `cluster.actor_listen` (transport.rs).
//! ractor_cluster drops a session as "a connection to self" when the peer's name (`name@host`)
//! or connection string (`host:port`) equals its own, so both are unique by construction: the
//! name is `<node id>/<generation>@<actor advertise ip>:<actor advertise port>` (see
//! [`NodeName`]). The generation in the name also tells a restarted node's session from a stale
//! one of its previous incarnation.
//!
//! ractor_cluster does not reconnect by itself. A session whose link stops acknowledging its
//! data is aborted after `STALL_TIMEOUT` (transport.rs), and the session loop (lib.rs) makes
//! sessions follow chitchat: [`stale_sessions`] lists the sessions of nodes gossip declared dead or restarted (they
//! are closed at once, which fails their in-flight attempts over), and [`Dialer`] dials each live
//! member without a session, the node with the smaller id dialing (one connection per pair).
//! A member that returns is dialed as soon as gossip lists it again. Once a session is up,
//! ractor_cluster syncs process groups, the other node's inference actors appear in
//! [`INFERENCE_GROUP`] as remote actors, and [`remote_actors`] maps them to (node id, generation,
//! pid) through the session's peer name; its gateway appears in [`GATEWAY_GROUP`]
//! ([`remote_gateways`]).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chitchat::ChitchatId;
use ractor::{Actor, ActorCell, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage, NodeSessionMessage};
use senti_engine::InferenceMsg;

use crate::transport::{connect_timeout, Transport};
use crate::view::{Member, RemoteActor, RemoteGateway};

/// The process group every inference actor joins.
pub const INFERENCE_GROUP: &str = "senti.inference";

/// The process group every node's gateway joins: where other nodes' idle notices come from.
pub const GATEWAY_GROUP: &str = "senti.gateway";

/// A live member without a session is reported (log and `/v1/cluster`) only after this long:
/// a session normally comes up within a few milliseconds of the member appearing.
const SESSION_GRACE: Duration = Duration::from_secs(2);

/// The same problem with one member is logged again at most this often.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// A node's identity on the ractor_cluster wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeName {
    /// senti node id (`server.node_id`).
    pub node: String,
    /// Its chitchat generation (start time, unix ms).
    pub generation: u64,
}

impl NodeName {
    /// ractor_cluster's `node_name`, the part before `@`: `<node id>/<generation>`.
    fn ractor_node_name(&self) -> String {
        format!("{}/{}", self.node, self.generation)
    }

    /// Parses a ractor_cluster name `<node id>/<generation>@<host>`; `None` for any other name
    /// (a node of an older senti, which this node then never routes to).
    pub fn parse(name: &str) -> Option<Self> {
        let (node_name, _host) = name.rsplit_once('@')?;
        let (node, generation) = node_name.rsplit_once('/')?;
        let generation = generation.parse().ok()?;
        (!node.is_empty()).then(|| Self { node: node.to_owned(), generation })
    }
}

/// ractor_cluster's `hostname`: the actor advertise IP (IPv6 in brackets, so that the connection
/// string `host:port` reads as an address).
fn name_host(advertise: SocketAddr) -> String {
    match advertise {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    }
}

/// Starts the node server, named after `name` and `advertise`, and this node's own listener on
/// `listen` (transport.rs; fails clearly if the port is taken); the returned task runs both.
/// ractor_cluster's listener listens on an ephemeral port of 127.0.0.1 only.
pub async fn start_node_server(
    name: &NodeName,
    cookie: &str,
    listen: SocketAddr,
    advertise: SocketAddr,
    transport: Transport,
) -> anyhow::Result<(ActorRef<NodeServerMessage>, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for remote actors on {listen} (`cluster.actor_listen`)"))?;
    // The name's host carries the advertised port: ractor_cluster drops a session whose
    // connection string (`host:port`, port 0 here) equals its own.
    let host = format!("{}:{}", name_host(advertise), advertise.port());
    let server =
        NodeServer::new(0, cookie.to_owned(), name.ractor_node_name(), host, None, Some(NodeConnectionMode::Isolated))
            .with_listen_addr(std::net::IpAddr::from([127, 0, 0, 1]));
    let (actor, handle) =
        Actor::spawn(None, server, ()).await.context("cannot start the ractor_cluster node server")?;
    let accepting = tokio::spawn(transport.serve(listener, actor.clone()));
    Ok((
        actor,
        tokio::spawn(async move {
            let _ = handle.await;
            accepting.abort();
        }),
    ))
}

/// One authenticated session.
#[derive(Clone)]
pub struct Session {
    /// Who is at the other end.
    pub peer: NodeName,
    /// The session actor (stopping it closes the TCP connection and the peer's remote actors).
    pub actor: ActorRef<NodeSessionMessage>,
}

/// Every authenticated session with a senti peer, by ractor_cluster's session node id.
pub async fn sessions(server: &ActorRef<NodeServerMessage>) -> HashMap<u64, Session> {
    let Ok(sessions) = ractor::call!(server, NodeServerMessage::GetSessions) else {
        return HashMap::new();
    };
    sessions
        .into_iter()
        .filter_map(|(session_node, info)| {
            let peer = NodeName::parse(&info.peer_name?.name)?;
            Some((session_node, Session { peer, actor: info.actor }))
        })
        .collect()
}

/// Sessions to close, with the reason: their peer is in gossip's dead set, or gossip lists a newer
/// generation of it (a restart whose old session has not noticed yet). A session with a node that
/// gossip does not know yet is kept: its peer may simply have dialed before gossip spread. (Two
/// sessions with one peer never both reach this list: ractor_cluster's election keeps one when
/// the second authenticates.)
pub fn stale_sessions<'a>(
    peers: impl IntoIterator<Item = (u64, &'a NodeName)>,
    live: &[Member],
    dead: &[ChitchatId],
) -> Vec<(u64, &'static str)> {
    peers
        .into_iter()
        .filter_map(|(session, peer)| {
            let same_node = |id: &ChitchatId| *id.node_id == peer.node;
            if dead.iter().any(|id| same_node(id) && id.generation_id == peer.generation)
                && !live.iter().any(|m| same_node(&m.id) && m.id.generation_id == peer.generation)
            {
                return Some((session, "gossip declared the peer dead"));
            }
            if live.iter().any(|m| same_node(&m.id) && m.id.generation_id > peer.generation) {
                return Some((session, "the peer restarted (newer generation in gossip)"));
            }
            None
        })
        .collect()
}

/// Dials live members that have no session, without ever blocking the session loop: each dial
/// runs as its own task, at most one per member at a time, and remembers why it failed. Shared
/// between the session loop (writer) and `/v1/cluster` (reader of [`Dialer::problems`]).
#[derive(Clone)]
pub struct Dialer {
    server: ActorRef<NodeServerMessage>,
    self_name: NodeName,
    self_actor_addr: SocketAddr,
    redial: Duration,
    /// Plaintext or TLS.
    transport: Transport,
    /// Per member node id; written by the session loop and the dial tasks, read by reports.
    /// A std mutex: held for map operations only, never across an await.
    state: Arc<Mutex<HashMap<String, DialState>>>,
}

/// What the dialer knows about one member without a session.
#[derive(Debug, Default)]
struct DialState {
    /// Generation of the member this state is about (a restart starts afresh).
    generation: u64,
    /// Since when the member is live without a session.
    missing_since_opt: Option<Instant>,
    /// When the last dial started.
    last_dial_opt: Option<Instant>,
    /// A dial task is running.
    in_flight: bool,
    /// How the last finished dial went: TCP connected to the address, or why not.
    outcome_opt: Option<Result<SocketAddr, String>>,
    /// A reason found without dialing (no address, our own address, the peer dials).
    note_opt: Option<String>,
    /// When the current problem was last logged, and which problem it was.
    warned_opt: Option<(Instant, String)>,
}

impl DialState {
    fn problem(&self) -> String {
        match (&self.note_opt, &self.outcome_opt) {
            (Some(note), _) => note.clone(),
            (None, Some(Err(err))) => err.clone(),
            (None, Some(Ok(addr))) => format!(
                "TCP to {addr} connects but the handshake does not complete (another cookie? see both nodes' logs)"
            ),
            (None, None) => "no session yet".into(),
        }
    }
}

impl Dialer {
    /// A dialer for this node's server.
    pub fn new(
        server: ActorRef<NodeServerMessage>,
        self_name: NodeName,
        self_actor_addr: SocketAddr,
        redial: Duration,
        transport: Transport,
    ) -> Self {
        Self { server, self_name, self_actor_addr, redial, transport, state: Arc::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DialState>> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One round: forgets members that left, dials those without a session (the smaller node id
    /// dials; a member that just appeared at once, otherwise at most every `redial`), and logs
    /// every member still without a session after [`SESSION_GRACE`], at most every [`WARN_EVERY`].
    pub fn round(&self, members: &[Member], sessions: &HashMap<u64, Session>) {
        let now = Instant::now();
        let with_session: HashSet<&NodeName> = sessions.values().map(|s| &s.peer).collect();
        let mut state = self.lock();
        state.retain(|node, _| members.iter().any(|m| *m.id.node_id == *node));
        for member in members {
            let node = &*member.id.node_id;
            // A restart is briefly listed twice (until the old generation is declared dead):
            // only the newest generation is dialed.
            let superseded =
                members.iter().any(|m| *m.id.node_id == *node && m.id.generation_id > member.id.generation_id);
            if node == self.self_name.node || superseded {
                continue;
            }
            let name = NodeName { node: node.to_owned(), generation: member.id.generation_id };
            if with_session.contains(&name) {
                state.remove(node);
                continue;
            }
            let entry = state.entry(node.to_owned()).or_default();
            if entry.generation != name.generation {
                *entry = DialState { generation: name.generation, ..DialState::default() };
            }
            let missing_since = *entry.missing_since_opt.get_or_insert(now);
            entry.note_opt = None;
            if node < self.self_name.node.as_str() {
                entry.note_opt = Some(format!(
                    "waiting for it to dial this node's actor address {} (the node with the smaller id dials)",
                    self.self_actor_addr
                ));
            } else {
                match member.keys.actor_addr_opt {
                    None => entry.note_opt = Some("it gossips no actor_addr".into()),
                    Some(addr) if addr == self.self_actor_addr => {
                        entry.note_opt = Some(format!(
                            "it advertises this node's own actor address {addr} (`cluster.actor_advertise`)"
                        ));
                    }
                    Some(addr) => {
                        let due = entry.last_dial_opt.is_none_or(|at| now.duration_since(at) >= self.redial);
                        if due && !entry.in_flight {
                            entry.last_dial_opt = Some(now);
                            entry.in_flight = true;
                            self.spawn_dial(node.to_owned(), name.generation, addr);
                        }
                    }
                }
            }
            if now.duration_since(missing_since) < SESSION_GRACE {
                continue;
            }
            let problem = entry.problem();
            let warn = match &entry.warned_opt {
                Some((at, last)) => *last != problem || now.duration_since(*at) >= WARN_EVERY,
                None => true,
            };
            if warn {
                let missing_ms = now.duration_since(missing_since).as_millis() as u64;
                tracing::warn!(peer = node, missing_ms, reason = %problem, "no remote-actor session with a live member");
                entry.warned_opt = Some((now, problem));
            }
        }
    }

    fn spawn_dial(&self, node: String, generation: u64, addr: SocketAddr) {
        let (server, state, transport) = (self.server.clone(), self.state.clone(), self.transport.clone());
        let connect_limit = connect_timeout(self.redial);
        tokio::spawn(async move {
            let outcome = transport.dial(&server, addr, connect_limit).await.map(|()| {
                tracing::debug!(peer = %node, %addr, "dialed remote-actor session");
                addr
            });
            let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(entry) = state.get_mut(&node).filter(|e| e.generation == generation) {
                entry.in_flight = false;
                entry.outcome_opt = Some(outcome);
            }
        });
    }

    /// Why each live member past [`SESSION_GRACE`] has no session, by node id.
    pub fn problems(&self) -> HashMap<String, String> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, s)| s.missing_since_opt.is_some_and(|at| now.duration_since(at) >= SESSION_GRACE))
            .map(|(node, s)| (node.clone(), s.problem()))
            .collect()
    }
}

/// Closes the given sessions (their remote actors stop with them, so attempts in flight on them
/// fail and are placed again at once).
pub fn close(sessions: &HashMap<u64, Session>, stale: &[(u64, &'static str)]) {
    for (id, reason) in stale {
        if let Some(session) = sessions.get(id) {
            tracing::info!(peer = %session.peer.node, generation = session.peer.generation, reason, "closing remote-actor session");
            session.actor.stop(Some((*reason).to_owned()));
        }
    }
}

/// The members of process group `group` on other nodes, each with the peer of its session
/// (members of a node without a session are left out).
fn remote_members<'a>(group: &str, sessions: &'a HashMap<u64, Session>) -> Vec<(ActorCell, &'a NodeName)> {
    ractor::pg::get_members(&group.to_owned())
        .into_iter()
        .filter(|cell| !cell.get_id().is_local())
        .filter_map(|cell| Some((cell.clone(), &sessions.get(&cell.get_id().node())?.peer)))
        .collect()
}

/// The remote members of [`GATEWAY_GROUP`], by peer node id and generation.
pub fn remote_gateways(sessions: &HashMap<u64, Session>) -> Vec<RemoteGateway> {
    remote_members(GATEWAY_GROUP, sessions)
        .into_iter()
        .map(|(cell, peer)| RemoteGateway {
            node: peer.node.clone(),
            generation_opt: Some(peer.generation),
            gateway: cell.into(),
        })
        .collect()
}

/// The remote members of [`INFERENCE_GROUP`], by peer node id, generation and pid.
pub fn remote_actors(sessions: &HashMap<u64, Session>) -> Vec<RemoteActor> {
    remote_members(INFERENCE_GROUP, sessions)
        .into_iter()
        .map(|(cell, peer)| {
            let pid = cell.get_id().pid();
            let actor: ActorRef<InferenceMsg> = cell.into();
            RemoteActor { node: peer.node.clone(), generation_opt: Some(peer.generation), pid, hop: Arc::new(actor) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::NodeKeys;

    fn member(node: &str, generation: u64) -> Member {
        Member {
            id: ChitchatId::new(node, generation, ([10, 0, 0, 1], 7280).into()),
            keys: NodeKeys {
                ready: true,
                http_addr_opt: None,
                actor_addr_opt: None,
                model_opt: None,
                variant_opt: None,
                compat_opt: None,
                actors: Vec::new(),
                loads: Vec::new(),
            },
            quiet: false,
        }
    }

    fn name(node: &str, generation: u64) -> NodeName {
        NodeName { node: node.into(), generation }
    }

    #[test]
    fn names_are_unique_per_node_generation_and_address_and_parse_back() {
        let a = name("senti-1", 1_700_000_000_000);
        assert_eq!(a.ractor_node_name(), "senti-1/1700000000000");
        assert_eq!(NodeName::parse("senti-1/1700000000000@10.77.0.1"), Some(a));
        assert_eq!(NodeName::parse("a/b/7@[::1]"), Some(name("a/b", 7)), "the last / splits");
        assert_eq!(NodeName::parse("senti-1@senti"), None, "an older senti's name");
        assert_eq!(NodeName::parse("/7@h"), None);
        assert_eq!(NodeName::parse("n/x@h"), None);
        assert_eq!(name_host(([10, 77, 0, 1], 7281).into()), "10.77.0.1");
        assert_eq!(name_host("[::1]:7281".parse().unwrap()), "[::1]");
    }

    #[test]
    fn sessions_of_dead_or_restarted_peers_are_stale_unknown_ones_are_kept() {
        let (b1, b2, c1, d1) = (name("b", 1), name("b", 2), name("c", 1), name("d", 1));
        let live = vec![member("a", 1), member("b", 2)];
        let dead = vec![ChitchatId::new("c", 1, ([10, 0, 0, 3], 7280).into())];
        let sessions = [(1, &b1), (2, &b2), (3, &c1), (4, &d1)];
        assert_eq!(
            stale_sessions(sessions, &live, &dead),
            [(1, "the peer restarted (newer generation in gossip)"), (3, "gossip declared the peer dead")]
        );
        // Back from the dead (same generation live again): kept.
        let live = vec![member("c", 1)];
        assert!(stale_sessions([(3, &c1)], &live, &dead).is_empty());
    }
}
