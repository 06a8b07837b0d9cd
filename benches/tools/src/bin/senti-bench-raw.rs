//! `senti-bench-raw`: how fast ONNX Runtime alone runs the model, without HTTP, actors or queues.
//!
//! Loads the model exactly as `senti serve` does (`init_runtime`, `ModelBundle::load`), tokenizes
//! real reviews (timed, since senti's actors do the same work per request), and measures texts per
//! second for every batch size x intra-op thread count with one session, then with two sessions of
//! one thread each on two threads (the `engine.actors=2, threads_per_actor=1` shape), in rounds
//! that interleave the configurations, keeping each one's median round. The batch-1
//! rows give the latency of one raw inference, which is what senti's latency at concurrency 1 is
//! compared against. `--json OUT` writes everything; scripts/bench-node.sh reads it.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use senti_bench::{median_round, mix, raw, read_texts, RawConfig, RawResult};
use senti_model::{ModelBundle, ModelSource, Runner};
use serde::Serialize;

#[derive(Parser)]
#[command(name = "senti-bench-raw", version, about = "Raw ONNX Runtime throughput of a senti model (no HTTP)")]
struct Cli {
    /// Model folder with model.toml; default: the model embedded in the binary.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Model variant (fp32, int8); default: the manifest's.
    #[arg(long)]
    variant: Option<String>,
    /// Measured seconds per configuration, split over the rounds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Rounds: every configuration is measured once per round, the rounds one after the other,
    /// and the median round is kept (noise from other processes spoils a round, not a figure).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds run before measuring each configuration.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 32, 64])]
    batches: Vec<usize>,
    /// Also measure every batch size above 1 with batches of near-equal lengths (each batch
    /// from 4 batches' worth of consecutive texts sorted by length, as senti's queue groups them).
    #[arg(long)]
    grouped: bool,
    /// Intra-op thread counts to measure with one session.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    threads: Vec<usize>,
    /// Sessions of one thread each run in parallel for the last configurations (0: skip).
    #[arg(long, default_value_t = 2)]
    parallel: usize,
    /// TSV file with a header row and a `text` column (default: ../shared/data/sentiment/val.tsv).
    #[arg(long)]
    payload: Option<PathBuf>,
    /// Seed of the fixed shuffle of the payload (the same seed gives the same text sequence in
    /// senti-loadgen and senti-bench-raw).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the token count of every payload text (after truncation), one per line, to this
    /// file (benches/peers/flops.py turns it into the model's arithmetic per text).
    #[arg(long)]
    lengths_out: Option<PathBuf>,
}

