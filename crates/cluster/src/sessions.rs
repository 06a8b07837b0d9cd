//! ractor_cluster sessions: the node server, dialing live members, and finding remote actors.
//!
//! Each node runs one `NodeServer` (TCP, `cluster.actor_listen`) whose handshake checks the shared
//! cookie. ractor_cluster does not reconnect by itself, so the cluster loop calls [`dial_missing`]
//! on every refresh: for each live member without a session, the node with the smaller id dials
//! (one connection per pair, no duplicate handshakes). Once a session is up, ractor_cluster syncs
//! process groups, and the other node's inference actors appear in [`INFERENCE_GROUP`] as remote
//! actors; [`remote_actors`] maps them to (senti node id, pid) through the session's peer name
//! (`<node id>@senti`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage};
use senti_engine::InferenceMsg;

use crate::view::{Member, RemoteActor};

/// The process group every inference actor joins.
pub const INFERENCE_GROUP: &str = "senti.inference";

/// The host part of every node name (ractor_cluster names are `name@host`).
const NAME_HOST: &str = "senti";

/// Starts the node server on `listen`; fails clearly if the port is taken.
pub async fn start_node_server(
    node_id: &str,
    cookie: &str,
    listen: SocketAddr,
) -> anyhow::Result<(ActorRef<NodeServerMessage>, tokio::task::JoinHandle<()>)> {
    // ractor_cluster's listener reports a bind failure only in its log; check first.
    std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen for remote actors on {listen} (`cluster.actor_listen`)"))?;
    let server = NodeServer::new(
        listen.port(),
        cookie.to_owned(),
        node_id.to_owned(),
        NAME_HOST.to_owned(),
        None,
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(listen.ip());
    let (actor, handle) =
        Actor::spawn(None, server, ()).await.context("cannot start the ractor_cluster node server")?;
    Ok((
        actor,
        tokio::spawn(async move {
            let _ = handle.await;
        }),
    ))
}

/// Peer senti node id of every session, by ractor_cluster's session node id.
pub async fn session_peers(server: &ActorRef<NodeServerMessage>) -> HashMap<u64, String> {
    let Ok(sessions) = ractor::call!(server, NodeServerMessage::GetSessions) else {
        return HashMap::new();
    };
    sessions
        .into_iter()
        .filter_map(|(session_node, info)| {
            let name = info.peer_name?.name;
            let node = name.rsplit_once('@').map_or(name.as_str(), |(node, _)| node).to_owned();
            Some((session_node, node))
        })
        .collect()
}

/// Dials every live member that has no session and a larger node id than ours.
pub async fn dial_missing(
    server: &ActorRef<NodeServerMessage>,
    members: &[Member],
    self_node: &str,
    peers: &HashMap<u64, String>,
) {
    for member in members {
        let node = &*member.id.node_id;
        if node <= self_node || peers.values().any(|p| p == node) {
            continue;
        }
        let Some(addr) = member.keys.actor_addr_opt else {
            continue;
        };
        match tokio::time::timeout(std::time::Duration::from_secs(2), ractor_cluster::client_connect(server, addr))
            .await
        {
            Ok(Ok(())) => tracing::info!(peer = node, %addr, "dialed remote-actor session"),
            Ok(Err(err)) => tracing::warn!(peer = node, %addr, error = ?err, "cannot dial remote-actor session"),
            Err(_) => tracing::warn!(peer = node, %addr, "dialing remote-actor session timed out"),
        }
    }
}

/// The remote members of [`INFERENCE_GROUP`], by peer node id and pid.
pub fn remote_actors(peers: &HashMap<u64, String>) -> Vec<RemoteActor> {
    ractor::pg::get_members(&INFERENCE_GROUP.to_owned())
        .into_iter()
        .filter_map(|cell| {
            let id = cell.get_id();
            if id.is_local() {
                return None;
            }
            let node = peers.get(&id.node())?.clone();
            let actor: ActorRef<InferenceMsg> = cell.into();
            Some(RemoteActor { node, pid: id.pid(), hop: Arc::new(actor) })
        })
        .collect()
}
