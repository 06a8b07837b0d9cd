//! How much work a new attempt would find ahead of it on one inference actor, in tokens.
//!
//! Three sources, each weighted by how much this gateway can trust it. The backlog the actor
//! reported is exact for a local actor but, for a remote one, arrives by gossip and may be seconds
//! old; its weight halves every `trust_half_life` of age. The attempts this gateway has in flight
//! to the actor are known exactly and counted at full weight. Because that count differs per
//! gateway, many gateways reading the same stale gossip do not all herd onto the node that looked
//! idle a moment ago: each one's own attempts push the estimate up at once. Recent failures count
//! as load too, so a node that fails fast (and therefore looks empty) does not attract traffic.

use std::time::Duration;

/// What one gateway knows about one inference actor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadView {
    /// Tokens queued and running as last reported by the actor: exact for local actors, gossiped
    /// for remote ones.
    pub reported_backlog: f64,
    /// How old `reported_backlog` is (zero for local actors).
    pub reported_age: Duration,
    /// Attempts this gateway has sent to the actor that have not ended.
    pub outstanding: u32,
    /// Decayed failure count ([`TargetHealth::recent_failures`](crate::TargetHealth::recent_failures)).
    pub recent_failures: f64,
    /// Whether the actor runs in this process (preferred on ties, see [`Candidate`](crate::Candidate)).
    pub is_local: bool,
}

/// What a gateway has heard of one target's backlog, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reported {
    /// An actor of this node: its gauge, exact and current.
    Local {
        /// Tokens queued and running.
        backlog_tokens: f64,
    },
    /// An actor of another node: the backlog it last gossiped, and how old that value is.
    Gossiped {
        /// Tokens queued and running when published.
        backlog_tokens: f64,
        /// Age of the value.
        age: Duration,
    },
    /// An actor of another node that has not published its load yet.
    Never,
}

/// Age given to a value never published: fully untrusted (its weight is 0.5^18000 at the default
/// half-life), so only this gateway's own attempts count for such a target.
const NEVER_PUBLISHED_AGE: Duration = Duration::from_secs(3_600);

impl LoadView {
    /// The one way a gateway (and the simulator, deciding as a gateway would) turns what it has
    /// heard of a target and what it knows itself into a view for [`estimate`].
    pub fn new(reported: Reported, outstanding: u32, recent_failures: f64) -> Self {
        let (reported_backlog, reported_age, is_local) = match reported {
            Reported::Local { backlog_tokens } => (backlog_tokens, Duration::ZERO, true),
            Reported::Gossiped { backlog_tokens, age } => (backlog_tokens, age, false),
            Reported::Never => (0.0, NEVER_PUBLISHED_AGE, false),
        };
        Self { reported_backlog, reported_age, outstanding, recent_failures, is_local }
    }
}

/// Weights of [`estimate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimateParams {
    /// What one outstanding attempt is assumed to cost, in tokens (default 64).
    pub tokens_per_attempt: f64,
    /// The reported backlog's weight halves every half-life of its age (default 200 ms: queues
    /// change within milliseconds, gossip arrives a few hundred milliseconds late; docs/simulations.md).
    pub trust_half_life: Duration,
    /// What one recent failure adds, in tokens (default 512).
    pub failure_penalty_tokens: f64,
}

impl Default for EstimateParams {
    fn default() -> Self {
        Self { tokens_per_attempt: 64.0, trust_half_life: Duration::from_millis(200), failure_penalty_tokens: 512.0 }
    }
}

/// Estimated tokens ahead of a new attempt: the reported backlog discounted by its age, plus this
/// gateway's outstanding attempts, plus a penalty per recent failure. For a local actor the
/// gauge already holds this gateway's attempts once they reach its queue (microseconds later), so
/// the two are not added: the larger counts (the outstanding count still covers a burst placed
/// before the actor has read its mailbox).
pub fn estimate(view: &LoadView, params: &EstimateParams) -> f64 {
    let trust = halving_weight(view.reported_age, params.trust_half_life);
    let own = f64::from(view.outstanding) * params.tokens_per_attempt;
    let work =
        if view.is_local { (view.reported_backlog * trust).max(own) } else { view.reported_backlog * trust + own };
    work + view.recent_failures * params.failure_penalty_tokens
}

/// `0.5^(age / half_life)`: 1 when fresh, halving every half-life. A zero half-life trusts only age zero.
pub(crate) fn halving_weight(age: Duration, half_life: Duration) -> f64 {
    if half_life.is_zero() {
        return if age.is_zero() { 1.0 } else { 0.0 };
    }
    0.5f64.powf(age.as_secs_f64() / half_life.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn view(reported_backlog: f64, age_ms: u64, outstanding: u32) -> LoadView {
        let reported_age = Duration::from_millis(age_ms);
        LoadView { reported_backlog, reported_age, outstanding, recent_failures: 0.0, is_local: age_ms == 0 }
    }

    #[test]
    fn sums_discounted_backlog_outstanding_and_failures() {
        let params = EstimateParams { trust_half_life: Duration::from_secs(2), ..EstimateParams::default() };
        assert_eq!(
            estimate(&view(1_000.0, 10, 2), &params).round(),
            (1_000.0 * 0.5f64.powf(0.005) + 2.0 * 64.0).round()
        );
        assert_eq!(estimate(&view(1_000.0, 0, 2), &params), 1_000.0, "local: the gauge already holds our attempts");
        assert_eq!(estimate(&view(10.0, 0, 2), &params), 128.0, "local: a burst not yet in the gauge");
        assert_eq!(estimate(&view(1_000.0, 2_000, 0), &params), 500.0, "one half-life old");
        assert_eq!(estimate(&view(1_000.0, 4_000, 0), &params), 250.0, "two half-lives old");
        let failing = LoadView { recent_failures: 1.5, ..view(0.0, 0, 0) };
        assert_eq!(estimate(&failing, &params), 768.0);
    }

    #[test]
    fn own_attempts_outweigh_stale_gossip() {
        let params = EstimateParams::default();
        // The remote node looked idle 10 s ago; this gateway has since sent it 20 attempts.
        let stale_idle = view(0.0, 10_000, 20);
        let fresh_busy = view(1_000.0, 0, 0);
        assert!(estimate(&stale_idle, &params) > estimate(&fresh_busy, &params));
    }

    #[test]
    fn zero_half_life_trusts_only_fresh_reports() {
        assert_eq!(halving_weight(Duration::ZERO, Duration::ZERO), 1.0);
        assert_eq!(halving_weight(Duration::from_nanos(1), Duration::ZERO), 0.0);
    }

    proptest! {
        #[test]
        fn older_reports_and_fewer_attempts_never_raise_the_estimate(
            backlog in 0.0..1e6f64, age_ms in 0u64..60_000, older_by in 0u64..60_000, outstanding in 0u32..1_000,
        ) {
            let params = EstimateParams::default();
            let now = estimate(&view(backlog, age_ms, outstanding), &params);
            prop_assert!(estimate(&view(backlog, age_ms + older_by, outstanding), &params) <= now);
            prop_assert!(estimate(&view(backlog, age_ms, outstanding + 1), &params) > now);
            prop_assert!(now >= 0.0 && now <= backlog + f64::from(outstanding) * params.tokens_per_attempt);
        }
    }
}