/// The JSON written by `--json`.
#[derive(Serialize)]
struct Output {
    model: ModelInfo,
    payload: String,
    seed: u64,
    texts: usize,
    mean_tokens: f64,
    /// One thread, the whole payload: the tokenization work senti's actors do per text.
    tokenize_texts_per_s: f64,
    /// The same with `tokenizers` itself (the reference senti's ids-only BERT path must equal).
    tokenize_tokenizers_texts_per_s: f64,
    seconds: f64,
    rounds: usize,
    warmup: f64,
    results: Vec<RawResult>,
    /// The configuration with the most texts per second.
    best: Option<RawResult>,
    /// Median time of one batch-1 inference, by intra-op threads (ms).
    single_inference_ms: BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct ModelInfo {
    name: String,
    version: String,
    variant: String,
    source: String,
}

fn main() -> std::process::ExitCode {
    senti_bench::exit_code("senti-bench-raw", run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    anyhow::ensure!(
        cli.seconds.is_finite() && cli.seconds > 0.0 && cli.seconds <= 600.0,
        "--seconds must be in (0, 600], got {}",
        cli.seconds
    );
    anyhow::ensure!(
        cli.warmup.is_finite() && (0.0..=60.0).contains(&cli.warmup),
        "--warmup must be in [0, 60], got {}",
        cli.warmup
    );
    anyhow::ensure!(cli.batches.iter().all(|&b| (1..=1024).contains(&b)), "--batches must be between 1 and 1024");
    anyhow::ensure!(cli.threads.iter().all(|&t| (1..=64).contains(&t)), "--threads must be between 1 and 64");
    anyhow::ensure!(cli.parallel <= 16, "--parallel must be at most 16");
    anyhow::ensure!((1..=20).contains(&cli.rounds), "--rounds must be between 1 and 20, got {}", cli.rounds);

    senti_model::init_runtime(None)?;
    let source = match &cli.model {
        Some(dir) => ModelSource::Folder(dir.clone()),
        None => ModelSource::Embedded,
    };
    let bundle = ModelBundle::load(&source, cli.variant.as_deref()).context("cannot load the model")?;
    let payload = cli.payload.clone().unwrap_or_else(senti_bench::default_payload_path);
    let texts = mix(read_texts(&payload)?, cli.seed);
    let (encoded, tokenization) = tokenize(&bundle, &texts)?;
    let mean_tokens = encoded.iter().map(Vec::len).sum::<usize>() as f64 / encoded.len() as f64;
    if let Some(path) = &cli.lengths_out {
        let lines: String = encoded.iter().map(|ids| format!("{}\n", ids.len())).collect();
        std::fs::write(path, lines).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "senti-bench-raw: model {} {} ({}), {} texts, {mean_tokens:.1} tokens on average, tokenized at {:.0} texts/s \
         (one thread; `tokenizers` alone: {:.0} texts/s, same ids; fast path: {})",
        bundle.manifest().name,
        bundle.manifest().version,
        bundle.variant(),
        texts.len(),
        tokenization.senti,
        tokenization.tokenizers,
        tokenization.fast_path,
    );

    let warmup = Duration::from_secs_f64(cli.warmup);
    let per_round = Duration::from_secs_f64(cli.seconds / cli.rounds as f64);
    let mut sets = session_sets(&bundle, &cli.threads, cli.parallel)?;
    let configs: Vec<(usize, RawConfig)> = sets
        .iter()
        .enumerate()
        .flat_map(|(set, (threads, runners))| {
            let grouped = cli.grouped;
            cli.batches.iter().flat_map(move |&batch| {
                let modes: &[bool] = if grouped && batch > 1 { &[false, true] } else { &[false] };
                modes
                    .iter()
                    .map(move |&grouped| (set, RawConfig { runners: runners.len(), threads: *threads, batch, grouped }))
            })
        })
        .collect();
    let mut rounds: Vec<Vec<RawResult>> = vec![Vec::new(); configs.len()];
    for round in 0..cli.rounds {
        // Sessions stay warm between rounds; only the first round needs the full warm-up.
        let warm = if round == 0 { warmup } else { warmup.min(Duration::from_millis(200)) };
        eprintln!("senti-bench-raw: round {} of {}", round + 1, cli.rounds);
        for ((set, config), results) in configs.iter().zip(&mut rounds) {
            let result = raw::measure(*config, &mut sets[*set].1, &encoded, warm, per_round)
                .with_context(|| format!("measuring {} threads, batch {}", config.shape(), config.batch))?;
            results.push(result);
        }
    }
    let results: Vec<RawResult> = rounds.into_iter().filter_map(median_round).collect();
    print_table(&results);

    let best = results.iter().max_by(|a, b| a.texts_per_s.total_cmp(&b.texts_per_s)).cloned();
    if let Some(best) = &best {
        let grouped = if best.grouped { " grouped" } else { "" };
        println!("\nbest: {:.0} texts/s with {} threads, batch {}{grouped}", best.texts_per_s, best.shape, best.batch);
    }
    let single_inference_ms: BTreeMap<String, f64> = results
        .iter()
        .filter(|r| r.runners == 1 && r.batch == 1)
        .map(|r| (r.threads.to_string(), r.batch_ms.p50))
        .collect();
    if let Some(path) = &cli.json {
        let output = Output {
            model: ModelInfo {
                name: bundle.manifest().name.clone(),
                version: bundle.manifest().version.clone(),
                variant: bundle.variant().to_owned(),
                source: cli.model.as_ref().map_or_else(|| "embedded".to_owned(), |p| p.display().to_string()),
            },
            payload: payload.display().to_string(),
            seed: cli.seed,
            texts: texts.len(),
            mean_tokens,
            tokenize_texts_per_s: tokenization.senti,
            tokenize_tokenizers_texts_per_s: tokenization.tokenizers,
            seconds: cli.seconds,
            rounds: cli.rounds,
            warmup: cli.warmup,
            results,
            best,
            single_inference_ms,
        };
        let json = serde_json::to_string_pretty(&output).context("cannot serialise the results")?;
        std::fs::write(path, json + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Token ids of every text, and the texts/s of senti's encoder and of `tokenizers` itself on this
/// one thread (median of 3 alternating warm passes each; the first pass pays for cold caches and
/// allocations that a serving process has long paid). Fails if the two disagree on any text.
fn tokenize(bundle: &ModelBundle, texts: &[String]) -> anyhow::Result<(Vec<Vec<u32>>, Tokenization)> {
    let encoder = bundle.encoder();
    let pass = |encode: &dyn Fn(&str) -> Result<Vec<u32>, senti_model::ModelError>| {
        let started = Instant::now();
        let ids = texts.iter().map(|text| encode(text)).collect::<Result<Vec<_>, _>>();
        (ids, texts.len() as f64 / started.elapsed().as_secs_f64().max(1e-9))
    };
    let senti = |text: &str| encoder.encode(text);
    let reference = |text: &str| encoder.encode_with_tokenizers(text);
    let (encoded, _) = pass(&senti);
    let encoded = encoded.context("cannot tokenize the payload")?;
    let (expected, _) = pass(&reference);
    let expected = expected.context("cannot tokenize the payload")?;
    let differing = encoded.iter().zip(&expected).filter(|(a, b)| a != b).count();
    anyhow::ensure!(differing == 0, "senti's tokenizer and `tokenizers` disagree on {differing} texts");
    let (mut fast, mut slow) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        fast.push(pass(&senti).1);
        slow.push(pass(&reference).1);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((encoded, Tokenization { senti: median(fast), tokenizers: median(slow), fast_path: encoder.is_fast() }))
}

/// Tokenization texts/s on one thread.
struct Tokenization {
    /// senti's encoder (the ids-only BERT path when `fast_path`).
    senti: f64,
    /// `tokenizers`' `encode_fast`, the same ids.
    tokenizers: f64,
    fast_path: bool,
}

/// One session per thread count in `threads`, then `parallel` sessions of one thread each
/// (skipped when 0): `(threads per session, sessions)`.
fn session_sets(bundle: &ModelBundle, threads: &[usize], parallel: usize) -> anyhow::Result<Vec<(usize, Vec<Runner>)>> {
    let mut sets = Vec::new();
    for &t in threads {
        sets.push((t, vec![bundle.runner(t)?]));
    }
    if parallel > 0 {
        let runners = (0..parallel).map(|_| bundle.runner(1)).collect::<Result<Vec<Runner>, _>>()?;
        sets.push((1, runners));
    }
    Ok(sets)
}

fn print_table(results: &[RawResult]) {
    println!("| shape | batch | texts/s (median round) | rounds texts/s | batch p50 ms | batch p99 ms | padding efficiency |");
    println!("|---|---|---:|---|---:|---:|---:|");
    for r in results {
        let rounds: Vec<String> = r.rounds_texts_per_s.iter().map(|t| format!("{t:.0}")).collect();
        println!(
            "| {} | {}{} | {:.0} | {} | {:.2} | {:.2} | {:.2} |",
            r.shape,
            r.batch,
            if r.grouped { " grouped" } else { "" },
            r.texts_per_s,
            rounds.join(", "),
            r.batch_ms.p50,
            r.batch_ms.p99,
            r.padding_efficiency
        );
    }
}
