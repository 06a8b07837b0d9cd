//! The load of one inference actor, shared without locks.
//!
//! Written only by the actor that owns it (after every enqueue, batch start and batch end);
//! read by the gateway actor (placement), the HTTP layer (429 Retry-After) and, later, the gossip
//! publisher. Atomics with relaxed ordering: readers want a recent value, not a consistent
//! snapshot across fields, and a routing decision tolerates a value one batch old. The actor
//! also signals when it runs out of work ([`LoadGauge::went_idle`]): the gateway tells other
//! nodes (idle notices, senti-routing).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Shared counters of one actor.
#[derive(Debug, Default)]
pub struct LoadGauge {
    queued_texts: AtomicUsize,
    queued_tokens: AtomicUsize,
    running_texts: AtomicUsize,
    running_tokens: AtomicUsize,
    /// Tokens per second of recent batches (`recent_tokens / recent_secs`), as f64 bits (0: unknown).
    throughput_bits: AtomicU64,
    /// Exponentially weighted tokens and seconds of recent batches, as f64 bits, and how many
    /// batches finished, the cold one included ([`LoadGauge::record_batch`]).
    recent_tokens_bits: AtomicU64,
    recent_secs_bits: AtomicU64,
    batches: AtomicU64,
    /// Signalled when the actor's last batch ends with nothing queued; one stored signal at most.
    idle: tokio::sync::Notify,
}

/// How many recent batches the throughput remembers: the weight of the newest is
/// `1 / min(batches, RATE_MEMORY_BATCHES)`. Per-batch rates vary widely (text lengths, a CPU
/// shared with other work), and the gateway compares actors by this rate (a 20% error moves work
/// for nothing); about 50 batches are 50-100 ms of one busy actor, so a node that slows down is
/// seen within a gossip round.
const RATE_MEMORY_BATCHES: u64 = 50;

/// One batch counts at most this many times the time its tokens take at the recent rate. A stall
/// (the process stopped, a page-in, a CPU taken away for a second) would otherwise count as
/// seconds of work, and the actor would look many times slower for hundreds of batches; a real
/// slowdown still shows in full after a few batches, each raising the bound. Per-text times vary
/// about tenfold (p99/p50), so 8 clips about one batch in 200.
const MAX_BATCH_SLOWDOWN: f64 = 8.0;

/// The first batch an actor runs is not measured: its session is cold (ONNX Runtime allocates
/// its buffers, the weights page in), and it runs several times slower than the rest. It is the
/// node's known-answer check, so a node that then stays idle would report that rate until it gets
/// work, and gateways, which scale an actor's queue by its slowness, would not send it any.
const COLD_BATCHES: u64 = 1;

/// The throughput is reported (non-zero) once this many batches past the cold one are measured:
/// one batch's rate can be off several-fold, and the gateway scales an actor's work by it.
const MIN_RATE_BATCHES: u64 = 4;

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// Texts waiting in the queue.
    pub queued_texts: usize,
    /// Tokens waiting in the queue.
    pub queued_tokens: usize,
    /// Texts handed to the model thread (the batch it runs and the one staged behind it).
    pub running_texts: usize,
    /// Padded tokens handed to the model thread.
    pub running_tokens: usize,
    /// Recent tokens per second (0 before the first batch).
    pub tokens_per_sec: f64,
}

/// An actor's load as it reports it to other nodes: with each answer, and in gossip
/// (`load.<actor>`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActorLoad {
    /// Tokens queued and running.
    pub backlog_tokens: u64,
    /// Its measured throughput (0: not measured yet).
    pub tokens_per_sec: f64,
}

/// Assumed throughput before any batch has been measured (tokens per second).
const INITIAL_TOKENS_PER_SEC: f64 = 2_000.0;

impl Load {
    /// Work ahead of a new arrival, in tokens.
    pub fn backlog_tokens(&self) -> usize {
        self.queued_tokens + self.running_tokens
    }

    /// What the actor reports of itself.
    pub fn report(&self) -> ActorLoad {
        ActorLoad { backlog_tokens: self.backlog_tokens() as u64, tokens_per_sec: self.tokens_per_sec }
    }

    /// How long the current backlog takes to drain at the recent throughput.
    pub fn expected_drain(&self) -> Duration {
        let rate = if self.tokens_per_sec > 0.0 { self.tokens_per_sec } else { INITIAL_TOKENS_PER_SEC };
        Duration::from_secs_f64(self.backlog_tokens() as f64 / rate)
    }

