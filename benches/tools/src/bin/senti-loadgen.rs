//! `senti-loadgen`: HTTP load against a running senti node, on loopback only.
//!
//! Closed loop (`--mode closed --concurrency N`, like `ab -c N`) or open loop at a fixed arrival
//! rate (`--mode open --rate R`, like wrk2: latency from the scheduled send time). The payload is
//! real Chinese reviews (`--payload`, default the project's validation set), shuffled once with a
//! fixed seed and cycled; or, with `--repeat-share P`, a trace in which a share P of the requests
//! repeat an earlier text (Zipf popularity) and the others send texts not sent before
//! (senti_bench::trace). `--start-at N` continues a trace at its request N.
//! Prints requests, successes, errors by kind, achieved rate, latency percentiles and the
//! `x-senti-cache` answers (hit, miss, partial); `--json OUT` writes the same as JSON. Every run stops by itself: after `--warmup + --duration` (plus at
//! most one request timeout) or after `--max-requests` requests, whichever comes first.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use senti_bench::{load, loopback_url, mix, read_texts, LoadPlan, LoadReport, Pacing, Requests, Route, Trace};
use serde::Serialize;

/// Longest run accepted, so a typo cannot start a day-long load.
const MAX_DURATION_S: f64 = 3600.0;

#[derive(Parser)]
#[command(name = "senti-loadgen", version, about = "HTTP load generator for senti (loopback targets only)")]
struct Cli {
    /// Base URL of the senti node; only 127.0.0.0/8, localhost and [::1] are accepted. Give it
    /// more than once to spread the requests over several nodes, in turn.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: Vec<String>,
    /// Route to load.
    #[arg(long, value_enum, default_value_t = RouteArg::Analyze)]
    route: RouteArg,
    /// Texts per `/v1/classify` request (classify route only).
    #[arg(long, default_value_t = 1)]
    texts_per_request: usize,
    /// Closed loop (fixed concurrency) or open loop (fixed arrival rate).
    #[arg(long, value_enum, default_value_t = ModeArg::Closed)]
    mode: ModeArg,
    /// Connections (workers); default 1 for a closed loop, 64 for an open loop.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Requests per second (open loop only).
    #[arg(long)]
    rate: Option<f64>,
    /// Measured seconds, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring (connections opened, caches warm).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Hard bound on requests sent, warm-up included.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,
    /// Per-request timeout in milliseconds (counted as a `timeout` error).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// TSV file with a header row and a `text` column (default: ../shared/data/sentiment/val.tsv);
    /// give it more than once to send the texts of several files (concatenated, then shuffled).
    #[arg(long)]
    payload: Vec<PathBuf>,
    /// Seed of the fixed shuffle of the payload (the same seed gives the same text sequence in
    /// senti-loadgen and senti-bench-raw), and of the repeats of `--repeat-share`.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Instead of cycling the payload, a trace in which this share (0 to 1) of the requests repeat
    /// a text sent earlier, the earliest texts the most popular (Zipf, exponent 1), and the others
    /// send texts never sent before (while the payload lasts). 1 sends one text over and over.
    #[arg(long)]
    repeat_share: Option<f64>,
    /// Start at this request of the sequence (e.g. the previous run's `next_start`), so that a
    /// series of runs against one server continues one trace instead of sending its texts again.
    #[arg(long, default_value_t = 0)]
    start_at: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Threads of the load generator itself (1 keeps it off the server's other core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum RouteArg {
    Analyze,
    Classify,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Closed,
    Open,
}

/// The JSON written by `--json`: the report plus where its texts came from.
#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    report: &'a LoadReport,
    payload: String,
    payload_texts: usize,
    seed: u64,
    /// `--repeat-share`; `None` for the cycled payload.
    repeat_share: Option<f64>,
    /// Share of the measured successful answers that said `x-senti-cache: hit`.
    cache_hit_rate: Option<f64>,
    start_at: u64,
    /// Where the next run continues this one's sequence (`--start-at`).
    next_start: u64,
    /// Whether the sequence reached past the payload's end, so that texts meant to be new (or, for
    /// the cycled payload, every text of a later pass) had been sent before.
    payload_wrapped: bool,
    loadgen_threads: usize,
    /// CPU time (user + system) this process spent during the run, warm-up included; Linux only.
    loadgen_cpu_s: Option<f64>,
}

