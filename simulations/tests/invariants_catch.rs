//! Each invariant catches a deliberately broken policy: the same scenarios as `scenarios.rs`, with
//! the gateway (or the failure detector) misconfigured on purpose, must report the violation the
//! invariant exists for. If one of these passes clean, the check cannot fail and proves nothing.

use std::time::Duration;

use senti_simulations::{run_blocking, Bounds, Op, Report, Scenario, SimConfig, Violation};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn run(config: SimConfig, ops: Vec<Op>) -> Report {
    let report = run_blocking(&Scenario { name: "broken".into(), config, ops, bounds: Bounds::default() });
    println!("{report}");
    report
}

#[test]
fn an_unbounded_retry_policy_breaks_the_retry_budget() {
    // Queues of one text under a load above capacity: most first attempts meet a full queue, and an
    // unbounded policy retries far more than 20% of requests.
    let mut config = SimConfig { nodes: 3, seed: 3, queue_capacity: 1, ..SimConfig::default() };
    config.node.advanced.retry_budget_ratio = 1.0;
    config.node.advanced.retry_min_reserve = 1e5;
    let report = run(config, vec![Op::Rate(8_000.0), Op::Wait(secs(2.0))]);
    assert!(report.violations.iter().any(|v| matches!(v, Violation::RetryBudget { .. })), "{report}");
}

#[test]
fn an_unbounded_hedging_policy_breaks_the_hedge_budget() {
    let mut config = SimConfig { nodes: 3, seed: 5, ..SimConfig::default() };
    config.node.advanced.hedge_budget_ratio = 1.0;
    let report = run(config, vec![Op::Rate(2_000.0), Op::Slow(1, 20.0), Op::Wait(secs(3.0))]);
    assert!(report.violations.iter().any(|v| matches!(v, Violation::HedgeBudget { .. })), "{report}");
}

#[test]
fn a_gateway_that_ignores_the_client_deadline_answers_late() {
    let mut config = SimConfig {
        nodes: 3,
        seed: 9,
        request_timeout: secs(1.0),
        broken_deadline_slack: secs(3.0),
        ..SimConfig::default()
    };
    config.node.routing.attempt_timeout_ms = 5_000;
    // Work must cross to the hung node for anything to answer late: gateways keep light, even load
    // local (the hop costs `remote_hop_cost_tokens`), so the load is about half of capacity and
    // the hop is free.
    config.node.advanced.remote_hop_cost_tokens = 0.0;
    let report = run(config, vec![Op::Rate(3_000.0), Op::Hang(1), Op::Wait(secs(2.0))]);
    assert!(report.violations.iter().any(|v| matches!(v, Violation::Late { .. })), "{report}");
}

#[test]
fn a_failure_detector_that_never_fires_routes_to_the_dead() {
    let mut config = SimConfig { nodes: 3, seed: 21, ..SimConfig::default() };
    // Effectively never fires. A hung node keeps its TCP session: only gossip can tell it is gone
    // (the failure detector, and its state no longer advancing: that rule is switched off too).
    config.node.advanced.phi_threshold = 1_000.0;
    config.quiet_limit = Duration::from_secs(3_600);
    let report = run(config, vec![Op::Rate(1_000.0), Op::Hang(2), Op::Wait(secs(20.0))]);
    assert!(report.violations.iter().any(|v| matches!(v, Violation::RoutedToDead { .. })), "{report}");
}

#[test]
fn a_partition_that_never_heals_does_not_converge() {
    let config = SimConfig { nodes: 4, seed: 23, ..SimConfig::default() };
    let report = run(
        config,
        vec![
            Op::Rate(500.0),
            Op::Partition(vec![0, 1], vec![2, 3]),
            Op::Wait(secs(5.0)),
            Op::AssertConverged(secs(5.0)),
        ],
    );
    assert!(report.violations.iter().any(|v| matches!(v, Violation::NoConvergence { .. })), "{report}");
}
