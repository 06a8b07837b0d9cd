//! senti's cluster layer: gossip membership (chitchat), load publication, and ractor_cluster
//! sessions that make other nodes' inference actors targets of this node's gateway actor.
//!
//! ```text
//! Cluster
//!  ├── chitchat (UDP)        membership, failure detection, typed keys (keys.rs), over a sealed
//!  │                         transport: every datagram authenticated and encrypted with the
//!  │                         keys of `cluster.key_file` (seal.rs, key_file.rs)
//!  ├── gossip supervisor     chitchat's task ended or panicked -> readiness fails with the
//!  │                         reason and [`Cluster::failure`] resolves (the node then exits)
//!  ├── publisher task        local actors' load -> gossip, bounded rate + hysteresis (publish.rs)
//!  ├── NodeServer (TCP)      ractor_cluster sessions, cookie handshake (sessions.rs); this node
//!  │                         accepts and dials their connections itself, plain or TLS, and
//!  │                         aborts one whose data stays unacknowledged for 1 s (transport.rs)
//!  ├── session task          sessions follow membership: those of dead or restarted members are
//!  │                         closed, live members without one are dialed (ractor_cluster does
//!  │                         not reconnect by itself), on every membership change and every
//!  │                         `advanced.redial_interval_ms`
//!  └── refresh task          live members x sessions x process groups -> GatewayMsg::SetRemoteTargets,
//!                                                                       SetNoticeRecipients
//!                            (view.rs), on every gossip change and every 250 ms
//! ```
//! chitchat is the one source of truth for who is alive: a node it declares dead stops being a
//! target at the next refresh, whatever state its TCP session is in.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod guard;
mod key_file;
mod keyring;
mod keys;
mod publish;
mod seal;
mod sessions;
#[cfg(feature = "testsuite")]
pub mod testsuite;
pub mod tls;
mod transport;
mod view;
mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use anyhow::Context;
use chitchat::{spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use senti_config::Config;
use senti_engine::{Engine, LoadGauge, NodeState, Readiness};
use senti_routing::{Gateway, GatewayMsg};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};
use transport::Transport;
use utoipa::ToSchema;

pub use guard::{Guard, GuardError, GuardLimits, LimitsError};
pub use key_file::{add_key_to_file, create_key_file, parse_key_lines, read_key_file, KeyFileError};
pub use keyring::{Key, KeyError, KeyId, Keyring, KeyringHandle, MAX_KEYS};
pub use keys::{set_ready, unix_ms_now, ActorEntry, GossipedLoad, LocalModel, ModelId, NodeKeys};
pub use publish::{should_publish, PublishPolicy, Published};
pub use seal::{
    open as open_datagram, seal as seal_datagram, Admission, ChitchatCodec, CodecError, OpenError, Opened,
    RejectReason, Rejection, ReplayError, ReplayWindow, SealConfig, SealError, SealedUdpTransport, TransportStats,
    MAX_SEALED_MESSAGE, SEAL_OVERHEAD,
};
pub use sessions::{NodeName, GATEWAY_GROUP, INFERENCE_GROUP};
pub use tls::{create_tls_dir, SessionTls, TlsDirError};
pub use view::{
    exclusion_reason, members, notice_recipients, remote_targets, Member, Progress, RemoteActor, RemoteGateway,
    Remotes, QUIET_LIMIT,
};

/// How often the remote targets are rebuilt even without a gossip change (sessions come and go).
const REFRESH_INTERVAL: Duration = Duration::from_millis(250);

