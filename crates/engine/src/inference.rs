//! The inference actor: one ONNX Runtime session on its own thread, fed by a batching queue.
//!
//! ```text
//!  Infer{texts, deadline, reply} ──> InferenceActor ──Batch──> model thread (Runner::logits)
//!                                    │ tokenizes, queues        │
//!                                    │ BatchDone <──────────────┘
//!                                    └─> reply: Ok(scores) | Err(InferError)
//! ```
//! While the model thread runs one batch, new texts wait in the [`BatchQueue`]; the actor keeps
//! one more batch staged in the model thread's channel (`engine.batches_ahead`, default 2), so the
//! thread starts its next batch the moment it finishes one instead of idling through an actor
//! round trip (measured: docs/benchmarks.md); the batch after that is taken from everything that
//! has arrived meanwhile (dynamic batching).
//! Expired texts and texts of requests whose caller has gone are dropped before inference.
//! A failing batch answers each of its requests with the error; the actor itself keeps going.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use senti_model::{Manifest, ModelError, Runner, Scores, TextEncoder};

use crate::load::LoadGauge;
use crate::queue::{BatchLimits, BatchQueue, Entry};
use crate::sessions::Sessions;
use crate::InferError;

/// What an inference returns: one [`Scores`] per text, in request order.
pub type InferResult = Result<Vec<Scores>, InferError>;

/// Messages of [`InferenceActor`].
pub enum InferenceMsg {
    /// Classify these texts before `deadline`.
    Infer {
        /// Texts, already validated by the caller (non-empty, within limits).
        texts: Vec<String>,
        /// After this the work is dropped and answered with [`InferError::DeadlineExceeded`].
        deadline: Instant,
        /// Where the answer goes; if the caller drops its end, the texts are not run.
        reply: RpcReplyPort<InferResult>,
    },
    /// From the model thread: the batch in flight finished.
    BatchDone {
        /// Logits per text of the batch, or the error that failed it.
        result: Result<Vec<Vec<f32>>, ModelError>,
        /// Time spent in ONNX Runtime.
        elapsed: Duration,
    },
}

// `ractor::Message` is implemented in `wire.rs`: `Infer` can cross the network.

/// Everything an inference actor starts with.
pub struct InferenceArgs {
    /// Name in logs and metrics (`"a0"`, `"a1"`, ...).
    pub name: String,
    /// The session; moved onto the model thread.
    pub runner: Runner,
    /// A session with more threads, for batches that start while no other batch runs on the
    /// node (`engine.threads_when_alone`).
    pub runner_alone: Option<Runner>,
    /// Batches running on this node's model threads, shared by its actors.
    pub node_running: Arc<AtomicUsize>,
    /// Tokenizer with the model's truncation.
    pub encoder: TextEncoder,
    /// Labels and temperature.
    pub manifest: Arc<Manifest>,
    /// Batch limits.
    pub limits: BatchLimits,
    /// Most texts queued at once.
    pub capacity: usize,
    /// Batches handed to the model thread at once (running + staged), at least 1.
    pub batches_ahead: usize,
    /// Share of a request's time left that the backlog ahead of it may fill
    /// (`engine.admission_headroom`).
    pub admission_headroom: f64,
    /// Shared with readers of this actor's load.
    pub gauge: Arc<LoadGauge>,
}

/// The actor (stateless; everything is in [`InferenceState`]).
pub struct InferenceActor;

/// Where a queued text belongs.
#[derive(Debug)]
pub struct Slot {
    request: u64,
    index: usize,
    ids: Vec<u32>,
}

struct Pending {
    reply: RpcReplyPort<InferResult>,
    results: Vec<Option<Scores>>,
    remaining: usize,
    enqueued: Instant,
}

struct InFlight {
    keys: Vec<(u64, usize)>,
    padded_tokens: usize,
}

/// State of one inference actor; only its own handler touches it.
pub struct InferenceState {
    name: String,
    encoder: TextEncoder,
    manifest: Arc<Manifest>,
    limits: BatchLimits,
    capacity: usize,
    batches_ahead: usize,
    admission_headroom: f64,
    gauge: Arc<LoadGauge>,
    queue: BatchQueue<Slot>,
    pending: HashMap<u64, Pending>,
    next_request: u64,
    /// Batches handed to the model thread, oldest (running) first; at most `batches_ahead`.
    in_flight: VecDeque<InFlight>,
    /// Batches to the model thread; dropping it ends the thread.
    to_model: mpsc::Sender<Vec<Vec<u32>>>,
}

