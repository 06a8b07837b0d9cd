//! `senti-bench-hop`: the latency a remote hop adds, seen from one node of a running cluster.
//!
//! Sends `POST /analyze` (one real review per request) to one node, from `--concurrency` workers
//! in a closed loop, and files each latency under the node that answered, read from the
//! `x-senti-served-by` response header (`<node id>/<actor>`): `local` when the node id is
//! `--local-node`, `remote` otherwise. At concurrency 1 the gateway prefers its idle local actor,
//! so nearly every sample is local; at concurrency 2 the local actor is usually busy when the
//! second request arrives, so both actors serve and the two populations are measured under the
//! same load. Each phase first sends `--warmup` requests that are not recorded. Loopback only;
//! one tokio thread. Results on stdout (markdown) and with `--json`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use senti_bench::{load, loopback_url, mix, read_texts, LatencyRecorder, LatencySummary, Route};
use serde::Serialize;

#[derive(Parser)]
#[command(name = "senti-bench-hop", version, about = "Local vs remote latency through one senti node (loopback only)")]
struct Cli {
    /// Base URL of the node that receives every request.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// That node's id (`server.node_id`): answers served by it count as local.
    #[arg(long)]
    local_node: String,
    /// One phase per value: requests in flight at once.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    concurrency: Vec<usize>,
    /// Recorded requests per phase.
    #[arg(long, default_value_t = 3_000)]
    requests: usize,
    /// Unrecorded requests at the start of each phase.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// TSV file with a header row and a `text` column (default: ../shared/data/sentiment/val.tsv).
    #[arg(long)]
    payload: Option<PathBuf>,
    /// Seed of the fixed shuffle of the payload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One phase: latencies by where the request was served.
#[derive(Serialize)]
struct Phase {
    concurrency: usize,
    requests: usize,
    /// Non-200 answers and transport errors (not in the latencies).
    errors: usize,
    /// Samples served by an actor of `--local-node`.
    local: LatencySummary,
    /// Samples served by any other node.
    remote: LatencySummary,
    /// Recorded samples per `x-senti-served-by` value.
    served_by: BTreeMap<String, u64>,
    wall_s: f64,
}

#[derive(Serialize)]
struct Output {
    url: String,
    local_node: String,
    payload: String,
    seed: u64,
    warmup: usize,
    phases: Vec<Phase>,
}

/// What one worker collected.
#[derive(Default)]
struct Samples {
    local: LatencyRecorder,
    remote: LatencyRecorder,
    served_by: BTreeMap<String, u64>,
    errors: usize,
}

fn main() -> std::process::ExitCode {
    senti_bench::exit_code("senti-bench-hop", run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    anyhow::ensure!(cli.concurrency.iter().all(|&c| c > 0), "every --concurrency value must be at least 1");
    let base = loopback_url(&cli.url)?;
    let url = base.join("/analyze").context("cannot build the /analyze URL")?;
    let payload = cli.payload.clone().unwrap_or_else(senti_bench::default_payload_path);
    let bodies = Arc::new(Route::Analyze.bodies(&mix(read_texts(&payload)?, cli.seed)));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut phases = Vec::new();
    for &concurrency in &cli.concurrency {
        eprintln!("senti-bench-hop: concurrency {concurrency}, {} + {} requests", cli.warmup, cli.requests);
        let client = load::client(concurrency, Duration::from_secs(10))?;
        let phase = runtime.block_on(phase(client, url.clone(), &cli, concurrency, bodies.clone()));
        phases.push(phase);
    }
    print_report(&cli.local_node, &phases);
    if let Some(path) = &cli.json {
        let output = Output {
            url: base.to_string(),
            local_node: cli.local_node.clone(),
            payload: payload.display().to_string(),
            seed: cli.seed,
            warmup: cli.warmup,
            phases,
        };
        std::fs::write(path, serde_json::to_vec_pretty(&output)?)?;
    }
    Ok(())
}

/// `warmup + requests` requests from `concurrency` workers; request k uses text k (cycled) and is
/// recorded when k >= warmup.
async fn phase(
    client: reqwest::Client,
    url: reqwest::Url,
    cli: &Cli,
    concurrency: usize,
    bodies: Arc<Vec<Bytes>>,
) -> Phase {
    let total = cli.warmup + cli.requests;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, bodies, next) = (client.clone(), url.clone(), bodies.clone(), next.clone());
        let (warmup, local_node) = (cli.warmup, cli.local_node.clone());
        workers.spawn(async move {
            let mut samples = Samples::default();
            loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if k >= total {
                    return samples;
                }
                let body = bodies[k % bodies.len()].clone();
                let sent = Instant::now();
                let reply = client.post(url.clone()).header("content-type", "application/json").body(body).send().await;
                let served_by_opt = match reply {
                    Ok(response) if response.status().is_success() => {
                        let by = response
                            .headers()
                            .get("x-senti-served-by")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        // The latency includes reading the body, as a client would.
                        response.bytes().await.ok().and(by)
                    }
                    _ => None,
                };
                let took = sent.elapsed();
                if k < warmup {
                    continue;
                }
                let Some(served_by) = served_by_opt else {
                    samples.errors += 1;
                    continue;
                };
                let node = served_by.split('/').next().unwrap_or_default();
                if node == local_node {
                    samples.local.record(took);
                } else {
                    samples.remote.record(took);
                }
                *samples.served_by.entry(served_by).or_default() += 1;
            }
        });
    }
    let mut all = Samples::default();
    while let Some(joined) = workers.join_next().await {
        let samples = joined.expect("a hop worker panicked. This is a bug.");
        all.local.merge(&samples.local);
        all.remote.merge(&samples.remote);
        all.errors += samples.errors;
        for (by, n) in samples.served_by {
            *all.served_by.entry(by).or_default() += n;
        }
    }
    Phase {
        concurrency,
        requests: cli.requests,
        errors: all.errors,
        local: all.local.summary(),
        remote: all.remote.summary(),
        served_by: all.served_by,
        wall_s: started.elapsed().as_secs_f64(),
    }
}

fn print_report(local_node: &str, phases: &[Phase]) {
    println!("| concurrency | served by | samples | p50 ms | p90 ms | p99 ms | mean ms |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for phase in phases {
        for (label, s) in [(format!("local ({local_node})"), &phase.local), ("remote".to_owned(), &phase.remote)] {
            println!(
                "| {} | {label} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                phase.concurrency, s.samples, s.p50, s.p90, s.p99, s.mean
            );
        }
        if phase.errors > 0 {
            println!("| {} | errors | {} | | | | |", phase.concurrency, phase.errors);
        }
    }
}