/// This node's membership in the cluster. Without [`Cluster::leave`] its tasks run until the
/// process ends.
pub struct Cluster {
    chitchat: ChitchatHandle,
    /// Seals and opens every gossip datagram; its counters are the rejection statistics.
    transport: SealedUdpTransport,
    node_server: ActorRef<NodeServerMessage>,
    dialer: sessions::Dialer,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    self_id: ChitchatId,
    model: LocalModel,
    gossip_interval: Duration,
    /// Set by [`Cluster::leave`] before it stops gossip, so the supervisor takes that end for
    /// what it is rather than a failure.
    leaving: Arc<AtomicBool>,
    /// Written once by the gossip supervisor: why gossip stopped, if it did on its own.
    failure: watch::Receiver<Option<String>>,
    /// Live members whose gossiped state stopped advancing ([`view::Progress`]), as the refresh
    /// loop last found them.
    quiet: QuietMembers,
}

/// The members the refresh loop found quiet, shared with `/v1/cluster`'s report.
pub type QuietMembers = Arc<std::sync::Mutex<HashSet<ChitchatId>>>;

/// `/v1/cluster`'s view of the membership.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterReport {
    /// This node's id.
    pub node_id: String,
    /// This node's generation (start time, unix ms).
    pub generation: u64,
    /// Live members, this node included.
    pub members: Vec<MemberReport>,
    /// Nodes the failure detector declared dead and has not forgotten yet.
    pub dead: Vec<DeadReport>,
}

/// One live member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MemberReport {
    /// Node id.
    pub node_id: String,
    /// Incarnation (start time, unix ms).
    pub generation: u64,
    /// Gossip address.
    #[schema(value_type = String, example = "127.0.0.1:7280")]
    pub gossip_addr: SocketAddr,
    /// `ready` key.
    pub ready: bool,
    /// HTTP address.
    #[schema(value_type = Option<String>, example = "127.0.0.1:7280")]
    pub http_addr: Option<SocketAddr>,
    /// ractor_cluster address.
    #[schema(value_type = Option<String>, example = "127.0.0.1:7280")]
    pub actor_addr: Option<SocketAddr>,
    /// `name@version`.
    pub model: Option<String>,
    /// ONNX variant its actors run (`int8`, `fp32`); nodes of one `name@version` share work
    /// whatever their variants.
    pub variant: Option<String>,
    /// Why it serves no traffic from this node, if it does not.
    pub excluded: Option<String>,
    /// A remote-actor session with it is up (always true for this node itself).
    pub session: bool,
    /// Why there is no session, once it has been missing for 2 s (also logged as a warning).
    pub session_error: Option<String>,
    /// Its inference actors and their gossiped load.
    pub actors: Vec<ActorReport>,
}

/// One actor of a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActorReport {
    /// Name on its node.
    pub name: String,
    /// Backlog tokens as gossiped.
    pub backlog_tokens: Option<u64>,
    /// Queued texts as gossiped.
    pub queued_texts: Option<u64>,
    /// Throughput as gossiped.
    pub tokens_per_sec: Option<f64>,
    /// Age of the gossiped value in milliseconds.
    pub age_ms: Option<u64>,
}

/// A dead node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadReport {
    /// Node id.
    pub node_id: String,
    /// Its last generation.
    pub generation: u64,
}

