//! A simulated inference actor (a mock of ONNX inference, for simulations only).
//!
//! It behaves like `senti_engine::InferenceActor` as far as routing can tell: a bounded FIFO
//! queue (full: `QueueFull`), expired and abandoned work dropped before it runs, one request at a
//! time, and a real `LoadGauge` that the real load publisher gossips. Service time per text is
//! exponential around `mean_service`, times a slowness factor (a gray failure: slow but gossiping),
//! drawn from a seeded generator. Crashing drops every queued reply port (callers see the actor as
//! gone); hanging stops service while keeping the ports (callers hear nothing).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::RpcReplyPort;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use senti_engine::{Answer, EncodedTexts, InferError, InferResult, LoadGauge};
use senti_model::Scores;
use tokio::sync::mpsc;

/// Tokens a simulated text counts for in the gauge.
pub const TOKENS_PER_TEXT: usize = 32;

/// Work for an actor.
pub struct Work {
    /// Texts (their count sets the service time).
    pub texts: Arc<EncodedTexts>,
    /// Answered `DeadlineExceeded` if it expires in the queue.
    pub deadline: Instant,
    /// Where the answer goes.
    pub reply: RpcReplyPort<InferResult>,
}

/// Handle of one simulated actor.
#[derive(Clone)]
pub struct SimActor {
    /// Where work goes.
    pub tx: mpsc::UnboundedSender<Work>,
    /// Its load, read by the gateway (local) and the publisher (gossip).
    pub gauge: Arc<LoadGauge>,
    /// Service-time multiplier x100 (100 = normal).
    pub slowness: Arc<AtomicU32>,
    /// Service paused (the node hangs).
    pub hung: Arc<AtomicBool>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl SimActor {
    /// Starts an actor with a queue of `capacity` texts.
    pub fn spawn(seed: u64, mean_service: Duration, capacity: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let gauge = Arc::new(LoadGauge::default());
        let slowness = Arc::new(AtomicU32::new(100));
        let hung = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(
            rx,
            gauge.clone(),
            slowness.clone(),
            hung.clone(),
            SmallRng::seed_from_u64(seed),
            mean_service,
            capacity,
        ));
        Self { tx, gauge, slowness, hung, task: Arc::new(task) }
    }

    /// Crashes the actor: queued work is dropped unanswered.
    pub fn crash(&self) {
        self.task.abort();
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Work>,
    gauge: Arc<LoadGauge>,
    slowness: Arc<AtomicU32>,
    hung: Arc<AtomicBool>,
    mut rng: SmallRng,
    mean_service: Duration,
    capacity: usize,
) {
    let mut queue: VecDeque<Work> = VecDeque::new();
    let mut queued_texts = 0usize;
    loop {
        // Take everything that has arrived; wait for work when idle.
        if queue.is_empty() {
            match rx.recv().await {
                Some(work) => admit(work, &mut queue, &mut queued_texts, capacity),
                None => return,
            }
        }
        while let Ok(work) = rx.try_recv() {
            admit(work, &mut queue, &mut queued_texts, capacity);
        }
        gauge.set_queue(queue.len(), queued_texts * TOKENS_PER_TEXT);
        while hung.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let Some(work) = queue.pop_front() else { continue };
        queued_texts -= work.texts.len();
        gauge.set_queue(queue.len(), queued_texts * TOKENS_PER_TEXT);
        if work.reply.is_closed() {
            continue;
        }
        if now() >= work.deadline {
            let _ = work.reply.send(Err(InferError::DeadlineExceeded));
            continue;
        }
        let n = work.texts.len();
        let factor = slowness.load(Ordering::Relaxed) as f64 / 100.0;
        let draw: f64 = -(1.0 - rng.random::<f64>()).ln(); // exponential, mean 1
        let service = mean_service.mul_f64(draw * factor * n as f64);
        gauge.set_running(n, n * TOKENS_PER_TEXT);
        tokio::time::sleep(service).await;
        gauge.set_running(0, 0);
        gauge.record_batch(n * TOKENS_PER_TEXT, service);
        let scores = (0..n).map(|_| Scores { label: 1, probabilities: vec![0.1, 0.9] }).collect();
        let _ = work.reply.send(Ok(Answer { scores, load_opt: Some(gauge.snapshot().report()) }));
    }
}

fn admit(work: Work, queue: &mut VecDeque<Work>, queued_texts: &mut usize, capacity: usize) {
    if *queued_texts + work.texts.len() > capacity {
        let _ = work.reply.send(Err(InferError::QueueFull { retry_after: Duration::from_millis(100) }));
        return;
    }
    *queued_texts += work.texts.len();
    queue.push_back(work);
}
