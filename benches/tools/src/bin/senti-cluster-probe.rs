//! `senti-cluster-probe`: how fast the gossip failure detector notices a dead or a hung node, and
//! whether it raises false alarms while every node is saturated, for each point of a sweep of
//! `advanced.gossip_interval_ms` x `advanced.phi_threshold`. Loopback only.
//!
//! For each point:
//! 1. **Form**: start three release `senti serve` processes (`engine.actors=1`, seeds = the first
//!    two nodes' gossip addresses, like cluster-config/node-*.toml) on free loopback ports and wait
//!    until every node lists the three members as ready, with a remote-actor session.
//! 2. **False alarms**: closed-loop `POST /analyze` load on every node (`--concurrency` requests in
//!    flight per node, real reviews) for `--load-seconds`, while every node's `/v1/cluster` is
//!    polled every `--poll-ms`. A poll that lists fewer than three live members, or anything under
//!    `dead`, is a false alarm. The ages of the other nodes' gossiped loads seen in those polls
//!    are kept as well.
//! 3. **Kill**: stop the load on the third node, SIGKILL it (the other two stay loaded), and poll
//!    the two survivors every `--detect-poll-ms` until both have dropped it from their members:
//!    the detection time.
//! 4. **Hang**: restart the third node (same ports, so a new generation of the same node), wait
//!    for the three members again, load it too for `--settle-seconds`, then SIGSTOP it and measure
//!    the same way. The settling matters: chitchat's failure detector starts a node's
//!    heartbeat statistics from a prior (`advanced.failure_initial_interval_ms`, worth 5 samples),
//!    and a node hung a second after joining is judged by that prior more than by its own
//!    heartbeats (`--settle-seconds 0` measures exactly that case).
//!
//! Prints a markdown table and writes every figure as JSON (`--json`, default
//! `bench-results/cluster-<UTC time>.json`).
//!
//! The probe leaves no process behind: its `senti` children are killed when a point ends, on an
//! error, on a panic (panic hook), on SIGINT/SIGTERM, and when `--time-limit` passes (watchdog
//! thread). Only a SIGKILL of the probe itself can orphan them.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use senti_bench::{default_payload_path, mix, read_texts};
use senti_http::{ClusterReport, ClusterResponse};
use serde::Serialize;
use tokio::task::JoinHandle;

/// Names of the three nodes; the third is the one killed and hung. Sessions are dialed by the
/// smaller id, so `a` dials `b` and `c`, and `b` dials `c`.
const NODE_NAMES: [&str; 3] = ["a", "b", "c"];
/// The cookie of every probe cluster (loopback only; not a secret).
const COOKIE: &str = "senti-cluster-probe";
/// How long a node may take to answer /readyz, and a cluster to form.
const START_LIMIT: Duration = Duration::from_secs(90);
/// Timeout of one `/v1/cluster` poll.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of one `/analyze` request of the load.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock ticks per second in /proc (USER_HZ, 100 on the Linux targets this runs on).
const TICKS_PER_S: f64 = 100.0;

#[derive(Parser)]
#[command(
    name = "senti-cluster-probe",
    version,
    about = "Failure-detector sweep of a real 3-node senti cluster on loopback: false alarms under load, detection of a killed and a hung node"
)]
struct Cli {
    /// Gossip intervals to sweep, in ms (`advanced.gossip_interval_ms`) [default: 100,200,500; --quick: 200]
    #[arg(long, value_delimiter = ',')]
    intervals: Option<Vec<u64>>,
    /// Phi thresholds to sweep (`advanced.phi_threshold`) [default: 6,8,12; --quick: 8]
    #[arg(long, value_delimiter = ',')]
    phis: Option<Vec<f64>>,
    /// Seconds of saturating load during which false alarms are counted [default: 20; --quick: 3]
    #[arg(long)]
    load_seconds: Option<f64>,
    /// Seconds the restarted node runs, loaded, before it is hung [default: 10; --quick: 1]
    #[arg(long)]
    settle_seconds: Option<f64>,
    /// `/analyze` requests in flight per node (closed loop).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Poll period of every node's `/v1/cluster` during the load, in ms.
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    /// Poll period of the survivors' `/v1/cluster` after a kill or a hang, in ms.
    #[arg(long, default_value_t = 50)]
    detect_poll_ms: u64,
    /// Give up waiting for a detection after this many seconds (reported as not detected).
    #[arg(long, default_value_t = 30.0)]
    detect_timeout: f64,
    /// Smoke run: one point (200 ms, phi 8), 3 s of load. Proves the tooling works; the figures
    /// are not meaningful.
    #[arg(long)]
    quick: bool,
    /// The `senti` binary [default: target/release/senti of this repository]
    #[arg(long)]
    senti: Option<PathBuf>,
    /// TSV file with a header row and a `text` column [default: ../shared/data/sentiment/val.tsv]
    #[arg(long)]
    payload: Option<PathBuf>,
    /// Where to write the JSON results [default: bench-results/cluster-<UTC time>.json]
    #[arg(long)]
    json: Option<PathBuf>,
    /// The whole run is stopped (children killed, exit code 3) after this many seconds.
    #[arg(long, default_value_t = 1800.0)]
    time_limit: f64,
}

/// The resolved settings of a run (recorded in the JSON).
#[derive(Debug, Clone, Serialize)]
struct Settings {
    intervals_ms: Vec<u64>,
    phi_thresholds: Vec<f64>,
    load_seconds: f64,
    settle_seconds: f64,
    concurrency_per_node: usize,
    poll_ms: u64,
    detect_poll_ms: u64,
    detect_timeout_s: f64,
    quick: bool,
    senti: String,
    payload: String,
    payload_texts: usize,
    /// `SENTI__*` variables of the environment, which reach every node unchanged.
    senti_env: BTreeMap<String, String>,
    /// The `[cluster]` defaults of this build, for the keys the sweep does not set.
    cluster_defaults: serde_json::Value,
}

