//! The model thread of one inference actor, and its ONNX Runtime sessions: a single-threaded one,
//! and optionally one with every core for batches that start while the rest of the node is idle
//! (`advanced.threads_when_alone`).
//!
//! The thread blocks on a channel of hand-offs (one or more batches of token ids), runs each batch
//! through ONNX Runtime, and reports the logits to its actor once per hand-off. It is the only
//! place in a node that blocks for long; async code never waits on ONNX Runtime.
//!
//! Two single-threaded actors on two cores serve the most texts/s when busy, but leave a lone
//! request one core. A many-threaded session beside each single-threaded one gives that request
//! every core; whether that pays depends on the model: a large model's inference splits well
//! across threads, a small one's is too short to gain from it and only pays the threads'
//! coordination (figures and the command in docs/benchmarks.md, "What chose the defaults"). So the
//! engine measures both sessions at start and keeps the second only if it is clearly faster.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ractor::ActorRef;
use senti_model::{ModelBundle, ModelError, Runner};

use crate::inference::InferenceMsg;
use crate::{EncodedTexts, ModelFailure};

/// One batch: each text as (its request's texts, its position there).
pub(crate) type Batch = Vec<(Arc<EncodedTexts>, usize)>;

/// Batches the model thread runs back to back before it reports.
pub(crate) type Handoff = Vec<Batch>;

/// A hand-off and when the actor sent it.
pub(crate) type Sent = (Instant, Handoff);

/// One batch run by the model thread.
#[derive(Debug)]
pub struct BatchResult {
    /// Logits per text, or why the batch failed.
    pub logits: Result<Vec<Vec<f32>>, ModelFailure>,
    /// Time spent in ONNX Runtime.
    pub inference: Duration,
    /// Wall time the batch held the actor: from the later of its hand-off's sending and the end
    /// of the batch before it, to its own end. Beyond `inference` it holds the waits for a core
    /// between batches while work was there (a core shared with other processes), which is what
    /// the actor's throughput must count: its queue drains at this pace, not at ONNX Runtime's.
    pub busy: Duration,
}

impl BatchResult {
    /// A batch that did not run.
    pub(crate) fn failed(failure: ModelFailure) -> Self {
        Self { logits: Err(failure), inference: Duration::ZERO, busy: Duration::ZERO }
    }
}

/// Runs hand-offs until the actor drops its sender, reporting once per hand-off.
pub(crate) fn model_thread(mut sessions: Sessions, handoffs: mpsc::Receiver<Sent>, actor: ActorRef<InferenceMsg>) {
    let mut last_end: Option<Instant> = None;
    for (sent, handoff) in handoffs {
        let results = handoff
            .iter()
            .map(|batch| {
                let started = Instant::now();
                let ids: Vec<&[u32]> = batch.iter().map(|(texts, index)| texts.get(*index)).collect();
                let logits = sessions.logits(&ids).map_err(|err| ModelFailure::Run(err.to_string()));
                let ended = Instant::now();
                let busy_from = busy_since(last_end, sent, started);
                last_end = Some(ended);
                BatchResult { logits, inference: ended - started, busy: ended - busy_from }
            })
            .collect();
        if actor.cast(InferenceMsg::BatchDone(results)).is_err() {
            break;
        }
    }
}

/// When a batch started holding its actor: when its hand-off was sent, or, if the previous batch
/// ended later (the work waited behind it), that end; never after the batch's own start.
fn busy_since(previous_end: Option<Instant>, sent: Instant, started: Instant) -> Instant {
    previous_end.map_or(sent, |end| end.max(sent)).min(started)
}

/// A review of ordinary length (about 40 tokens) for the start-up measurement.
const PROBE_TEXT: &str = "这家酒店位置很好，房间干净整洁，服务员态度热情，早餐种类丰富，下次还会再来。";
/// Timed runs per session (after one warm-up each), alternating between the two.
const PROBE_RUNS: usize = 5;
/// How much faster the many-threaded session must be to be kept.
const KEEP_IF_FASTER: f64 = 1.25;

/// The sessions of one model thread.
pub(crate) struct Sessions {
    pub(crate) shared: Runner,
    pub(crate) alone: Option<Runner>,
    /// Batches running on this node's model threads, shared by its actors.
    pub(crate) node_running: Arc<AtomicUsize>,
}