fn main() -> std::process::ExitCode {
    senti_bench::exit_code("senti-loadgen", run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let bases = cli.url.iter().map(|url| loopback_url(url)).collect::<Result<Vec<_>, _>>()?;
    let plan = plan(&cli)?;
    let payloads = if cli.payload.is_empty() { vec![senti_bench::default_payload_path()] } else { cli.payload.clone() };
    let mut texts = Vec::new();
    for path in &payloads {
        texts.extend(read_texts(path)?);
    }
    let texts = mix(texts, cli.seed);
    let payload_texts = texts.len();
    let trace = match cli.repeat_share {
        None => Trace::Cycle,
        // The trace's choices get a stream of their own, independent of the shuffle's.
        Some(share) => Trace::Repeats { share, seed: cli.seed ^ 0x7EA7_5EED },
    };
    let requests = Requests::new(plan.route, texts, trace, cli.start_at);
    let client = load::client(plan.connections, plan.timeout).context("cannot build the HTTP client")?;
    let sequence = match cli.repeat_share {
        None => format!("the payload's {payload_texts} texts cycled"),
        Some(share) => format!("{payload_texts} texts, {:.1}% of requests repeating an earlier one", share * 100.0),
    };
    let targets = bases.iter().map(reqwest::Url::as_str).collect::<Vec<_>>().join(", ");
    eprintln!("{}; {sequence} from request {}", describe(&plan, &targets), cli.start_at);
    let runtime = runtime(cli.threads)?;
    let cpu_before_opt = process_cpu_seconds();
    let report = runtime.block_on(load::run(client, &bases, &plan, requests.clone()));
    let cpu_s = process_cpu_seconds().zip(cpu_before_opt).map(|(after, before)| after - before);
    print!("{}", human(&report));
    let payload_wrapped = requests.wrapped(report.sent_total);
    if payload_wrapped && cli.repeat_share.is_some() {
        eprintln!(
            "senti-loadgen: warning: the trace reached past the payload's {payload_texts} texts (requests {}..{}), \
             so some texts meant to be new were sent before; give more texts with --payload",
            cli.start_at,
            cli.start_at + report.sent_total
        );
    }
    if let Some(path) = &cli.json {
        let payload = payloads.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",");
        let output = Output {
            report: &report,
            payload,
            payload_texts,
            seed: cli.seed,
            repeat_share: cli.repeat_share,
            cache_hit_rate: report.cache_hit_rate(),
            start_at: cli.start_at,
            next_start: cli.start_at + report.sent_total,
            payload_wrapped,
            loadgen_threads: cli.threads,
            loadgen_cpu_s: cpu_s,
        };
        let json = serde_json::to_string_pretty(&output).context("cannot serialise the report")?;
        std::fs::write(path, json + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    anyhow::ensure!(
        report.ok > 0,
        "no successful response from {targets} ({} requests, errors {:?}); is senti running and ready there?",
        report.requests,
        report.errors
    );
    Ok(())
}

/// Checks the flags and turns them into a plan.
fn plan(cli: &Cli) -> anyhow::Result<LoadPlan> {
    let seconds = |name: &str, value: f64, min: f64| -> anyhow::Result<Duration> {
        anyhow::ensure!(
            value.is_finite() && value >= min && value <= MAX_DURATION_S,
            "--{name} must be between {min} and {MAX_DURATION_S} seconds, got {value}"
        );
        Ok(Duration::from_secs_f64(value))
    };
    let route = match cli.route {
        RouteArg::Analyze => {
            anyhow::ensure!(cli.texts_per_request == 1, "--texts-per-request applies to --route classify only");
            Route::Analyze
        }
        RouteArg::Classify => {
            anyhow::ensure!(
                (1..=256).contains(&cli.texts_per_request),
                "--texts-per-request must be between 1 and 256 (senti's default `limits.max_texts`), got {}",
                cli.texts_per_request
            );
            Route::Classify { texts_per_request: cli.texts_per_request }
        }
    };
    let (pacing, default_connections) = match (cli.mode, cli.rate) {
        (ModeArg::Closed, None) => (Pacing::Closed, 1),
        (ModeArg::Closed, Some(_)) => anyhow::bail!("--rate applies to --mode open only"),
        (ModeArg::Open, None) => anyhow::bail!("--mode open needs --rate R (requests per second)"),
        (ModeArg::Open, Some(rate)) => {
            anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate must be a positive number, got {rate}");
            (Pacing::Open { rate }, 64)
        }
    };
    let connections = cli.concurrency.unwrap_or(default_connections);
    anyhow::ensure!(
        (1..=10_000).contains(&connections),
        "--concurrency must be between 1 and 10000, got {connections}"
    );
    anyhow::ensure!(cli.max_requests >= 1, "--max-requests must be at least 1");
    anyhow::ensure!((1..=16).contains(&cli.threads), "--threads must be between 1 and 16, got {}", cli.threads);
    anyhow::ensure!(cli.timeout_ms >= 1, "--timeout-ms must be at least 1");
    if let Some(share) = cli.repeat_share {
        anyhow::ensure!((0.0..=1.0).contains(&share), "--repeat-share must be between 0 and 1, got {share}");
    }
    Ok(LoadPlan {
        route,
        pacing,
        connections,
        warmup: seconds("warmup", cli.warmup, 0.0)?,
        duration: seconds("duration", cli.duration, 0.001)?,
        max_requests: cli.max_requests,
        timeout: Duration::from_millis(cli.timeout_ms),
    })
}

/// User + system CPU seconds of this process so far, from /proc/self/stat (fields 14 and 15, in
/// clock ticks of 1/100 s: USER_HZ is 100 on the Linux targets this runs on). `None` elsewhere.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count from after it.
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// A current-thread runtime for one thread, else a multi-thread one.
fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build().context("cannot start the async runtime")
}

fn describe(plan: &LoadPlan, targets: &str) -> String {
    let pacing = match plan.pacing {
        Pacing::Closed => format!("closed loop, {} connections", plan.connections),
        Pacing::Open { rate } => format!("open loop at {rate} requests/s over {} connections", plan.connections),
    };
    format!(
        "senti-loadgen: {pacing}, POST {} to {} ({} text(s)/request), {:.1} s after {:.1} s warm-up",
        plan.route.path(),
        targets.trim_end_matches('/'),
        plan.route.texts_per_request(),
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64()
    )
}

fn human(r: &LoadReport) -> String {
    let errors = if r.errors.is_empty() {
        "none".to_owned()
    } else {
        let e = &r.error_latency_ms;
        let kinds = r.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join(", ");
        format!("{kinds} (answered in p50 {:.2} ms, p99 {:.2}, max {:.2})", e.p50, e.p99, e.max)
    };
    let cache = match r.cache_hit_rate() {
        None => String::new(),
        Some(rate) => {
            let states = r.cache.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ");
            format!("cache     {states} (x-senti-cache of ok answers; hit rate {:.1}%)\n", rate * 100.0)
        }
    };
    let l = &r.latency_ms;
    format!(
        "requests  {} in {:.2} s (ok {}, sent in all {}{})\n\
         errors    {errors}\n\
         rate      {:.1} requests/s, {:.1} ok/s, {:.1} texts/s\n\
         latency   mean {:.2} ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n{cache}",
        r.requests,
        r.elapsed_s,
        r.ok,
        r.sent_total,
        if r.stopped_by_max_requests { ", stopped by --max-requests" } else { "" },
        r.qps,
        r.ok_qps,
        r.texts_per_s,
        l.mean,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max
    )
}
