//! When to hedge: send a second attempt to another target if the first is slower than usual.
//!
//! "Slower than usual" is a high quantile (p95 by default) of the latencies of recent attempts,
//! kept in a ring buffer of the last few hundred. Until enough samples exist there is no estimate
//! and no hedging: hedging before we know what slow means would double the load of a cold cluster.
//! The delay is clamped: a floor so that a fast cluster is not hedged on scheduling noise, a ceiling
//! so that a window full of stalls still hedges eventually. And an attempt is never hedged before
//! the time its own size and the queue it was placed behind explain: under load the slowest few
//! percent of attempts are the queued ones, and a backup of a queued attempt only adds the same
//! work to another busy node; the tail a hedge cuts is a node slower than its queue says. Whether
//! a hedge may be sent at all is the hedging budget's call ([`RetryBudget`](crate::RetryBudget)),
//! not this module's, and a hedge goes only where the work ahead of it is less than one attempt
//! ([`has_room`]).

use std::time::Duration;

/// The latencies of the most recent attempts. Owned by one gateway; written when an attempt ends.
#[derive(Debug, Clone)]
pub struct LatencyWindow {
    /// Up to `capacity` latencies, in no order; the oldest is overwritten first.
    samples: Vec<Duration>,
    /// Where the next sample goes once `samples` is full.
    next: usize,
    /// Most samples kept (at least 1).
    capacity: usize,
    /// Fewer samples than this give no quantile.
    min_samples: usize,
}

impl Default for LatencyWindow {
    /// The last 256 attempts; quantiles once 20 have been seen.
    fn default() -> Self {
        Self::new(256, 20)
    }
}

impl LatencyWindow {
    /// A window of the last `capacity` latencies (at least 1) that answers quantiles once it holds
    /// `min_samples` (at least 1, at most `capacity`).
    pub fn new(capacity: usize, min_samples: usize) -> Self {
        let capacity = capacity.max(1);
        Self { samples: Vec::with_capacity(capacity), next: 0, capacity, min_samples: min_samples.clamp(1, capacity) }
    }

    /// Adds the latency of one finished attempt, forgetting the oldest when full.
    pub fn record(&mut self, latency: Duration) {
        if self.samples.len() < self.capacity {
            self.samples.push(latency);
        } else {
            self.samples[self.next] = latency;
            self.next = (self.next + 1) % self.capacity;
        }
    }

    /// The nearest-rank `q`-quantile (`q` clamped to [0, 1]) of the window, or `None` while fewer
    /// than `min_samples` have been recorded. Copies and partially sorts the window: O(capacity).
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.samples.len();
        if n < self.min_samples {
            return None;
        }
        // The epsilon keeps float error in q * n (e.g. 0.95 * 100) from moving up a rank.
        let rank = (q.clamp(0.0, 1.0) * n as f64 - 1e-9).ceil() as usize;
        let mut sorted = self.samples.clone();
        let (_, nth, _) = sorted.select_nth_unstable(rank.clamp(1, n) - 1);
        Some(*nth)
    }
}

/// How long to wait before hedging an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgePolicy {
    /// Which latency quantile counts as slow (default 0.95).
    pub quantile: f64,
    /// Never hedge sooner than this (default 5 ms).
    pub min_delay: Duration,
    /// Never wait longer than this when there is an estimate (default 1 s); wins over `min_delay`.
    pub max_delay: Duration,
}

impl Default for HedgePolicy {
    fn default() -> Self {
        Self { quantile: 0.95, min_delay: Duration::from_millis(5), max_delay: Duration::from_secs(1) }
    }
}

impl HedgePolicy {
    /// The delay after which an unfinished attempt is hedged, or `None`: do not hedge (no estimate
    /// yet). `explained` is how long the attempt is expected to take on its target, queue included
    /// (the expected wait in its queue plus its own expected time): the delay is never shorter.
    pub fn hedge_delay(&self, window: &LatencyWindow, explained: Duration) -> Option<Duration> {
        // Not `Duration::clamp`: it panics when min > max, and a misconfiguration should not.
        window.quantile(self.quantile).map(|q| q.max(self.min_delay).min(self.max_delay).max(explained))
    }
}

/// Whether a hedge may go to a target whose queue is expected to hold it for `wait`, the hedge
/// itself taking `expected`: only when less than one attempt's worth of work is ahead of it. A
/// hedge to a busy target adds its work to a full queue: near saturation the extra load raised
/// every request's wait more than the few hedged ones gained (docs/routing.md, section 5). A hedge
/// to a target with room uses capacity that would otherwise stand idle. A declined hedge spends no
/// budget and is not tried again.
pub(crate) fn has_room(wait: Duration, expected: Duration) -> bool {
    wait <= expected
}

