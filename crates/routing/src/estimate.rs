//! How much work a new attempt would find ahead of it on one inference actor, in tokens, and what
//! reaching it costs.
//!
//! Three sources, each weighted by how much this gateway can trust it. The backlog the actor
//! reported is exact for a local actor but, for a remote one, arrives by gossip and may be seconds
//! old. An old value says less and less about the actor, but it never says the actor is idle: it
//! decays toward what the gateway knows of a typical actor, the mean backlog of every target it
//! has heard of ([`mean_backlog`]), with a weight that halves every `trust_half_life` of age. (It
//! used to decay toward zero, so every remote actor looked emptier than the local ones and even
//! load on equal nodes sent a third of the attempts across the network.) The attempts this gateway
//! has in flight to the actor are known exactly and counted at full weight. Because that count
//! differs per gateway, many gateways reading the same stale gossip do not all herd onto the node
//! that looked idle a moment ago: each one's own attempts push the estimate up at once. Recent
//! failures count as load too, so a node that fails fast (and therefore looks empty) does not
//! attract traffic. Work is counted in tokens of a typical actor: an actor that serves at half the
//! mean rate of the actors the gateway knows (its measured throughput, local or gossiped) has twice
//! the work ahead of it that its tokens say, so unequal nodes get work in proportion to their
//! speed. Finally a remote actor costs a hop (`remote_hop_cost_tokens`): the network
//! round trip, the work of the second node, and the doubt a gossiped value carries against an exact
//! gauge. So an attempt crosses the network only when it is expected to save more than that.

use std::time::Duration;

/// What one gateway knows about one inference actor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadView {
    /// Tokens queued and running as last reported by the actor: exact for local actors, gossiped
    /// for remote ones.
    pub reported_backlog: f64,
    /// How old `reported_backlog` is (zero for local actors).
    pub reported_age: Duration,
    /// What an untrusted report is replaced by: the mean backlog of the targets this gateway has
    /// heard of ([`mean_backlog`]).
    pub prior_backlog: f64,
    /// Attempts this gateway has sent to the actor that have not ended.
    pub outstanding: u32,
    /// Decayed failure count ([`TargetHealth::recent_failures`](crate::TargetHealth::recent_failures)).
    pub recent_failures: f64,
    /// Whether the actor runs in this process (no hop cost; preferred on ties, see [`Candidate`](crate::Candidate)).
    pub is_local: bool,
    /// How much longer than a typical actor it takes to serve the same tokens: the mean
    /// throughput over its own ([`LoadView::at_rate`]); 1 when either is unknown.
    pub slowness: f64,
}

/// The range [`LoadView::slowness`] is kept in: a node measured 16 times slower than the mean is
/// as good as gone, and a bound keeps one absurd measurement from dominating every estimate.
const SLOWNESS_BOUNDS: (f64, f64) = (1.0 / 16.0, 16.0);

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

impl Reported {
    /// The backlog it states, whatever its age; `None` when nothing was published.
    fn backlog_tokens(&self) -> Option<f64> {
        match *self {
            Reported::Local { backlog_tokens } | Reported::Gossiped { backlog_tokens, .. } => Some(backlog_tokens),
            Reported::Never => None,
        }
    }
}

/// Age given to a value never published: fully untrusted (its weight is 0.5^18000 at the default
/// half-life), so such a target counts as the mean plus this gateway's own attempts.
const NEVER_PUBLISHED_AGE: Duration = Duration::from_secs(3_600);

impl LoadView {
    /// The one way a gateway (and the simulator, deciding as a gateway would) turns what it has
    /// heard of a target and what it knows itself into a view for [`estimate`]. `prior_backlog` is
    /// [`mean_backlog`] over every target the gateway has.
    pub fn new(reported: Reported, prior_backlog: f64, outstanding: u32, recent_failures: f64) -> Self {
        let (reported_backlog, reported_age, is_local) = match reported {
            Reported::Local { backlog_tokens } => (backlog_tokens, Duration::ZERO, true),
            Reported::Gossiped { backlog_tokens, age } => (backlog_tokens, age, false),
            Reported::Never => (0.0, NEVER_PUBLISHED_AGE, false),
        };
        Self { reported_backlog, reported_age, prior_backlog, outstanding, recent_failures, is_local, slowness: 1.0 }
    }

    /// The view of an actor whose measured throughput is `rate_opt` (tokens per second; local
    /// gauge or gossip) among actors whose mean is `mean_rate_opt` ([`mean_rate`]).
    pub fn at_rate(self, rate_opt: Option<f64>, mean_rate_opt: Option<f64>) -> Self {
        let slowness = match (rate_opt, mean_rate_opt) {
            (Some(rate), Some(mean)) if rate > 0.0 && mean > 0.0 => {
                (mean / rate).clamp(SLOWNESS_BOUNDS.0, SLOWNESS_BOUNDS.1)
            }
            _ => 1.0,
        };
        Self { slowness, ..self }
    }
}

