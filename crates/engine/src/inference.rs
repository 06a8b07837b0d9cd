//! The inference actor: one ONNX Runtime session on its own thread, fed by a batching queue.
//!
//! ```text
//!  Infer{texts (token ids), deadline, reply} ──> InferenceActor ──Handoff──> model thread
//!                                                 │ admits, queues           │ (model_thread.rs)
//!                                                 │ BatchDone <──────────────┘
//!                                                 └─> reply: Ok(scores + its load) | Err(InferError)
//! ```
//! The texts arrive tokenized ([`EncodedTexts`], shared with the gateway's attempt): the actor
//! never runs the tokenizer, so its handler stays in the microseconds.
//! While the model thread runs, new texts wait in the [`BatchQueue`]; the actor keeps one more
//! hand-off staged in the model thread's channel (`advanced.batches_ahead`, default 2), so the
//! thread starts its next batch the moment it finishes one instead of idling through an actor
//! round trip (measured: docs/benchmarks.md); the batch after that is taken from everything that
//! has arrived meanwhile (dynamic batching). A hand-off is one batch, or several batches of one
//! request back to back, up to `advanced.handoff_ms` of expected work: the thread then reports
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
use senti_model::{Manifest, Runner, Scores};

use crate::load::{ActorLoad, LoadGauge};
use crate::model_thread::{model_thread, BatchResult, Handoff, Sent, Sessions};
use crate::queue::{BatchLimits, BatchQueue, Entry};
use crate::{EncodedTexts, InferError, ModelFailure, RequestId};

/// What an inference returns: the [`Answer`], or why there is none.
pub type InferResult = Result<Answer, InferError>;

/// An inference actor's answer: one [`Scores`] per text, in request order, and the actor's load
/// as the answer left it. A gateway on another node reads that load as a report fresher than the
/// last gossip round (the backlog piggybacked on the reply).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// One per text, in request order.
    pub scores: Vec<Scores>,
    /// `None` from a node that does not send it (a version before it).
    pub load_opt: Option<ActorLoad>,
}

impl Answer {
    /// Scores without a load report.
    pub fn scores(scores: Vec<Scores>) -> Self {
        Self { scores, load_opt: None }
    }
}

/// Messages of [`InferenceActor`].
pub enum InferenceMsg {
    /// Classify these texts before `deadline`.
    Infer {
        /// The request's token ids, shared with the gateway (validated: non-empty, within the
        /// model's window).
        texts: Arc<EncodedTexts>,
        /// After this the work is dropped and answered with [`InferError::DeadlineExceeded`].
        deadline: Instant,
        /// The request, for the log lines of its way through this actor.
        request: RequestId,
        /// Where the answer goes; if the caller drops its end, the texts are not run.
        reply: RpcReplyPort<InferResult>,
    },
    /// From the model thread: the oldest hand-off in flight finished; per batch of it, in order,
    /// the logits per text (or the error that failed the batch), the time spent in ONNX Runtime
    /// and the wall time the batch held the actor ([`BatchResult`]).
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
    /// node (`advanced.threads_when_alone`).
    pub runner_alone: Option<Runner>,
    /// Batches running on this node's model threads, shared by its actors.
    pub node_running: Arc<AtomicUsize>,
    /// Labels and temperature.
    pub manifest: Arc<Manifest>,
    /// What one request may hold.
    pub accepts: RequestLimits,
    /// Batch limits.
    pub limits: BatchLimits,
    /// Most texts queued at once.
    pub capacity: usize,
    /// Hand-offs to the model thread at once (running + staged), at least 1.
    pub batches_ahead: usize,
    /// Expected work of one request's consecutive batches handed over together
    /// (`advanced.handoff_ms`; zero: one batch per hand-off).
    pub handoff: Duration,
    /// Share of a request's time left that the backlog ahead of it may fill
    /// (`advanced.admission_headroom`).
    pub admission_headroom: f64,
    /// Shared with readers of this actor's load.
    pub gauge: Arc<LoadGauge>,
}