    /// Whether `tokens` more, queued behind the current backlog, can be finished within the
    /// share `headroom` (0 to 1, `advanced.admission_headroom`) of `time_left` at the recent
    /// throughput; the rest is a margin for what the estimate misses. An idle actor, or one that
    /// has not measured its throughput yet, takes anything: the estimate means something only
    /// with both.
    pub fn finishes_within(&self, tokens: usize, time_left: Duration, headroom: f64) -> bool {
        if self.backlog_tokens() == 0 || self.tokens_per_sec <= 0.0 {
            return true;
        }
        (self.backlog_tokens() + tokens) as f64 / self.tokens_per_sec <= headroom * time_left.as_secs_f64()
    }
}

impl LoadGauge {
    /// Reads every counter.
    pub fn snapshot(&self) -> Load {
        Load {
            queued_texts: self.queued_texts.load(Ordering::Relaxed),
            queued_tokens: self.queued_tokens.load(Ordering::Relaxed),
            running_texts: self.running_texts.load(Ordering::Relaxed),
            running_tokens: self.running_tokens.load(Ordering::Relaxed),
            tokens_per_sec: f64::from_bits(self.throughput_bits.load(Ordering::Relaxed)),
        }
    }

    /// Signals that the actor has just run out of work (only the owning actor calls this). A
    /// signal that nobody awaits is kept until [`LoadGauge::went_idle`] is next awaited; a second
    /// one before that is the same signal.
    pub fn mark_idle(&self) {
        self.idle.notify_one();
    }

    /// Waits until the actor runs out of work ([`LoadGauge::mark_idle`]).
    pub async fn went_idle(&self) {
        self.idle.notified().await;
    }

    /// Sets the queue counters (only the owning actor calls this).
    pub fn set_queue(&self, texts: usize, tokens: usize) {
        self.queued_texts.store(texts, Ordering::Relaxed);
        self.queued_tokens.store(tokens, Ordering::Relaxed);
    }

    /// Sets the running-batch counters (only the owning actor calls this).
    pub fn set_running(&self, texts: usize, tokens: usize) {
        self.running_texts.store(texts, Ordering::Relaxed);
        self.running_tokens.store(tokens, Ordering::Relaxed);
    }

