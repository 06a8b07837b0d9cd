//! The wiring of one senti node: ONNX Runtime -> model -> engine (inference actors) -> gateway
//! actor -> HTTP server, and the cluster layer when it is on.
//!
//! [`start`] brings a node up and returns once it listens; [`RunningNode::stop`] drains it
//! (readiness goes to draining: new work gets 503, peers stop placing work here; the server
//! finishes in-flight requests, the queues empty, the actors stop). The binary (`main.rs`) only parses the command line and calls these, so tests run a
//! whole node in-process exactly as `senti serve` does. In a cluster, [`run`] also ends, with an
//! error, when gossip stops on its own: the process exits non-zero and its service manager
//! restarts it (the node cannot be seen by the cluster any more, so it should not stay up).
#![forbid(unsafe_code)]

pub mod batch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use senti_cluster::{Cluster, KeyringHandle};
use senti_config::Config;
use senti_engine::{Engine, NodeState, Readiness, RequestId};
use senti_http::AppState;
use senti_model::{ModelBundle, ModelSource};
use senti_routing::{Gateway, GatewayArgs, LoadSource, RoutingParams, Target, TargetId};
use tokio::sync::oneshot;

/// Texts whose labels any sane sentiment model gets right; /readyz waits for them.
pub const KNOWN_ANSWERS: [(&str, &str); 2] =
    [("这家酒店非常好，服务周到", "positive"), ("太差了，再也不会来了", "negative")];

/// A node that is serving.
pub struct RunningNode {
    /// The address the HTTP server listens on (useful with port 0).
    pub addr: SocketAddr,
    /// Shared HTTP state (engine, gateway, readiness).
    pub state: AppState,
    engine: Arc<Engine>,
    gateway: Arc<Gateway>,
    stop_server: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    grace: Duration,
}

/// Loads ONNX Runtime and the configured model (hash-checked).
pub async fn load_model(config: &Config) -> anyhow::Result<ModelBundle> {
    let runtime_opt = config.model.onnxruntime.clone();
    senti_model::init_runtime(runtime_opt.as_deref())?;
    let source = match &config.model.path {
        Some(path) => ModelSource::Folder(path.clone()),
        None => ModelSource::Embedded,
    };
    let variant_opt = config.model.variant.clone();
    let bundle = tokio::task::spawn_blocking(move || ModelBundle::load(&source, variant_opt.as_deref()))
        .await
        .context("model loading task failed")??;
    Ok(bundle)
}

/// Starts this node's gateway actor over its engine's inference actors.
pub async fn start_gateway(engine: &Engine, config: &Config) -> anyhow::Result<Gateway> {
    let node: Arc<str> = config.node_id().into();
    let model: Arc<str> = engine.bundle().manifest().id().into();
    let local = engine
        .actors()
        .iter()
        .map(|actor| Target {
            id: TargetId { node: node.clone(), actor: actor.name.as_str().into() },
            hop: Arc::new(actor.actor.clone()),
            load: LoadSource::Local(actor.gauge.clone()),
            model: model.clone(),
            variant: engine.bundle().variant().into(),
        })
        .collect();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let args = GatewayArgs { local, params: RoutingParams::from_config(config), seed };
    Gateway::start(args).await.context("cannot start the gateway actor")
}

/// Starts a node and returns once its HTTP port is bound; readiness follows the known-answer check.
pub async fn start(config: Config) -> anyhow::Result<RunningNode> {
    // The key file is checked before the model loads: a refused key fails the start at once.
    let keyring_opt = if config.cluster.enabled {
        let path = config.cluster.key_file.as_deref().context("`cluster.key_file` must be set in a cluster")?;
        Some(KeyringHandle::new(senti_cluster::read_key_file(path)?))
    } else {
        None
    };
    let bundle = load_model(&config).await?;
    let manifest = bundle.manifest();
    tracing::info!(model = %manifest.name, version = %manifest.version, variant = bundle.variant(), "model loaded");
    let readiness = Readiness::default();
    // The recorder first: what the engine and the gateway record as they start (series that
    // exist at 0 from the start, the gateway's remote-sample count) reaches /metrics.
    let _ = senti_http::metrics_handle();
    let engine = Arc::new(Engine::start(bundle, &config).await?);
    let gateway = Arc::new(start_gateway(&engine, &config).await?);
    let node_id = config.node_id();
    let state = AppState::new(
        engine.clone(),
        gateway.clone(),
        readiness.clone(),
        config.limits.clone(),
        config.auth.clone(),
        &config.cache,
        node_id.clone(),
    );
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (`server.listen`)", config.server.listen))?;
    let addr = listener.local_addr()?;
    let (stop_server, stopped) = oneshot::channel::<()>();
    let app = senti_http::app(state.clone());
    let limits = senti_http::ServeLimits::from_config(&config.server);
    warn_if_files_run_out_first(limits.max_connections);
    let server = tokio::spawn(senti_http::serve(listener, app, limits, async {
        let _ = stopped.await;
    }));
    tracing::info!(node = %node_id, %addr, "listening");
    if let Some(keyring) = keyring_opt {
        let cluster = Cluster::start(&config, keyring, &engine, &gateway, readiness.clone(), addr).await?;
        let _ = state.cluster.set(Arc::new(cluster));
    }
    match known_answer_check(&engine, &gateway).await {
        Ok(()) => {
            readiness.set(NodeState::Ready);
            tracing::info!(node = %node_id, "known-answer check passed; ready");
        }
        Err(err) => readiness.set(NodeState::Failed(format!("known-answer check failed: {err}"))),
    }
    Ok(RunningNode {
        addr,
        state,
        engine,
        gateway,
        stop_server,
        server,
        grace: Duration::from_millis(config.server.shutdown_grace_ms),
    })
}

