//! `senti-bench-routing`: what one placement decision costs the gateway, in nanoseconds.
//!
//! The gateway places every attempt (crates/routing/src/gateway.rs `place`) by turning one
//! [`LoadView`] per target into a [`Candidate`] with [`estimate`] and handing the candidates to
//! [`local_plus_sampled_remote`] with 2 remote samples, or 8 while the gateway sends most of its
//! work away (`senti_routing::RemoteSampling`). This times that work for 4, 64 and 256 targets (two of them local,
//! as on a node with `engine.actors = 2`), for the gateway's policy and, for comparison, for
//! [`power_of_two_choices`] and [`least_loaded`], in two forms:
//!
//! - `choose`: the chooser alone over candidates built once;
//! - `estimate + choose`: one [`estimate`] per target into a fresh `Vec`, then the chooser, which
//!   is what `place` does per attempt (minus its ejection filter and bookkeeping).
//!
//! The views are fixed per run (random backlogs, gossip ages and outstanding counts from a fixed
//! seed); the generator that samples targets is the gateway's (`SmallRng`). Each configuration is
//! calibrated to about `--round-ms` per round, then run in `--rounds` rounds that interleave the
//! configurations (a slow spell on a shared machine then hits all of them); the median round is
//! reported with every round. Single-threaded; results on stdout (markdown) and with `--json`.
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use senti_routing::{
    estimate, least_loaded, local_plus_sampled_remote, power_of_two_choices, Candidate, EstimateParams, LoadView,
    FEW_REMOTE_SAMPLES, MANY_REMOTE_SAMPLES,
};
use serde::Serialize;

