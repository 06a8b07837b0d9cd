//! `senti`: serve the sentiment API, or classify texts from the command line.
//!
//! `senti serve` needs no flags: it binds 127.0.0.1:8080 and serves the embedded default model.
//! Settings come from defaults < `--config FILE` < `SENTI__SECTION__KEY` environment variables <
//! flags.
#![forbid(unsafe_code)]

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use senti_config::Config;
use senti_engine::{Engine, RequestId};
use senti_http::ClassifyResult;
use serde::Serialize;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

#[derive(Parser)]
#[command(name = "senti", version, about = "Chinese sentiment analysis (正面 / 负面): HTTP service and command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (default 127.0.0.1:8080, embedded default model).
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on (`server.listen`).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Classify texts given as arguments, or one per line from --file (`-` for stdin);
    /// prints one JSON object per line.
    Classify {
        #[command(flatten)]
        common: Common,
        /// Read texts from this file, one per line (`-`: standard input).
        #[arg(long, conflicts_with = "texts")]
        file: Option<PathBuf>,
        /// Texts to classify.
        texts: Vec<String>,
    },
    /// Cluster administration: gossip keys.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Generate a gossip key into a key file (`cluster.key_file`). Prints the new key's id, never
    /// the key.
    Keygen {
        #[command(flatten)]
        target: KeygenTarget,
    },
}

/// Exactly one of `--out` and `--add`.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct KeygenTarget {
    /// Create FILE (mode 600) holding one new key; refuses to overwrite an existing file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Append a new key to the key file FILE; it is accepted at once (after a restart) but not
    /// used to seal until its line is moved first (key rotation, docs/security.md).
    #[arg(long, value_name = "FILE")]
    add: Option<PathBuf>,
}

#[derive(Args)]
struct Common {
    /// TOML configuration file (see cluster-config/ and README.md).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Model folder with model.toml (`model.path`); default: the embedded model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Model variant, e.g. fp32 or int8 (`model.variant`).
    #[arg(long)]
    variant: Option<String>,
}

impl Common {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref(), std::env::vars())?;
        if let Some(model) = &self.model {
            config.model.path = Some(model.clone());
        }
        if let Some(variant) = &self.variant {
            config.model.variant = Some(variant.clone());
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,ort=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .event_format(NodeFormat(tracing_subscriber::fmt::format()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("senti: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("senti: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// This node's id, once the configuration is read; every log line starts with it.
static NODE_ID: OnceLock<String> = OnceLock::new();

/// The default log format with `node=<id>` in front, so lines of several nodes can be merged.
struct NodeFormat<F>(F);

impl<S, N, F> FormatEvent<S, N> for NodeFormat<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if let Some(node) = NODE_ID.get() {
            write!(writer, "node={node} ")?;
        }
        self.0.format_event(ctx, writer, event)
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { common, listen } => {
            let mut config = common.load()?;
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            let _ = NODE_ID.set(config.node_id());
            senti_node::run(config, senti_node::shutdown_signal()).await
        }
        Command::Classify { common, file, texts } => {
            let config = common.load()?;
            classify(config, file, texts).await
        }
        Command::Cluster { command: ClusterCommand::Keygen { target } } => keygen(target),
    }
}

/// `senti cluster keygen`: writes the key, tells what to do next on stderr.
fn keygen(target: KeygenTarget) -> anyhow::Result<()> {
    match (target.out, target.add) {
        (Some(path), _) => {
            let key = senti_cluster::create_key_file(&path)?;
            eprintln!(
                "wrote gossip key {} to {} (mode 600); copy this file to every node of the cluster and set \
                 `cluster.key_file` (or SENTI_CLUSTER_KEY_FILE) to it",
                key.id(),
                path.display()
            );
        }
        (None, Some(path)) => {
            let key = senti_cluster::add_key_to_file(&path)?;
            eprintln!(
                "added gossip key {} to {} (accepted, not yet used to seal); rotation: add it on every node, \
                 then move its line first, then delete the old key's line (docs/security.md)",
                key.id(),
                path.display()
            );
        }
        (None, None) => anyhow::bail!("give --out FILE or --add FILE"),
    }
    Ok(())
}

/// One output line of `senti classify`: the text and its result as the HTTP API gives it.
#[derive(Serialize)]
#[serde(untagged)]
enum Line<'a> {
    Result {
        text: &'a str,
        #[serde(flatten)]
        result: ClassifyResult,
    },
    Error {
        text: &'a str,
        error: &'static str,
    },
}

/// Classifies in chunks of `limits.max_texts` through the same engine and gateway the server uses.
async fn classify(config: Config, file: Option<PathBuf>, args: Vec<String>) -> anyhow::Result<()> {
    let texts: Vec<String> = match file {
        Some(path) if path.as_os_str() == "-" => std::io::stdin().lock().lines().collect::<Result<_, _>>()?,
        Some(path) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .map(str::to_owned)
            .collect(),
        None => args,
    };
    anyhow::ensure!(!texts.is_empty(), "no texts: give them as arguments or with --file");
    let bundle = senti_node::load_model(&config).await?;
    let engine = Engine::start(bundle, &config).await?;
    let gateway = senti_node::start_gateway(&engine, &config).await?;
    let manifest = engine.bundle().manifest().clone();
    let progress =
        indicatif::ProgressBar::with_draw_target(Some(texts.len() as u64), indicatif::ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for chunk in texts.chunks(config.limits.max_texts) {
        // Blank lines keep their place in the output (with an error) so line numbers match.
        let work: Vec<String> = chunk.iter().filter(|t| !t.trim().is_empty()).cloned().collect();
        let deadline = Instant::now() + Duration::from_millis(config.limits.request_timeout_ms.max(60_000));
        let classified = if work.is_empty() {
            None
        } else {
            let encoded = engine.encode(&work).await?;
            Some(gateway.classify(encoded, deadline, RequestId::generate()).await?)
        };
        let mut scores = classified.iter().flat_map(|c| c.scores.iter());
        for text in chunk {
            let line = if text.trim().is_empty() {
                serde_json::to_string(&Line::Error { text, error: "empty text" })?
            } else {
                let s = scores.next().context("engine returned fewer results than texts. This is a bug.")?;
                serde_json::to_string(&Line::Result { text, result: ClassifyResult::new(s, &manifest) })?
            };
            writeln!(out, "{line}")?;
        }
        progress.inc(chunk.len() as u64);
    }
    out.flush()?;
    progress.finish_and_clear();
    gateway.stop().await;
    engine.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
