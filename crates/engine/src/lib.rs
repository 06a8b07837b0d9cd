//! Node-local inference: the inference actors of one node, their batching queues and model
//! threads, and the handle that starts and stops them.
//!
//! Supervision tree (children of nothing: the [`Engine`] owns and stops them):
//! ```text
//! Engine
//!  └── InferenceActor a0..aN   batching queue (queue.rs); each owns a model thread with its
//!                              ONNX Runtime sessions (model_thread.rs)
//! ```
//! A request reaches this crate tokenized ([`Engine::encode`] -> [`EncodedTexts`]) as an
//! [`InferenceMsg::Infer`], sent by the gateway actor (`senti-routing`) from this node or from
//! another one through ractor_cluster (`wire.rs`), and leaves as one [`Scores`](senti_model::Scores)
//! per text. Which actor gets it, retries and failover are the gateway's business, not this
//! crate's. [`Readiness`] is the node's one answer to "may I send you work?".
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod inference;
mod load;
mod model_thread;
mod queue;
mod readiness;
mod request;
#[cfg(feature = "testsuite")]
pub mod testsuite;
mod texts;
mod wire;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use senti_config::Config;
use senti_model::{ModelBundle, ModelError, TextEncoder};

pub use inference::{Answer, InferResult, InferenceActor, InferenceArgs, InferenceMsg, RequestLimits};
pub use load::{ActorLoad, Load, LoadGauge};
pub use model_thread::BatchResult;
pub use queue::{BatchLimits, BatchQueue, Entry, Taken};
pub use readiness::{NodeState, Readiness};
pub use request::RequestId;
pub use texts::{EncodedTexts, InvalidTexts};

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
    /// One attempt got no answer within the attempt timeout (and no other could be made).
    #[error("the inference actor did not answer in time")]
    AttemptTimedOut,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// No inference actor could be reached.
    #[error("no inference actor is available")]
    Unavailable,
    /// The request itself is not acceptable (a remote node's limits, or ids it cannot read).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The model failed on this batch.
    #[error("inference failed: {0}")]
    Model(ModelFailure),
}

/// How the model failed on a batch.
#[derive(Debug, Clone, PartialEq, thiserror::Error, bincode::Encode, bincode::Decode)]
pub enum ModelFailure {
    /// ONNX Runtime returned an error (its message).
    #[error("{0}")]
    Run(String),
    /// The model returned a number of rows other than the number of texts.
    #[error("the model returned {rows} rows for {texts} texts")]
    Output {
        /// Rows returned.
        rows: u32,
        /// Texts sent.
        texts: u32,
    },
    /// The model thread is gone.
    #[error("the model thread stopped")]
    ThreadStopped,
    /// The tokenizer failed on a text (its message).
    #[error("tokenizer: {0}")]
    Tokenize(String),
}

impl InferError {
    /// Whether another actor might succeed where this attempt failed. A node that is shutting
    /// down refuses new work so that its peers place it elsewhere.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            InferError::QueueFull { .. }
                | InferError::Unavailable
                | InferError::Model(_)
                | InferError::AttemptTimedOut
                | InferError::ShuttingDown
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
    /// The actor, for the gateway (local hops) and the cluster layer (process groups).
    pub actor: ActorRef<InferenceMsg>,
}

/// Total characters up to which a request is tokenized on the calling task: about 0.3 ms of
/// work at the fast tokenizer's speed (docs/benchmarks.md), below the half millisecond async code
/// may spend without yielding. Longer requests go to tokio's blocking pool.
const INLINE_TOKENIZE_CHARS: usize = 1_024;

/// The running inference actors of one node.
pub struct Engine {
    actors: Vec<ActorInfo>,
    handles: Vec<tokio::task::JoinHandle<()>>,
    bundle: ModelBundle,
}

