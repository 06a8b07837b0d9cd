//! The inference actor: one ONNX Runtime session on its own thread, fed by a batching queue.
//!
//! ```text
//!  Infer{texts, deadline, reply} ──> InferenceActor ──Handoff──> model thread (Runner::logits
//!                                    │ tokenizes, queues          │  per batch of the hand-off)
//!                                    │ BatchDone <────────────────┘
//!                                    └─> reply: Ok(scores) | Err(InferError)
//! ```
//! While the model thread runs, new texts wait in the [`BatchQueue`]; the actor keeps one more
//! hand-off staged in the model thread's channel (`engine.batches_ahead`, default 2), so the
//! thread starts its next batch the moment it finishes one instead of idling through an actor
//! round trip (measured: docs/benchmarks.md); the batch after that is taken from everything that
//! has arrived meanwhile (dynamic batching). A hand-off is one batch, or several batches of one
//! request back to back, up to `engine.handoff_ms` of expected work: the thread then reports
//! once for all of them, which spares the actor (and the core the model thread shares with it)
//! a wake-up per batch.
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

/// One batch run by the model thread: logits per text (or the error that failed the batch), and
/// the time spent in ONNX Runtime.
pub type BatchResult = (Result<Vec<Vec<f32>>, ModelError>, Duration);

/// Batches the model thread runs back to back before it reports (token ids per text).
type Handoff = Vec<Vec<Vec<u32>>>;

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
    /// From the model thread: the oldest hand-off in flight finished; per batch of it, in order,
    /// the logits per text (or the error that failed the batch) and the time spent in ONNX
    /// Runtime.
    BatchDone(Vec<BatchResult>),
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
    /// Hand-offs to the model thread at once (running + staged), at least 1.
    pub batches_ahead: usize,
    /// Expected work of one request's consecutive batches handed over together
    /// (`engine.handoff_ms`; zero: one batch per hand-off).
    pub handoff: Duration,
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

/// One hand-off to the model thread.
struct InFlight {
    /// (request, index) of every text, batch after batch.
    keys: Vec<(u64, usize)>,
    /// Texts and padded tokens of each batch.
    batches: Vec<(usize, usize)>,
}

impl InFlight {
    fn padded_tokens(&self) -> usize {
        self.batches.iter().map(|&(_, tokens)| tokens).sum()
    }
}

