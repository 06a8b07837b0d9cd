//! `senti-sim-report`: the routing-quality report (docs/simulations.md, "Routing quality").
//!
//! Runs every policy at every offered load for each cluster size, one simulation at a time on one
//! thread, prints the markdown tables (progress goes to stderr), and writes one SVG plot per
//! cluster size, `routing-p99-<nodes>.svg`, into `--img-dir`. `--sweep` instead runs the project's
//! policy over a grid of estimate weights, `--sweep-hop-cost` over remote hop costs,
//! `--sweep-placement` over remote sample counts, `--sweep-notices` over idle-notice settings.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use senti_routing::EstimateParams;
use senti_simulations::quality::{
    diagnostics_table, gateway_estimate_params, markdown_table, run, write_p99_plot, CellResult, Policy, Scenario,
    ServiceTime, Tweaks, Variant,
};

#[derive(Parser)]
#[command(name = "senti-sim-report", about = "Routing quality of the placement policies, simulated")]
struct Cli {
    /// Seed of every simulation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Cluster sizes (nodes).
    #[arg(long, value_delimiter = ',', default_values_t = [8, 32, 128])]
    nodes: Vec<usize>,
    /// Cluster shapes: equal, unequal, slowed, one-entry, bursts (docs/simulations.md).
    #[arg(long, value_delimiter = ',', default_values_t = ["equal".to_owned()])]
    variants: Vec<String>,
    /// Offered loads, as fractions of capacity.
    #[arg(long, value_delimiter = ',', default_values_t = [0.5, 0.7, 0.85, 0.95])]
    loads: Vec<f64>,
    /// Measured requests per cell (default: 400k for 32 nodes, 200k otherwise).
    #[arg(long)]
    requests: Option<usize>,
    /// Exponential service times with this mean (ms) instead of the measured log-normal.
    #[arg(long)]
    exponential_service_ms: Option<f64>,
    /// Folder of the SVG plots.
    #[arg(long, default_value = "docs/img")]
    img_dir: PathBuf,
    /// Only the seven compared policies, without the labelled extra rows.
    #[arg(long)]
    no_extra_rows: bool,
    /// Instead of the grid: the project's policy at `--loads` for every trust half-life x
    /// tokens_per_attempt of the sweep, one table per cluster size and load; no plots.
    #[arg(long)]
    sweep: bool,
    /// Instead of the grid: the project's policy at `--loads` for every remote hop cost of the
    /// sweep (`advanced.remote_hop_cost_tokens`), one table per cluster size; no plots.
    #[arg(long)]
    sweep_hop_cost: bool,
    /// Instead of the grid: the project's placement with 2 to 8 remote samples, speed-aware (as
    /// the gateway) and speed-blind, in every `--variants` at `--loads`, beside per-gateway and single
    /// least-connections and the oracle; one table per cluster size and load; no plots.
    #[arg(long)]
    sweep_placement: bool,
    /// Instead of the grid: the project's placement with idle notices to 1 to 4 gateways, each
    /// used beyond 1 to 3 attempts' worth of work ahead, and without notices, in every `--variants`
    /// at `--loads`; one table per cluster size and load; no plots.
    #[arg(long)]
    sweep_notices: bool,
}

/// Rows beyond the compared policies, each labelled: the project's policy with other weights
/// (consistent token units; the best trust half-life of the sweep), hypothetical code changes,
/// and references with perfect information. The flag says whether the row is also plotted (the
/// plots keep to nine lines).
fn extra_rows() -> Vec<(Policy, bool)> {
    let gateway = gateway_estimate_params();
    vec![
        (Policy::Project(EstimateParams { tokens_per_attempt: 32.0, ..gateway }), false),
        (Policy::Project(EstimateParams { trust_half_life: Duration::from_millis(20), ..gateway }), false),
        (Policy::ProjectRandomTies(EstimateParams { trust_half_life: Duration::ZERO, ..gateway }), false),
        (Policy::IdleLocalFirst, true),
        (Policy::ProjectGossipOnly(gateway), false),
        (Policy::ProjectWith(gateway, Tweaks::NO_NOTICES), true),
        (Policy::ProjectWith(gateway, Tweaks { speed_blind: true, ..Tweaks::NONE }), true),
        (Policy::ProjectWith(gateway, Tweaks { remote_samples: Some(2), ..Tweaks::NONE }), false),
        (Policy::SampledOracle(2), true),
        (Policy::SampledOracle(4), false),
    ]
}

