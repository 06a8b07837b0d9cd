//! Publishing each local actor's load into gossip at a bounded rate, with hysteresis.
//!
//! Every `advanced.load_publish_interval_ms` the publisher reads each actor's gauge and decides,
//! with [`should_publish`], whether the change is worth a gossip update: never twice within the
//! interval, always after `advanced.load_max_quiet_ms` (so the value's age stays meaningful), and
//! otherwise only when the backlog moved by more than the hysteresis fraction (or to or from
//! zero). A busy actor whose backlog jitters by a few tokens does not flood the cluster; an idle
//! actor costs one small update per quiet period.

use std::time::{Duration, Instant};

use senti_config::AdvancedConfig;

/// When to publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishPolicy {
    /// Least time between two publications of one actor.
    pub min_interval: Duration,
    /// Publish anyway after this long.
    pub max_quiet: Duration,
    /// Relative change of the backlog worth publishing.
    pub hysteresis: f64,
    /// Changes at or below this many tokens are never worth publishing on their own.
    pub min_delta_tokens: u64,
}

impl PublishPolicy {
    /// From `[advanced]`.
    pub fn from_config(config: &AdvancedConfig) -> Self {
        Self {
            min_interval: Duration::from_millis(config.load_publish_interval_ms),
            max_quiet: Duration::from_millis(config.load_max_quiet_ms),
            hysteresis: config.load_hysteresis,
            min_delta_tokens: config.load_min_delta_tokens,
        }
    }
}

/// The last value published for one actor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Published {
    /// Backlog tokens published.
    pub backlog_tokens: u64,
    /// When.
    pub at: Instant,
}

/// Whether `backlog_tokens` at `now` should be published after `last_opt`.
pub fn should_publish(last_opt: Option<&Published>, backlog_tokens: u64, now: Instant, policy: &PublishPolicy) -> bool {
    let Some(last) = last_opt else {
        return true;
    };
    let elapsed = now.saturating_duration_since(last.at);
    if elapsed < policy.min_interval {
        return false;
    }
    if elapsed >= policy.max_quiet || (last.backlog_tokens == 0) != (backlog_tokens == 0) {
        return true;
    }
    let delta = last.backlog_tokens.abs_diff(backlog_tokens);
    delta > policy.min_delta_tokens && delta as f64 > policy.hysteresis * last.backlog_tokens as f64
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy() -> PublishPolicy {
        PublishPolicy {
            min_interval: Duration::from_millis(100),
            max_quiet: Duration::from_secs(1),
            hysteresis: 0.1,
            min_delta_tokens: 16,
        }
    }

    #[test]
    fn first_value_large_changes_and_quiet_periods_are_published() {
        let t0 = Instant::now();
        let last = Published { backlog_tokens: 1_000, at: t0 };
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(should_publish(None, 5, t0, &policy()));
        assert!(!should_publish(Some(&last), 5_000, ms(50), &policy()), "within the interval");
        assert!(!should_publish(Some(&last), 1_050, ms(200), &policy()), "5%: below hysteresis");
        assert!(should_publish(Some(&last), 1_200, ms(200), &policy()), "20%");
        assert!(should_publish(Some(&last), 0, ms(200), &policy()), "to zero");
        assert!(should_publish(Some(&last), 1_000, ms(1_000), &policy()), "quiet too long");
        let idle = Published { backlog_tokens: 0, at: t0 };
        assert!(!should_publish(Some(&idle), 0, ms(500), &policy()));
        assert!(should_publish(Some(&idle), 20, ms(150), &policy()), "from zero");
    }

    proptest! {
        /// Whatever the backlog does, an actor is published at most once per interval: the
        /// gossip rate is bounded.
        #[test]
        fn publications_are_rate_bounded(backlogs in prop::collection::vec(0u64..10_000, 1..400)) {
            let t0 = Instant::now();
            let mut last_opt: Option<Published> = None;
            let mut published = 0u32;
            for (i, &backlog) in backlogs.iter().enumerate() {
                let now = t0 + Duration::from_millis(10 * i as u64); // checked every 10 ms
                if should_publish(last_opt.as_ref(), backlog, now, &policy()) {
                    if let Some(last) = &last_opt {
                        prop_assert!(now.duration_since(last.at) >= policy().min_interval);
                    }
                    last_opt = Some(Published { backlog_tokens: backlog, at: now });
                    published += 1;
                }
            }
            prop_assert!(published as usize <= backlogs.len() / 10 + 1);
        }
    }
}
