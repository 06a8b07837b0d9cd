//! chitchat nodes on loopback for tests: real UDP sockets, sealed ([`TestNode::sealed`]) or plain
//! ([`TestNode::plain`], chitchat's own `UdpTransport`, the control that shows an attack works),
//! and the one `wait_until` every eventual assertion goes through.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use chitchat::transport::{Transport, UdpTransport};
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};

use crate::{KeyringHandle, SealConfig, SealedUdpTransport, TransportStats};

/// The cluster id of test nodes.
pub const TEST_CLUSTER_ID: &str = "senti-test";

/// A loopback address with a port free right now (bound and released: the OS does not hand the
/// same port out again soon).
pub fn free_udp_addr() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    socket.local_addr().expect("local address of a bound socket")
}

/// chitchat's configuration of a test node: gossip every 100 ms, a node silent for about a second
/// is dead, forgotten 10 s later.
pub fn test_chitchat_config(name: &str, addr: SocketAddr, seeds: &[SocketAddr]) -> ChitchatConfig {
    ChitchatConfig {
        chitchat_id: ChitchatId::new(name.to_owned(), 1, addr),
        cluster_id: TEST_CLUSTER_ID.to_owned(),
        gossip_interval: Duration::from_millis(100),
        listen_addr: addr,
        seed_nodes: seeds.iter().map(SocketAddr::to_string).collect(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: 8.0,
            sampling_window_size: 1_000,
            max_interval: Duration::from_secs(1),
            initial_interval: Duration::from_millis(100),
            dead_node_grace_period: Duration::from_secs(10),
        },
        marked_for_deletion_grace_period: Duration::from_secs(60),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: chitchat::ProtocolVersion::V0,
    }
}

/// A chitchat node of a test.
pub struct TestNode {
    /// The running chitchat.
    pub handle: ChitchatHandle,
    /// Its id.
    pub id: ChitchatId,
    /// Its gossip address.
    pub addr: SocketAddr,
    /// Its transport when sealed.
    pub transport_opt: Option<SealedUdpTransport>,
}

impl TestNode {
    /// A sealed node with the default limits.
    pub async fn sealed(name: &str, keyring: &KeyringHandle, seeds: &[SocketAddr], keys: &[(&str, &str)]) -> TestNode {
        TestNode::sealed_with(name, keyring, seeds, keys, SealConfig::default()).await
    }

    /// A sealed node with `config` (its self id is filled in).
    pub async fn sealed_with(
        name: &str,
        keyring: &KeyringHandle,
        seeds: &[SocketAddr],
        keys: &[(&str, &str)],
        config: SealConfig,
    ) -> TestNode {
        let addr = free_udp_addr();
        let id = ChitchatId::new(name.to_owned(), 1, addr);
        let config = SealConfig { self_id_opt: Some(id), ..config };
        let transport = SealedUdpTransport::with_config(keyring.clone(), config).expect("valid test limits");
        TestNode::start(name, addr, seeds, keys, &transport, Some(transport.clone())).await
    }

    /// A node on chitchat's own unsealed `UdpTransport`.
    pub async fn plain(name: &str, seeds: &[SocketAddr], keys: &[(&str, &str)]) -> TestNode {
        TestNode::start(name, free_udp_addr(), seeds, keys, &UdpTransport, None).await
    }

    async fn start(
        name: &str,
        addr: SocketAddr,
        seeds: &[SocketAddr],
        keys: &[(&str, &str)],
        transport: &dyn Transport,
        transport_opt: Option<SealedUdpTransport>,
    ) -> TestNode {
        let config = test_chitchat_config(name, addr, seeds);
        let id = config.chitchat_id.clone();
        let keys = keys.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let handle = spawn_chitchat(config, keys, transport).await.expect("start a test chitchat node");
        TestNode { handle, id, addr, transport_opt }
    }

    /// Its transport's counters (sealed nodes only).
    pub fn stats(&self) -> TransportStats {
        self.transport_opt.as_ref().expect("a sealed test node").stats()
    }

    /// Node ids it considers live (itself included).
    pub async fn live(&self) -> BTreeSet<String> {
        let chitchat = self.handle.chitchat();
        let chitchat = chitchat.lock().await;
        chitchat.live_nodes().map(|id| id.node_id.to_string()).collect()
    }

    /// Node ids it holds a state for, live or not.
    pub async fn known(&self) -> BTreeSet<String> {
        let chitchat = self.handle.chitchat();
        let chitchat = chitchat.lock().await;
        chitchat.node_states().keys().map(|id| id.node_id.to_string()).collect()
    }

    /// The value of `key` of the node named `node`, as this node knows it.
    pub async fn key(&self, node: &str, key: &str) -> Option<String> {
        let chitchat = self.handle.chitchat();
        let chitchat = chitchat.lock().await;
        let state = chitchat.node_states().iter().find(|(id, _)| &*id.node_id == node)?.1;
        state.get(key).map(str::to_owned)
    }

    /// The heartbeat of the node named `node`, as this node knows it.
    pub async fn heartbeat(&self, node: &str) -> Option<u64> {
        let chitchat = self.handle.chitchat();
        let chitchat = chitchat.lock().await;
        let heartbeat = chitchat.node_states().iter().find(|(id, _)| &*id.node_id == node)?.1.heartbeat();
        // `Heartbeat`'s field is private; its wire form is the u64, little-endian.
        let mut bytes = Vec::new();
        chitchat::Serializable::serialize(&heartbeat, &mut bytes);
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    /// Every node it knows with every key, value and version: equal before and after an attack
    /// means the attack changed nothing (heartbeats, which move on their own, are left out).
    pub async fn fingerprint(&self) -> BTreeMap<String, Vec<(String, String, u64)>> {
        let chitchat = self.handle.chitchat();
        let chitchat = chitchat.lock().await;
        chitchat
            .node_states()
            .iter()
            .map(|(id, state)| {
                let keys = state
                    .key_values_including_deleted()
                    .map(|(key, value)| (key.to_owned(), value.value.clone(), value.version))
                    .collect();
                (format!("{}@{}", id.node_id, id.generation_id), keys)
            })
            .collect()
    }

    /// Sets one of its own keys.
    pub async fn set(&self, key: &str, value: &str) {
        self.handle.with_chitchat(|chitchat| chitchat.self_node_state().set(key, value)).await;
    }

    /// Whether its gossip task has ended (a panic ends it).
    pub async fn gossip_stopped(&self) -> bool {
        tokio::time::timeout(Duration::from_millis(1), self.handle.termination_watcher()).await.is_ok()
    }
}

pub use senti_engine::testsuite::wait_until;
