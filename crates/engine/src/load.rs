//! The load of one inference actor, shared without locks.
//!
//! Written only by the actor that owns it (after every enqueue, batch start and batch end);
//! read by the gateway actor (placement), the HTTP layer (429 Retry-After) and, later, the gossip
//! publisher. Atomics with relaxed ordering: readers want a recent value, not a consistent
//! snapshot across fields, and a routing decision tolerates a value one batch old.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Shared counters of one actor.
#[derive(Debug, Default)]
pub struct LoadGauge {
    queued_texts: AtomicUsize,
    queued_tokens: AtomicUsize,
    running_texts: AtomicUsize,
    running_tokens: AtomicUsize,
    /// Exponentially weighted tokens per second of recent batches, as f64 bits (0: unknown).
    throughput_bits: AtomicU64,
}

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

/// Assumed throughput before any batch has been measured (tokens per second).
const INITIAL_TOKENS_PER_SEC: f64 = 2_000.0;

impl Load {
    /// Work ahead of a new arrival, in tokens.
    pub fn backlog_tokens(&self) -> usize {
        self.queued_tokens + self.running_tokens
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

    /// Folds one finished batch into the throughput estimate (weight 0.2 for the newest).
    pub fn record_batch(&self, tokens: usize, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(1e-6);
        let rate = tokens as f64 / secs;
        let old = f64::from_bits(self.throughput_bits.load(Ordering::Relaxed));
        let new = if old > 0.0 { 0.8 * old + 0.2 * rate } else { rate };
        self.throughput_bits.store(new.to_bits(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_time_follows_throughput() {
        let gauge = LoadGauge::default();
        gauge.set_queue(10, 1_000);
        gauge.set_running(2, 1_000);
        assert_eq!(gauge.snapshot().expected_drain(), Duration::from_secs(1), "2000 tokens at the initial 2000/s");
        gauge.record_batch(4_000, Duration::from_secs(1));
        assert_eq!(gauge.snapshot().expected_drain(), Duration::from_millis(500));
    }

    #[test]
    fn admission_compares_the_finish_time_with_the_time_left() {
        let gauge = LoadGauge::default();
        assert!(gauge.snapshot().finishes_within(10_000, Duration::ZERO, 0.8), "idle: anything goes");
        gauge.set_queue(10, 1_000);
        assert!(gauge.snapshot().finishes_within(10_000, Duration::ZERO, 0.8), "no measured throughput yet");
        gauge.record_batch(1_000, Duration::from_secs(1));
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