/// What an inference actor accepts in one request, whichever node sent it: requests from other
/// nodes skip this node's HTTP limits, so the actor checks every request against them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestLimits {
    /// Texts (`limits.max_texts`).
    pub max_texts: usize,
    /// Ids per text (the model's `max_length`).
    pub max_length: usize,
    /// Ids are below this (the tokenizer's vocabulary).
    pub vocab: usize,
    /// Longest deadline (`limits.request_timeout_ms`); a later one is cut to it.
    pub max_deadline: Duration,
}

/// The actor (stateless; everything is in [`InferenceState`]).
pub struct InferenceActor;

/// Where a queued text belongs: the actor's number for its request and its position there.
#[derive(Debug)]
pub struct Slot {
    request: u64,
    index: usize,
}

/// A request being answered: its texts, the answers so far, and who waits.
struct Pending {
    id: RequestId,
    texts: Arc<EncodedTexts>,
    reply: RpcReplyPort<InferResult>,
    results: Vec<Option<Scores>>,
    remaining: usize,
    enqueued: Instant,
}

/// Why a request was refused with a fast 429 (the `reason` label of
/// `senti_queue_rejections_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejection {
    /// The queue holds `advanced.queue_capacity` texts.
    Capacity,
    /// The backlog would not let the request finish before its deadline.
    Deadline,
}

