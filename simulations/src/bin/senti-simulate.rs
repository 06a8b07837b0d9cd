//! `senti-simulate`: random fault schedules over many seeds (`make simulate`).
//!
//! Each seed picks a cluster size, a load and a fault schedule (`scenario::random_scenario`), runs
//! it on virtual time and checks every invariant. Seeds that break one are printed with their
//! schedule; replay one with `senti-simulate --seed N --verbose`.
#![forbid(unsafe_code)]

use std::time::Instant;

use senti_simulations::run_blocking;
use senti_simulations::scenario::random_scenario;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).and_then(|v| v.parse::<u64>().ok())
    };
    let verbose = args.iter().any(|a| a == "--verbose");
    let seeds: Vec<u64> = match value("--seed") {
        Some(seed) => vec![seed],
        None => {
            let first = value("--from").unwrap_or(1);
            (first..first + value("--seeds").unwrap_or(50)).collect()
        }
    };
    let started = Instant::now();
    let mut broken = Vec::new();
    for seed in &seeds {
        let scenario = random_scenario(*seed);
        if verbose {
            println!("seed {seed}: {} nodes", scenario.config.nodes);
            for op in &scenario.ops {
                println!("  {op}");
            }
        }
        let report = run_blocking(&scenario);
        println!("{report}");
        if !report.violations.is_empty() {
            broken.push(*seed);
        }
    }
    println!(
        "{} seeds in {:.1} s of wall time; {} broke an invariant{}",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        broken.len(),
        if broken.is_empty() {
            String::new()
        } else {
            format!(": {broken:?} (replay: senti-simulate --seed N --verbose)")
        }
    );
    if !broken.is_empty() {
        std::process::exit(1);
    }
}
