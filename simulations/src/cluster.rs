//! N senti nodes in one process: the real gateway actor, the real chitchat with senti's gossip
//! keys, load publisher and target refresh (`senti-cluster`), over the simulated network, with
//! simulated inference actors. Run it on a paused tokio clock (`start_paused = true`): time only
//! moves when every task waits, so a minute of cluster life takes a fraction of a second.
//!
//! Per node, exactly as `senti serve` wires it, except for the two replaced edges:
//! ```text
//! client ─Job─> GatewayActor ─SimHop─> SimActor (local, or on another node over SimNet)
//!                     ▲ SetRemoteTargets
//!               refresh_loop  <── chitchat live set (SimTransport) + reachable sim actors
//!               publish_loads ──> chitchat keys (load.a0, ...)
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chitchat::{spawn_chitchat, ChitchatHandle, ChitchatId};
use ractor::{Actor, ActorRef};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use senti_cluster::{
    chitchat_config, initial_keys, publish_loads, refresh_loop, ActorEntry, PublishPolicy, RemoteActor, Remotes,
};
use senti_cluster::{LocalModel, ModelId, Progress};
use senti_config::{ClusterConfig, Config};
use senti_engine::{EncodedTexts, RequestId};
use senti_routing::{
    GatewayActor, GatewayArgs, GatewayMsg, Job, LoadSource, RoutingParams, RoutingSnapshot, Target, TargetId,
};
use tokio::sync::{oneshot, watch};

use crate::actor::SimActor;
use crate::hop::SimHop;
use crate::net::{SimNet, SimTransport};
use crate::trace::{Event, Outcome, Trace};

/// The model every simulated node announces.
fn model() -> LocalModel {
    LocalModel { id: ModelId { name: "sim".into(), version: "1".into() }, compat: "sim".into(), variant: "int8".into() }
}

/// Settings of one simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every random choice the simulation makes.
    pub seed: u64,
    /// Nodes at the start.
    pub nodes: usize,
    /// Inference actors per node.
    pub actors_per_node: usize,
    /// Mean service time of one text.
    pub mean_service: Duration,
    /// Queue capacity of one actor (texts).
    pub queue_capacity: usize,
    /// Request deadline.
    pub request_timeout: Duration,
    /// One-way latency of an inference hop between nodes.
    pub hop_delay: Duration,
    /// One-way latency of a gossip datagram.
    pub gossip_delay: Duration,
    /// Each node's configuration, as `senti serve` would read it: gossip, routing and the
    /// advanced tuning values (addresses and cookie are set by the simulation).
    pub node: Config,
    /// A deliberate break for invariant tests: the gateway is given a deadline this much later
    /// than the client's. Zero in every real scenario.
    pub broken_deadline_slack: Duration,
    /// How long a live member's gossiped state may stand still before it gets no work
    /// (`senti_cluster::QUIET_LIMIT` in a node). Raised only to break that rule on purpose.
    pub quiet_limit: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            nodes: 3,
            actors_per_node: 2,
            mean_service: Duration::from_millis(1),
            queue_capacity: 256,
            request_timeout: Duration::from_secs(2),
            hop_delay: Duration::from_micros(200),
            gossip_delay: Duration::from_millis(1),
            node: {
                let mut node = Config::default();
                node.routing.attempt_timeout_ms = 500;
                node
            },
            broken_deadline_slack: Duration::ZERO,
            quiet_limit: senti_cluster::QUIET_LIMIT,
        }
    }
}

struct Node {
    id: String,
    up: bool,
    chitchat_opt: Option<ChitchatHandle>,
    gateway_opt: Option<ActorRef<GatewayMsg>>,
    actors: Vec<SimActor>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Dropped (signalled) when the node crashes: its in-flight client requests are lost.
    crashed: watch::Sender<bool>,
    /// Gateway counters of earlier incarnations.
    past: RoutingSnapshot,
    /// Requests this node's gateway accepted (all incarnations).
    accepted: u64,
    /// Times it was booted.
    incarnations: u32,
}

/// What the refresh loops can reach: each node's actors while it is up.
type Registry = Arc<Mutex<Vec<Option<(String, Vec<SimActor>)>>>>;

