//! `senti-bench-accuracy`: what a faster variant of a model costs in accuracy.
//!
//! Runs every variant the model's manifest lists (`fp32`, `int8`, ...) on the same labeled
//! reviews (the validation set by default, shuffled with the benchmarks' fixed seed, the first
//! `--limit` of them), one text at a time, exactly as `senti serve` scores them (same tokenizer,
//! truncation, temperature), and reports each variant's accuracy against the labels and how often
//! each variant picks the same label as the first one. `--json OUT` writes it; scripts/bench.sh
//! reads it.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use senti_bench::{mix, read_labeled};
use senti_model::{ModelBundle, ModelSource, Scores};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "senti-bench-accuracy",
    version,
    about = "Accuracy of each variant of a senti model on labeled reviews"
)]
struct Cli {
    /// Model folder with model.toml; default: the model embedded in the binary.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Texts to score per variant (the first N of the shuffled payload); default: all.
    #[arg(long)]
    limit: Option<usize>,
    /// Intra-op threads of the session.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// TSV file with a header row and `text` and `label` (0/1) columns (default:
    /// ../shared/data/sentiment/val.tsv).
    #[arg(long)]
    payload: Option<PathBuf>,
    /// Seed of the fixed shuffle of the payload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One variant's outcome.
#[derive(Serialize)]
struct VariantResult {
    variant: String,
    file: String,
    accuracy: f64,
    /// Share of texts given the same label as the first variant.
    agreement_with_first: f64,
    /// Largest difference from the first variant in the positive probability.
    max_probability_diff: f64,
    texts_per_s_batch1: f64,
}

#[derive(Serialize)]
struct Output {
    model: String,
    version: String,
    source: String,
    payload: String,
    texts: usize,
    positive_share: f64,
    default_variant: String,
    variants: Vec<VariantResult>,
}

fn main() -> std::process::ExitCode {
    senti_bench::exit_code("senti-bench-accuracy", run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    anyhow::ensure!((1..=64).contains(&cli.threads), "--threads must be between 1 and 64, got {}", cli.threads);
    senti_model::init_runtime(None)?;
    let source = match &cli.model {
        Some(dir) => ModelSource::Folder(dir.clone()),
        None => ModelSource::Embedded,
    };
    let payload = cli.payload.clone().unwrap_or_else(senti_bench::default_payload_path);
    let mut rows = mix(read_labeled(&payload)?, cli.seed);
    if let Some(limit) = cli.limit {
        anyhow::ensure!(limit > 0, "--limit must be at least 1");
        rows.truncate(limit);
    }
    let first = ModelBundle::load(&source, None).context("cannot load the model")?;
    let manifest = first.manifest().clone();
    let positive = manifest
        .labels
        .iter()
        .find(|l| l.name == "positive")
        .map(|l| l.index)
        .context("the manifest has no `positive` label")?;

    let mut reference: Option<Vec<Scores>> = None;
    let mut variants = Vec::new();
    for (variant, file) in &manifest.variants {
        let bundle =
            ModelBundle::load(&source, Some(variant)).with_context(|| format!("cannot load variant {variant}"))?;
        let mut runner = bundle.runner(cli.threads)?;
        let started = Instant::now();
        let mut scores = Vec::with_capacity(rows.len());
        for (text, _) in &rows {
            let ids = bundle.encoder().encode(text)?;
            let logits = runner.logits(&[ids.as_slice()])?;
            let row = logits.first().context("the model returned no logits")?;
            scores.push(Scores::from_logits(row, &manifest));
        }
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        let correct = rows.iter().zip(&scores).filter(|((_, pos), s)| (s.label == positive) == *pos).count();
        let base = reference.get_or_insert_with(|| scores.clone());
        let agree = base.iter().zip(&scores).filter(|(a, b)| a.label == b.label).count();
        let max_diff = base
            .iter()
            .zip(&scores)
            .map(|(a, b)| f64::from((a.probabilities[positive] - b.probabilities[positive]).abs()))
            .fold(0.0, f64::max);
        let result = VariantResult {
            variant: variant.clone(),
            file: file.clone(),
            accuracy: correct as f64 / rows.len() as f64,
            agreement_with_first: agree as f64 / rows.len() as f64,
            max_probability_diff: max_diff,
            texts_per_s_batch1: rows.len() as f64 / seconds,
        };
        eprintln!(
            "senti-bench-accuracy: {} {variant}: accuracy {:.4} on {} texts, agreement with {} {:.4}, {:.1} texts/s",
            manifest.name,
            result.accuracy,
            rows.len(),
            variants.first().map_or(variant.as_str(), |v: &VariantResult| v.variant.as_str()),
            result.agreement_with_first,
            result.texts_per_s_batch1
        );
        variants.push(result);
    }
    let summary: BTreeMap<&str, f64> = variants.iter().map(|v| (v.variant.as_str(), v.accuracy)).collect();
    println!("{}", serde_json::to_string(&summary)?);
    if let Some(path) = &cli.json {
        let output = Output {
            model: manifest.name.clone(),
            version: manifest.version.clone(),
            source: cli.model.as_ref().map_or_else(|| "embedded".to_owned(), |p| p.display().to_string()),
            payload: payload.display().to_string(),
            texts: rows.len(),
            positive_share: rows.iter().filter(|(_, p)| *p).count() as f64 / rows.len() as f64,
            default_variant: manifest.default_variant.clone(),
            variants,
        };
        let json = serde_json::to_string_pretty(&output).context("cannot serialise the results")?;
        std::fs::write(path, json + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
