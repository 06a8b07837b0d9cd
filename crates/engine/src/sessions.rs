//! The ONNX Runtime sessions of one model thread: a single-threaded one, and optionally one with
//! every core for batches that start while the rest of the node is idle
//! (`engine.threads_when_alone`).
//!
//! Two single-threaded actors on two cores serve the most texts/s when busy, but leave a lone
//! request one core. A many-threaded session beside each single-threaded one gives that request
//! every core; whether that pays depends on the model (measured, docs/benchmarks.md: 1.42x the
//! texts/s at concurrency 1 on the StructBERT-base-sized model, 0.9x on the small default one,
//! whose 0.6 ms inference is too short to split). So the engine measures both sessions at start
//! and keeps the second only if it is clearly faster.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use senti_model::{ModelError, Runner};

/// A review of ordinary length (about 40 tokens) for the start-up measurement.
pub(crate) const PROBE_TEXT: &str = "这家酒店位置很好，房间干净整洁，服务员态度热情，早餐种类丰富，下次还会再来。";
/// Timed runs per session (after one warm-up each), alternating between the two.
const PROBE_RUNS: usize = 5;
/// How much faster the many-threaded session must be to be kept.
pub(crate) const KEEP_IF_FASTER: f64 = 1.25;

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

/// How much faster `alone` runs `ids` than `shared` (median of alternating runs).
pub(crate) fn speedup(shared: &mut Runner, alone: &mut Runner, ids: &[u32]) -> Result<f64, ModelError> {
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
    fn the_ratio_is_of_medians_so_one_stall_does_not_decide() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>();
        let r = ratio(ms(&[60, 500, 58, 61, 59]), ms(&[30, 31, 29, 400, 30]));
        assert!((r - 2.0).abs() < 1e-9, "{r}");
    }
}