impl Cluster {
    /// Joins the cluster: starts gossip (sealed with `keyring`, from `cluster.key_file`), the
    /// node server, and the tasks that publish readiness and load, keep the gateway's remote
    /// targets current and watch the gossip task. The `ready` key follows `readiness` from then on.
    pub async fn start(
        config: &Config,
        keyring: KeyringHandle,
        engine: &Engine,
        gateway: &Gateway,
        readiness: Readiness,
        http_addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        let c = &config.cluster;
        let a = &config.advanced;
        let node_id = config.node_id();
        let manifest = engine.bundle().manifest();
        let model = LocalModel {
            id: ModelId { name: manifest.name.clone(), version: manifest.version.clone() },
            compat: manifest.compat(),
            variant: engine.bundle().variant().to_owned(),
        };
        let actors = engine.actors();
        ractor::pg::join(INFERENCE_GROUP.to_owned(), actors.iter().map(|a| a.actor.get_cell()).collect());
        ractor::pg::join(GATEWAY_GROUP.to_owned(), vec![gateway.actor().get_cell()]);

        let generation = keys::unix_ms_now();
        let name = NodeName { node: node_id.clone(), generation };
        let session_transport = match &c.tls_dir {
            Some(dir) => Transport::Tls(tls::SessionTls::load(dir)?),
            None => {
                tracing::warn!(
                    "remote-actor sessions are plaintext: texts and scores cross the network readable (set \
                     `cluster.tls_dir`, written by `senti cluster tls --out DIR`)"
                );
                Transport::Plain
            }
        };
        let (node_server, server_task) = sessions::start_node_server(
            &name,
            &c.cookie,
            c.actor_listen,
            c.actor_advertise_addr(),
            session_transport.clone(),
        )
        .await?;
        let self_id = ChitchatId::new(node_id.as_str(), generation, c.gossip_advertise_addr());
        let entries: Vec<ActorEntry> =
            actors.iter().map(|a| ActorEntry { name: a.name.clone(), pid: a.actor.get_id().pid() }).collect();
        let http_advertise = c.http_advertise_addr(http_addr);
        let initial = initial_keys(Some(http_advertise), c.actor_advertise_addr(), &model, &entries);
        let gossip_interval = Duration::from_millis(a.gossip_interval_ms);
        let primary = keyring.primary_id();
        let seal_config = SealConfig { self_id_opt: Some(self_id.clone()), ..SealConfig::default() };
        let transport = SealedUdpTransport::with_config(keyring, seal_config)
            .context("the default gossip limits are invalid. This is a bug.")?;
        seal::register_metrics();
        let chitchat = spawn_chitchat(chitchat_config(config, self_id.clone()), initial, &transport)
            .await
            .with_context(|| format!("cannot start gossip on {} (`cluster.gossip_listen`)", c.gossip_listen))?;
        let state = chitchat.chitchat();
        let watcher = state.lock().await.live_nodes_watcher();

        let leaving = Arc::new(AtomicBool::new(false));
        let quiet = QuietMembers::default();
        let (failure_tx, failure) = watch::channel(None);
        let policy = PublishPolicy::from_config(a);
        let redial = Duration::from_millis(a.redial_interval_ms);
        let dialer =
            sessions::Dialer::new(node_server.clone(), name, c.actor_advertise_addr(), redial, session_transport);
        let gauges = actors.iter().map(|a| (a.name.clone(), a.gauge.clone())).collect();
        let server = node_server.clone();
        let remotes = move || {
            let server = server.clone();
            async move {
                let sessions = sessions::sessions(&server).await;
                Remotes { actors: sessions::remote_actors(&sessions), gateways: sessions::remote_gateways(&sessions) }
            }
        };
        let tasks = vec![
            server_task,
            tokio::spawn(supervise_gossip(
                chitchat.termination_watcher(),
                leaving.clone(),
                readiness.clone(),
                failure_tx,
            )),
            tokio::spawn(publish_readiness(state.clone(), readiness)),
            tokio::spawn(publish_loads(state.clone(), gauges, policy)),
            tokio::spawn(session_loop(state.clone(), node_server.clone(), dialer.clone(), redial)),
            tokio::spawn(refresh_loop(
                watcher,
                remotes,
                gateway.actor().clone(),
                node_id.clone(),
                model.clone(),
                Progress::default(),
                quiet.clone(),
            )),
        ];
        tracing::info!(node = %node_id, generation, gossip = %c.gossip_advertise_addr(), actors = %c.actor_advertise_addr(), http = %http_advertise, seeds = ?c.seeds, gossip_key = %primary, "joined the cluster");
        Ok(Self {
            chitchat,
            transport,
            node_server,
            dialer,
            tasks,
            self_id,
            model,
            gossip_interval,
            leaving,
            failure,
            quiet,
        })
    }