fn main() -> std::process::ExitCode {
    let result = run(Cli::parse());
    if result.is_err() {
        kill_all_children();
    }
    senti_bench::exit_code("senti-cluster-probe", result)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Names the JSON file and dates the report: when the run started.
    let started = utc_stamp();
    let settings = settings(&cli)?;
    install_guards(Duration::from_secs_f64(cli.time_limit));
    let texts = mix(read_texts(Path::new(&settings.payload))?, 1);
    let json_path = cli.json.clone().unwrap_or_else(|| PathBuf::from(format!("bench-results/cluster-{started}.json")));
    let logs = std::env::temp_dir().join(format!("senti-cluster-probe-{}", std::process::id()));
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let key_file = logs.join("cluster.key");
    let keygen = Command::new(&settings.senti)
        .args(["cluster", "keygen", "--out"])
        .arg(&key_file)
        .stderr(Stdio::null())
        .status()
        .context("cannot run `senti cluster keygen`")?;
    anyhow::ensure!(keygen.success(), "`senti cluster keygen --out {}` failed ({keygen})", key_file.display());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(async {
        tokio::spawn(stop_on_signal());
        let ctx = Ctx {
            bin: PathBuf::from(&settings.senti),
            client: reqwest::Client::builder()
                .no_proxy()
                .tcp_nodelay(true)
                .build()
                .context("cannot build the HTTP client")?,
            texts: Arc::new(texts),
            cursor: Arc::new(AtomicUsize::new(0)),
            settings: settings.clone(),
            logs: logs.clone(),
            key_file,
        };
        let loadavg_before = loadavg();
        let mut points = Vec::new();
        for (index, point) in sweep(&settings).into_iter().enumerate() {
            eprintln!(
                "senti-cluster-probe: point {}/{}: gossip_interval_ms={} phi_threshold={}",
                index + 1,
                settings.intervals_ms.len() * settings.phi_thresholds.len(),
                point.interval_ms,
                point.phi
            );
            let outcome = match run_point(&ctx, point, index).await {
                Ok(result) => PointOutcome { point, result_opt: Some(result), error_opt: None },
                Err(err) => {
                    eprintln!("senti-cluster-probe: point failed: {err:#} (node logs in {})", logs.display());
                    PointOutcome { point, result_opt: None, error_opt: Some(format!("{err:#}")) }
                }
            };
            points.push(outcome);
            // Let the machine settle between points (sockets closed, CPU idle).
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        anyhow::Ok(Report {
            date: started.clone(),
            revision: revision(),
            machine: Machine::read(loadavg_before, loadavg()),
            settings: settings.clone(),
            points,
        })
    })?;

    let failed = report.points.iter().filter(|p| p.error_opt.is_some()).count();
    if let Some(dir) = json_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report).context("cannot serialise the report")?;
    std::fs::write(&json_path, json + "\n").with_context(|| format!("cannot write {}", json_path.display()))?;
    print!("{}", markdown(&report));
    eprintln!("senti-cluster-probe: results in {}", json_path.display());
    if failed == 0 {
        let _ = std::fs::remove_dir_all(&logs);
        Ok(())
    } else {
        bail!("{failed} point(s) failed; node logs kept in {}", logs.display())
    }
}

/// Checks the flags and fills in the defaults (`--quick` ones where asked).
fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let (intervals, phis, load_seconds) =
        if cli.quick { (vec![200], vec![8.0], 3.0) } else { (vec![100, 200, 500], vec![6.0, 8.0, 12.0], 20.0) };
    let intervals_ms = cli.intervals.clone().unwrap_or(intervals);
    let phi_thresholds = cli.phis.clone().unwrap_or(phis);
    let load_seconds = cli.load_seconds.unwrap_or(load_seconds);
    let settle_seconds = cli.settle_seconds.unwrap_or(if cli.quick { 1.0 } else { 10.0 });
    anyhow::ensure!(
        settle_seconds.is_finite() && (0.0..=600.0).contains(&settle_seconds),
        "--settle-seconds must be between 0 and 600, got {settle_seconds}"
    );
    anyhow::ensure!(
        !intervals_ms.is_empty() && !phi_thresholds.is_empty(),
        "--intervals and --phis need at least one value each"
    );
    anyhow::ensure!(
        intervals_ms.iter().all(|&ms| (10..=10_000).contains(&ms)),
        "--intervals must be between 10 and 10000 ms, got {intervals_ms:?}"
    );
    anyhow::ensure!(
        phi_thresholds.iter().all(|&phi| (0.1..=100.0).contains(&phi)),
        "--phis must be between 0.1 and 100, got {phi_thresholds:?}"
    );
    anyhow::ensure!(
        load_seconds.is_finite() && (0.5..=3600.0).contains(&load_seconds),
        "--load-seconds must be between 0.5 and 3600, got {load_seconds}"
    );
    anyhow::ensure!(
        (1..=256).contains(&cli.concurrency),
        "--concurrency must be between 1 and 256, got {}",
        cli.concurrency
    );
    anyhow::ensure!(
        cli.poll_ms >= 10 && cli.detect_poll_ms >= 10,
        "--poll-ms and --detect-poll-ms must be at least 10"
    );
    anyhow::ensure!(
        cli.detect_timeout.is_finite() && (1.0..=600.0).contains(&cli.detect_timeout),
        "--detect-timeout must be between 1 and 600 s"
    );
    anyhow::ensure!(
        cli.time_limit.is_finite() && (10.0..=86_400.0).contains(&cli.time_limit),
        "--time-limit must be between 10 and 86400 s"
    );
    let senti =
        cli.senti.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/senti"));
    anyhow::ensure!(
        senti.is_file(),
        "no senti binary at {} (build it: cargo build --release -p senti-node --bin senti, or pass --senti)",
        senti.display()
    );
    let payload = cli.payload.clone().unwrap_or_else(default_payload_path);
    let payload_texts = read_texts(&payload)?.len();
    let mut cluster_defaults = serde_json::to_value(senti_config::ClusterConfig::default())?;
    if let Some(table) = cluster_defaults.as_object_mut() {
        table.remove("cookie");
        table.remove("key_file");
    }
    Ok(Settings {
        intervals_ms,
        phi_thresholds,
        load_seconds,
        settle_seconds,
        concurrency_per_node: cli.concurrency,
        poll_ms: cli.poll_ms,
        detect_poll_ms: cli.detect_poll_ms,
        detect_timeout_s: cli.detect_timeout,
        quick: cli.quick,
        senti: senti.display().to_string(),
        payload: payload.display().to_string(),
        payload_texts,
        senti_env: std::env::vars()
            .filter(|(k, _)| k.starts_with("SENTI__") && !k.contains("AUTH") && !k.contains("COOKIE"))
            .collect(),
        cluster_defaults,
    })
}

