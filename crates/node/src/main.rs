//! `senti`: serve the sentiment API, or classify texts from the command line.
//!
//! `senti serve` needs no flags: it binds 127.0.0.1:8080 and serves the embedded default model.
//! Settings come from defaults < `--config FILE` < `SENTI__SECTION__KEY` environment variables <
//! flags.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use senti_config::Config;
use senti_engine::Engine;
use senti_node::batch;
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
    /// Classify texts given as arguments, or a file (text, CSV or JSONL), in this process or over
    /// senti servers (`--server`); one output record per input record, in input order.
    Classify(ClassifyArgs),
    /// Cluster administration: gossip keys, session certificates.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

/// `senti classify`.
#[derive(Args)]
struct ClassifyArgs {
    #[command(flatten)]
    common: Common,
    /// Read texts from this file (`-`: standard input): one per line, or .csv / .jsonl records.
    #[arg(long, conflicts_with = "texts")]
    file: Option<PathBuf>,
    /// Send the texts to these senti servers (comma-separated base URLs, e.g.
    /// http://10.0.0.5:8080,http://10.0.0.6:8080), failing over between them, instead of running
    /// the model in this process.
    #[arg(long, value_delimiter = ',', value_name = "URL[,URL...]")]
    server: Vec<String>,
    /// Bearer token for the servers (`auth.tokens`).
    #[arg(long, env = "SENTI_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Input layout; default from --file's extension (.csv, .jsonl, else one text per line).
    #[arg(long, value_enum)]
    format: Option<batch::input::Format>,
    /// CSV column or JSONL field holding the text.
    #[arg(long, default_value = "text")]
    column: String,
    /// Write the results here (.csv, else JSON lines) instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the interrupted run that wrote --out: skip the input it answered.
    #[arg(long, requires = "out", conflicts_with = "force")]
    resume: bool,
    /// Overwrite an existing --out.
    #[arg(long, requires = "out")]
    force: bool,
    /// Texts per request.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    batch: u16,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Longest text sent, in characters; longer ones are bad records (default: `limits.max_text_chars`).
    #[arg(long)]
    max_chars: Option<usize>,
    /// Records whose text cannot be sent (empty, too long, not UTF-8): written as errors with
    /// their line numbers (skip), or the run stops at the first one (fail).
    #[arg(long, value_enum, default_value = "skip")]
    on_bad: batch::OnBad,
    /// Stop the run when no server answers a batch for this many seconds (--resume goes on).
    #[arg(long, default_value_t = 120)]
    give_up_after: u64,
    /// Texts to classify.
    texts: Vec<String>,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Generate a gossip key into a key file (`cluster.key_file`). Prints the new key's id, never
    /// the key.
    Keygen {
        #[command(flatten)]
        target: KeygenTarget,
    },
    /// Write a new cluster CA and a node certificate and key signed by it into DIR
    /// (`cluster.tls_dir`: remote-actor sessions over mutual TLS). Copy the folder to every node.
    Tls {
        /// Folder to create (mode 700; the key mode 600); refuses to overwrite its files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
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
    let config = match cli.config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("senti: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.async_threads(config.as_ref()) {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("senti: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, config)) {
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

impl Cli {
    /// The configuration of a command that reads one (`serve`, `classify`), loaded once, before
    /// the runtime is built: it sizes the runtime.
    fn config(&self) -> anyhow::Result<Option<Config>> {
        match &self.command {
            Command::Serve { common, .. } => common.load().map(Some),
            Command::Classify(args) => args.common.load().map(Some),
            Command::Cluster { .. } => Ok(None),
        }
    }

    /// The async runtime's worker threads for a command that runs an engine
    /// ([`senti_config::Config::async_threads`]); `None` (tokio's default) for the others.
    fn async_threads(&self, config_opt: Option<&Config>) -> Option<usize> {
        let runs_engine = match &self.command {
            Command::Serve { .. } => true,
            Command::Classify(args) => args.server.is_empty(),
            Command::Cluster { .. } => false,
        };
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        config_opt.filter(|_| runs_engine).map(|config| config.async_threads(cores))
    }
}

/// Runs the command; `config_opt` is [`Cli::config`]'s.
async fn run(cli: Cli, config_opt: Option<Config>) -> anyhow::Result<()> {
    const LOADED: &str = "serve and classify load a configuration. This is a bug.";
    match cli.command {
        Command::Serve { listen, .. } => {
            let mut config = config_opt.expect(LOADED);
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            let _ = NODE_ID.set(config.node_id());
            senti_node::run(config, senti_node::shutdown_signal()).await
        }
        Command::Classify(args) => classify(args, config_opt.expect(LOADED)).await,
        Command::Cluster { command: ClusterCommand::Keygen { target } } => keygen(target),
        Command::Cluster { command: ClusterCommand::Tls { out } } => {
            senti_cluster::create_tls_dir(&out)?;
            eprintln!(
                "wrote a new cluster CA and node certificate to {} (ca.crt, node.crt, node.key); copy this folder to \
                 every node of the cluster and set `cluster.tls_dir` (or SENTI_CLUSTER_TLS_DIR) to it",
                out.display()
            );
            Ok(())
        }
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

/// `senti classify`: the batch pipeline over this process's engine, or over `--server`s.
async fn classify(args: ClassifyArgs, config: Config) -> anyhow::Result<()> {
    let source = match args.file {
        Some(path) => batch::Source::File(path),
        None => {
            anyhow::ensure!(!args.texts.is_empty(), "no texts: give them as arguments or with --file");
            batch::Source::Args(args.texts)
        }
    };
    let options = batch::Options {
        source,
        format: args.format,
        column: args.column,
        out: args.out,
        resume: args.resume,
        force: args.force,
        batch: usize::from(args.batch),
        concurrency: usize::from(args.concurrency),
        max_chars: args.max_chars.unwrap_or(config.limits.max_text_chars),
        on_bad: args.on_bad,
    };
    if !args.server.is_empty() {
        let give_up = Duration::from_secs(args.give_up_after.max(1));
        let remote = batch::remote::Remote::new(&args.server, args.token, Duration::from_secs(60), give_up)?;
        batch::run(options, batch::Scorer::Remote(remote)).await?;
        return Ok(());
    }
    let bundle = senti_node::load_model(&config).await?;
    let engine = Arc::new(Engine::start(bundle, &config).await?);
    let gateway = Arc::new(senti_node::start_gateway(&engine, &config).await?);
    let manifest = Box::new(engine.bundle().manifest().clone());
    let timeout = Duration::from_millis(config.limits.request_timeout_ms.max(60_000));
    let scorer = batch::Scorer::Local { engine: engine.clone(), gateway: gateway.clone(), manifest, timeout };
    let outcome = batch::run(options, scorer).await;
    if let Ok(gateway) = Arc::try_unwrap(gateway) {
        gateway.stop().await;
    }
    if let Ok(engine) = Arc::try_unwrap(engine) {
        engine.shutdown(Duration::from_secs(5)).await;
    }
    outcome.map(drop)
}
