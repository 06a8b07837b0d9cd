//! Raw ONNX Runtime throughput: [`Runner::logits`] in a loop, no HTTP, no actors, no queue.
//!
//! Texts are tokenized once up front (in the payload's fixed shuffled order) and cut into batches
//! of *consecutive* texts, unsorted, so a batch mixes short and long reviews as real traffic does
//! and pays the padding real traffic pays (senti's queue can do better: it batches texts of close
//! lengths). Each runner drives its own
//! session on its own std thread; with two runners of one thread each this is the
//! "2 actors x 1 thread" shape without the actors. Batches started during the warm-up are run but
//! not counted; the rate is counted texts over the time from the first counted batch's start to
//! the last one's end. `senti-bench-raw` measures each configuration in several short rounds,
//! interleaved with the other configurations, and keeps the median round ([`median_round`]).

use std::time::{Duration, Instant};

use senti_model::{ModelError, Runner};
use serde::Serialize;

use crate::latency::{LatencyRecorder, LatencySummary};

/// One configuration to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawConfig {
    /// Sessions running in parallel, each on its own thread.
    pub runners: usize,
    /// Intra-op threads of each session.
    pub threads: usize,
    /// Texts per batch.
    pub batch: usize,
    /// Batches of near-equal lengths ([`batches`]) rather than consecutive texts.
    pub grouped: bool,
}

/// Texts a grouped batch is chosen from, in batches: senti's queue looks at `4 x max_batch_size`
/// waiting texts for the closest lengths (crates/engine/src/lib.rs), so grouping here does the same.
pub const GROUP_WINDOW_BATCHES: usize = 4;

impl RawConfig {
    /// `runners x threads`, e.g. `1x2` or `2x1`, the notation of `engine.actors` x
    /// `engine.threads_per_actor`.
    pub fn shape(&self) -> String {
        format!("{}x{}", self.runners, self.threads)
    }
}

/// What one configuration achieved.
#[derive(Debug, Clone, Serialize)]
pub struct RawResult {
    /// `runners x threads`.
    pub shape: String,
    /// Sessions in parallel.
    pub runners: usize,
    /// Intra-op threads per session.
    pub threads: usize,
    /// Texts per batch.
    pub batch: usize,
    /// Whether batches held near-equal lengths (see [`RawConfig::grouped`]).
    pub grouped: bool,
    /// Texts counted.
    pub texts: u64,
    /// Batches counted.
    pub batches: u64,
    /// Measured time, seconds.
    pub seconds: f64,
    /// Texts per second over all runners.
    pub texts_per_s: f64,
    /// Time of one `Runner::logits` call (padding included), milliseconds.
    pub batch_ms: LatencySummary,
    /// Real tokens / padded tokens of the counted batches (1.0 = no padding).
    pub padding_efficiency: f64,
    /// Texts per second of every round, when several were run ([`median_round`]); the other
    /// figures are those of the median round.
    pub rounds_texts_per_s: Vec<f64>,
}

/// The round with the median rate, carrying every round's rate: a burst of noise from another
/// process on a shared machine spoils one round, not the figure. `None` for no rounds.
pub fn median_round(mut rounds: Vec<RawResult>) -> Option<RawResult> {
    let rates: Vec<f64> = rounds.iter().map(|r| r.texts_per_s).collect();
    rounds.sort_by(|a, b| a.texts_per_s.total_cmp(&b.texts_per_s));
    let mid = rounds.len().checked_sub(1)? / 2;
    let mut median = rounds.swap_remove(mid);
    median.rounds_texts_per_s = rates;
    Some(median)
}

/// Consecutive batches of `size` texts; a short tail is dropped unless it is the only batch.
pub fn batches(encoded: &[Vec<u32>], size: usize, grouped: bool) -> Vec<Vec<&[u32]>> {
    let size = size.max(1);
    let window = if grouped { size * GROUP_WINDOW_BATCHES } else { size };
    let mut out: Vec<Vec<&[u32]>> = Vec::new();
    for texts in encoded.chunks(window) {
        let mut texts: Vec<&[u32]> = texts.iter().map(Vec::as_slice).collect();
        if grouped {
            texts.sort_by_key(|ids| ids.len());
        }
        out.extend(texts.chunks(size).filter(|chunk| chunk.len() == size).map(<[&[u32]]>::to_vec));
    }
    if out.is_empty() && !encoded.is_empty() {
        out.push(encoded.iter().map(Vec::as_slice).collect());
    }
    out
}

