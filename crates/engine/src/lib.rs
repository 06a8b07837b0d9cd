//! The actors of one senti node and the handle that starts and stops them.
//!
//! Supervision tree (all children of nothing: the [`Engine`] owns and stops them):
//! ```text
//! Engine
//!  ├── GatewayActor            placement (local and remote actors), failover, hedging, ejection;
//!  │                           spawns one task per attempt
//!  └── InferenceActor a0..aN   batching queue; each owns a model thread with one ONNX session
//! ```
//! A request: [`Engine::classify`] -> [`GatewayMsg::Classify`] -> attempt task -> [`Hop`] ->
//! [`InferenceMsg::Infer`] (here, or on another node through ractor_cluster: `wire.rs`) ->
//! [`BatchQueue`] -> model thread -> `BatchDone` -> reply. The cluster layer (`senti-cluster`)
//! tells the gateway about remote actors with [`GatewayMsg::SetRemoteTargets`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod gateway;
mod hop;
mod inference;
mod load;
mod queue;
mod sessions;
mod wire;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorRef};
use senti_config::Config;
use senti_model::{ModelBundle, ModelError};
use tokio::sync::{oneshot, watch};

pub use gateway::{
    AttemptOutcome, Classified, GatewayActor, GatewayArgs, GatewayMsg, Job, LoadSource, RoutingSnapshot, Target,
    TargetId, TargetReport,
};
pub use hop::Hop;
pub use inference::{InferResult, InferenceActor, InferenceArgs, InferenceMsg};
pub use load::{Load, LoadGauge};
pub use queue::{BatchLimits, BatchQueue, Entry, Taken};

/// Why a request got no scores. `Clone`: one failed batch answers many requests. Encoded with
/// bincode when a remote inference actor answers (`wire.rs`).
#[derive(Debug, Clone, PartialEq, thiserror::Error, bincode::Encode, bincode::Decode)]
pub enum InferError {
    /// Every queue that could take the request is full.
    #[error("the inference queue is full; retry in {retry_after:?}")]
    QueueFull {
        /// When the backlog is expected to have drained.
        retry_after: Duration,
    },
    /// The request's deadline passed before it could be answered.
    #[error("the request's deadline passed before it was answered")]
    DeadlineExceeded,
    /// One attempt got no answer within `routing.attempt_timeout_ms` (and no other could be made).
    #[error("the inference actor did not answer in time")]
    AttemptTimedOut,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// No inference actor could be reached.
    #[error("no inference actor is available")]
    Unavailable,
    /// The model failed on this batch.
    #[error("inference failed: {0}")]
    Model(String),
}

impl InferError {
    /// Whether another actor might succeed where this attempt failed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            InferError::QueueFull { .. } | InferError::Unavailable | InferError::Model(_) | InferError::AttemptTimedOut
        )
    }
}

/// Errors starting the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model could not be turned into sessions.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An actor failed to start.
    #[error("cannot start actor: {0}")]
    Spawn(String),
}

/// One inference actor as the node sees it.
#[derive(Clone)]
pub struct ActorInfo {
    /// Name (`a0`, ...).
    pub name: String,
    /// Its load.
    pub gauge: Arc<LoadGauge>,
    /// The actor, for the cluster layer (process groups, remote peers).
    pub cell: ActorCell,
}

/// The running actors of one node.
pub struct Engine {
    gateway: ActorRef<GatewayMsg>,
    actors: Vec<(ActorInfo, ActorRef<InferenceMsg>)>,
    handles: Vec<tokio::task::JoinHandle<()>>,
    bundle: ModelBundle,
    shutting_down: Arc<AtomicBool>,
}