/// The mean measured throughput (tokens per second) of the targets that have one: what a typical
/// actor does. `None` when none has.
pub fn mean_rate(rates: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let (sum, count) = rates
        .into_iter()
        .flatten()
        .filter(|rate| rate.is_finite() && *rate > 0.0)
        .fold((0.0, 0u32), |(sum, n), rate| (sum + rate, n + 1));
    (count > 0).then(|| sum / f64::from(count))
}

/// The mean backlog of the targets that have reported one (local gauges and gossiped values,
/// whatever their age), 0 when none has: what a gateway knows of a typical actor, and what an old
/// report decays toward. A mean over many actors moves slowly, so its own staleness matters far
/// less than that of one actor's value.
pub fn mean_backlog(reports: impl IntoIterator<Item = Reported>) -> f64 {
    let (sum, count) =
        reports.into_iter().filter_map(|r| r.backlog_tokens()).fold((0.0, 0u32), |(sum, n), b| (sum + b, n + 1));
    if count == 0 {
        0.0
    } else {
        sum / f64::from(count)
    }
}

/// Weights of [`estimate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimateParams {
    /// What one outstanding attempt is assumed to cost, in tokens (default 64).
    pub tokens_per_attempt: f64,
    /// The reported backlog's weight halves every half-life of its age, the rest going to the mean
    /// (default 200 ms: queues change within milliseconds, gossip arrives a few hundred
    /// milliseconds late; docs/simulations.md).
    pub trust_half_life: Duration,
    /// What one recent failure adds, in tokens (default 512).
    pub failure_penalty_tokens: f64,
    /// What an attempt on another node costs beyond the work ahead of it, in tokens (default 128,
    /// two attempts' worth: measured on real processes and in the simulator, docs/routing.md).
    pub remote_hop_cost_tokens: f64,
}

impl Default for EstimateParams {
    fn default() -> Self {
        Self {
            tokens_per_attempt: 64.0,
            trust_half_life: Duration::from_millis(200),
            failure_penalty_tokens: 512.0,
            remote_hop_cost_tokens: 128.0,
        }
    }
}

/// Estimated cost of a new attempt, in tokens of a typical actor: the reported backlog blended
/// with the mean by its age, plus this gateway's outstanding attempts, times the actor's slowness;
/// plus a penalty per recent failure, plus the hop for a remote actor. For a local actor the gauge already holds this gateway's attempts once they
/// reach its queue (microseconds later), so the two are not added: the larger counts (the
/// outstanding count still covers a burst placed before the actor has read its mailbox).
pub fn estimate(view: &LoadView, params: &EstimateParams) -> f64 {
    let hop = if view.is_local { 0.0 } else { params.remote_hop_cost_tokens };
    work_ahead(view, params) * view.slowness + hop + view.recent_failures * params.failure_penalty_tokens
}