/// State of one inference actor; only its own handler touches it.
pub struct InferenceState {
    name: String,
    encoder: TextEncoder,
    manifest: Arc<Manifest>,
    limits: BatchLimits,
    capacity: usize,
    batches_ahead: usize,
    handoff: Duration,
    admission_headroom: f64,
    gauge: Arc<LoadGauge>,
    queue: BatchQueue<Slot>,
    pending: HashMap<u64, Pending>,
    next_request: u64,
    /// Hand-offs to the model thread, oldest (running) first; at most `batches_ahead`.
    in_flight: VecDeque<InFlight>,
    /// Hand-offs to the model thread; dropping it ends the thread.
    to_model: mpsc::Sender<Handoff>,
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
        let (to_model, handoffs) = mpsc::channel::<Handoff>();
        let sessions = Sessions { shared: args.runner, alone: args.runner_alone, node_running: args.node_running };
        std::thread::Builder::new()
            .name(format!("senti-model-{}", args.name))
            .spawn(move || model_thread(sessions, handoffs, myself))?;
        Ok(InferenceState {
            name: args.name,
            encoder: args.encoder,
            manifest: args.manifest,
            limits: args.limits,
            capacity: args.capacity,
            batches_ahead: args.batches_ahead.max(1),
            handoff: args.handoff,
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
            InferenceMsg::BatchDone(results) => state.finish_handoff(results),
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

/// Runs hand-offs until the actor drops its sender, reporting once per hand-off.
fn model_thread(mut sessions: Sessions, handoffs: mpsc::Receiver<Handoff>, actor: ActorRef<InferenceMsg>) {
    for handoff in handoffs {
        let results = handoff
            .iter()
            .map(|batch| {
                let started = Instant::now();
                let refs: Vec<&[u32]> = batch.iter().map(Vec::as_slice).collect();
                (sessions.logits(&refs), started.elapsed())
            })
            .collect();
        if actor.cast(InferenceMsg::BatchDone(results)).is_err() {
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

    /// Hands the model thread work until it has `batches_ahead` hand-offs or the queue is empty.
    fn dispatch(&mut self) {
        while self.in_flight.len() < self.batches_ahead && !self.queue.is_empty() {
            self.dispatch_one();
        }
    }

    /// Takes one hand-off from the queue (dropping abandoned and expired texts) and sends it: a
    /// batch, then more batches while they hold only texts of that batch's request and the
    /// expected work stays within `handoff`.
    fn dispatch_one(&mut self) {
        self.drop_abandoned();
        let now = Instant::now();
        let tokens_per_sec = self.gauge.snapshot().tokens_per_sec;
        let mut handoff = InFlight { keys: Vec::new(), batches: Vec::new() };
        let mut ids: Handoff = Vec::new();
        let mut request = None;
        loop {
            let taken = self.queue.next_batch(now, self.limits);
            for entry in taken.expired {
                self.fail(entry.payload.request, InferError::DeadlineExceeded);
            }
            if taken.batch.is_empty() {
                break;
            }
            let longest = taken.batch.iter().map(|e| e.tokens).max().unwrap_or(0);
            let padded_tokens = longest * taken.batch.len();
            let first = *request.get_or_insert(taken.batch[0].payload.request);
            let one_request = taken.batch.iter().all(|e| e.payload.request == first);
            let mut batch = Vec::with_capacity(taken.batch.len());
            for entry in taken.batch {
                if let Some(pending) = self.pending.get(&entry.payload.request) {
                    metrics::histogram!("senti_queue_wait_seconds")
                        .record(now.duration_since(pending.enqueued).as_secs_f64());
                }
                handoff.keys.push((entry.payload.request, entry.payload.index));
                batch.push(entry.payload.ids);
            }
            metrics::histogram!("senti_batch_size").record(batch.len() as f64);
            metrics::histogram!("senti_batch_padded_tokens").record(padded_tokens as f64);
            handoff.batches.push((batch.len(), padded_tokens));
            ids.push(batch);
            // One more batch only if it is this request's and fits the hand-off's expected time.
            let Some(next) = self.queue.front().filter(|e| one_request && e.payload.request == first) else {
                break;
            };
            let expected_secs = (handoff.padded_tokens() + next.tokens) as f64 / tokens_per_sec;
            if tokens_per_sec <= 0.0 || expected_secs > self.handoff.as_secs_f64() {
                break;
            }
        }
        if ids.is_empty() {
            self.publish_queue();
            return;
        }
        self.in_flight.push_back(handoff);
        self.publish_running();
        if self.to_model.send(ids).is_err() {
            // The model thread is gone (it only exits when this sender drops or the actor
            // stops); answer every hand-off given to it rather than leave them waiting.
            while let Some(lost) = self.in_flight.front() {
                let failed = lost
                    .batches
                    .iter()
                    .map(|_| (Err(ModelError::Inference("model thread stopped".into())), Duration::ZERO))
                    .collect();
                self.finish_handoff(failed);
            }
        }
        self.publish_queue();
    }

    /// Answers the texts of the oldest hand-off from its batches' results.
    fn finish_handoff(&mut self, results: Vec<BatchResult>) {
        // The model thread runs hand-offs in the order it received them.
        let Some(handoff) = self.in_flight.pop_front() else {
            tracing::error!(actor = %self.name, "batch finished but none was in flight. This is a bug.");
            return;
        };
        self.publish_running();
        if results.len() != handoff.batches.len() {
            let err = format!("model thread returned {} batches for {}", results.len(), handoff.batches.len());
            self.fail_all(&handoff.keys, InferError::Model(err));
            return;
        }
        let mut keys = handoff.keys.into_iter();
        for ((texts, padded_tokens), (result, elapsed)) in handoff.batches.into_iter().zip(results) {
            let batch_keys: Vec<(u64, usize)> = keys.by_ref().take(texts).collect();
            metrics::histogram!("senti_inference_seconds").record(elapsed.as_secs_f64());
            match result {
                Ok(rows) if rows.len() == batch_keys.len() => {
                    self.gauge.record_batch(padded_tokens, elapsed);
                    for ((request, index), logits) in batch_keys.into_iter().zip(rows) {
                        let scores = Scores::from_logits(&logits, &self.manifest);
                        self.complete(request, index, scores);
                    }
                }
                Ok(rows) => {
                    let err =
                        InferError::Model(format!("model returned {} rows for {} texts", rows.len(), batch_keys.len()));
                    self.fail_all(&batch_keys, err);
                }
                Err(err) => {
                    tracing::warn!(actor = %self.name, error = %err, "batch failed");
                    self.fail_all(&batch_keys, InferError::Model(err.to_string()));
                }
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
        let tokens = self.in_flight.iter().map(InFlight::padded_tokens).sum();
        self.gauge.set_running(texts, tokens);
    }

    fn publish_queue(&self) {
        self.gauge.set_queue(self.queue.len(), self.queue.tokens());
        metrics::gauge!("senti_queue_depth", "actor" => self.name.clone()).set(self.queue.len() as f64);
    }
}