/// How long one attempt may take before it is abandoned and placed elsewhere: `factor` times
/// the recent p99, at least `floor`, at most `configured`. An attempt ten times slower than
/// nearly every recent one is almost surely stuck (a hung or partitioned node), and waiting the
/// configured maximum for it stalls its client for nothing. Without an estimate yet, or with
/// `factor` 0, the configured timeout.
pub fn attempt_timeout(window: &LatencyWindow, configured: Duration, factor: f64, floor: Duration) -> Duration {
    if factor <= 0.0 {
        return configured;
    }
    match window.quantile(0.99) {
        Some(p99) => p99.mul_f64(factor).max(floor).min(configured),
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn window_of(millis: impl IntoIterator<Item = u64>) -> LatencyWindow {
        let mut window = LatencyWindow::default();
        millis.into_iter().for_each(|m| window.record(ms(m)));
        window
    }

    #[test]
    fn quantiles_need_min_samples() {
        assert_eq!(window_of(1..20).quantile(0.5), None);
        assert_eq!(window_of(1..=20).quantile(0.5), Some(ms(10)));
    }

    #[test]
    fn nearest_rank_quantiles() {
        let window = window_of((1..=100).rev());
        assert_eq!(window.quantile(0.95), Some(ms(95)));
        assert_eq!(window.quantile(0.0), Some(ms(1)));
        assert_eq!(window.quantile(1.0), Some(ms(100)));
        assert_eq!(window.quantile(7.0), Some(ms(100)));
    }

    #[test]
    fn the_window_forgets_the_oldest() {
        let mut window = LatencyWindow::new(4, 4);
        (0..4).for_each(|_| window.record(ms(100)));
        (0..3).for_each(|_| window.record(ms(1)));
        assert_eq!(window.quantile(1.0), Some(ms(100)));
        window.record(ms(1));
        assert_eq!(window.quantile(1.0), Some(ms(1)));
    }

    #[test]
    fn a_hedge_needs_less_than_one_attempt_of_work_ahead() {
        assert!(has_room(Duration::ZERO, ms(2)));
        assert!(has_room(ms(2), ms(2)));
        assert!(!has_room(ms(3), ms(2)));
        assert!(!has_room(ms(1), Duration::ZERO), "a size-free attempt has room only on an idle target");
    }

    #[test]
    fn hedge_delay_is_the_clamped_quantile() {
        let policy = HedgePolicy::default();
        let idle = Duration::ZERO;
        assert_eq!(policy.hedge_delay(&window_of(1..10), idle), None, "no hedging before we know what slow is");
        assert_eq!(policy.hedge_delay(&window_of(1..=100), idle), Some(ms(95)));
        assert_eq!(policy.hedge_delay(&window_of([1; 50]), idle), Some(ms(5)));
        assert_eq!(policy.hedge_delay(&window_of([5_000; 50]), idle), Some(ms(1_000)));
        let inverted = HedgePolicy { min_delay: ms(10), max_delay: ms(2), ..policy };
        assert_eq!(inverted.hedge_delay(&window_of([1; 50]), idle), Some(ms(2)));
    }

    #[test]
    fn an_attempt_is_not_hedged_before_its_queue_should_have_drained() {
        let policy = HedgePolicy::default();
        let p95_of_95_ms = window_of(1..=100);
        assert_eq!(policy.hedge_delay(&p95_of_95_ms, ms(40)), Some(ms(95)), "a short queue: the quantile");
        assert_eq!(policy.hedge_delay(&p95_of_95_ms, ms(300)), Some(ms(300)), "a long queue: its expected time");
        assert_eq!(policy.hedge_delay(&window_of([5_000; 50]), ms(2_500)), Some(ms(2_500)), "over the ceiling too");
        assert_eq!(policy.hedge_delay(&window_of(1..10), ms(300)), None, "still no estimate, no hedge");
    }

    proptest! {
        #[test]
        fn quantiles_are_samples_and_grow_with_q(
            millis in prop::collection::vec(0u64..10_000, 20..600), q in 0.0..1.0f64, dq in 0.0..1.0f64,
        ) {
            let window = window_of(millis.iter().copied());
            let low = window.quantile(q).unwrap();
            let high = window.quantile(q + dq).unwrap();
            prop_assert!(low <= high);
            let kept = &millis[millis.len().saturating_sub(256)..];
            prop_assert!(kept.contains(&(low.as_millis() as u64)), "{low:?} was not recorded recently");
        }
    }

    #[test]
    fn the_attempt_timeout_follows_the_p99_within_bounds() {
        let configured = ms(3_000);
        let floor = ms(50);
        assert_eq!(attempt_timeout(&LatencyWindow::default(), configured, 10.0, floor), configured, "no estimate");
        let fast = window_of(std::iter::repeat_n(2, 100));
        assert_eq!(attempt_timeout(&fast, configured, 10.0, floor), floor, "20 ms is below the floor");
        let busy = window_of(std::iter::repeat_n(120, 100));
        assert_eq!(attempt_timeout(&busy, configured, 10.0, floor), ms(1_200));
        let slow = window_of(std::iter::repeat_n(900, 100));
        assert_eq!(attempt_timeout(&slow, configured, 10.0, floor), configured, "capped");
        assert_eq!(attempt_timeout(&fast, configured, 0.0, floor), configured, "disabled");
    }
}