/// Runs `runners` (one per std thread, `config.runners` of them) over `encoded` for `warmup`,
/// then for `seconds`, and reports the counted part.
pub fn measure(
    config: RawConfig,
    runners: &mut [Runner],
    encoded: &[Vec<u32>],
    warmup: Duration,
    seconds: Duration,
) -> Result<RawResult, ModelError> {
    let batches = batches(encoded, config.batch, config.grouped);
    if batches.is_empty() {
        return Err(ModelError::Inference("no texts to run".into()));
    }
    let start = Instant::now();
    let count_from = start + warmup;
    let until = count_from + seconds;
    let stride = batches.len() / runners.len().max(1);
    let lanes: Vec<Result<Lane, ModelError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = runners
            .iter_mut()
            .enumerate()
            .map(|(k, runner)| {
                let batches = &batches;
                scope.spawn(move || drive(runner, batches, k * stride, count_from, until))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(ModelError::Inference("a runner thread panicked".into()))))
            .collect()
    });
    let mut total = Lane::default();
    for lane in lanes {
        total.merge(&lane?);
    }
    Ok(result(config, &total))
}

/// One runner's counted work.
#[derive(Default)]
struct Lane {
    latency: LatencyRecorder,
    texts: u64,
    batches: u64,
    real_tokens: u64,
    padded_tokens: u64,
    first_start_opt: Option<Instant>,
    last_end_opt: Option<Instant>,
}

impl Lane {
    fn merge(&mut self, other: &Lane) {
        self.latency.merge(&other.latency);
        self.texts += other.texts;
        self.batches += other.batches;
        self.real_tokens += other.real_tokens;
        self.padded_tokens += other.padded_tokens;
        self.first_start_opt = match (self.first_start_opt, other.first_start_opt) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_end_opt = self.last_end_opt.max(other.last_end_opt);
    }
}

/// Runs batches from `first` on, cycling, until `until`; counts those started after `count_from`,
/// and at least one (a batch can outlast the whole window: then one more runs, and counts).
fn drive(
    runner: &mut Runner,
    batches: &[Vec<&[u32]>],
    first: usize,
    count_from: Instant,
    until: Instant,
) -> Result<Lane, ModelError> {
    let mut lane = Lane::default();
    for i in first.. {
        let started = Instant::now();
        if started >= until && lane.batches > 0 {
            break;
        }
        let batch = &batches[i % batches.len()];
        runner.logits(batch)?;
        let ended = Instant::now();
        if started >= count_from {
            let width = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
            lane.latency.record(ended - started);
            lane.texts += batch.len() as u64;
            lane.batches += 1;
            lane.real_tokens += batch.iter().map(|ids| ids.len() as u64).sum::<u64>();
            lane.padded_tokens += (width * batch.len()) as u64;
            lane.first_start_opt = lane.first_start_opt.or(Some(started));
            lane.last_end_opt = Some(ended);
        }
    }
    Ok(lane)
}

/// Rates over the time from the first counted batch's start to the last one's end, so that a batch
/// straddling the end of the warm-up (run, not counted) does not dilute the rate.
fn result(config: RawConfig, total: &Lane) -> RawResult {
    let seconds = match (total.first_start_opt, total.last_end_opt) {
        (Some(start), Some(end)) => end.saturating_duration_since(start).as_secs_f64(),
        _ => 0.0,
    };
    RawResult {
        shape: config.shape(),
        runners: config.runners,
        threads: config.threads,
        batch: config.batch,
        grouped: config.grouped,
        texts: total.texts,
        batches: total.batches,
        seconds,
        texts_per_s: if seconds > 0.0 { total.texts as f64 / seconds } else { 0.0 },
        batch_ms: total.latency.summary(),
        padding_efficiency: if total.padded_tokens > 0 {
            total.real_tokens as f64 / total.padded_tokens as f64
        } else {
            0.0
        },
        rounds_texts_per_s: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_consecutive_and_full() {
        let encoded: Vec<Vec<u32>> = (0..7).map(|i| vec![i; i as usize + 1]).collect();
        let b = batches(&encoded, 3, false);
        assert_eq!(b.len(), 2);
        assert_eq!(b[1][0], &[3, 3, 3, 3][..]);
        assert_eq!(batches(&encoded[..2], 8, false).len(), 1, "fewer texts than a batch: one short batch");
        assert!(batches(&[], 8, false).is_empty());
        let reversed: Vec<Vec<u32>> = encoded.iter().rev().cloned().collect();
        let grouped = batches(&reversed, 2, true);
        assert_eq!(grouped.iter().map(Vec::len).sum::<usize>(), encoded.len() / 2 * 2, "every whole batch kept");
        for batch in &grouped {
            assert!(batch[0].len() <= batch[1].len(), "sorted within its window");
        }
    }

    #[test]
    fn the_median_round_keeps_every_rate() {
        let round = |rate: f64| RawResult {
            texts_per_s: rate,
            ..result(RawConfig { runners: 1, threads: 1, batch: 1, grouped: false }, &Lane::default())
        };
        let median = median_round(vec![round(500.0), round(100.0), round(480.0)]).unwrap();
        assert_eq!(median.texts_per_s, 480.0);
        assert_eq!(median.rounds_texts_per_s, vec![500.0, 100.0, 480.0]);
        assert!(median_round(Vec::new()).is_none());
    }

    #[test]
    fn shape_reads_like_the_engine_config() {
        assert_eq!(RawConfig { runners: 2, threads: 1, batch: 8, grouped: false }.shape(), "2x1");
    }
}