    /// Resolves, with the reason, if gossip stops on its own (its task ended or panicked); never
    /// after [`Cluster::leave`]. By then readiness has failed with the same reason.
    pub fn failure(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut failure = self.failure.clone();
        async move {
            let reason_opt = failure.wait_for(Option::is_some).await.ok().and_then(|reason| reason.clone());
            match reason_opt {
                Some(reason) => reason,
                // The supervisor is gone without a verdict: only `leave` aborts it.
                None => std::future::pending().await,
            }
        }
    }

    /// What the sealed gossip transport did so far (datagrams sealed, accepted, rejected).
    pub fn transport_stats(&self) -> TransportStats {
        self.transport.stats()
    }

    /// The membership as this node sees it.
    pub async fn report(&self) -> ClusterReport {
        let sessions = sessions::sessions(&self.node_server).await;
        let problems = self.dialer.problems();
        let state = self.chitchat.chitchat();
        let chitchat = state.lock().await;
        let now_ms = keys::unix_ms_now();
        let live: BTreeMap<ChitchatId, chitchat::NodeState> =
            chitchat.live_nodes().filter_map(|id| Some((id.clone(), chitchat.node_state(id)?.clone()))).collect();
        let quiet = self.quiet.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let members = view::members(&live, &quiet)
            .into_iter()
            .map(|m| {
                let is_self = m.id == self.self_id;
                MemberReport {
                    node_id: m.id.node_id.to_string(),
                    generation: m.id.generation_id,
                    gossip_addr: m.id.gossip_advertise_addr,
                    ready: m.keys.ready,
                    http_addr: m.keys.http_addr_opt,
                    actor_addr: m.keys.actor_addr_opt,
                    model: m.keys.model_opt.as_ref().map(ModelId::to_string),
                    variant: m.keys.variant_opt.clone(),
                    excluded: exclusion_reason(&m, &self.model).map(str::to_owned),
                    session: is_self
                        || sessions
                            .values()
                            .any(|s| s.peer.node == *m.id.node_id && s.peer.generation == m.id.generation_id),
                    session_error: problems.get(&*m.id.node_id).filter(|_| !is_self).cloned(),
                    actors: m
                        .keys
                        .actors
                        .iter()
                        .map(|a| {
                            let load_opt = m.keys.load(&a.name);
                            ActorReport {
                                name: a.name.clone(),
                                backlog_tokens: load_opt.map(|l| l.backlog_tokens),
                                queued_texts: load_opt.map(|l| l.queued_texts),
                                tokens_per_sec: load_opt.map(|l| l.tokens_per_sec),
                                age_ms: load_opt.map(|l| l.age(now_ms).as_millis() as u64),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        let dead = chitchat
            .dead_nodes()
            .map(|id| DeadReport { node_id: id.node_id.to_string(), generation: id.generation_id })
            .collect();
        ClusterReport {
            node_id: self.self_id.node_id.to_string(),
            generation: self.self_id.generation_id,
            members,
            dead,
        }
    }

    /// Leaves gracefully: says not-ready (peers stop sending new work), waits for that to
    /// spread, then stops gossip and the sessions.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        keys::set_ready(self.chitchat.chitchat().lock().await.self_node_state(), false);
        tokio::time::sleep(self.gossip_interval * 3).await;
        for task in &self.tasks {
            task.abort();
        }
        if let Err(err) = self.chitchat.initiate_shutdown() {
            tracing::warn!(error = %err, "gossip did not shut down cleanly");
        }
        self.node_server.stop(None);
        tracing::info!("left the cluster");
    }
}

/// chitchat's configuration from `[cluster]` and `[advanced]`.
pub fn chitchat_config(config: &Config, self_id: ChitchatId) -> ChitchatConfig {
    let (c, a) = (&config.cluster, &config.advanced);
    ChitchatConfig {
        chitchat_id: self_id,
        cluster_id: gossip_cluster_id(c),
        gossip_interval: Duration::from_millis(a.gossip_interval_ms),
        listen_addr: c.gossip_listen,
        seed_nodes: c.seeds.clone(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: a.phi_threshold,
            sampling_window_size: 1_000,
            max_interval: Duration::from_millis(a.failure_max_interval_ms),
            initial_interval: Duration::from_millis(a.failure_initial_interval_ms),
            dead_node_grace_period: Duration::from_millis(a.dead_node_grace_ms),
        },
        marked_for_deletion_grace_period: Duration::from_secs(3_600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: chitchat::ProtocolVersion::V0,
    }
}

/// The cluster id chitchat compares and sends in clear in every message: `cluster.cluster_id`
/// as configured, nothing derived from a secret. Nodes of another cluster are kept out by the
/// sealed transport (they hold no key of this cluster's ring), not by this id.
pub fn gossip_cluster_id(c: &senti_config::ClusterConfig) -> String {
    c.cluster_id.clone()
}

/// Watches chitchat's task: if it ends or panics while the node is not leaving, readiness fails
/// with the reason (`/readyz` 503, gossip `ready=false` where it can still be heard) and the
/// reason goes to `failure` for the node to exit on. chitchat is not restarted in process: a
/// fresh start (the service manager's restart) is simpler to trust than a half-torn-down state.
pub async fn supervise_gossip(
    termination: impl std::future::Future<Output = anyhow::Result<()>>,
    leaving: Arc<AtomicBool>,
    readiness: Readiness,
    failure: watch::Sender<Option<String>>,
) {
    let result = termination.await;
    if leaving.load(Ordering::SeqCst) {
        return;
    }
    let reason = match result {
        Ok(()) => "gossip stopped".to_owned(),
        Err(err) => format!("gossip stopped: {err:#}"),
    };
    tracing::error!(%reason, "the gossip task ended; this node can no longer see or be seen by the cluster");
    readiness.set(NodeState::Failed(reason.clone()));
    failure.send_replace(Some(reason));
}

/// The keys a node starts with (not ready until the known-answer check passes).
pub fn initial_keys(
    http_addr_opt: Option<SocketAddr>,
    actor_addr: SocketAddr,
    model: &LocalModel,
    actors: &[ActorEntry],
) -> Vec<(String, String)> {
    let mut initial = vec![
        (keys::READY.to_owned(), "false".to_owned()),
        (keys::ACTOR_ADDR.to_owned(), actor_addr.to_string()),
        (keys::MODEL.to_owned(), model.id.to_string()),
        (keys::VARIANT.to_owned(), model.variant.clone()),
        (keys::COMPAT.to_owned(), model.compat.clone()),
        (keys::ACTORS.to_owned(), keys::format_actors(actors)),
    ];
    if let Some(http_addr) = http_addr_opt {
        initial.push((keys::HTTP_ADDR.to_owned(), http_addr.to_string()));
    }
    initial
}

/// Keeps the `ready` key equal to the node's [`Readiness`], forever: only ready nodes receive
/// work from other nodes.
pub async fn publish_readiness(state: Arc<Mutex<Chitchat>>, readiness: Readiness) {
    let mut changes = readiness.subscribe();
    loop {
        let ready = readiness.is_ready();
        keys::set_ready(state.lock().await.self_node_state(), ready);
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Publishes each local actor's load when [`should_publish`] says so, forever.
pub async fn publish_loads(state: Arc<Mutex<Chitchat>>, actors: Vec<(String, Arc<LoadGauge>)>, policy: PublishPolicy) {
    let mut last: HashMap<String, Published> = HashMap::new();
    let mut tick = tokio::time::interval(policy.min_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now().into_std();
        let now_ms = keys::unix_ms_now();
        let mut updates = Vec::new();
        for (name, gauge) in &actors {
            let load = gauge.snapshot();
            let backlog_tokens = load.backlog_tokens() as u64;
            if should_publish(last.get(name), backlog_tokens, now, &policy) {
                let value = GossipedLoad {
                    backlog_tokens,
                    queued_texts: load.queued_texts as u64,
                    tokens_per_sec: load.tokens_per_sec,
                    published_unix_ms: now_ms,
                };
                updates.push((keys::load_key(name), value.format()));
                last.insert(name.clone(), Published { backlog_tokens, at: now });
            }
        }
        if updates.is_empty() {
            continue;
        }
        metrics::counter!("senti_gossip_load_updates_total").increment(updates.len() as u64);
        let mut chitchat = state.lock().await;
        for (key, value) in updates {
            chitchat.self_node_state().set(key, value);
        }
    }
}

/// Makes sessions follow membership, forever: on every change of the live set (a member joined,
/// left, died or came back) and every `interval`, closes the sessions of members gossip declared
/// dead or restarted and dials live members without a session (sessions.rs).
async fn session_loop(
    state: Arc<Mutex<Chitchat>>,
    server: ActorRef<NodeServerMessage>,
    dialer: sessions::Dialer,
    interval: Duration,
) {
    let mut watcher = state.lock().await.live_nodes_watcher();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ids: Vec<ChitchatId> = Vec::new();
    loop {
        let by_tick = tokio::select! {
            changed = watcher.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
            _ = tick.tick() => true,
        };
        let live = watcher.borrow_and_update().clone();
        // The watcher also fires for every key update of a live node; only a change of the
        // members themselves (or the tick) is worth a round.
        let ids: Vec<ChitchatId> = live.keys().cloned().collect();
        if !by_tick && ids == last_ids {
            continue;
        }
        last_ids = ids;
        let dead: Vec<ChitchatId> = state.lock().await.dead_nodes().cloned().collect();
        let members = view::members(&live, &HashSet::new());
        let current = sessions::sessions(&server).await;
        let stale = sessions::stale_sessions(current.iter().map(|(id, s)| (*id, &s.peer)), &members, &dead);
        sessions::close(&current, &stale);
        dialer.round(&members, &current);
    }
}

/// Most distinct models `senti_cluster_members` shows; more are counted as `model="other"`.
const MAX_MODELS_SHOWN: usize = 16;

/// Sets `senti_cluster_members{model="name@version"}`: the live members serving each model, as
/// this node sees them (mixed versions during a rolling upgrade show as several series). A model
/// no member serves any more is set to 0; `shown` remembers the labels set so far.
fn publish_member_models(members: &[Member], shown: &mut BTreeSet<String>) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for member in members {
        let model = member.keys.model_opt.as_ref().map_or_else(|| "none".to_owned(), ModelId::to_string);
        let label = if counts.contains_key(&model) || counts.len() < MAX_MODELS_SHOWN { model } else { "other".into() };
        *counts.entry(label).or_default() += 1;
    }
    for model in shown.iter().filter(|model| !counts.contains_key(*model)) {
        metrics::gauge!("senti_cluster_members", "model" => model.clone()).set(0.0);
    }
    for (model, count) in &counts {
        metrics::gauge!("senti_cluster_members", "model" => model.clone()).set(*count as f64);
    }
    *shown = counts.into_keys().collect();
}

/// Rebuilds the gateway's remote targets and the recipients of its idle notices on every gossip
/// change and every [`REFRESH_INTERVAL`], until the gateway stops. `remotes` lists the actors and
/// gateways reachable through sessions (the ractor process groups in a node; the simulated network
/// in simulations).
pub async fn refresh_loop<F, Fut>(
    mut watcher: tokio::sync::watch::Receiver<BTreeMap<ChitchatId, chitchat::NodeState>>,
    mut remotes: F,
    gateway: ActorRef<GatewayMsg>,
    self_node: String,
    model: LocalModel,
    mut progress: Progress,
    quiet_shared: QuietMembers,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Remotes>,
{
    let mut tick = tokio::time::interval(REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut models_shown = BTreeSet::new();
    loop {
        tokio::select! {
            changed = watcher.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let live = watcher.borrow_and_update().clone();
        let now = tokio::time::Instant::now().into_std();
        let quiet = progress.quiet(&live, now);
        let members = view::members(&live, &quiet);
        let before =
            std::mem::replace(&mut *quiet_shared.lock().unwrap_or_else(PoisonError::into_inner), quiet.clone());
        for id in quiet.difference(&before) {
            tracing::warn!(node = %id.node_id, "a live member's gossip state stopped advancing (a one-way link?): no work for it");
        }
        for id in before.difference(&quiet).filter(|id| live.contains_key(*id)) {
            tracing::info!(node = %id.node_id, "a quiet member's gossip state advances again");
        }
        let remotes = remotes().await;
        let targets = remote_targets(&members, &remotes.actors, &self_node, &model, now, keys::unix_ms_now());
        let recipients = notice_recipients(&members, &targets, &remotes.gateways);
        metrics::gauge!("senti_cluster_live_members").set(members.len() as f64);
        metrics::gauge!("senti_cluster_remote_targets").set(targets.len() as f64);
        publish_member_models(&members, &mut models_shown);
        if gateway.cast(GatewayMsg::SetRemoteTargets(targets)).is_err()
            || gateway.cast(GatewayMsg::SetNoticeRecipients(recipients)).is_err()
        {
            return;
        }
        // At most one rebuild per 20 ms however chatty gossip is.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Readiness {
        let readiness = Readiness::default();
        readiness.set(NodeState::Ready);
        readiness
    }

    #[tokio::test]
    async fn a_gossip_task_that_ends_on_its_own_fails_readiness_and_reports_why() {
        let readiness = ready();
        let (failure_tx, failure) = watch::channel(None);
        let panicked = async { Err(anyhow::anyhow!("Chitchat server panicked")) };
        supervise_gossip(panicked, Arc::default(), readiness.clone(), failure_tx).await;
        let reason = "gossip stopped: Chitchat server panicked";
        assert_eq!(readiness.get(), NodeState::Failed(reason.into()));
        assert_eq!(failure.borrow().as_deref(), Some(reason));

        let readiness = ready();
        let (failure_tx, failure) = watch::channel(None);
        supervise_gossip(async { Ok(()) }, Arc::default(), readiness.clone(), failure_tx).await;
        assert_eq!(readiness.get(), NodeState::Failed("gossip stopped".into()));
        assert_eq!(failure.borrow().as_deref(), Some("gossip stopped"));
    }

    #[tokio::test]
    async fn leaving_is_not_a_failure() {
        let readiness = ready();
        let (failure_tx, failure) = watch::channel(None);
        supervise_gossip(async { Ok(()) }, Arc::new(AtomicBool::new(true)), readiness.clone(), failure_tx).await;
        assert!(readiness.is_ready());
        assert_eq!(*failure.borrow(), None);
    }

    /// The real thing: chitchat over the sealed transport, its task aborted (as a panic would end
    /// it): the supervisor sees it.
    #[tokio::test]
    async fn a_real_gossip_task_that_dies_is_seen() {
        let mut config = Config::default();
        config.cluster.gossip_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let self_id = ChitchatId::new("n".to_owned(), 1, config.cluster.gossip_listen);
        let keyring = KeyringHandle::new(Keyring::from_keys(Key::generate().unwrap(), vec![]).unwrap());
        let transport = SealedUdpTransport::new(keyring);
        let chitchat = spawn_chitchat(chitchat_config(&config, self_id), vec![], &transport).await.unwrap();
        let readiness = ready();
        let (failure_tx, mut failure) = watch::channel(None);
        let supervisor = tokio::spawn(supervise_gossip(
            chitchat.termination_watcher(),
            Arc::default(),
            readiness.clone(),
            failure_tx,
        ));
        chitchat.abort();
        let reason = tokio::time::timeout(Duration::from_secs(10), failure.wait_for(Option::is_some))
            .await
            .expect("the supervisor saw the end within 10 s")
            .unwrap()
            .clone();
        assert!(reason.is_some_and(|r| r.starts_with("gossip stopped")));
        assert!(!readiness.is_ready());
        supervisor.await.unwrap();
    }
}