impl Sessions {
    /// Runs one batch: on the many-threaded session if no other batch runs on the node as it
    /// starts (one that starts meanwhile runs its single thread beside it for a while).
    pub(crate) fn logits(&mut self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        let others = self.node_running.fetch_add(1, Ordering::AcqRel);
        let runner = match &mut self.alone {
            Some(alone) if others == 0 => {
                metrics::counter!("senti_batches_alone_total").increment(1);
                alone
            }
            _ => &mut self.shared,
        };
        let result = runner.logits(batch);
        self.node_running.fetch_sub(1, Ordering::AcqRel);
        result
    }
}

/// The sessions of one actor: `threads` intra-op threads, and, when `alone_threads` is larger,
/// a second session for lone batches, kept only if it measures at least [`KEEP_IF_FASTER`] times
/// faster. `keep_alone_opt` is the decision made on an earlier actor (measured once per node).
/// Returns the sessions and whether the second one is kept. Blocking: seconds for a large model.
pub(crate) fn sessions(
    bundle: &ModelBundle,
    threads: usize,
    spinning: bool,
    alone_threads: usize,
    keep_alone_opt: Option<bool>,
) -> Result<(Runner, Option<Runner>, bool), ModelError> {
    let mut runner = bundle.runner_with_spinning(threads, spinning)?;
    if alone_threads <= threads || keep_alone_opt == Some(false) {
        return Ok((runner, None, false));
    }
    let mut alone = bundle.runner_with_spinning(alone_threads, false)?;
    if keep_alone_opt.is_none() {
        let ids = bundle.encoder().encode(PROBE_TEXT)?;
        let speedup = speedup(&mut runner, &mut alone, &ids)?;
        let keep = speedup >= KEEP_IF_FASTER;
        tracing::info!(
            threads_when_alone = alone_threads,
            speedup = format!("{speedup:.2}"),
            kept = keep,
            "a lone batch on {alone_threads} threads against {threads}: kept if at least {KEEP_IF_FASTER}x faster"
        );
        if !keep {
            return Ok((runner, None, false));
        }
    }
    Ok((runner, Some(alone), true))
}

/// How much faster `alone` runs `ids` than `shared` (median of alternating runs).
fn speedup(shared: &mut Runner, alone: &mut Runner, ids: &[u32]) -> Result<f64, ModelError> {
    let time = |runner: &mut Runner| -> Result<Duration, ModelError> {
        let started = Instant::now();
        runner.logits(&[ids])?;
        Ok(started.elapsed())
    };
    time(shared)?;
    time(alone)?;
    let (mut a, mut b) = (Vec::with_capacity(PROBE_RUNS), Vec::with_capacity(PROBE_RUNS));
    for _ in 0..PROBE_RUNS {
        a.push(time(shared)?);
        b.push(time(alone)?);
    }
    Ok(ratio(a, b))
}

/// Median of `shared` over median of `alone`.
fn ratio(mut shared: Vec<Duration>, mut alone: Vec<Duration>) -> f64 {
    fn median(v: &mut [Duration]) -> f64 {
        v.sort();
        v[v.len() / 2].as_secs_f64()
    }
    median(&mut shared) / median(&mut alone).max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_busy_from_the_later_of_its_sending_and_the_previous_end() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Staged behind the batch before it: the wait for a core after that batch counts.
        assert_eq!(busy_since(Some(at(10)), at(2), at(14)), at(10));
        // Sent to an idle thread: the wake-up counts, the idle time before does not.
        assert_eq!(busy_since(Some(at(10)), at(20), at(21)), at(20));
        assert_eq!(busy_since(None, at(5), at(6)), at(5));
        assert_eq!(busy_since(Some(at(30)), at(40), at(35)), at(35), "never after its own start");
    }

    #[test]
    fn the_ratio_is_of_medians_so_one_stall_does_not_decide() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>();
        let r = ratio(ms(&[60, 500, 58, 61, 59]), ms(&[30, 31, 29, 400, 30]));
        assert!((r - 2.0).abs() < 1e-9, "{r}");
    }
}