impl Rejection {
    fn label(self) -> &'static str {
        match self {
            Rejection::Capacity => "capacity",
            Rejection::Deadline => "deadline",
        }
    }
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
    manifest: Arc<Manifest>,
    accepts: RequestLimits,
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
    to_model: mpsc::Sender<Sent>,
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
        // Its rejection counters exist from the start: an alert's rate reads 0, not no series.
        for why in [Rejection::Capacity, Rejection::Deadline] {
            metrics::counter!("senti_queue_rejections_total", "actor" => args.name.clone(), "reason" => why.label())
                .increment(0);
        }
        let (to_model, handoffs) = mpsc::channel::<Sent>();
        let sessions = Sessions { shared: args.runner, alone: args.runner_alone, node_running: args.node_running };
        std::thread::Builder::new()
            .name(format!("senti-model-{}", args.name))
            .spawn(move || model_thread(sessions, handoffs, myself))?;
        Ok(InferenceState {
            name: args.name,
            manifest: args.manifest,
            accepts: args.accepts,
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
        let batch_done = matches!(message, InferenceMsg::BatchDone(_));
        match message {
            InferenceMsg::Infer { texts, deadline, request, reply } => state.enqueue(texts, deadline, request, reply),
            InferenceMsg::BatchDone(results) => state.finish_handoff(results),
        }
        state.dispatch();
        if batch_done && state.in_flight.is_empty() && state.queue.is_empty() {
            state.gauge.mark_idle();
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        for (_, pending) in state.pending.drain() {
            let _ = pending.reply.send(Err(InferError::ShuttingDown));
        }
        Ok(())
    }
}

impl InferenceState {
    fn enqueue(
        &mut self,
        texts: Arc<EncodedTexts>,
        deadline: Instant,
        request_id: RequestId,
        reply: RpcReplyPort<InferResult>,
    ) {
        let _span = tracing::debug_span!("request", id = %request_id).entered();
        let a = &self.accepts;
        if let Err(err) = texts.check(a.max_texts, a.max_length, a.vocab) {
            tracing::warn!(actor = %self.name, error = %err, "refused an invalid request");
            let _ = reply.send(Err(InferError::Invalid(err.to_string())));
            return;
        }
        let now = Instant::now();
        let deadline = deadline.min(now + a.max_deadline);
        if deadline <= now {
            let _ = reply.send(Err(InferError::DeadlineExceeded));
            return;
        }
        if self.queue.len() + texts.len() > self.capacity {
            self.reject(reply, Rejection::Capacity);
            return;
        }
        // Beyond capacity the answer is a fast 429, not a 504 after the whole deadline spent
        // waiting: refuse what the backlog would not let finish in time.
        if !self.gauge.snapshot().finishes_within(texts.total_tokens(), deadline - now, self.admission_headroom) {
            self.reject(reply, Rejection::Deadline);
            return;
        }
        let request = self.next_request;
        self.next_request += 1;
        for (index, ids) in texts.iter().enumerate() {
            self.queue.push(Entry { tokens: ids.len(), deadline, payload: Slot { request, index } });
        }
        tracing::debug!(actor = %self.name, texts = texts.len(), queued = self.queue.len(), "queued");
        let count = texts.len();
        self.pending.insert(
            request,
            Pending { id: request_id, texts, reply, results: vec![None; count], remaining: count, enqueued: now },
        );
        self.publish_queue();
    }

    /// Answers 429: the queue is full or too long to finish before the deadline.
    fn reject(&self, reply: RpcReplyPort<InferResult>, why: Rejection) {
        let retry_after = self.gauge.snapshot().expected_drain();
        tracing::debug!(actor = %self.name, reason = why.label(), "refused: queue full");
        metrics::counter!("senti_queue_rejections_total", "actor" => self.name.clone(), "reason" => why.label())
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
                let Some(pending) = self.pending.get(&entry.payload.request) else {
                    continue; // answered already (failed); its other texts were removed with it
                };
                metrics::histogram!("senti_queue_wait_seconds")
                    .record(now.duration_since(pending.enqueued).as_secs_f64());
                handoff.keys.push((entry.payload.request, entry.payload.index));
                batch.push((pending.texts.clone(), entry.payload.index));
            }
            if batch.is_empty() {
                continue;
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
        if self.to_model.send((Instant::now(), ids)).is_err() {
            // The model thread is gone (it only exits when this sender drops or the actor
            // stops); answer every hand-off given to it rather than leave them waiting.
            while let Some(lost) = self.in_flight.front() {
                let failed = lost.batches.iter().map(|_| BatchResult::failed(ModelFailure::ThreadStopped)).collect();
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
            tracing::error!(actor = %self.name, batches = results.len(), expected = handoff.batches.len(), "model thread returned the wrong number of batches. This is a bug.");
            self.fail_all(&handoff.keys, InferError::Model(ModelFailure::ThreadStopped));
            return;
        }
        let mut keys = handoff.keys.into_iter();
        for ((texts, padded_tokens), result) in handoff.batches.into_iter().zip(results) {
            let batch_keys: Vec<(u64, usize)> = keys.by_ref().take(texts).collect();
            metrics::histogram!("senti_inference_seconds").record(result.inference.as_secs_f64());
            match result.logits {
                Ok(rows) if rows.len() == batch_keys.len() => {
                    self.gauge.record_batch(padded_tokens, result.busy);
                    for ((request, index), logits) in batch_keys.into_iter().zip(rows) {
                        let scores = Scores::from_logits(&logits, &self.manifest);
                        self.complete(request, index, scores);
                    }
                }
                Ok(rows) => {
                    let err = ModelFailure::Output { rows: rows.len() as u32, texts: batch_keys.len() as u32 };
                    self.fail_all(&batch_keys, InferError::Model(err));
                }
                Err(err) => {
                    let requests: Vec<String> =
                        batch_keys.iter().filter_map(|(r, _)| self.pending.get(r).map(|p| p.id.to_string())).collect();
                    tracing::warn!(actor = %self.name, error = %err, ?requests, "batch failed");
                    self.fail_all(&batch_keys, InferError::Model(err));
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
            let scores = pending.results.into_iter().map(|r| r.expect("every slot filled. This is a bug.")).collect();
            let load_opt = Some(self.gauge.snapshot().report());
            let _ = pending.reply.send(Ok(Answer { scores, load_opt }));
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