/// A simulated cluster.
pub struct SimCluster {
    /// Its settings.
    pub config: SimConfig,
    /// The network (faults are set here).
    pub net: SimNet,
    /// The event trace.
    pub trace: Trace,
    nodes: Vec<Node>,
    registry: Registry,
    rng: SmallRng,
    next_request: u64,
    clients: tokio::task::JoinSet<()>,
}

fn gossip_addr(node: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (node / 250) as u8, (node % 250) as u8 + 1], 7280))
}

impl SimCluster {
    /// Starts `config.nodes` nodes and waits until every node sees every other.
    pub async fn start(config: SimConfig) -> Self {
        let net = SimNet::new(config.seed, config.gossip_delay, config.hop_delay);
        let mut cluster = SimCluster {
            rng: SmallRng::seed_from_u64(config.seed ^ 0x5e47_1c0d),
            config,
            net,
            trace: Trace::default(),
            nodes: Vec::new(),
            registry: Arc::new(Mutex::new(Vec::new())),
            next_request: 0,
            clients: tokio::task::JoinSet::new(),
        };
        for _ in 0..cluster.config.nodes {
            cluster.add_node().await;
        }
        cluster
    }

    /// Nodes ever started (crashed ones included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no node was ever started.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether node `i` is up (not crashed).
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].up
    }

    /// A node id.
    pub fn node_id(&self, i: usize) -> &str {
        &self.nodes[i].id
    }

    /// Adds one node and starts it.
    pub async fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let (crashed, _) = watch::channel(false);
        self.nodes.push(Node {
            id: format!("sim-{i:03}"),
            up: false,
            chitchat_opt: None,
            gateway_opt: None,
            actors: Vec::new(),
            tasks: Vec::new(),
            crashed,
            past: RoutingSnapshot::default(),
            accepted: 0,
            incarnations: 0,
        });
        self.registry.lock().expect("registry lock poisoned. This is a bug.").push(None);
        self.boot(i).await;
        i
    }

    /// Starts node `i` (again): new actors, new gateway, new gossip generation.
    async fn boot(&mut self, i: usize) {
        self.net.set_down(i, false);
        self.net.set_hung(i, false);
        let generation = self.trace.now_us() + 1;
        let node_seed = self.config.seed ^ ((i as u64) << 32) ^ generation;
        let id = self.nodes[i].id.clone();
        let actors: Vec<SimActor> = (0..self.config.actors_per_node)
            .map(|k| SimActor::spawn(node_seed ^ k as u64, self.config.mean_service, self.config.queue_capacity))
            .collect();
        let local = actors
            .iter()
            .enumerate()
            .map(|(k, actor)| Target {
                id: TargetId { node: id.as_str().into(), actor: format!("a{k}").into() },
                hop: Arc::new(SimHop {
                    from: i,
                    to: i,
                    actor: k,
                    target: actor.clone(),
                    net: self.net.clone(),
                    trace: self.trace.clone(),
                }),
                load: LoadSource::Local(actor.gauge.clone()),
                model: model().id.to_string().into(),
                variant: model().variant.into(),
            })
            .collect();
        let args = GatewayArgs { local, params: RoutingParams::from_config(&self.config.node), seed: node_seed };
        let (gateway, _) = Actor::spawn(None, GatewayActor, args).await.expect("gateway starts. This is a bug.");

        let addr = gossip_addr(i);
        let mut node_config = self.config.node.clone();
        node_config.cluster = ClusterConfig {
            enabled: true,
            gossip_listen: addr,
            seeds: [0, 1].iter().filter(|&&s| s != i).map(|&s| gossip_addr(s).to_string()).collect(),
            cookie: "sim".into(),
            ..self.config.node.cluster.clone()
        };
        let entries: Vec<ActorEntry> =
            (0..actors.len()).map(|k| ActorEntry { name: format!("a{k}"), pid: k as u64 }).collect();
        let mut keys = initial_keys(None, addr, &model(), &entries);
        keys.retain(|(k, _)| k != "ready");
        keys.push(("ready".into(), "true".into()));
        let chitchat_id = ChitchatId::new(id.as_str(), generation, addr);
        let chitchat =
            spawn_chitchat(chitchat_config(&node_config, chitchat_id), keys, &SimTransport::new(self.net.clone(), i))
                .await
                .expect("simulated gossip starts. This is a bug.");
        let state = chitchat.chitchat();
        let watcher = state.lock().await.live_nodes_watcher();
        let gauges = actors.iter().enumerate().map(|(k, a)| (format!("a{k}"), a.gauge.clone())).collect();
        let policy = PublishPolicy::from_config(&node_config.advanced);
        let (registry, net, trace) = (self.registry.clone(), self.net.clone(), self.trace.clone());
        // Gateways reach no other gateway here: idle notices are not simulated on this network
        // (the routing-quality simulator models them).
        let reachable = move || {
            let actors = reachable_actors(&registry, &net, &trace, i);
            async move { Remotes { actors, gateways: Vec::new() } }
        };
        let tasks = vec![
            tokio::spawn(publish_loads(state, gauges, policy)),
            tokio::spawn(refresh_loop(
                watcher,
                reachable,
                gateway.clone(),
                id.clone(),
                model(),
                Progress::new(self.config.quiet_limit),
                Default::default(),
            )),
        ];
        self.registry.lock().expect("registry lock poisoned. This is a bug.")[i] = Some((id, actors.clone()));
        let node = &mut self.nodes[i];
        node.up = true;
        node.incarnations += 1;
        node.chitchat_opt = Some(chitchat);
        node.gateway_opt = Some(gateway);
        node.actors = actors;
        node.tasks = tasks;
        let (crashed, _) = watch::channel(false);
        node.crashed = crashed;
    }

    /// Kills node `i` abruptly: gossip stops, queued work is lost, its clients' requests too.
    pub async fn crash(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        // First the process is gone for its clients and the network; only then do we read its
        // counters (the await lets other tasks run, and nothing of node i may answer meanwhile).
        self.net.set_down(i, true);
        let _ = self.nodes[i].crashed.send(true);
        self.registry.lock().expect("registry lock poisoned. This is a bug.")[i] = None;
        let snapshot = self.snapshot(i).await;
        let node = &mut self.nodes[i];
        node.up = false;
        merge(&mut node.past, &snapshot);
        for actor in node.actors.drain(..) {
            actor.crash();
        }
        for task in node.tasks.drain(..) {
            task.abort();
        }
        if let Some(gateway) = node.gateway_opt.take() {
            gateway.kill();
        }
        if let Some(chitchat) = node.chitchat_opt.take() {
            let _ = chitchat.initiate_shutdown();
        }
    }

    /// Starts a crashed node again as a new generation.
    pub async fn restart(&mut self, i: usize) {
        if self.nodes[i].up {
            self.crash(i).await;
        }
        self.boot(i).await;
    }

    /// Hangs node `i` (SIGSTOP): alive to TCP, silent to everyone; or resumes it.
    pub fn hang(&mut self, i: usize, hung: bool) {
        self.net.set_hung(i, hung);
        for actor in &self.nodes[i].actors {
            actor.hung.store(hung, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Multiplies node `i`'s service time by `factor` (gray failure: slow but gossiping).
    pub fn slow(&mut self, i: usize, factor: f64) {
        for actor in &self.nodes[i].actors {
            actor.slowness.store((factor * 100.0) as u32, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Sends one request with `texts` texts to a random node that is up and not hung.
    pub fn submit(&mut self) {
        let candidates: Vec<usize> =
            (0..self.nodes.len()).filter(|&i| self.nodes[i].up && !self.net.is_hung(i)).collect();
        if candidates.is_empty() {
            return;
        }
        let entry = candidates[self.rng.random_range(0..candidates.len())];
        let request = self.next_request;
        self.next_request += 1;
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        self.trace.record(Event::Accepted {
            request,
            entry,
            deadline_us: self.trace.now_us() + self.config.request_timeout.as_micros() as u64,
        });
        let node = &mut self.nodes[entry];
        node.accepted += 1;
        let gateway = node.gateway_opt.clone().expect("an up node has a gateway. This is a bug.");
        let mut crashed = node.crashed.subscribe();
        let crashed_now = node.crashed.subscribe();
        let (tx, rx) = oneshot::channel();
        let (cancel, cancelled) = watch::channel(());
        let gateway_deadline = deadline + self.config.broken_deadline_slack;
        let texts = Arc::new(EncodedTexts::from_texts([vec![101, 102]]));
        let id = RequestId::parse(&format!("r{request}")).expect("a short ASCII id. This is a bug.");
        let job = Job::new(texts, gateway_deadline.into_std(), None, id, tx, cancelled);
        let trace = self.trace.clone();
        if gateway.cast(GatewayMsg::Classify(job)).is_err() {
            trace.record(Event::EntryLost { request });
            return;
        }
        self.clients.spawn(async move {
            // Biased, crash first: when the entry node dies, its dropped jobs also close `rx`,
            // and that is a lost connection, not a gateway that forgot to answer.
            let outcome = tokio::select! {
                biased;
                _ = crashed.wait_for(|&c| c) => {
                    trace.record(Event::EntryLost { request });
                    return;
                }
                answer = rx => match answer {
                    Ok(Ok(classified)) => {
                        Outcome::Ok { served_by: classified.served_by.to_string(), attempts: classified.attempts }
                    }
                    Ok(Err(err)) => Outcome::Err(err.to_string()),
                    Err(_) if *crashed_now.borrow() => {
                        trace.record(Event::EntryLost { request });
                        return;
                    }
                    Err(_) => Outcome::NoAnswer,
                },
            };
            trace.record(Event::Answered { request, outcome });
            drop(cancel);
        });
    }

    /// Open-loop Poisson arrivals at `rate` per second for `duration`. tokio's timer has
    /// millisecond resolution, so arrivals due within the current millisecond are sent together
    /// (at most 1 ms early) rather than one timer tick each.
    pub async fn load(&mut self, rate: f64, duration: Duration) {
        let until = tokio::time::Instant::now() + duration;
        let mut next = tokio::time::Instant::now();
        loop {
            let gap: f64 = -(1.0 - self.rng.random::<f64>()).ln() / rate;
            next += Duration::from_secs_f64(gap);
            if next >= until {
                tokio::time::sleep_until(until).await;
                return;
            }
            if next > tokio::time::Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(next).await;
            }
            self.submit();
        }
    }

    /// Waits until every client has its answer (or `limit` passes).
    pub async fn drain(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async { while self.clients.join_next().await.is_some() {} }).await;
    }

    /// Node ids that node `i` considers live (itself included); empty if it is down.
    pub async fn live_view(&self, i: usize) -> BTreeSet<String> {
        let Some(chitchat) = &self.nodes[i].chitchat_opt else {
            return BTreeSet::new();
        };
        let state = chitchat.chitchat();
        let guard = state.lock().await;
        guard.live_nodes().map(|id| id.node_id.to_string()).collect()
    }

    /// Node `i`'s gateway counters, earlier incarnations included.
    pub async fn snapshot(&self, i: usize) -> RoutingSnapshot {
        let node = &self.nodes[i];
        let mut total = node.past.clone();
        if let Some(gateway) = &node.gateway_opt {
            if let Ok(now) = ractor::call!(gateway, GatewayMsg::Snapshot) {
                merge(&mut total, &now);
                total.targets = now.targets;
            }
        }
        total
    }

    /// Times node `i` was started.
    pub fn incarnations(&self, i: usize) -> u32 {
        self.nodes[i].incarnations
    }

    /// Requests node `i`'s gateway accepted.
    pub fn accepted(&self, i: usize) -> u64 {
        self.nodes[i].accepted
    }

    /// Stops every node.
    pub async fn stop(mut self) {
        for i in 0..self.nodes.len() {
            self.crash(i).await;
        }
        self.clients.abort_all();
    }
}

fn merge(total: &mut RoutingSnapshot, more: &RoutingSnapshot) {
    total.retries += more.retries;
    total.hedges += more.hedges;
    total.ejections += more.ejections;
}

/// The actors node `from` has a session with: those of every other node that is up (a crashed
/// node's TCP session is gone; a partitioned or hung one's looks alive).
fn reachable_actors(registry: &Registry, net: &SimNet, trace: &Trace, from: usize) -> Vec<RemoteActor> {
    let registry = registry.lock().expect("registry lock poisoned. This is a bug.");
    let mut remote = Vec::new();
    for (to, entry) in registry.iter().enumerate() {
        let Some((node, actors)) = entry else { continue };
        if to == from {
            continue;
        }
        for (k, actor) in actors.iter().enumerate() {
            remote.push(RemoteActor {
                node: node.clone(),
                generation_opt: None,
                pid: k as u64,
                hop: Arc::new(SimHop {
                    from,
                    to,
                    actor: k,
                    target: actor.clone(),
                    net: net.clone(),
                    trace: trace.clone(),
                }),
            });
        }
    }
    remote
}