impl Engine {
    /// Creates one session per actor (on a blocking thread: this takes a moment), then the actors.
    pub async fn start(bundle: ModelBundle, config: &Config) -> Result<Self, EngineError> {
        let engine = &config.engine;
        let advanced = &config.advanced;
        let max_length = bundle.manifest().max_length;
        let limits = BatchLimits {
            max_tokens: advanced.max_batch_tokens.max(max_length),
            max_size: advanced.max_batch_size,
            window: advanced.max_batch_size * 4,
        };
        let accepts = RequestLimits {
            max_texts: config.limits.max_texts,
            max_length,
            vocab: bundle.encoder().vocab_size(),
            max_deadline: Duration::from_millis(config.limits.request_timeout_ms),
        };
        let mut actors = Vec::new();
        let mut handles = Vec::new();
        let node_running = Arc::new(AtomicUsize::new(0));
        // Decided on the first actor's sessions, then the same for every actor.
        let mut keep_alone_opt: Option<bool> = None;
        for i in 0..engine.actors {
            let (threads, spinning) = (engine.threads_per_actor, advanced.intra_op_spinning);
            let alone_threads = advanced.threads_when_alone;
            let b = bundle.clone();
            let (runner, runner_alone, keep_alone) = tokio::task::spawn_blocking(move || {
                model_thread::sessions(&b, threads, spinning, alone_threads, keep_alone_opt)
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
                manifest: Arc::new(bundle.manifest().clone()),
                accepts,
                limits,
                capacity: advanced.queue_capacity,
                batches_ahead: advanced.batches_ahead,
                handoff: Duration::from_millis(advanced.handoff_ms),
                admission_headroom: advanced.admission_headroom,
                gauge: gauge.clone(),
            };
            let (actor, handle) =
                Actor::spawn(None, InferenceActor, args).await.map_err(|err| EngineError::Spawn(err.to_string()))?;
            handles.push(handle);
            actors.push(ActorInfo { name, gauge, actor });
        }
        tracing::info!(
            actors = engine.actors,
            threads_per_actor = engine.threads_per_actor,
            threads_when_alone = advanced.threads_when_alone,
            model = %bundle.manifest().name,
            variant = bundle.variant(),
            "engine started"
        );
        Ok(Self { actors, handles, bundle })
    }

    /// Tokenizes a request's texts once, for every attempt it will take: on the calling task when
    /// they are short, on tokio's blocking pool otherwise (a 256-text request takes milliseconds).
    pub async fn encode(&self, texts: &[String]) -> Result<Arc<EncodedTexts>, InferError> {
        let chars: usize = texts.iter().map(String::len).sum();
        if chars <= INLINE_TOKENIZE_CHARS {
            return encode_all(self.bundle.encoder(), texts).map(Arc::new);
        }
        let encoder = self.bundle.encoder().clone();
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || encode_all(&encoder, &texts))
            .await
            .map_err(|_| InferError::ShuttingDown)?
            .map(Arc::new)
    }

    /// The model being served.
    pub fn bundle(&self) -> &ModelBundle {
        &self.bundle
    }

    /// Every inference actor with its load.
    pub fn actors(&self) -> &[ActorInfo] {
        &self.actors
    }

    /// Kills one inference actor abruptly (tests of failover).
    #[cfg(feature = "testsuite")]
    pub fn kill_actor(&self, index: usize) {
        self.actors[index].actor.kill();
    }

    /// Waits until every queue is empty and nothing runs (or `grace` passes), then stops the actors.
    pub async fn shutdown(self, grace: Duration) {
        let until = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < until
            && self.actors.iter().any(|a| {
                let load = a.gauge.snapshot();
                load.queued_texts > 0 || load.running_texts > 0
            })
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for actor in &self.actors {
            actor.actor.stop(None);
        }
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}

fn encode_all(encoder: &TextEncoder, texts: &[String]) -> Result<EncodedTexts, InferError> {
    let mut encoded = EncodedTexts::default();
    for text in texts {
        let ids = encoder.encode(text).map_err(|err| InferError::Model(ModelFailure::Tokenize(err.to_string())))?;
        encoded.push(&ids);
    }
    Ok(encoded)
}