// ---------------------------------------------------------------------------------------------
// Child processes, and the guards that kill them whatever happens.

/// Pids of the `senti` children alive now. Written by [`Node::spawn`] and [`Node::kill`]; read by
/// the panic hook, the signal task and the watchdog, which have no access to the `Child` handles.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn children() -> std::sync::MutexGuard<'static, Vec<u32>> {
    // A panic while the lock was held must not stop the cleanup.
    CHILDREN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// SIGKILLs every registered child (a stopped process dies too). Safe to call more than once.
fn kill_all_children() {
    for &pid in children().iter() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// The panic hook and the watchdog thread; [`stop_on_signal`] covers SIGINT and SIGTERM.
fn install_guards(time_limit: Duration) {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_all_children();
        default_hook(info);
    }));
    std::thread::spawn(move || {
        std::thread::sleep(time_limit);
        kill_all_children();
        eprintln!("senti-cluster-probe: --time-limit of {} s passed; children killed", time_limit.as_secs());
        std::process::exit(3);
    });
}

/// Waits for SIGINT or SIGTERM, kills the children and exits.
async fn stop_on_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    kill_all_children();
    eprintln!("senti-cluster-probe: interrupted; children killed");
    std::process::exit(130);
}

/// Where one node listens.
#[derive(Debug, Clone)]
struct NodeSpec {
    id: String,
    http: SocketAddr,
    gossip: SocketAddr,
    actor: SocketAddr,
}

/// Three nodes' worth of distinct free loopback ports. Each is drawn below the kernel's
/// ephemeral range (`net.ipv4.ip_local_port_range`), where no client connection of the probe's
/// load can take it as its source port between this check and the node's bind, and is free for
/// TCP and UDP now.
fn free_specs(prefix: &str) -> anyhow::Result<Vec<NodeSpec>> {
    let mut taken = BTreeSet::new();
    let mut port = || free_port(&mut taken);
    let mut specs = Vec::new();
    for name in NODE_NAMES {
        let (http, gossip, actor) = (port()?, port()?, port()?);
        specs.push(NodeSpec {
            id: format!("{prefix}-{name}"),
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            gossip: SocketAddr::from(([127, 0, 0, 1], gossip)),
            actor: SocketAddr::from(([127, 0, 0, 1], actor)),
        });
    }
    Ok(specs)
}

/// A loopback port from 10,000 to the start of the ephemeral range, not in `taken`, that TCP and
/// UDP can both bind now; added to `taken`.
fn free_port(taken: &mut BTreeSet<u16>) -> anyhow::Result<u16> {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&start| start >= 11_000)
        .unwrap_or(32_768);
    for _ in 0..1_000 {
        let port = rand::random_range(10_000..start);
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free && taken.insert(port) {
            return Ok(port);
        }
    }
    bail!("no free loopback port between 10000 and {start} after 1,000 draws")
}

/// One point of the sweep.
#[derive(Debug, Clone, Copy, Serialize)]
struct Point {
    #[serde(rename = "gossip_interval_ms")]
    interval_ms: u64,
    #[serde(rename = "phi_threshold")]
    phi: f64,
}

fn sweep(settings: &Settings) -> Vec<Point> {
    settings
        .intervals_ms
        .iter()
        .flat_map(|&interval_ms| settings.phi_thresholds.iter().map(move |&phi| Point { interval_ms, phi }))
        .collect()
}

/// One `senti serve` process; SIGKILLed and reaped when dropped.
struct Node {
    spec: NodeSpec,
    child: Child,
    log: PathBuf,
}

