//! Chaos scenarios on the simulated cluster (virtual time): every invariant holds through crashes,
//! restarts, hangs, partitions, loss, gray failures, load spikes and rolling restarts.

use std::time::Duration;

use senti_simulations::{run_blocking, Bounds, Op, Report, Scenario, SimConfig};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn scenario(name: &str, nodes: usize, seed: u64, ops: Vec<Op>) -> Scenario {
    Scenario {
        name: name.into(),
        config: SimConfig { nodes, seed, ..SimConfig::default() },
        ops,
        bounds: Bounds::default(),
    }
}

fn assert_clean(report: &Report) {
    println!("{report}");
    assert!(report.violations.is_empty(), "{report}");
    assert!(report.ok > 0, "{report}");
}

#[test]
fn crash_and_restart_lose_nothing_the_cluster_accepted() {
    let report = run_blocking(&scenario(
        "crash-restart",
        4,
        7,
        vec![
            Op::Rate(2_000.0),
            Op::Wait(secs(2.0)),
            Op::Crash(3),
            Op::Wait(secs(8.0)),
            Op::Restart(3),
            Op::AssertConverged(secs(10.0)),
            Op::Wait(secs(2.0)),
        ],
    ));
    assert_clean(&report);
    assert_eq!(report.errors, 0, "{report}");
}

#[test]
fn a_hung_node_is_failed_over_then_declared_dead_then_welcomed_back() {
    let report = run_blocking(&scenario(
        "hang-resume",
        4,
        11,
        vec![
            Op::Rate(2_000.0),
            Op::Wait(secs(1.0)),
            Op::Hang(1),
            Op::Wait(secs(12.0)),
            Op::Resume(1),
            Op::AssertConverged(secs(10.0)),
            Op::Wait(secs(1.0)),
        ],
    ));
    assert_clean(&report);
}

#[test]
fn partitions_one_way_and_both_ways_heal_and_converge() {
    let report = run_blocking(&scenario(
        "partitions",
        5,
        13,
        vec![
            Op::Rate(2_000.0),
            Op::Partition(vec![0, 1], vec![2, 3, 4]),
            Op::Wait(secs(10.0)),
            Op::Heal,
            Op::AssertConverged(secs(15.0)),
            Op::PartitionOneWay(vec![4], vec![0, 1, 2, 3]),
            Op::Wait(secs(8.0)),
            Op::Heal,
            Op::AssertConverged(secs(15.0)),
        ],
    ));
    assert_clean(&report);
}

#[test]
fn a_slow_node_under_gossip_loss_and_delay_and_a_load_spike() {
    let report = run_blocking(&scenario(
        "gray-failure",
        6,
        17,
        vec![
            Op::Rate(3_000.0),
            Op::Slow(2, 10.0),
            Op::Loss(0.2),
            Op::GossipDelay(Duration::from_millis(50)),
            Op::Wait(secs(5.0)),
            Op::Rate(10_000.0),
            Op::Wait(secs(2.0)),
            Op::Rate(3_000.0),
            Op::Wait(secs(3.0)),
            Op::Loss(0.0),
            Op::AssertConverged(secs(10.0)),
        ],
    ));
    assert_clean(&report);
}

#[test]
fn a_rolling_restart_and_a_joining_node() {
    let report = run_blocking(&scenario(
        "rolling-restart",
        4,
        19,
        vec![
            Op::Rate(2_000.0),
            Op::RollingRestart(secs(2.0)),
            Op::AddNode,
            Op::AssertConverged(secs(10.0)),
            Op::Wait(secs(2.0)),
        ],
    ));
    assert_clean(&report);
}

#[test]
fn random_fault_schedules_keep_every_invariant() {
    for seed in [101, 102] {
        let report = run_blocking(&senti_simulations::scenario::random_scenario(seed));
        println!("{report}");
        assert!(report.violations.is_empty(), "{report}");
    }
}

/// A seed replays its schedule exactly: the same steps at the same virtual times and the same
/// requests entering the same nodes. (The full trace hash is reported too; it can differ between
/// runs because chitchat draws gossip peers from an OS-seeded generator: see `Trace::hash`.)
#[test]
fn a_seed_replays_the_same_schedule() {
    let scenario =
        scenario("replay", 3, 42, vec![Op::Rate(1_000.0), Op::Wait(secs(1.0)), Op::Crash(2), Op::Wait(secs(1.0))]);
    let first = run_blocking(&scenario);
    let second = run_blocking(&scenario);
    assert_eq!(first.schedule_hash, second.schedule_hash);
    assert_eq!(first.accepted, second.accepted);
    let other = run_blocking(&Scenario { config: SimConfig { seed: 43, ..scenario.config.clone() }, ..scenario });
    assert_ne!(first.schedule_hash, other.schedule_hash, "the seed must matter");
}
