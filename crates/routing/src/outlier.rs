//! Outlier ejection: stop placing attempts on a target that keeps failing, for a growing while.
//!
//! Each target has a [`TargetHealth`], owned by the gateway next to the target and updated when an
//! attempt on it ends. After `consecutive_failures` failures in a row the target is ejected for
//! `base_ejection * 2^(ejections - 1)`, capped at `max_ejection`. When the ejection ends the target
//! is on probation: its failure streak is kept, so one more failure ejects it again for twice as
//! long, while one success clears the streak and halves the ejection count (slow forgiveness, so a
//! flapping node does not start from scratch). Outcomes of attempts that end during an ejection were
//! sent before it and say little about the target now: failures only feed the decayed failure count
//! (which [`estimate`](crate::estimate) turns into load) and successes are ignored.
//!
//! One target cannot know how many others are ejected, so the fleet-wide cap (Envoy's
//! `max_ejection_percent`) is the caller's: it counts the ejected targets, asks [`may_eject`], and
//! passes the answer to [`TargetHealth::record_failure`]. A failure that would have ejected but was
//! not allowed keeps the streak, so the next failure tries again.

use std::time::{Duration, Instant};

use crate::estimate::halving_weight;

/// Thresholds of outlier ejection, shared by all targets of a gateway.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierParams {
    /// Failures in a row that eject a target (default 5).
    pub consecutive_failures: u32,
    /// Length of a first ejection (default 1 s); each further one doubles it.
    pub base_ejection: Duration,
    /// Longest ejection (default 30 s).
    pub max_ejection: Duration,
    /// The decayed failure count halves every half-life (default 5 s).
    pub failure_decay_half_life: Duration,
    /// Never eject more than this fraction of the targets (default 0.5).
    pub max_ejected_fraction: f64,
}

impl Default for OutlierParams {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
            failure_decay_half_life: Duration::from_secs(5),
            max_ejected_fraction: 0.5,
        }
    }
}

/// Whether one more target may be ejected when `ejected_now` of `total` already are.
pub fn may_eject(ejected_now: usize, total: usize, params: &OutlierParams) -> bool {
    // The epsilon keeps float error in fraction * total (0.29 * 100 = 28.999...) from denying a slot.
    (ejected_now + 1) as f64 <= params.max_ejected_fraction * total as f64 + 1e-9
}

/// The failure history of one target, as one gateway saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetHealth {
    /// Failures since the last success (kept through an ejection: probation).
    consecutive: u32,
    /// Ejections so far, halved by the first success after each ejection; sets the next duration.
    ejections: u32,
    /// End of the current or last ejection, cleared by the first success after it.
    ejected_until: Option<Instant>,
    /// Failures, each decaying by half every half-life, as of `last_update`.
    decayed_failures: f64,
    /// When `decayed_failures` was last brought up to date.
    last_update: Instant,
}

impl TargetHealth {
    /// A target with no history, first seen at `now`.
    pub fn new(now: Instant) -> Self {
        Self { consecutive: 0, ejections: 0, ejected_until: None, decayed_failures: 0.0, last_update: now }
    }

    /// An attempt on the target succeeded.
    pub fn record_success(&mut self, now: Instant) {
        if self.is_ejected(now) {
            return;
        }
        self.consecutive = 0;
        if self.ejected_until.take().is_some() {
            self.ejections /= 2;
        }
    }

