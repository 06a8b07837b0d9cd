//! The gateway's settings, read once from the configuration.

use std::time::Duration;

use senti_config::Config;

use crate::estimate::EstimateParams;
use crate::hedge::HedgePolicy;
use crate::outlier::OutlierParams;

/// Everything the gateway's decisions depend on besides the targets themselves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutingParams {
    /// Longest wait for one attempt (`routing.attempt_timeout_ms`).
    pub attempt_timeout: Duration,
    /// An attempt this many times slower than the recent p99 is abandoned sooner (0: off).
    pub attempt_timeout_factor: f64,
    /// Floor of that p99-based timeout.
    pub attempt_timeout_floor: Duration,
    /// Retries per request on average.
    pub retry_budget_ratio: f64,
    /// Retries always allowed.
    pub retry_min_reserve: f64,
    /// Hedges per request on average.
    pub hedge_budget_ratio: f64,
    /// Most hedges saved up.
    pub hedge_budget_cap: f64,
    /// Weights of the load estimate.
    pub estimate: EstimateParams,
    /// When to eject a failing target.
    pub outlier: OutlierParams,
    /// When to hedge.
    pub hedge: HedgePolicy,
}

impl RoutingParams {
    /// From `[routing]` and `[advanced]`.
    pub fn from_config(config: &Config) -> Self {
        let a = &config.advanced;
        let ms = Duration::from_millis;
        Self {
            attempt_timeout: ms(config.routing.attempt_timeout_ms),
            attempt_timeout_factor: a.attempt_timeout_p99_factor,
            attempt_timeout_floor: ms(a.attempt_timeout_min_ms),
            retry_budget_ratio: a.retry_budget_ratio,
            retry_min_reserve: a.retry_min_reserve,
            hedge_budget_ratio: a.hedge_budget_ratio,
            hedge_budget_cap: a.hedge_budget_cap,
            estimate: EstimateParams {
                tokens_per_attempt: a.tokens_per_attempt,
                trust_half_life: ms(a.trust_half_life_ms),
                failure_penalty_tokens: a.failure_penalty_tokens,
                remote_hop_cost_tokens: a.remote_hop_cost_tokens,
            },
            outlier: OutlierParams {
                consecutive_failures: a.eject_consecutive_failures,
                base_ejection: ms(a.eject_base_ms),
                max_ejection: ms(a.eject_max_ms),
                ..OutlierParams::default()
            },
            hedge: HedgePolicy {
                quantile: a.hedge_quantile,
                min_delay: ms(a.hedge_min_delay_ms),
                ..HedgePolicy::default()
            },
        }
    }
}

impl Default for RoutingParams {
    /// The shipped defaults.
    fn default() -> Self {
        Self::from_config(&Config::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_defaults_are_the_configuration_defaults() {
        let params = RoutingParams::default();
        assert_eq!(params.estimate, EstimateParams::default());
        assert_eq!(params.outlier, OutlierParams::default());
        assert_eq!(params.hedge, HedgePolicy::default());
    }
}