/// The work a new attempt is expected to find ahead of it on the actor, in its own tokens (not
/// scaled by its slowness): the reported
/// backlog blended with the mean by its age, plus this gateway's outstanding attempts (for a
/// local actor the larger of the two, as in [`estimate`]). What the attempt waits for before its
/// own texts run, so its timeout allows for it (attempt.rs).
pub fn work_ahead(view: &LoadView, params: &EstimateParams) -> f64 {
    let trust = halving_weight(view.reported_age, params.trust_half_life);
    let backlog = view.reported_backlog * trust + view.prior_backlog * (1.0 - trust);
    let own = f64::from(view.outstanding) * params.tokens_per_attempt;
    if view.is_local {
        backlog.max(own)
    } else {
        backlog + own
    }
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

    /// No hop cost, so the tests of the blend read plainly.
    fn no_hop() -> EstimateParams {
        EstimateParams { remote_hop_cost_tokens: 0.0, ..EstimateParams::default() }
    }

    fn view(reported_backlog: f64, age_ms: u64, outstanding: u32) -> LoadView {
        let reported = if age_ms == 0 {
            Reported::Local { backlog_tokens: reported_backlog }
        } else {
            Reported::Gossiped { backlog_tokens: reported_backlog, age: Duration::from_millis(age_ms) }
        };
        LoadView::new(reported, 0.0, outstanding, 0.0)
    }

    fn remote(reported_backlog: f64, age_ms: u64, prior_backlog: f64, outstanding: u32) -> LoadView {
        let age = Duration::from_millis(age_ms);
        LoadView::new(Reported::Gossiped { backlog_tokens: reported_backlog, age }, prior_backlog, outstanding, 0.0)
    }

    fn local(backlog_tokens: f64, prior_backlog: f64) -> LoadView {
        LoadView::new(Reported::Local { backlog_tokens }, prior_backlog, 0, 0.0)
    }

    #[test]
    fn sums_blended_backlog_outstanding_failures_and_hop() {
        let params = EstimateParams { trust_half_life: Duration::from_secs(2), ..no_hop() };
        assert_eq!(
            estimate(&view(1_000.0, 10, 2), &params).round(),
            (1_000.0 * 0.5f64.powf(0.005) + 2.0 * 64.0).round()
        );
        assert_eq!(estimate(&view(1_000.0, 0, 2), &params), 1_000.0, "local: the gauge already holds our attempts");
        assert_eq!(estimate(&view(10.0, 0, 2), &params), 128.0, "local: a burst not yet in the gauge");
        assert_eq!(
            estimate(&remote(1_000.0, 2_000, 200.0, 0), &params),
            600.0,
            "one half-life old: halfway to the mean"
        );
        assert_eq!(estimate(&remote(1_000.0, 4_000, 200.0, 0), &params), 400.0, "two half-lives old");
        assert_eq!(estimate(&remote(0.0, 4_000, 200.0, 0), &params), 150.0, "an idle report rises toward the mean");
        let failing = LoadView { recent_failures: 1.5, ..view(0.0, 0, 0) };
        assert_eq!(estimate(&failing, &params), 768.0);
        let hop = EstimateParams { remote_hop_cost_tokens: 32.0, ..params };
        assert_eq!(estimate(&remote(100.0, 0, 100.0, 0), &hop), 132.0, "a remote actor costs the hop");
        assert_eq!(estimate(&local(100.0, 100.0), &hop), 100.0, "a local one does not");
    }

    #[test]
    fn never_published_counts_as_the_mean() {
        let view = LoadView::new(Reported::Never, 300.0, 1, 0.0);
        assert_eq!(estimate(&view, &no_hop()), 300.0 + 64.0);
    }

    #[test]
    fn mean_backlog_skips_targets_that_never_published() {
        let age = Duration::from_secs(5);
        let reports = [
            Reported::Local { backlog_tokens: 100.0 },
            Reported::Gossiped { backlog_tokens: 300.0, age },
            Reported::Never,
        ];
        assert_eq!(mean_backlog(reports), 200.0);
        assert_eq!(mean_backlog([Reported::Never]), 0.0);
        assert_eq!(mean_backlog([]), 0.0);
    }

    #[test]
    fn own_attempts_outweigh_stale_gossip() {
        let params = EstimateParams::default();
        // The remote node looked idle 10 s ago; this gateway has since sent it 20 attempts.
        let stale_idle = remote(0.0, 10_000, 0.0, 20);
        let fresh_busy = view(1_000.0, 0, 0);
        assert!(estimate(&stale_idle, &params) > estimate(&fresh_busy, &params));
    }

    #[test]
    fn zero_half_life_trusts_only_fresh_reports() {
        assert_eq!(halving_weight(Duration::ZERO, Duration::ZERO), 1.0);
        assert_eq!(halving_weight(Duration::from_nanos(1), Duration::ZERO), 0.0);
    }

    /// Two equal nodes under even load, as one gateway sees them: two local actors, two remote
    /// ones that gossiped the same backlog a while ago.
    #[test]
    fn equal_nodes_under_even_load_stay_local_and_a_busier_local_node_sends_work_away() {
        let params = EstimateParams::default();
        let age = 300; // ms: the mean age of gossiped values in the simulation
        for backlog in [0.0, 32.0, 64.0, 256.0, 4_096.0] {
            let mean = backlog;
            let here = estimate(&local(backlog, mean), &params);
            let there = estimate(&remote(backlog, age, mean, 0), &params);
            assert!(here < there, "backlog {backlog}: local {here}, remote {there}");
        }
        // The local actors hold ten texts more than the other node's (32 tokens each): the mean
        // lies five texts below the local backlog, more than the hop's 128 tokens.
        let (busy, light) = (448.0, 128.0);
        let mean = (busy + light) / 2.0;
        let here = estimate(&local(busy, mean), &params);
        for age in [0, 100, 300, 1_000, 10_000] {
            let there = estimate(&remote(light, age, mean, 0), &params);
            assert!(there < here, "age {age} ms: local {here}, remote {there}");
        }
    }

    #[test]
    fn a_slower_actor_counts_its_work_at_a_typical_actors_speed() {
        let params = EstimateParams::default();
        let mean_rate_opt = mean_rate([Some(1_000.0), Some(3_000.0), None, Some(f64::NAN), Some(0.0)]);
        assert_eq!(mean_rate_opt, Some(2_000.0), "unknown, zero and NaN rates do not count");
        assert_eq!(mean_rate([None, Some(0.0)]), None);
        let slow = local(128.0, 0.0).at_rate(Some(1_000.0), mean_rate_opt);
        let fast = local(128.0, 0.0).at_rate(Some(4_000.0), mean_rate_opt);
        assert_eq!((slow.slowness, fast.slowness), (2.0, 0.5));
        assert_eq!((estimate(&slow, &params), estimate(&fast, &params)), (256.0, 64.0));
        // The hop is not work: a remote actor twice as fast pays the same hop on half the work.
        let remote_fast = remote(128.0, 0, 0.0, 0).at_rate(Some(4_000.0), mean_rate_opt);
        assert_eq!(estimate(&remote_fast, &params), 64.0 + params.remote_hop_cost_tokens);
        // Unknown rates, and absurd ones, stay within bounds.
        assert_eq!(local(128.0, 0.0).at_rate(None, mean_rate_opt).slowness, 1.0);
        assert_eq!(local(128.0, 0.0).at_rate(Some(1e-9), mean_rate_opt).slowness, 16.0);
        // The work a queue wait is computed from stays in the actor's own tokens.
        assert_eq!(work_ahead(&slow, &params), 128.0);
    }

    proptest! {
        #[test]
        fn equal_rates_change_no_estimate_and_a_faster_actor_never_looks_busier(
            backlog in 0.0..1e5f64, outstanding in 0u32..50, rate in 1.0..1e5f64, faster_by in 1.0..16.0f64,
        ) {
            let params = EstimateParams::default();
            let plain = local(backlog, 0.0);
            let at_mean = plain.at_rate(Some(rate), Some(rate));
            prop_assert_eq!(estimate(&at_mean, &params), estimate(&plain, &params));
            let view = LoadView { outstanding, ..plain };
            let mean = Some(rate);
            let slower = estimate(&view.at_rate(Some(rate), mean), &params);
            let faster = estimate(&view.at_rate(Some(rate * faster_by), mean), &params);
            prop_assert!(faster <= slower, "{faster} > {slower}");
        }

        #[test]
        fn older_reports_move_toward_the_mean_and_fewer_attempts_never_raise_the_estimate(
            backlog in 0.0..1e6f64, prior in 0.0..1e6f64, age_ms in 1u64..60_000, older_by in 0u64..60_000,
            outstanding in 0u32..1_000,
        ) {
            let params = EstimateParams::default();
            let now = estimate(&remote(backlog, age_ms, prior, outstanding), &params);
            let older = estimate(&remote(backlog, age_ms + older_by, prior, outstanding), &params);
            let fixed = f64::from(outstanding) * params.tokens_per_attempt + params.remote_hop_cost_tokens;
            let slack = 1e-9 * (backlog + prior + fixed);
            prop_assert!((older - fixed - prior).abs() <= (now - fixed - prior).abs() + slack, "{now} -> {older}");
            prop_assert!(estimate(&remote(backlog, age_ms, prior, outstanding + 1), &params) > now);
            prop_assert!(now >= backlog.min(prior) + fixed - slack && now <= backlog.max(prior) + fixed + slack);
        }

        #[test]
        fn staleness_never_makes_a_remote_look_lighter_than_the_mean(
            backlog in 0.0..1e6f64, prior in 0.0..1e6f64, age_ms in 0u64..600_000, outstanding in 0u32..1_000,
            failures in 0.0..100f64,
        ) {
            let params = EstimateParams::default();
            let view = LoadView { recent_failures: failures, ..remote(backlog, age_ms, prior, outstanding) };
            let lightest = backlog.min(prior);
            let estimate = estimate(&view, &params);
            prop_assert!(estimate >= lightest * (1.0 - 1e-12) + params.remote_hop_cost_tokens, "{estimate}");
            if backlog >= prior {
                prop_assert!(estimate >= prior * (1.0 - 1e-12) + params.remote_hop_cost_tokens, "{estimate}");
            }
        }

        #[test]
        fn a_remote_actor_wins_only_by_more_than_the_hop(
            local_backlog in 0.0..1e5f64, remote_backlog in 0.0..1e5f64, age_ms in 0u64..10_000,
        ) {
            // Whatever the age, a remote actor beats a local one only when the local one is busier
            // than the remote report or the mean (the most the blend can say) by more than the hop.
            let params = EstimateParams::default();
            let mean = (local_backlog + remote_backlog) / 2.0;
            let here = estimate(&local(local_backlog, mean), &params);
            let there = estimate(&remote(remote_backlog, age_ms, mean, 0), &params);
            if there < here {
                prop_assert!(local_backlog - remote_backlog.min(mean) > params.remote_hop_cost_tokens);
            }
        }
    }
}