    /// An attempt on the target failed. Returns true if this failure ejected it, which requires
    /// `allow_eject` (from [`may_eject`]).
    pub fn record_failure(&mut self, now: Instant, params: &OutlierParams, allow_eject: bool) -> bool {
        self.decayed_failures = self.recent_failures(now, params) + 1.0;
        self.last_update = self.last_update.max(now);
        if self.is_ejected(now) {
            return false;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        if self.consecutive < params.consecutive_failures || !allow_eject {
            return false;
        }
        self.ejections = self.ejections.saturating_add(1);
        let doublings = (self.ejections - 1).min(31);
        let duration = params.base_ejection.saturating_mul(1 << doublings).min(params.max_ejection);
        self.ejected_until = Some(now + duration);
        true
    }

    /// Whether the target must not receive attempts at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// Failures decayed to `now`: each counts 1 when it happens and halves every half-life.
    pub fn recent_failures(&self, now: Instant, params: &OutlierParams) -> f64 {
        self.decayed_failures
            * halving_weight(now.saturating_duration_since(self.last_update), params.failure_decay_half_life)
    }

    /// End of the current ejection, if any at `now`.
    pub fn ejected_until(&self, now: Instant) -> Option<Instant> {
        self.ejected_until.filter(|&until| now < until)
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    /// Ejections counted towards the next one's length.
    pub fn ejections(&self) -> u32 {
        self.ejections
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Fails until the target is ejected; returns how many failures that took.
    fn fail_until_ejected(health: &mut TargetHealth, now: Instant, params: &OutlierParams) -> u32 {
        (1..=100).find(|_| health.record_failure(now, params, true)).expect("never ejected")
    }

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let (params, t0) = (OutlierParams::default(), Instant::now());
        let mut health = TargetHealth::new(t0);
        (0..4).for_each(|_| assert!(!health.record_failure(t0, &params, true)));
        health.record_success(t0);
        assert_eq!(fail_until_ejected(&mut health, t0, &params), 5, "the success restarted the streak");
        assert!(health.is_ejected(t0) && health.is_ejected(t0 + secs(1) - Duration::from_nanos(1)));
        assert!(!health.is_ejected(t0 + secs(1)));
    }

    #[test]
    fn backoff_doubles_on_probation_and_caps() {
        let (params, mut now) = (OutlierParams::default(), Instant::now());
        let mut health = TargetHealth::new(now);
        fail_until_ejected(&mut health, now, &params);
        let mut lengths = vec![health.ejected_until(now).unwrap() - now];
        for _ in 0..6 {
            now = health.ejected_until(now).unwrap();
            assert_eq!(fail_until_ejected(&mut health, now, &params), 1, "probation: one failure ejects again");
            lengths.push(health.ejected_until(now).unwrap() - now);
        }
        assert_eq!(lengths, [1, 2, 4, 8, 16, 30, 30].map(secs));
    }

    #[test]
    fn success_after_ejection_clears_the_streak_and_halves_ejections() {
        let (params, t0) = (OutlierParams::default(), Instant::now());
        let mut health = TargetHealth::new(t0);
        let mut now = t0;
        for _ in 0..4 {
            fail_until_ejected(&mut health, now, &params);
            now = health.ejected_until(now).unwrap();
        }
        health.record_success(now - Duration::from_nanos(1));
        assert_eq!(health.ejections(), 4, "a late success during the ejection is ignored");
        health.record_success(now);
        assert_eq!(health.ejections(), 2);
        assert_eq!(fail_until_ejected(&mut health, now, &params), 5);
        assert_eq!(health.ejected_until(now), Some(now + secs(4)), "third ejection");
    }

    #[test]
    fn a_denied_ejection_happens_on_the_next_allowed_failure() {
        let (params, t0) = (OutlierParams::default(), Instant::now());
        let mut health = TargetHealth::new(t0);
        (0..10).for_each(|_| assert!(!health.record_failure(t0, &params, false)));
        assert!(!health.is_ejected(t0));
        assert!(health.record_failure(t0, &params, true));
    }

    #[test]
    fn failures_decay_by_half_each_half_life() {
        let (params, t0) = (OutlierParams::default(), Instant::now());
        let mut health = TargetHealth::new(t0);
        assert_eq!(health.recent_failures(t0, &params), 0.0);
        health.record_failure(t0, &params, false);
        health.record_failure(t0, &params, false);
        assert_eq!(health.recent_failures(t0, &params), 2.0);
        assert_eq!(health.recent_failures(t0 + secs(5), &params), 1.0);
        health.record_failure(t0 + secs(10), &params, false);
        assert_eq!(health.recent_failures(t0 + secs(10), &params), 1.5);
        assert_eq!(health.recent_failures(t0 + secs(15), &params), 0.75);
    }

    #[test]
    fn at_most_half_the_targets_are_ejected() {
        let params = OutlierParams::default();
        assert!(!may_eject(0, 1, &params), "a lone target is never ejected");
        assert!(may_eject(0, 2, &params) && !may_eject(1, 2, &params));
        assert!(may_eject(4, 10, &params) && !may_eject(5, 10, &params));
        assert!(may_eject(28, 100, &OutlierParams { max_ejected_fraction: 0.29, ..params }));
        assert!(!may_eject(0, 100, &OutlierParams { max_ejected_fraction: 0.0, ..params }));
    }

    proptest! {
        /// A fleet where every failure goes through `may_eject` never has more than the allowed
        /// fraction ejected, whatever the order of failures, successes and time steps.
        #[test]
        fn the_fleet_cap_holds(
            total in 1usize..12,
            fraction in 0.0..1.0f64,
            events in prop::collection::vec((0usize..12, 0u8..4, 0u64..3_000), 0..400),
        ) {
            let params = OutlierParams { max_ejected_fraction: fraction, ..OutlierParams::default() };
            let mut now = Instant::now();
            let mut fleet = vec![TargetHealth::new(now); total];
            for (target, outcome, step_ms) in events {
                now += Duration::from_millis(step_ms);
                let ejected = fleet.iter().filter(|h| h.is_ejected(now)).count();
                let health = &mut fleet[target % total];
                if outcome == 0 {
                    health.record_success(now);
                } else {
                    health.record_failure(now, &params, may_eject(ejected, total, &params));
                }
                let ejected = fleet.iter().filter(|h| h.is_ejected(now)).count();
                prop_assert!(ejected as f64 <= fraction * total as f64 + 1e-9, "{ejected} of {total} ejected");
            }
        }
    }
}