/// Extra rows are dashed in the plots.
fn is_extra_row(label: &str) -> bool {
    extra_rows().iter().any(|(policy, _)| policy.label() == label)
}

const SWEEP_HALF_LIVES_MS: [u64; 7] = [2_000, 500, 200, 100, 50, 20, 0];
const SWEEP_TOKENS_PER_ATTEMPT: [f64; 4] = [32.0, 64.0, 128.0, 256.0];
const SWEEP_REMOTE_SAMPLES: [usize; 5] = [2, 3, 4, 6, 8];
const SWEEP_HOP_COST_TOKENS: [f64; 6] = [0.0, 16.0, 32.0, 64.0, 128.0, 256.0];
const SWEEP_NOTICE_FANOUTS: [usize; 4] = [1, 2, 3, 4];
const SWEEP_NOTICE_AFTER_ATTEMPTS: [f64; 4] = [1.0, 1.5, 2.0, 3.0];

fn default_requests(nodes: usize) -> usize {
    if (17..=64).contains(&nodes) {
        400_000
    } else {
        200_000
    }
}

fn main() -> std::process::ExitCode {
    match report(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("senti-sim-report: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn scenario(cli: &Cli, variant: Variant, nodes: usize, load: f64) -> Scenario {
    let mut scenario = Scenario {
        measured_requests: cli.requests.unwrap_or_else(|| default_requests(nodes)),
        ..Scenario::new(nodes, load, cli.seed)
    };
    if let Some(mean_ms) = cli.exponential_service_ms {
        scenario.service = ServiceTime::Exponential { mean: Duration::from_secs_f64(mean_ms / 1e3) };
    }
    variant.apply(scenario)
}

/// The variants named on the command line.
fn variants(cli: &Cli) -> anyhow::Result<Vec<Variant>> {
    cli.variants
        .iter()
        .map(|name| {
            Variant::parse(name).with_context(|| {
                let known: Vec<&str> = Variant::ALL.iter().map(Variant::name).collect();
                format!("unknown variant {name:?}; known: {}", known.join(", "))
            })
        })
        .collect()
}

fn report(cli: Cli) -> anyhow::Result<()> {
    anyhow::ensure!(cli.nodes.iter().all(|&n| (2..=1024).contains(&n)), "--nodes must be between 2 and 1024");
    anyhow::ensure!(cli.loads.iter().all(|&l| l > 0.0 && l < 1.0), "--loads must be in (0, 1)");
    anyhow::ensure!(
        cli.exponential_service_ms.is_none_or(|ms| ms.is_finite() && ms > 0.0),
        "--exponential-service-ms must be > 0"
    );
    let variants = variants(&cli)?;
    let started = Instant::now();
    if cli.sweep {
        sweep(&cli);
    } else if cli.sweep_hop_cost {
        sweep_hop_cost(&cli);
    } else if cli.sweep_placement {
        sweep_placement(&cli, &variants);
    } else if cli.sweep_notices {
        sweep_notices(&cli, &variants);
    } else {
        grid(&cli, &variants)?;
    }
    eprintln!("senti-sim-report: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Every variant x cluster size x policy x load: tables on stdout, one plot per variant and
/// cluster size.
fn grid(cli: &Cli, variants: &[Variant]) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cli.img_dir).with_context(|| format!("cannot create {}", cli.img_dir.display()))?;
    let mut policies: Vec<(Policy, bool)> = Policy::compared().into_iter().map(|p| (p, true)).collect();
    if !cli.no_extra_rows {
        policies.extend(extra_rows());
    }
    let mut all: Vec<(Variant, Scenario, Vec<CellResult>)> = Vec::new();
    for (&variant, &nodes) in variants.iter().flat_map(|v| cli.nodes.iter().map(move |n| (v, n))) {
        let (mut results, mut plotted) = (Vec::new(), Vec::new());
        for (policy, plot) in &policies {
            for &load in &cli.loads {
                let cell_started = Instant::now();
                let result = run(&scenario(cli, variant, nodes, load), policy);
                eprintln!(
                    "{}, {nodes} nodes, {:.0}% load, {}: p99 {} ms, dropped {:.3}% ({:.1} simulated s in {:.1} s)",
                    variant.name(),
                    load * 100.0,
                    result.policy,
                    result.p99_ms.map_or_else(|| "∞".to_owned(), |v| format!("{v:.1}")),
                    result.drop_rate() * 100.0,
                    result.simulated_secs,
                    cell_started.elapsed().as_secs_f64()
                );
                if *plot {
                    plotted.push(result.clone());
                }
                results.push(result);
            }
        }
        let (file, title) = match variant {
            Variant::Equal => (format!("routing-p99-{nodes}.svg"), format!("p99 latency, {nodes} nodes x 2 actors")),
            _ => (
                format!("routing-p99-{nodes}-{}.svg", variant.name()),
                format!("p99 latency, {nodes} nodes x 2 actors, {}", variant.describe()),
            ),
        };
        let path = cli.img_dir.join(file);
        let title = format!("{title} (senti-sim-report, seed {})", cli.seed);
        write_p99_plot(&plotted, &title, &is_extra_row, &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        all.push((variant, scenario(cli, variant, nodes, 0.5), results));
    }
    for (variant, scenario, results) in &all {
        println!(
            "### {}: {} nodes ({} actors), {} measured requests per cell\n",
            variant.describe(),
            scenario.nodes,
            scenario.total_actors(),
            scenario.measured_requests
        );
        println!("{}", markdown_table(results));
    }
    for (variant, scenario, results) in &all {
        println!("### Diagnostics, {}: {} nodes\n", variant.describe(), scenario.nodes);
        println!("{}", diagnostics_table(results));
    }
    Ok(())
}

/// p99 of the project's policy over a grid of estimate weights.
fn sweep(cli: &Cli) {
    for &nodes in &cli.nodes {
        for &load in &cli.loads {
            let requests = scenario(cli, Variant::Equal, nodes, load).measured_requests;
            println!("### Estimate weights, {nodes} nodes, {:.0}% load, {requests} requests per cell\n", load * 100.0);
            print!("| trust_half_life |");
            SWEEP_TOKENS_PER_ATTEMPT.iter().for_each(|t| print!(" tokens_per_attempt {t}: p99 / mean ms |"));
            print!("\n|---|");
            SWEEP_TOKENS_PER_ATTEMPT.iter().for_each(|_| print!("---:|"));
            println!();
            for half_life_ms in SWEEP_HALF_LIVES_MS {
                print!("| {half_life_ms} ms |");
                for tokens_per_attempt in SWEEP_TOKENS_PER_ATTEMPT {
                    let params = EstimateParams {
                        tokens_per_attempt,
                        trust_half_life: Duration::from_millis(half_life_ms),
                        ..gateway_estimate_params()
                    };
                    let r = run(&scenario(cli, Variant::Equal, nodes, load), &Policy::Project(params));
                    let p99 = r.p99_ms.map_or_else(|| "∞".to_owned(), |v| format!("{v:.1}"));
                    print!(" {p99} / {:.1} |", r.mean_ms);
                }
                println!();
            }
            println!();
        }
    }
}

/// p99, mean and share served locally of the project's policy for each remote hop cost.
fn sweep_hop_cost(cli: &Cli) {
    for &nodes in &cli.nodes {
        let requests = scenario(cli, Variant::Equal, nodes, cli.loads[0]).measured_requests;
        println!("### Remote hop cost, {nodes} nodes, {requests} requests per cell\n");
        print!("| remote_hop_cost_tokens |");
        cli.loads.iter().for_each(|l| print!(" {:.0}% load: p99 / mean ms, served locally |", l * 100.0));
        print!("\n|---|");
        cli.loads.iter().for_each(|_| print!("---:|"));
        println!();
        for remote_hop_cost_tokens in SWEEP_HOP_COST_TOKENS {
            print!("| {remote_hop_cost_tokens} |");
            for &load in &cli.loads {
                let params = EstimateParams { remote_hop_cost_tokens, ..gateway_estimate_params() };
                let r = run(&scenario(cli, Variant::Equal, nodes, load), &Policy::Project(params));
                let p99 = r.p99_ms.map_or_else(|| "∞".to_owned(), |v| format!("{v:.1}"));
                print!(" {p99} / {:.1}, {:.1}% |", r.mean_ms, r.local_share * 100.0);
            }
            println!();
        }
        println!();
    }
}

/// p99 of the project's placement for each number of remote samples and speed awareness, per
/// variant, with the reference policies as the first rows.
fn sweep_placement(cli: &Cli, variants: &[Variant]) {
    let gateway = gateway_estimate_params();
    let mut rows: Vec<Policy> = vec![
        Policy::Oracle,
        Policy::SingleLeastConnections,
        Policy::LeastConnections,
        Policy::ProjectWith(gateway, Tweaks::NO_NOTICES),
    ];
    for speed_blind in [false, true] {
        // The gateway's own count first, then fixed counts.
        for remote_samples in std::iter::once(None).chain(SWEEP_REMOTE_SAMPLES.map(Some)) {
            let tweaks = Tweaks { remote_samples, speed_blind, ..Tweaks::NONE };
            rows.push(if tweaks == Tweaks::NONE {
                Policy::Project(gateway)
            } else {
                Policy::ProjectWith(gateway, tweaks)
            });
        }
    }
    sweep_table(cli, variants, "Placement", &rows);
}

/// p99 of the project's placement for each idle-notice fanout and threshold, per variant, with
/// the reference policies and the placement without notices as the first rows.
fn sweep_notices(cli: &Cli, variants: &[Variant]) {
    let gateway = gateway_estimate_params();
    let mut rows: Vec<Policy> = vec![
        Policy::Oracle,
        Policy::SingleLeastConnections,
        Policy::ProjectWith(gateway, Tweaks::NO_NOTICES),
        Policy::Project(gateway),
    ];
    for fanout in SWEEP_NOTICE_FANOUTS {
        for after in SWEEP_NOTICE_AFTER_ATTEMPTS {
            let tweaks = Tweaks { notice_fanout: Some(fanout), notice_after_attempts: Some(after), ..Tweaks::NONE };
            rows.push(Policy::ProjectWith(gateway, tweaks));
        }
    }
    sweep_table(cli, variants, "Idle notices", &rows);
}

/// One table per cluster size and load: a row per policy, a column per variant.
fn sweep_table(cli: &Cli, variants: &[Variant], title: &str, rows: &[Policy]) {
    for &nodes in &cli.nodes {
        for &load in &cli.loads {
            let requests = scenario(cli, Variant::Equal, nodes, load).measured_requests;
            println!("### {title}, {nodes} nodes, {:.0}% load, {requests} requests per cell\n", load * 100.0);
            print!("| policy |");
            variants.iter().for_each(|v| print!(" {}: p99 / mean ms, served locally |", v.name()));
            print!("\n|---|");
            variants.iter().for_each(|_| print!("---:|"));
            println!();
            for policy in rows {
                print!("| {} |", policy.label());
                for &variant in variants {
                    let r = run(&scenario(cli, variant, nodes, load), policy);
                    let p99 = r.p99_ms.map_or_else(|| "∞".to_owned(), |v| format!("{v:.1}"));
                    print!(" {p99} / {:.1}, {:.0}% |", r.mean_ms, r.local_share * 100.0);
                }
                println!();
            }
            println!();
        }
    }
}