impl Actor for InferenceActor {
    type Msg = InferenceMsg;
    type State = InferenceState;
    type Arguments = InferenceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (to_model, batches) = mpsc::channel::<Vec<Vec<u32>>>();
        let sessions = Sessions { shared: args.runner, alone: args.runner_alone, node_running: args.node_running };
        std::thread::Builder::new()
            .name(format!("senti-model-{}", args.name))
            .spawn(move || model_thread(sessions, batches, myself))?;
        Ok(InferenceState {
            name: args.name,
            encoder: args.encoder,
            manifest: args.manifest,
            limits: args.limits,
            capacity: args.capacity,
            batches_ahead: args.batches_ahead.max(1),
            admission_headroom: args.admission_headroom,
            gauge: args.gauge,
            queue: BatchQueue::default(),
            pending: HashMap::new(),
            next_request: 0,
            in_flight: VecDeque::new(),
            to_model,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            InferenceMsg::Infer { texts, deadline, reply } => state.enqueue(texts, deadline, reply),
            InferenceMsg::BatchDone { result, elapsed } => state.finish_batch(result, elapsed),
        }
        state.dispatch();
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        for (_, pending) in state.pending.drain() {
            let _ = pending.reply.send(Err(InferError::ShuttingDown));
        }
        Ok(())
    }
}

/// Runs batches until the actor drops its sender.
fn model_thread(mut sessions: Sessions, batches: mpsc::Receiver<Vec<Vec<u32>>>, actor: ActorRef<InferenceMsg>) {
    for batch in batches {
        let started = Instant::now();
        let refs: Vec<&[u32]> = batch.iter().map(Vec::as_slice).collect();
        let result = sessions.logits(&refs);
        let elapsed = started.elapsed();
        if actor.cast(InferenceMsg::BatchDone { result, elapsed }).is_err() {
            break;
        }
    }
}