/// Files the node opens besides HTTP connections: listeners, remote-actor sessions, ONNX Runtime,
/// logs. A lone node holds 15 once ready (`ls /proc/PID/fd`); a cluster adds a few per peer.
const FILES_BESIDES_CONNECTIONS: u64 = 200;

/// Warns when the process's open-file limit is below what `server.max_connections` needs, so that
/// a flood of connections would meet `EMFILE` (every new request failing) before the cap (a 503).
fn warn_if_files_run_out_first(max_connections: usize) {
    let Some(soft) = open_file_limit() else {
        return;
    };
    let needed = max_connections as u64 + senti_http::REFUSING_AT_ONCE as u64 + FILES_BESIDES_CONNECTIONS;
    if soft < needed {
        tracing::warn!(
            open_file_limit = soft,
            needed,
            "the open-file limit is below `server.max_connections` plus what the node needs besides; \
             raise it (LimitNOFILE, ulimit -n) or lower `server.max_connections`"
        );
    }
}

/// The soft limit on open files, from /proc/self/limits (Linux; `None` elsewhere or unlimited).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

/// Runs the known-answer texts through the whole engine; checks labels when the model has
/// `positive`/`negative` labels, otherwise only that it answers.
async fn known_answer_check(engine: &Engine, gateway: &Gateway) -> anyhow::Result<()> {
    let texts: Vec<String> = KNOWN_ANSWERS.iter().map(|(t, _)| t.to_string()).collect();
    let encoded = engine.encode(&texts).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let own = Some(engine.bundle().manifest().id().into());
    let classified = gateway.classify(encoded, deadline, own, RequestId::generate()).await?;
    let labels = &engine.bundle().manifest().labels;
    let names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
    if !(names.contains(&"positive") && names.contains(&"negative")) {
        return Ok(());
    }
    for ((text, expected), scores) in KNOWN_ANSWERS.iter().zip(&classified.scores) {
        let got = &labels[scores.label].name;
        anyhow::ensure!(got == expected, "{text:?} was labelled {got}, expected {expected}");
    }
    Ok(())
}

impl RunningNode {
    /// Resolves, with the reason, when a part the node cannot serve without stops on its own
    /// (today: gossip, in a cluster); never for a node on its own.
    pub fn failure(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let cluster_opt = self.state.cluster.get().cloned();
        async move {
            match cluster_opt {
                Some(cluster) => cluster.failure().await,
                None => std::future::pending().await,
            }
        }
    }

    /// Graceful stop: new requests get 503, in-flight ones finish, queues drain, actors stop.
    pub async fn stop(self) -> anyhow::Result<()> {
        tracing::info!("shutting down: leaving the cluster, refusing new requests, finishing in-flight ones");
        self.state.readiness.set(NodeState::Draining);
        if let Some(cluster) = self.state.cluster.get() {
            // Peers see `ready=false` and stop placing work here; then gossip and sessions end.
            cluster.leave().await;
        }
        let _ = self.stop_server.send(());
        match tokio::time::timeout(self.grace, self.server).await {
            Ok(joined) => joined.context("server task panicked")?.context("server failed")?,
            Err(_) => tracing::warn!(grace = ?self.grace, "in-flight requests did not finish within the grace period"),
        }
        drop(self.state);
        if let Ok(gateway) = Arc::try_unwrap(self.gateway) {
            gateway.stop().await;
        }
        match Arc::try_unwrap(self.engine) {
            Ok(engine) => engine.shutdown(self.grace).await,
            Err(_) => tracing::warn!("engine still referenced at shutdown; actors stop with the process"),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// `senti serve`: start, wait for `shutdown`, stop gracefully.
/// In a cluster, returns an error once gossip has stopped on its own (after stopping the node),
/// so the process exits non-zero and its service manager restarts it.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let node = start(config).await?;
    tokio::select! {
        () = shutdown => node.stop().await,
        reason = node.failure() => {
            node.stop().await?;
            anyhow::bail!("{reason}: exiting so that the service manager restarts this node")
        }
    }
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
