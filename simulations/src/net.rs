//! The simulated network: who can reach whom, with what delay and loss, on virtual time.
//!
//! One [`SimNet`] carries both kinds of traffic of the real cluster:
//! - gossip (UDP in a node): [`SimTransport`] implements chitchat's `Transport`, so the real
//!   chitchat runs over it; datagrams can be lost (`loss`), delayed (`gossip_delay`), cut by a
//!   partition (one-way too) or silently swallowed by a crashed or hung node;
//! - the inference hop (ractor_cluster TCP in a node): `hop.rs` asks [`SimNet::link`] what happens
//!   to a message: delivered after `hop_delay`, refused at once (the peer crashed: the TCP session
//!   is gone), or swallowed (partition or hung peer: TCP stays up and nothing comes back).
//!
//! Randomness comes from one seeded generator, drawn in event order.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

/// What happens to one message on one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Delivered after the delay.
    Deliver(Duration),
    /// Refused at once (the destination crashed).
    Refused,
    /// Swallowed without a trace (partition, hung node, lost datagram).
    Swallowed,
}

struct NetState {
    down: HashSet<usize>,
    hung: HashSet<usize>,
    blocked: HashSet<(usize, usize)>,
    loss: f64,
    gossip_delay: Duration,
    hop_delay: Duration,
    rng: SmallRng,
    sockets: HashMap<SocketAddr, (usize, mpsc::UnboundedSender<RecvOutcome>)>,
    /// Replies of swallowed messages: kept, so their callers hear nothing (not an error).
    swallowed: Vec<Box<dyn std::any::Any + Send>>,
}

/// The shared network; cheap to clone.
#[derive(Clone)]
pub struct SimNet(Arc<Mutex<NetState>>);

impl SimNet {
    /// A healthy network: no loss, the given delays.
    pub fn new(seed: u64, gossip_delay: Duration, hop_delay: Duration) -> Self {
        SimNet(Arc::new(Mutex::new(NetState {
            down: HashSet::new(),
            hung: HashSet::new(),
            blocked: HashSet::new(),
            loss: 0.0,
            gossip_delay,
            hop_delay,
            rng: SmallRng::seed_from_u64(seed),
            sockets: HashMap::new(),
            swallowed: Vec::new(),
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.0.lock().expect("network lock poisoned. This is a bug.")
    }

    /// Marks a node crashed (or back up).
    pub fn set_down(&self, node: usize, down: bool) {
        let mut state = self.state();
        if down {
            state.down.insert(node);
        } else {
            state.down.remove(&node);
        }
    }

    /// Marks a node hung (alive to TCP, silent) or resumed.
    pub fn set_hung(&self, node: usize, hung: bool) {
        let mut state = self.state();
        if hung {
            state.hung.insert(node);
        } else {
            state.hung.remove(&node);
        }
    }

    /// Whether a node is hung.
    pub fn is_hung(&self, node: usize) -> bool {
        self.state().hung.contains(&node)
    }

    /// Cuts `from -> to` (one way).
    pub fn block(&self, from: usize, to: usize) {
        self.state().blocked.insert((from, to));
    }

    /// Removes every partition.
    pub fn heal(&self) {
        self.state().blocked.clear();
    }

    /// Fraction of gossip datagrams lost.
    pub fn set_loss(&self, loss: f64) {
        self.state().loss = loss;
    }

    /// Delay of every gossip datagram.
    pub fn set_gossip_delay(&self, delay: Duration) {
        self.state().gossip_delay = delay;
    }

    /// Keeps `reply` (a reply port of a swallowed message) alive for the rest of the run.
    pub fn swallow(&self, reply: Box<dyn std::any::Any + Send>) {
        self.state().swallowed.push(reply);
    }

    /// The fate of a hop message `from -> to` (TCP: no loss).
    pub fn link(&self, from: usize, to: usize) -> Link {
        let state = self.state();
        if state.down.contains(&to) || state.down.contains(&from) {
            return Link::Refused;
        }
        if state.hung.contains(&to) || state.hung.contains(&from) || state.blocked.contains(&(from, to)) {
            return Link::Swallowed;
        }
        Link::Deliver(if from == to { Duration::ZERO } else { state.hop_delay })
    }

    /// The fate of a gossip datagram `from -> to` (UDP: may be lost).
    fn datagram(&self, from: usize, to: usize) -> Link {
        let mut state = self.state();
        if state.down.contains(&to)
            || state.down.contains(&from)
            || state.hung.contains(&to)
            || state.hung.contains(&from)
            || state.blocked.contains(&(from, to))
        {
            return Link::Swallowed;
        }
        let loss = state.loss;
        if loss > 0.0 && state.rng.random::<f64>() < loss {
            return Link::Swallowed;
        }
        Link::Deliver(state.gossip_delay)
    }
}

/// chitchat's transport over [`SimNet`]: one socket per gossip address, owned by a node index.
pub struct SimTransport {
    net: SimNet,
    node: usize,
}

impl SimTransport {
    /// The transport of node `node`.
    pub fn new(net: SimNet, node: usize) -> Self {
        Self { net, node }
    }
}

#[async_trait]
impl Transport for SimTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.net.state().sockets.insert(listen_addr, (self.node, tx.clone()));
        Ok(Box::new(SimSocket { net: self.net.clone(), node: self.node, addr: listen_addr, tx, rx }))
    }
}

struct SimSocket {
    net: SimNet,
    node: usize,
    addr: SocketAddr,
    /// Our own sender, to recognise our entry in the socket table.
    tx: mpsc::UnboundedSender<RecvOutcome>,
    rx: mpsc::UnboundedReceiver<RecvOutcome>,
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        // A restarted node may already have reopened this address: remove only our own entry.
        let mut state = self.net.state();
        if state.sockets.get(&self.addr).is_some_and(|(_, tx)| tx.same_channel(&self.tx)) {
            state.sockets.remove(&self.addr);
        }
    }
}

#[async_trait]
impl Socket for SimSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.addr)
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        let outcome = SendOutcome { num_bytes_sent: 0 };
        let Some((to_node, tx)) = self.net.state().sockets.get(&to).cloned() else {
            return Ok(outcome); // nobody listens there (yet, or any more)
        };
        let Link::Deliver(delay) = self.net.datagram(self.node, to_node) else {
            return Ok(outcome);
        };
        let from_addr = self.addr;
        let message = RecvOutcome { from_addr, envelope, num_bytes_received: 0 };
        if delay.is_zero() {
            let _ = tx.send(message);
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send(message);
            });
        }
        Ok(outcome)
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.rx.recv().await.ok_or_else(|| anyhow::anyhow!("simulated socket closed"))
    }
}