impl InferenceState {
    fn enqueue(&mut self, texts: Vec<String>, deadline: Instant, reply: RpcReplyPort<InferResult>) {
        if texts.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            return;
        }
        let now = Instant::now();
        if deadline <= now {
            let _ = reply.send(Err(InferError::DeadlineExceeded));
            return;
        }
        if self.queue.len() + texts.len() > self.capacity {
            self.reject(reply, "capacity");
            return;
        }
        let mut encoded = Vec::with_capacity(texts.len());
        for text in &texts {
            match self.encoder.encode(text) {
                Ok(ids) => encoded.push(ids),
                Err(err) => {
                    let _ = reply.send(Err(InferError::Model(err.to_string())));
                    return;
                }
            }
        }
        // Beyond capacity the answer is a fast 429, not a 504 after the whole deadline spent
        // waiting: refuse what the backlog would not let finish in time.
        let tokens = encoded.iter().map(Vec::len).sum();
        if !self.gauge.snapshot().finishes_within(tokens, deadline - now, self.admission_headroom) {
            self.reject(reply, "deadline");
            return;
        }
        let request = self.next_request;
        self.next_request += 1;
        for (index, ids) in encoded.into_iter().enumerate() {
            self.queue.push(Entry { tokens: ids.len(), deadline, payload: Slot { request, index, ids } });
        }
        self.pending.insert(
            request,
            Pending { reply, results: vec![None; texts.len()], remaining: texts.len(), enqueued: Instant::now() },
        );
        self.publish_queue();
    }

    /// Answers 429: the queue is full (`capacity`) or too long to finish before the deadline.
    fn reject(&self, reply: RpcReplyPort<InferResult>, reason: &'static str) {
        let retry_after = self.gauge.snapshot().expected_drain();
        metrics::counter!("senti_queue_rejections_total", "actor" => self.name.clone(), "reason" => reason)
            .increment(1);
        let _ = reply.send(Err(InferError::QueueFull { retry_after }));
    }

    /// Hands the model thread batches until it has `batches_ahead` or the queue is empty.
    fn dispatch(&mut self) {
        while self.in_flight.len() < self.batches_ahead && !self.queue.is_empty() {
            self.dispatch_one();
        }
    }

    /// Takes one batch from the queue (dropping abandoned and expired texts) and sends it.
    fn dispatch_one(&mut self) {
        self.drop_abandoned();
        let taken = self.queue.next_batch(Instant::now(), self.limits);
        for entry in taken.expired {
            self.fail(entry.payload.request, InferError::DeadlineExceeded);
        }
        if taken.batch.is_empty() {
            self.publish_queue();
            return;
        }
        let longest = taken.batch.iter().map(|e| e.tokens).max().unwrap_or(0);
        let padded_tokens = longest * taken.batch.len();
        let now = Instant::now();
        let mut keys = Vec::with_capacity(taken.batch.len());
        let mut ids = Vec::with_capacity(taken.batch.len());
        for entry in taken.batch {
            if let Some(pending) = self.pending.get(&entry.payload.request) {
                metrics::histogram!("senti_queue_wait_seconds")
                    .record(now.duration_since(pending.enqueued).as_secs_f64());
            }
            keys.push((entry.payload.request, entry.payload.index));
            ids.push(entry.payload.ids);
        }
        metrics::histogram!("senti_batch_size").record(keys.len() as f64);
        metrics::histogram!("senti_batch_padded_tokens").record(padded_tokens as f64);
        self.in_flight.push_back(InFlight { keys, padded_tokens });
        self.publish_running();
        if self.to_model.send(ids).is_err() {
            // The model thread is gone (it only exits when this sender drops or the actor
            // stops); answer every batch handed to it rather than leave them waiting.
            while !self.in_flight.is_empty() {
                self.finish_batch(Err(ModelError::Inference("model thread stopped".into())), Duration::ZERO);
            }
        }
        self.publish_queue();
    }

    fn finish_batch(&mut self, result: Result<Vec<Vec<f32>>, ModelError>, elapsed: Duration) {
        // The model thread runs batches in the order it received them.
        let Some(batch) = self.in_flight.pop_front() else {
            tracing::error!(actor = %self.name, "batch finished but none was in flight. This is a bug.");
            return;
        };
        self.publish_running();
        metrics::histogram!("senti_inference_seconds").record(elapsed.as_secs_f64());
        match result {
            Ok(rows) if rows.len() == batch.keys.len() => {
                self.gauge.record_batch(batch.padded_tokens, elapsed);
                for ((request, index), logits) in batch.keys.into_iter().zip(rows) {
                    let scores = Scores::from_logits(&logits, &self.manifest);
                    self.complete(request, index, scores);
                }
            }
            Ok(rows) => {
                let err =
                    InferError::Model(format!("model returned {} rows for {} texts", rows.len(), batch.keys.len()));
                self.fail_all(&batch.keys, err);
            }
            Err(err) => {
                tracing::warn!(actor = %self.name, error = %err, "batch failed");
                self.fail_all(&batch.keys, InferError::Model(err.to_string()));
            }
        }
    }

    fn complete(&mut self, request: u64, index: usize, scores: Scores) {
        let Some(pending) = self.pending.get_mut(&request) else {
            return; // already answered (failed or abandoned)
        };
        pending.results[index] = Some(scores);
        pending.remaining -= 1;
        if pending.remaining == 0 {
            let pending = self.pending.remove(&request).expect("present above. This is a bug.");
            let results = pending.results.into_iter().map(|r| r.expect("every slot filled. This is a bug.")).collect();
            let _ = pending.reply.send(Ok(results));
        }
    }

    fn fail_all(&mut self, keys: &[(u64, usize)], err: InferError) {
        for (request, _) in keys {
            self.fail(*request, err.clone());
        }
    }

    /// Answers a request with an error and drops the rest of its texts from the queue.
    fn fail(&mut self, request: u64, err: InferError) {
        if let Some(pending) = self.pending.remove(&request) {
            let _ = pending.reply.send(Err(err));
            self.queue.remove_where(|slot| slot.request == request);
        }
    }

    /// Drops queued texts whose caller no longer waits (client disconnected, attempt abandoned).
    fn drop_abandoned(&mut self) {
        let gone: Vec<u64> = self.pending.iter().filter(|(_, p)| p.reply.is_closed()).map(|(id, _)| *id).collect();
        if gone.is_empty() {
            return;
        }
        metrics::counter!("senti_abandoned_requests_total").increment(gone.len() as u64);
        for request in gone {
            self.pending.remove(&request);
            self.queue.remove_where(|slot| slot.request == request);
        }
    }

    /// Texts and padded tokens handed to the model thread (running or staged).
    fn publish_running(&self) {
        let texts = self.in_flight.iter().map(|b| b.keys.len()).sum();
        let tokens = self.in_flight.iter().map(|b| b.padded_tokens).sum();
        self.gauge.set_running(texts, tokens);
    }

    fn publish_queue(&self) {
        self.gauge.set_queue(self.queue.len(), self.queue.tokens());
        metrics::gauge!("senti_queue_depth", "actor" => self.name.clone()).set(self.queue.len() as f64);
    }
}