    /// Folds one finished batch into the throughput: the ratio of exponentially weighted sums of
    /// tokens and of seconds (a mean over the first batches, then weight 1/50 for the newest).
    /// A ratio of sums, not a mean of per-batch rates: a mean of rates overweights short batches
    /// and swings with each one. A batch counts at most [`MAX_BATCH_SLOWDOWN`] times its expected
    /// time. The first batch is not counted ([`COLD_BATCHES`]), and the rate stays 0 (unknown)
    /// until [`MIN_RATE_BATCHES`] are.
    pub fn record_batch(&self, tokens: usize, elapsed: Duration) {
        let seen = self.batches.load(Ordering::Relaxed) + 1;
        self.batches.store(seen, Ordering::Relaxed);
        let Some(measured) = seen.checked_sub(COLD_BATCHES).filter(|&n| n > 0) else {
            return;
        };
        let recent_tokens = f64::from_bits(self.recent_tokens_bits.load(Ordering::Relaxed));
        let recent_secs = f64::from_bits(self.recent_secs_bits.load(Ordering::Relaxed));
        let mut secs = elapsed.as_secs_f64().max(1e-6);
        if recent_secs > 0.0 && tokens > 0 {
            secs = secs.min(MAX_BATCH_SLOWDOWN * tokens as f64 * recent_secs / recent_tokens.max(1e-9));
        }
        let weight = 1.0 / measured.min(RATE_MEMORY_BATCHES) as f64;
        let fold = |bits: &AtomicU64, old: f64, value: f64| {
            let new = old + weight * (value - old);
            bits.store(new.to_bits(), Ordering::Relaxed);
            new
        };
        let recent_tokens = fold(&self.recent_tokens_bits, recent_tokens, tokens as f64);
        let recent_secs = fold(&self.recent_secs_bits, recent_secs, secs);
        if measured >= MIN_RATE_BATCHES {
            self.throughput_bits.store((recent_tokens / recent_secs).to_bits(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gauge past its cold batch that has measured `tokens` per second over the minimum of batches.
    fn measured(tokens: usize, secs: u64) -> LoadGauge {
        let gauge = LoadGauge::default();
        for _ in 0..COLD_BATCHES + MIN_RATE_BATCHES {
            gauge.record_batch(tokens, Duration::from_secs(secs));
        }
        gauge
    }

    #[test]
    fn drain_time_follows_throughput() {
        let gauge = LoadGauge::default();
        gauge.set_queue(10, 1_000);
        gauge.set_running(2, 1_000);
        assert_eq!(gauge.snapshot().expected_drain(), Duration::from_secs(1), "2000 tokens at the initial 2000/s");
        let gauge = measured(4_000, 1);
        gauge.set_queue(10, 1_000);
        gauge.set_running(2, 1_000);
        assert_eq!(gauge.snapshot().expected_drain(), Duration::from_millis(500));
    }

    #[test]
    fn the_cold_batch_is_not_counted_and_few_batches_report_no_rate() {
        let gauge = LoadGauge::default();
        // The known-answer check's batch on a cold session, 10x slower than the rest.
        gauge.record_batch(1_000, Duration::from_secs(10));
        for measured in 1..MIN_RATE_BATCHES {
            gauge.record_batch(1_000, Duration::from_secs(1));
            assert_eq!(gauge.snapshot().tokens_per_sec, 0.0, "{measured} measured batches: unknown");
        }
        gauge.record_batch(1_000, Duration::from_secs(1));
        assert!((gauge.snapshot().tokens_per_sec - 1_000.0).abs() < 1e-6, "{:?}", gauge.snapshot());
    }

    #[test]
    fn throughput_is_a_ratio_of_recent_sums() {
        let gauge = LoadGauge::default();
        gauge.record_batch(1, Duration::from_secs(60));
        // Short fast batches and long slow ones: 2,200 tokens in 4 s, not the mean of 1,000/s and 500/s.
        for _ in 0..MIN_RATE_BATCHES / 2 {
            gauge.record_batch(100, Duration::from_millis(100));
            gauge.record_batch(1_000, Duration::from_millis(1_900));
        }
        assert!((gauge.snapshot().tokens_per_sec - 550.0).abs() < 1e-6, "{:?}", gauge.snapshot());
        // Long after, a rate that doubled is what the gauge shows, within a few percent.
        for _ in 0..400 {
            gauge.record_batch(1_100, Duration::from_secs(1));
        }
        assert!((gauge.snapshot().tokens_per_sec - 1_100.0).abs() < 11.0, "{:?}", gauge.snapshot());
        // A stall of 10 s in one batch (SIGSTOP) costs a fraction, not 99% of the rate...
        gauge.record_batch(1_100, Duration::from_secs(10));
        let after_stall = gauge.snapshot().tokens_per_sec;
        assert!(after_stall > 0.85 * 1_100.0, "{after_stall}");
        // ...while a node that really became 3x slower is seen as such within a few hundred batches.
        for _ in 0..300 {
            gauge.record_batch(1_100, Duration::from_secs(3));
        }
        assert!((gauge.snapshot().tokens_per_sec - 1_100.0 / 3.0).abs() < 5.0, "{:?}", gauge.snapshot());
    }

    #[test]
    fn admission_compares_the_finish_time_with_the_time_left() {
        let gauge = LoadGauge::default();
        assert!(gauge.snapshot().finishes_within(10_000, Duration::ZERO, 0.8), "idle: anything goes");
        gauge.set_queue(10, 1_000);
        assert!(gauge.snapshot().finishes_within(10_000, Duration::ZERO, 0.8), "no measured throughput yet");
        let gauge = measured(1_000, 1);
        gauge.set_queue(10, 1_000);
        gauge.set_running(1, 500);
        let load = gauge.snapshot();
        assert!(load.finishes_within(500, Duration::from_secs(2), 1.0), "1500 + 500 tokens at 1000/s: 2 s");
        assert!(!load.finishes_within(501, Duration::from_secs(2), 1.0));
        assert!(!load.finishes_within(0, Duration::from_millis(1_499), 1.0));
        // With headroom 0.8 the same 2 s of work needs 2.5 s left.
        assert!(!load.finishes_within(500, Duration::from_secs(2), 0.8));
        assert!(load.finishes_within(500, Duration::from_millis(2_500), 0.8));
        assert!(!load.finishes_within(500, Duration::from_millis(2_499), 0.8));
    }
}