impl Engine {
    /// Creates one session per actor (on a blocking thread: this takes a moment), then the actors.
    pub async fn start(bundle: ModelBundle, full_config: &Config) -> Result<Self, EngineError> {
        let config = &full_config.engine;
        let node: Arc<str> = full_config.node_id().into();
        let max_length = bundle.manifest().max_length;
        let limits = BatchLimits {
            max_tokens: config.max_batch_tokens.max(max_length),
            max_size: config.max_batch_size,
            window: config.max_batch_size * 4,
        };
        let mut actors = Vec::new();
        let mut handles = Vec::new();
        let mut targets = Vec::new();
        let node_running = Arc::new(AtomicUsize::new(0));
        // Decided on the first actor's sessions, then the same for every actor.
        let mut keep_alone_opt: Option<bool> = None;
        for i in 0..config.actors {
            let (threads, spinning) = (config.threads_per_actor, config.intra_op_spinning);
            let alone_threads = config.threads_when_alone;
            let b = bundle.clone();
            let (runner, runner_alone, keep_alone) = tokio::task::spawn_blocking(move || {
                let mut runner = b.runner_with_spinning(threads, spinning)?;
                if alone_threads <= threads || keep_alone_opt == Some(false) {
                    return Ok::<_, ModelError>((runner, None, false));
                }
                let mut alone = b.runner_with_spinning(alone_threads, false)?;
                if keep_alone_opt.is_none() {
                    let ids = b.encoder().encode(sessions::PROBE_TEXT)?;
                    let speedup = sessions::speedup(&mut runner, &mut alone, &ids)?;
                    let keep = speedup >= sessions::KEEP_IF_FASTER;
                    tracing::info!(
                        threads_when_alone = alone_threads,
                        speedup = format!("{speedup:.2}"),
                        kept = keep,
                        "a lone batch on {alone_threads} threads against {threads}: kept if at least {}x faster",
                        sessions::KEEP_IF_FASTER
                    );
                    if !keep {
                        return Ok((runner, None, false));
                    }
                }
                Ok((runner, Some(alone), true))
            })
            .await
            .map_err(|err| EngineError::Spawn(err.to_string()))??;
            keep_alone_opt = Some(keep_alone);
            let gauge = Arc::new(LoadGauge::default());
            let name = format!("a{i}");
            let args = InferenceArgs {
                name: name.clone(),
                runner,
                runner_alone,
                node_running: node_running.clone(),
                encoder: bundle.encoder().clone(),
                manifest: Arc::new(bundle.manifest().clone()),
                limits,
                capacity: config.queue_capacity,
                batches_ahead: config.batches_ahead,
                handoff: Duration::from_millis(config.handoff_ms),
                admission_headroom: config.admission_headroom,
                gauge: gauge.clone(),
            };
            let (actor, handle) =
                Actor::spawn(None, InferenceActor, args).await.map_err(|err| EngineError::Spawn(err.to_string()))?;
            handles.push(handle);
            targets.push(Target {
                id: TargetId { node: node.clone(), actor: name.as_str().into() },
                hop: Arc::new(actor.clone()),
                load: LoadSource::Local(gauge.clone()),
            });
            actors.push((ActorInfo { name, gauge, cell: actor.get_cell() }, actor));
        }
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let args = GatewayArgs { local: targets, routing: full_config.routing.clone(), seed };
        let (gateway, handle) =
            Actor::spawn(None, GatewayActor, args).await.map_err(|err| EngineError::Spawn(err.to_string()))?;
        handles.push(handle);
        tracing::info!(actors = config.actors, threads_per_actor = config.threads_per_actor, threads_when_alone = config.threads_when_alone, model = %bundle.manifest().name, variant = bundle.variant(), "engine started");
        Ok(Self { gateway, actors, handles, bundle, shutting_down: Arc::new(AtomicBool::new(false)) })
    }

    /// Classifies `texts` before `deadline`. Dropping the future cancels the request: its texts
    /// are dropped from the queue before inference.
    pub async fn classify(&self, texts: Vec<String>, deadline: Instant) -> Result<Classified, InferError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(InferError::ShuttingDown);
        }
        let (tx, rx) = oneshot::channel();
        // Held until this future ends: dropping it (answer or cancellation) stops every attempt.
        let (_cancel, cancelled) = watch::channel(());
        self.gateway
            .cast(GatewayMsg::Classify(Job::new(texts, deadline, tx, cancelled)))
            .map_err(|_| InferError::ShuttingDown)?;
        rx.await.unwrap_or(Err(InferError::ShuttingDown))
    }

    /// The gateway actor (the cluster layer sends it [`GatewayMsg::SetRemoteTargets`]).
    pub fn gateway(&self) -> &ActorRef<GatewayMsg> {
        &self.gateway
    }

    /// Every target's routing state, retries, hedges and ejections.
    pub async fn routing_snapshot(&self) -> Option<RoutingSnapshot> {
        ractor::call!(self.gateway, GatewayMsg::Snapshot).ok()
    }

    /// The model being served.
    pub fn bundle(&self) -> &ModelBundle {
        &self.bundle
    }

    /// Every inference actor with its load.
    pub fn actors(&self) -> impl Iterator<Item = &ActorInfo> {
        self.actors.iter().map(|(info, _)| info)
    }

    /// Kills one inference actor abruptly (tests of failover).
    #[cfg(feature = "testsuite")]
    pub fn kill_actor(&self, index: usize) {
        self.actors[index].1.kill();
    }

    /// Refuses new requests from now on ([`InferError::ShuttingDown`]); queued work continues.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// True after [`Engine::begin_shutdown`].
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Waits until every queue is empty and nothing runs (or `grace` passes), then stops the actors.
    pub async fn shutdown(self, grace: Duration) {
        self.begin_shutdown();
        let until = Instant::now() + grace;
        while Instant::now() < until
            && self.actors().any(|a| {
                let load = a.gauge.snapshot();
                load.queued_texts > 0 || load.running_texts > 0
            })
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.gateway.stop(None);
        for (_, actor) in &self.actors {
            actor.stop(None);
        }
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}