#[derive(Parser)]
#[command(name = "senti-bench-routing", version, about = "Nanoseconds per routing decision of the senti gateway")]
struct Cli {
    /// Target counts to measure (two of each are local).
    #[arg(long, value_delimiter = ',', default_value = "4,64,256")]
    targets: Vec<usize>,
    /// Rounds per configuration; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Wall time one round of one configuration should take, in milliseconds (sets the iterations).
    #[arg(long, default_value_t = 200)]
    round_ms: u64,
    /// Seed of the load views and of the samplers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Local targets per configuration, as on a node with two inference actors.
const LOCAL_TARGETS: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Policy {
    LocalPlusFewRemote,
    LocalPlusManyRemote,
    PowerOfTwoChoices,
    LeastLoaded,
}

impl Policy {
    /// The function's name in senti_routing.
    fn name(self) -> &'static str {
        match self {
            Policy::LocalPlusFewRemote => "local_plus_sampled_remote (2)",
            Policy::LocalPlusManyRemote => "local_plus_sampled_remote (8)",
            Policy::PowerOfTwoChoices => "power_of_two_choices",
            Policy::LeastLoaded => "least_loaded",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Work {
    /// The chooser over prebuilt candidates.
    Choose,
    /// One estimate per target into a new Vec, then the chooser (the gateway's `place`).
    EstimateAndChoose,
}

/// One measured configuration.
#[derive(Serialize)]
struct Measurement {
    targets: usize,
    local_targets: usize,
    policy: Policy,
    work: Work,
    iterations_per_round: u64,
    /// Median of `rounds_ns_per_decision`.
    ns_per_decision: f64,
    rounds_ns_per_decision: Vec<f64>,
}

#[derive(Serialize)]
struct Output {
    rounds: usize,
    round_ms: u64,
    seed: u64,
    estimate_params: String,
    results: Vec<Measurement>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(cli.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(
        cli.targets.iter().all(|&n| n > LOCAL_TARGETS),
        "every --targets value must exceed {LOCAL_TARGETS}"
    );
    let params = EstimateParams::default();
    let mut views_rng = SmallRng::seed_from_u64(cli.seed);
    let mut configs = Vec::new();
    for &n in &cli.targets {
        let views: Vec<LoadView> = (0..n).map(|i| random_view(i < LOCAL_TARGETS, &mut views_rng)).collect();
        for policy in
            [Policy::LocalPlusFewRemote, Policy::LocalPlusManyRemote, Policy::PowerOfTwoChoices, Policy::LeastLoaded]
        {
            for work in [Work::Choose, Work::EstimateAndChoose] {
                let iterations = calibrate(&views, &params, policy, work, Duration::from_millis(cli.round_ms));
                configs.push((views.clone(), policy, work, iterations, Vec::new()));
            }
        }
    }
    let mut rng = SmallRng::seed_from_u64(cli.seed ^ 0x5eed);
    for round in 0..cli.rounds {
        eprintln!("senti-bench-routing: round {}/{}", round + 1, cli.rounds);
        for (views, policy, work, iterations, rounds) in &mut configs {
            let elapsed = time(views, &params, *policy, *work, *iterations, &mut rng);
            rounds.push(elapsed.as_nanos() as f64 / *iterations as f64);
        }
    }
    let results: Vec<Measurement> = configs
        .into_iter()
        .map(|(views, policy, work, iterations, rounds)| Measurement {
            targets: views.len(),
            local_targets: LOCAL_TARGETS,
            policy,
            work,
            iterations_per_round: iterations,
            ns_per_decision: median(&rounds),
            rounds_ns_per_decision: rounds,
        })
        .collect();
    print_report(&results);
    if let Some(path) = &cli.json {
        let output = Output {
            rounds: cli.rounds,
            round_ms: cli.round_ms,
            seed: cli.seed,
            estimate_params: format!("{params:?}"),
            results,
        };
        std::fs::write(path, serde_json::to_vec_pretty(&output)?)?;
    }
    Ok(())
}

/// A view as a busy gateway might hold it: local actors exact and fresh; remote ones gossiped up
/// to a second ago, with a few attempts of ours in flight, now and then a recent failure, and
/// speeds within 2x of the mean.
fn random_view(is_local: bool, rng: &mut SmallRng) -> LoadView {
    LoadView {
        reported_backlog: f64::from(rng.random_range(0..2_000u32)),
        reported_age: if is_local { Duration::ZERO } else { Duration::from_millis(rng.random_range(0..1_000)) },
        prior_backlog: 1_000.0,
        outstanding: rng.random_range(0..4),
        recent_failures: if rng.random_ratio(1, 10) { rng.random_range(0.0..2.0) } else { 0.0 },
        is_local,
        slowness: rng.random_range(0.5..2.0),
    }
}

/// Iterations that take about `round` (at least 10,000).
fn calibrate(views: &[LoadView], params: &EstimateParams, policy: Policy, work: Work, round: Duration) -> u64 {
    let mut rng = SmallRng::seed_from_u64(0);
    let mut iterations = 10_000u64;
    loop {
        let elapsed = time(views, params, policy, work, iterations, &mut rng);
        if elapsed >= round / 4 {
            let scaled = iterations as f64 * round.as_secs_f64() / elapsed.as_secs_f64();
            return (scaled as u64).max(10_000);
        }
        iterations *= 4;
    }
}

/// Wall time of `iterations` decisions.
fn time(
    views: &[LoadView],
    params: &EstimateParams,
    policy: Policy,
    work: Work,
    iterations: u64,
    rng: &mut SmallRng,
) -> Duration {
    let prebuilt = candidates(views, params);
    let started = Instant::now();
    for _ in 0..iterations {
        let chosen = match work {
            Work::Choose => choose(black_box(&prebuilt), policy, rng),
            Work::EstimateAndChoose => choose(&candidates(black_box(views), params), policy, rng),
        };
        black_box(chosen);
    }
    started.elapsed()
}

/// What the gateway's `candidate` does for every target.
fn candidates(views: &[LoadView], params: &EstimateParams) -> Vec<Candidate> {
    views
        .iter()
        .enumerate()
        .map(|(index, view)| Candidate { index, estimate: estimate(view, params), is_local: view.is_local })
        .collect()
}

fn choose(candidates: &[Candidate], policy: Policy, rng: &mut SmallRng) -> Option<usize> {
    match policy {
        Policy::LocalPlusFewRemote => local_plus_sampled_remote(candidates, FEW_REMOTE_SAMPLES, rng),
        Policy::LocalPlusManyRemote => local_plus_sampled_remote(candidates, MANY_REMOTE_SAMPLES, rng),
        Policy::PowerOfTwoChoices => power_of_two_choices(candidates, rng),
        Policy::LeastLoaded => least_loaded(candidates),
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn print_report(results: &[Measurement]) {
    println!("| targets (2 local) | policy | ns per decision: choose | rounds | ns per decision: estimate + choose | rounds |");
    println!("|---:|---|---:|---|---:|---|");
    let rounds =
        |m: &Measurement| m.rounds_ns_per_decision.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
    for pair in results.chunks(2) {
        let [choose, full] = pair else { continue };
        println!(
            "| {} | `{}` | {:.1} | {} | {:.1} | {} |",
            choose.targets,
            choose.policy.name(),
            choose.ns_per_decision,
            rounds(choose),
            full.ns_per_decision,
            rounds(full)
        );
    }
}