impl Node {
    /// Starts `senti serve` as one node of the cluster `cluster_id`.
    fn spawn(
        ctx: &Ctx,
        spec: &NodeSpec,
        seeds: &[SocketAddr],
        point: Point,
        cluster_id: &str,
        incarnation: u32,
    ) -> anyhow::Result<Node> {
        let log = ctx.logs.join(format!("{}-{incarnation}.log", spec.id));
        let stderr = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let seeds = format!("[{}]", seeds.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(","));
        let child = Command::new(&ctx.bin)
            .arg("serve")
            .arg("--listen")
            .arg(spec.http.to_string())
            .env("SENTI__SERVER__NODE_ID", &spec.id)
            .env("SENTI__ENGINE__ACTORS", "1")
            .env("SENTI__CLUSTER__ENABLED", "true")
            .env("SENTI__CLUSTER__CLUSTER_ID", cluster_id)
            .env("SENTI_CLUSTER_COOKIE", COOKIE)
            .env("SENTI_CLUSTER_KEY_FILE", &ctx.key_file)
            .env("SENTI__CLUSTER__GOSSIP_LISTEN", spec.gossip.to_string())
            .env("SENTI__CLUSTER__ACTOR_LISTEN", spec.actor.to_string())
            .env("SENTI__CLUSTER__SEEDS", seeds)
            .env("SENTI__ADVANCED__GOSSIP_INTERVAL_MS", point.interval_ms.to_string())
            .env("SENTI__ADVANCED__PHI_THRESHOLD", point.phi.to_string())
            .env("RUST_LOG", "warn")
            // The probe sends no bearer token: auth stays off whatever the environment says.
            .env_remove("SENTI_AUTH_TOKENS")
            .env_remove("SENTI__AUTH__TOKENS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {}", ctx.bin.display()))?;
        children().push(child.id());
        Ok(Node { spec: spec.clone(), child, log })
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        kill(Pid::from_raw(self.child.id() as i32), signal)
            .with_context(|| format!("cannot send {signal} to {}", self.spec.id))
    }

    /// SIGKILL, reap, unregister.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pid = self.child.id();
        children().retain(|&p| p != pid);
    }

    /// Polls /readyz until 200; fails at once if the process exits.
    async fn wait_ready(&mut self, client: &reqwest::Client) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.spec.http);
        let until = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}) before it was ready; see {}", self.spec.id, self.log.display());
            }
            let ready = client.get(&url).timeout(POLL_TIMEOUT).send().await.is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() > until {
                bail!("{} not ready after {START_LIMIT:?}; see {}", self.spec.id, self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// `/v1/cluster`: the API's own response type (senti-http), read through a few questions.

type ClusterView = ClusterResponse;

/// What the probe asks of a node's `/v1/cluster`.
trait ViewExt {
    fn membership(&self) -> anyhow::Result<&ClusterReport>;
    fn lists_member(&self, node: &str) -> bool;
    fn lists_dead(&self, node: &str, generation_opt: Option<u64>) -> bool;
    fn generation_of(&self, node: &str) -> Option<u64>;
    fn routes_to(&self, node: &str) -> bool;
}

impl ViewExt for ClusterView {
    fn membership(&self) -> anyhow::Result<&ClusterReport> {
        self.membership.as_ref().context("the node answered without membership: is `cluster.enabled` off?")
    }

    fn lists_member(&self, node: &str) -> bool {
        self.membership.as_ref().is_some_and(|m| m.members.iter().any(|member| member.node_id == node))
    }

    /// Whether `node` is listed as dead; with `generation_opt`, only that incarnation counts (a
    /// restarted node's previous generation stays listed for `advanced.dead_node_grace_ms`).
    fn lists_dead(&self, node: &str, generation_opt: Option<u64>) -> bool {
        self.membership.as_ref().is_some_and(|m| {
            m.dead.iter().any(|dead| dead.node_id == node && generation_opt.is_none_or(|g| g == dead.generation))
        })
    }

    /// The generation of member `node`, if listed.
    fn generation_of(&self, node: &str) -> Option<u64> {
        self.membership.as_ref()?.members.iter().find(|m| m.node_id == node).map(|m| m.generation)
    }

    fn routes_to(&self, node: &str) -> bool {
        self.routing.targets.iter().any(|t| t.target.split('/').next() == Some(node))
    }
}

async fn fetch_view(client: &reqwest::Client, node: &NodeSpec) -> anyhow::Result<ClusterView> {
    let response = client.get(format!("http://{}/v1/cluster", node.http)).timeout(POLL_TIMEOUT).send().await?;
    Ok(response.error_for_status()?.json().await?)
}

/// Waits until every node lists exactly the three members, each ready and with a session, and
/// routes to an actor of each of the other two. Returns how long that took.
async fn wait_formed(client: &reqwest::Client, specs: &[NodeSpec]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let expected: BTreeSet<&str> = specs.iter().map(|s| s.id.as_str()).collect();
    let mut last = String::new();
    loop {
        let mut formed = true;
        for spec in specs {
            let summary = match fetch_view(client, spec).await {
                Ok(view) => {
                    let membership = view.membership()?;
                    let ids: BTreeSet<&str> = membership.members.iter().map(|m| m.node_id.as_str()).collect();
                    formed &= ids == expected
                        && membership.members.iter().all(|m| m.ready && m.session)
                        && specs.iter().all(|other| view.routes_to(&other.id));
                    let states: Vec<String> = membership
                        .members
                        .iter()
                        .map(|m| {
                            let routed = view.routes_to(&m.node_id);
                            format!("{} ready={} session={} routed={routed}", m.node_id, m.ready, m.session)
                        })
                        .collect();
                    format!("{}: [{}]", spec.id, states.join(", "))
                }
                Err(err) => {
                    formed = false;
                    format!("{}: {err}", spec.id)
                }
            };
            if !formed {
                last = summary;
                break;
            }
        }
        if formed {
            return Ok(start.elapsed());
        }
        if start.elapsed() > START_LIMIT {
            bail!("the cluster did not form within {START_LIMIT:?}; last view {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Load.

/// Closed-loop `/analyze` load on one node: `concurrency` workers, each sending its next review
/// when the previous request is answered, until [`LoadDriver::stop`].
struct LoadDriver {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<LoadCounts>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Outcomes of the load's requests.
#[derive(Debug, Clone, Default, Serialize)]
struct LoadCounts {
    ok: u64,
    /// By kind: `status_<code>`, `timeout`, `connect`, `other`.
    errors: BTreeMap<String, u64>,
}

impl LoadCounts {
    fn add(&mut self, other: &LoadCounts) {
        self.ok += other.ok;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
    }
}

impl LoadDriver {
    fn start(ctx: &Ctx, node: &NodeSpec) -> LoadDriver {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(LoadCounts::default()));
        let url = format!("http://{}/analyze", node.http);
        let tasks = (0..ctx.settings.concurrency_per_node)
            .map(|_| {
                let (client, url, texts, cursor) =
                    (ctx.client.clone(), url.clone(), ctx.texts.clone(), ctx.cursor.clone());
                let (stop, counts) = (stop.clone(), counts.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let text = &texts[cursor.fetch_add(1, Ordering::Relaxed) % texts.len()];
                        let outcome = client
                            .post(&url)
                            .timeout(REQUEST_TIMEOUT)
                            .json(&serde_json::json!({ "text": text }))
                            .send()
                            .await;
                        let error_opt = match outcome {
                            Ok(response) if response.status().is_success() => {
                                // Read the body: the request is answered only when it is complete.
                                response.bytes().await.err().map(|_| "other".to_owned())
                            }
                            Ok(response) => Some(format!("status_{}", response.status().as_u16())),
                            Err(err) if err.is_timeout() => Some("timeout".to_owned()),
                            Err(err) if err.is_connect() => Some("connect".to_owned()),
                            Err(_) => Some("other".to_owned()),
                        };
                        let mut counts = counts.lock().expect("load counts lock poisoned. This is a bug.");
                        match error_opt {
                            None => counts.ok += 1,
                            Some(kind) => *counts.errors.entry(kind).or_default() += 1,
                        }
                    }
                })
            })
            .collect();
        LoadDriver { stop, counts, tasks }
    }

    fn snapshot(&self) -> LoadCounts {
        self.counts.lock().expect("load counts lock poisoned. This is a bug.").clone()
    }

    /// Stops at once: requests in flight are abandoned (not counted). Also on drop, so that a
    /// point that fails half-way leaves no worker hammering a dead node.
    fn stop(&self) -> LoadCounts {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
        self.snapshot()
    }
}

impl Drop for LoadDriver {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements.

/// Nearest-rank quantiles of a sample, in ms.
#[derive(Debug, Clone, Default, Serialize)]
struct Summary {
    samples: usize,
    p50: Option<f64>,
    p90: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

impl Summary {
    fn of(mut values: Vec<f64>) -> Summary {
        values.sort_by(f64::total_cmp);
        let q = |q: f64| -> Option<f64> {
            let n = values.len();
            (n > 0).then(|| values[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
        };
        Summary { samples: values.len(), p50: q(0.5), p90: q(0.9), p99: q(0.99), max: values.last().copied() }
    }
}

/// What one observer saw while the cluster was loaded.
#[derive(Debug, Default)]
struct Watch {
    polls: u64,
    poll_errors: u64,
    /// Polls that listed fewer than three live members or anything under `dead`.
    flagged_polls: u64,
    /// Times a node went from listed-and-not-dead to missing or dead in this observer's view.
    episodes: u64,
    /// The first few flagged polls, described.
    examples: Vec<String>,
    /// Ages of the other nodes' gossiped loads, ms.
    ages_ms: Vec<f64>,
    /// Time to answer one poll, ms.
    poll_ms: Vec<f64>,
}

/// Polls `observer` every `period` until `until`, counting false alarms.
async fn watch(
    client: reqwest::Client,
    observer: NodeSpec,
    all: Vec<String>,
    period: Duration,
    start: Instant,
    until: Instant,
) -> Watch {
    let mut watch = Watch::default();
    let mut healthy: BTreeMap<String, bool> = all.iter().map(|id| (id.clone(), true)).collect();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        tick.tick().await;
        let sent = Instant::now();
        let view = match fetch_view(&client, &observer).await {
            Ok(view) if view.membership.is_some() => view,
            _ => {
                watch.poll_errors += 1;
                continue;
            }
        };
        watch.polls += 1;
        watch.poll_ms.push(sent.elapsed().as_secs_f64() * 1e3);
        let membership = view.membership.as_ref().expect("checked above. This is a bug.");
        let flagged = membership.members.len() < all.len() || !membership.dead.is_empty();
        if flagged {
            watch.flagged_polls += 1;
            if watch.examples.len() < 10 {
                let members: Vec<&str> = membership.members.iter().map(|m| m.node_id.as_str()).collect();
                let dead: Vec<&str> = membership.dead.iter().map(|d| d.node_id.as_str()).collect();
                watch.examples.push(format!(
                    "{} at {} ms: members {members:?}, dead {dead:?}",
                    observer.id,
                    start.elapsed().as_millis()
                ));
            }
        }
        for (id, was_healthy) in healthy.iter_mut() {
            let is_healthy = view.lists_member(id) && !view.lists_dead(id, None);
            if *was_healthy && !is_healthy {
                watch.episodes += 1;
            }
            *was_healthy = is_healthy;
        }
        for member in membership.members.iter().filter(|m| m.node_id != observer.id) {
            watch.ages_ms.extend(member.actors.iter().filter_map(|a| a.age_ms).map(|ms| ms as f64));
        }
    }
    watch
}

/// CPU ticks so far: the whole machine busy (from /proc/stat), each process of `pids`, and the
/// probe itself.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTicks {
    machine: u64,
    senti: u64,
    probe: u64,
}

impl CpuTicks {
    fn read(pids: &[u32]) -> CpuTicks {
        let process = |path: String| -> u64 {
            let Ok(stat) = std::fs::read_to_string(path) else { return 0 };
            // The command name is in parentheses and may contain spaces: count from after it.
            let fields: Vec<&str> =
                stat.rsplit_once(") ").map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
            let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
            field(11) + field(12)
        };
        // user nice system idle iowait irq softirq steal: busy = user + nice + system + irq + softirq.
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let fields: Vec<u64> =
                    s.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
                Some(fields.first()? + fields.get(1)? + fields.get(2)? + fields.get(5)? + fields.get(6)?)
            })
            .unwrap_or(0);
        CpuTicks {
            machine,
            senti: pids.iter().map(|pid| process(format!("/proc/{pid}/stat"))).sum(),
            probe: process("/proc/self/stat".to_owned()),
        }
    }
}

/// Cores kept busy during a phase.
#[derive(Debug, Clone, Serialize)]
struct CpuCores {
    /// The three senti processes.
    senti: f64,
    /// This probe (load and polls).
    probe: f64,
    /// Every other process of the machine: near 0 unless something else competed.
    other_processes: f64,
}

impl CpuCores {
    fn between(before: CpuTicks, after: CpuTicks, wall: Duration) -> CpuCores {
        let cores = |ticks: u64| ticks as f64 / TICKS_PER_S / wall.as_secs_f64();
        let senti = cores(after.senti.saturating_sub(before.senti));
        let probe = cores(after.probe.saturating_sub(before.probe));
        let machine = cores(after.machine.saturating_sub(before.machine));
        CpuCores { senti, probe, other_processes: machine - senti - probe }
    }
}

/// The false-alarm phase of one point.
#[derive(Debug, Serialize)]
struct LoadPhase {
    seconds: f64,
    load: LoadCounts,
    requests_ok_per_s: f64,
    cpu_cores: CpuCores,
    polls: u64,
    poll_errors: u64,
    flagged_polls: u64,
    false_alarm_episodes: u64,
    examples: Vec<String>,
    /// Ages of the gossiped loads of the other two nodes, as every node reported them, ms.
    gossip_age_ms: Summary,
    /// Time to answer one `/v1/cluster` poll under load, ms.
    poll_latency_ms: Summary,
}

/// When one survivor stopped listing the victim, after the signal.
#[derive(Debug, Clone, Default, Serialize)]
struct SurvivorSeen {
    node: String,
    /// Gone from `membership.members` (chitchat's live set).
    left_members_ms: Option<u64>,
    /// Listed under `membership.dead`.
    listed_dead_ms: Option<u64>,
    /// None of its actors left in `routing.targets`.
    left_routing_ms: Option<u64>,
    polls: u64,
    poll_errors: u64,
}

/// A kill or a hang and how long the survivors took to notice it.
#[derive(Debug, Serialize)]
struct Detection {
    signal: &'static str,
    victim: String,
    /// The victim's generation (start time, unix ms) when it was signalled.
    generation: u64,
    /// Until both survivors had dropped the victim from their members; `None`: not within
    /// `--detect-timeout`.
    detected_ms: Option<u64>,
    survivors: Vec<SurvivorSeen>,
}

/// Sends `signal` to `victim` and polls the survivors until both dropped it from members, listed it
/// as dead and removed its actors from routing (or the timeout passes).
async fn detect(ctx: &Ctx, victim: &mut Node, survivors: &[NodeSpec], signal: Signal) -> anyhow::Result<Detection> {
    let period = Duration::from_millis(ctx.settings.detect_poll_ms);
    let limit = Duration::from_secs_f64(ctx.settings.detect_timeout_s);
    let victim_id = victim.spec.id.clone();
    let generation = fetch_view(&ctx.client, &survivors[0])
        .await?
        .generation_of(&victim_id)
        .with_context(|| format!("{} does not list {victim_id} before the signal", survivors[0].id))?;
    let start = Instant::now();
    victim.signal(signal)?;
    let tasks: Vec<JoinHandle<SurvivorSeen>> = survivors
        .iter()
        .map(|survivor| {
            let (client, survivor, victim_id) = (ctx.client.clone(), survivor.clone(), victim_id.clone());
            tokio::spawn(async move {
                let mut seen = SurvivorSeen { node: survivor.id.clone(), ..SurvivorSeen::default() };
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while start.elapsed() < limit {
                    tick.tick().await;
                    let Ok(view) = fetch_view(&client, &survivor).await else {
                        seen.poll_errors += 1;
                        continue;
                    };
                    seen.polls += 1;
                    let at = start.elapsed().as_millis() as u64;
                    if !view.lists_member(&victim_id) {
                        seen.left_members_ms.get_or_insert(at);
                    }
                    if view.lists_dead(&victim_id, Some(generation)) {
                        seen.listed_dead_ms.get_or_insert(at);
                    }
                    if !view.routes_to(&victim_id) {
                        seen.left_routing_ms.get_or_insert(at);
                    }
                    if seen.left_members_ms.is_some() && seen.listed_dead_ms.is_some() && seen.left_routing_ms.is_some()
                    {
                        break;
                    }
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.context("a detection poller failed. This is a bug.")?);
    }
    let detected_ms =
        seen.iter().map(|s| s.left_members_ms).collect::<Option<Vec<u64>>>().and_then(|v| v.into_iter().max());
    let signal_name = match signal {
        Signal::SIGKILL => "SIGKILL",
        Signal::SIGSTOP => "SIGSTOP",
        _ => "other",
    };
    Ok(Detection { signal: signal_name, victim: victim_id, generation, detected_ms, survivors: seen })
}

// ---------------------------------------------------------------------------------------------
// One point of the sweep.

/// What every point needs.
struct Ctx {
    bin: PathBuf,
    client: reqwest::Client,
    texts: Arc<Vec<String>>,
    /// Next text to send, shared by every load worker, so that the whole run walks one sequence.
    cursor: Arc<AtomicUsize>,
    settings: Settings,
    logs: PathBuf,
    /// The gossip key file every node of every point reads (`cluster.key_file`).
    key_file: PathBuf,
}

#[derive(Debug, Serialize)]
struct PointResult {
    /// From the three processes' start to a formed cluster (three ready members with sessions,
    /// seen by every node).
    formation_ms: u64,
    load_phase: LoadPhase,
    kill: Detection,
    /// From restarting the killed node to a formed cluster again.
    restart_formation_ms: u64,
    hang: Detection,
    /// Requests of the loaded survivors during the kill and the hang (failover at work).
    survivors_load_during_detection: LoadCounts,
}

#[derive(Debug, Serialize)]
struct PointOutcome {
    #[serde(flatten)]
    point: Point,
    #[serde(flatten)]
    result_opt: Option<PointResult>,
    #[serde(rename = "error")]
    error_opt: Option<String>,
}

async fn run_point(ctx: &Ctx, point: Point, index: usize) -> anyhow::Result<PointResult> {
    let prefix = format!("p{index}");
    let cluster_id = format!("senti-probe-{}-{index}", std::process::id());
    let specs = free_specs(&prefix)?;
    let seeds = [specs[0].gossip, specs[1].gossip];
    let started = Instant::now();
    let mut nodes = specs
        .iter()
        .map(|spec| Node::spawn(ctx, spec, &seeds, point, &cluster_id, 0))
        .collect::<anyhow::Result<Vec<Node>>>()?;
    for node in &mut nodes {
        node.wait_ready(&ctx.client).await?;
    }
    wait_formed(&ctx.client, &specs).await?;
    let formation_ms = started.elapsed().as_millis() as u64;
    eprintln!(
        "senti-cluster-probe:   formed in {formation_ms} ms; loading every node for {} s",
        ctx.settings.load_seconds
    );

    // (a) False alarms under saturation.
    let mut drivers: Vec<LoadDriver> = specs.iter().map(|spec| LoadDriver::start(ctx, spec)).collect();
    let pids: Vec<u32> = nodes.iter().map(|n| n.child.id()).collect();
    let cpu_before = CpuTicks::read(&pids);
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(ctx.settings.load_seconds);
    let ids: Vec<String> = specs.iter().map(|s| s.id.clone()).collect();
    let period = Duration::from_millis(ctx.settings.poll_ms);
    let watchers: Vec<JoinHandle<Watch>> = specs
        .iter()
        .map(|spec| tokio::spawn(watch(ctx.client.clone(), spec.clone(), ids.clone(), period, start, until)))
        .collect();
    let mut watches = Vec::new();
    for watcher in watchers {
        watches.push(watcher.await.context("a poller failed. This is a bug.")?);
    }
    let wall = start.elapsed();
    let cpu_cores = CpuCores::between(cpu_before, CpuTicks::read(&pids), wall);
    let mut load = LoadCounts::default();
    drivers.iter().for_each(|d| load.add(&d.snapshot()));
    let load_phase = LoadPhase {
        seconds: wall.as_secs_f64(),
        requests_ok_per_s: load.ok as f64 / wall.as_secs_f64(),
        load,
        cpu_cores,
        polls: watches.iter().map(|w| w.polls).sum(),
        poll_errors: watches.iter().map(|w| w.poll_errors).sum(),
        flagged_polls: watches.iter().map(|w| w.flagged_polls).sum(),
        false_alarm_episodes: watches.iter().map(|w| w.episodes).sum(),
        examples: watches.iter().flat_map(|w| w.examples.clone()).collect(),
        gossip_age_ms: Summary::of(watches.iter().flat_map(|w| w.ages_ms.clone()).collect()),
        poll_latency_ms: Summary::of(watches.iter().flat_map(|w| w.poll_ms.clone()).collect()),
    };
    eprintln!(
        "senti-cluster-probe:   {} polls, {} flagged; {:.0} requests/s ok",
        load_phase.polls, load_phase.flagged_polls, load_phase.requests_ok_per_s
    );
    let survivors_before: Vec<LoadCounts> = drivers[..2].iter().map(LoadDriver::snapshot).collect();

    // (b) Kill the third node; the other two stay loaded.
    let victim_load = drivers.pop().expect("three drivers. This is a bug.");
    victim_load.stop();
    let kill = detect(ctx, &mut nodes[2], &specs[..2], Signal::SIGKILL).await?;
    nodes[2].kill(); // reap it
    eprintln!("senti-cluster-probe:   kill detected after {}", ms_or_none(kill.detected_ms));

    // (c) Restart it (same ports: a new generation of the same node), let the survivors gather
    // heartbeat statistics on it under load, then hang it.
    let restarted = Instant::now();
    nodes[2] = Node::spawn(ctx, &specs[2], &seeds, point, &cluster_id, 1)?;
    nodes[2].wait_ready(&ctx.client).await?;
    wait_formed(&ctx.client, &specs).await?;
    let restart_formation_ms = restarted.elapsed().as_millis() as u64;
    let victim_load = LoadDriver::start(ctx, &specs[2]);
    tokio::time::sleep(Duration::from_secs_f64(ctx.settings.settle_seconds)).await;
    victim_load.stop();
    let hang = detect(ctx, &mut nodes[2], &specs[..2], Signal::SIGSTOP).await?;
    eprintln!("senti-cluster-probe:   hang detected after {}", ms_or_none(hang.detected_ms));

    let mut survivors_load = LoadCounts::default();
    for (driver, before) in drivers.into_iter().zip(survivors_before) {
        let after = driver.stop();
        let errors = after
            .errors
            .iter()
            .map(|(kind, n)| (kind.clone(), n - before.errors.get(kind).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        survivors_load.add(&LoadCounts { ok: after.ok - before.ok, errors });
    }
    drop(nodes); // SIGKILL all three, the hung one included
    Ok(PointResult {
        formation_ms,
        load_phase,
        kill,
        restart_formation_ms,
        hang,
        survivors_load_during_detection: survivors_load,
    })
}

// ---------------------------------------------------------------------------------------------
// The report.

#[derive(Debug, Serialize)]
struct Machine {
    nproc: usize,
    cpu: String,
    loadavg_before: String,
    loadavg_after: String,
}

impl Machine {
    fn read(loadavg_before: String, loadavg_after: String) -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("model name"))?.split_once(':').map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            loadavg_before,
            loadavg_after,
        }
    }
}

/// `<short commit>[+dirty]` of the current directory's git work tree, if any.
fn revision() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git").args(args).stderr(Stdio::null()).output().ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{commit}+dirty") } else { commit })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[derive(Debug, Serialize)]
struct Report {
    /// When the run started (UTC).
    date: String,
    /// `git describe`-like revision of the repository the probe was started in (`+dirty` when the
    /// work tree had changes); the senti binary is usually built from it.
    revision: Option<String>,
    machine: Machine,
    settings: Settings,
    points: Vec<PointOutcome>,
}

fn ms_or_none(ms_opt: Option<u64>) -> String {
    ms_opt.map_or_else(|| "not detected".to_owned(), |ms| format!("{ms} ms"))
}

fn fmt_ms(value_opt: Option<f64>) -> String {
    value_opt.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}

/// `detected (survivor a, survivor b)`, in ms.
fn fmt_detection(d: &Detection, timeout_s: f64) -> String {
    let each: Vec<String> =
        d.survivors.iter().map(|s| s.left_members_ms.map_or("-".to_owned(), |ms| ms.to_string())).collect();
    match d.detected_ms {
        Some(ms) => format!("{ms} ({})", each.join(", ")),
        None => format!("> {:.0} ({})", timeout_s * 1e3, each.join(", ")),
    }
}

fn markdown(report: &Report) -> String {
    let s = &report.settings;
    let mut out = format!(
        "## senti cluster failure-detector probe {} (revision {}){}\n\n\
         {}, nproc {}, load average {} before, {} after. Three `senti serve` on loopback, engine.actors=1 each.\n\
         False alarms: {} s of closed-loop /analyze load, {} in flight per node, every node's /v1/cluster polled every {} ms.\n\
         Detection: survivors polled every {} ms after the signal, both survivors loaded; the hung node had run {} s (loaded) since its restart.\n{}\n",
        report.date,
        report.revision.as_deref().unwrap_or("unknown"),
        if s.quick { " (--quick smoke run: figures not meaningful)" } else { "" },
        report.machine.cpu,
        report.machine.nproc,
        report.machine.loadavg_before,
        report.machine.loadavg_after,
        s.load_seconds,
        s.concurrency_per_node,
        s.poll_ms,
        s.detect_poll_ms,
        s.settle_seconds,
        if s.senti_env.is_empty() {
            String::new()
        } else {
            let vars: Vec<String> = s.senti_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("senti environment: {}.\n", vars.join(" "))
        },
    );
    out += "| gossip_interval_ms | phi_threshold | false alarms: flagged polls / polls (episodes) | detection, SIGKILL, ms: both (a, b) | detection, SIGSTOP, ms: both (a, b) | gossiped load age ms: p50 / p99 / max | load: ok/s, errors | cores: senti / probe / other |\n";
    out += "|---:|---:|---|---|---|---|---|---|\n";
    for p in &report.points {
        let Some(r) = &p.result_opt else {
            out += &format!(
                "| {} | {} | failed: {} | | | | | |\n",
                p.point.interval_ms,
                p.point.phi,
                p.error_opt.as_deref().unwrap_or("?").replace('|', "/")
            );
            continue;
        };
        let l = &r.load_phase;
        let errors: u64 = l.load.errors.values().sum();
        out += &format!(
            "| {} | {} | {} / {} ({}) | {} | {} | {} / {} / {} | {:.0}, {} | {:.2} / {:.2} / {:.2} |\n",
            p.point.interval_ms,
            p.point.phi,
            l.flagged_polls,
            l.polls,
            l.false_alarm_episodes,
            fmt_detection(&r.kill, s.detect_timeout_s),
            fmt_detection(&r.hang, s.detect_timeout_s),
            fmt_ms(l.gossip_age_ms.p50),
            fmt_ms(l.gossip_age_ms.p99),
            fmt_ms(l.gossip_age_ms.max),
            l.requests_ok_per_s,
            errors,
            l.cpu_cores.senti,
            l.cpu_cores.probe,
            l.cpu_cores.other_processes,
        );
    }
    let examples: Vec<&String> =
        report.points.iter().filter_map(|p| p.result_opt.as_ref()).flat_map(|r| &r.load_phase.examples).collect();
    if !examples.is_empty() {
        out += "\nFlagged polls (first ones):\n\n";
        for example in examples.iter().take(20) {
            out += &format!("- {example}\n");
        }
    }
    out
}

/// Now as `YYYYMMDDTHHMMSSZ` (UTC), like scripts/bench-node.sh names its files.
fn utc_stamp() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rest / 3_600, rest % 3_600 / 60, rest % 60)
}
