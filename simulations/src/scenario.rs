//! Scenarios as data: a list of [`Op`]s run against a [`SimCluster`] on virtual time, with load
//! flowing throughout, then every invariant checked over the trace.
//!
//! `Rate` sets the Poisson arrival rate that every later `Wait` generates; faults take effect at
//! once; `AssertConverged` waits (with load) until every node that is up and reachable agrees on
//! the membership, and records a violation if that takes longer than its bound.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use crate::cluster::{SimCluster, SimConfig};
use crate::invariants::{self, Bounds, DownInterval, GatewayCounts, Violation};
use crate::trace::{Event, Outcome};

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Requests per second from now on (Poisson arrivals, random entry node).
    Rate(f64),
    /// Let time pass (with load).
    Wait(Duration),
    /// Kill a node (process crash).
    Crash(usize),
    /// Start a crashed node again (a new generation).
    Restart(usize),
    /// SIGSTOP a node: alive to TCP, silent.
    Hang(usize),
    /// SIGCONT.
    Resume(usize),
    /// Multiply a node's service time (gray failure: slow but gossiping).
    Slow(usize, f64),
    /// Cut both directions between two groups.
    Partition(Vec<usize>, Vec<usize>),
    /// Cut only `from -> to`.
    PartitionOneWay(Vec<usize>, Vec<usize>),
    /// Remove every partition.
    Heal,
    /// Fraction of gossip datagrams lost.
    Loss(f64),
    /// Gossip latency.
    GossipDelay(Duration),
    /// Restart every node in turn, `gap` apart.
    RollingRestart(Duration),
    /// A new node joins.
    AddNode,
    /// Every up, reachable node agrees on membership within this bound.
    AssertConverged(Duration),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Rate(r) => write!(f, "rate {r}/s"),
            Op::Wait(d) => write!(f, "wait {d:?}"),
            Op::Crash(n) => write!(f, "crash node {n}"),
            Op::Restart(n) => write!(f, "restart node {n}"),
            Op::Hang(n) => write!(f, "hang node {n}"),
            Op::Resume(n) => write!(f, "resume node {n}"),
            Op::Slow(n, x) => write!(f, "slow node {n} x{x}"),
            Op::Partition(a, b) => write!(f, "partition {a:?} <-/-> {b:?}"),
            Op::PartitionOneWay(a, b) => write!(f, "partition {a:?} -/-> {b:?}"),
            Op::Heal => write!(f, "heal"),
            Op::Loss(p) => write!(f, "gossip loss {p}"),
            Op::GossipDelay(d) => write!(f, "gossip delay {d:?}"),
            Op::RollingRestart(gap) => write!(f, "rolling restart, {gap:?} apart"),
            Op::AddNode => write!(f, "add node"),
            Op::AssertConverged(d) => write!(f, "assert membership converges within {d:?}"),
        }
    }
}

/// A named scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name in reports.
    pub name: String,
    /// The cluster.
    pub config: SimConfig,
    /// The steps.
    pub ops: Vec<Op>,
    /// What the invariants allow.
    pub bounds: Bounds,
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Scenario name.
    pub name: String,
    /// Seed.
    pub seed: u64,
    /// Hash of the event trace.
    pub trace_hash: u64,
    /// Hash of the steps and accepted requests (the replayable part: see `Trace::hash`).
    pub schedule_hash: u64,
    /// Requests accepted by a gateway.
    pub accepted: usize,
    /// Answered with scores.
    pub ok: usize,
    /// Answered with an explicit error.
    pub errors: usize,
    /// Errors by message.
    pub error_kinds: std::collections::BTreeMap<String, usize>,
    /// Lost with their entry node.
    pub entry_lost: usize,
    /// Every broken invariant.
    pub violations: Vec<Violation>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (seed {}): {} accepted, {} ok, {} errors, {} lost with their entry node, trace {:016x}, {} violations",
            self.name,
            self.seed,
            self.accepted,
            self.ok,
            self.errors,
            self.entry_lost,
            self.trace_hash,
            self.violations.len()
        )?;
        if !self.error_kinds.is_empty() {
            write!(f, "\n  errors: {:?}", self.error_kinds)?;
        }
        for v in self.violations.iter().take(5) {
            write!(f, "\n  {v}")?;
        }
        Ok(())
    }
}

/// Runs a scenario to the end; call inside a paused-clock tokio runtime (see `run_blocking`).
pub async fn run(scenario: &Scenario) -> Report {
    let mut cluster = SimCluster::start(scenario.config.clone()).await;
    let mut rate = 0.0;
    let mut down: Vec<DownInterval> = Vec::new();
    let mut violations = Vec::new();
    // Let the cluster form before the first step.
    advance(&mut cluster, 0.0, Duration::from_secs(3)).await;
    for op in &scenario.ops {
        cluster.trace.record(Event::Step(op.to_string()));
        let now = cluster.trace.now_us();
        match op {
            Op::Rate(r) => rate = *r,
            Op::Wait(d) => advance(&mut cluster, rate, *d).await,
            Op::Crash(n) => {
                cluster.crash(*n).await;
                down.push(DownInterval { node: *n, from_us: now, until_us: None });
            }
            Op::Restart(n) => {
                cluster.restart(*n).await;
                end_down(&mut down, *n, now);
            }
            Op::Hang(n) => {
                cluster.hang(*n, true);
                down.push(DownInterval { node: *n, from_us: now, until_us: None });
            }
            Op::Resume(n) => {
                cluster.hang(*n, false);
                end_down(&mut down, *n, now);
            }
            Op::Slow(n, x) => cluster.slow(*n, *x),
            Op::Partition(a, b) => {
                for &x in a {
                    for &y in b {
                        cluster.net.block(x, y);
                        cluster.net.block(y, x);
                    }
                }
            }
            Op::PartitionOneWay(a, b) => {
                for &x in a {
                    for &y in b {
                        cluster.net.block(x, y);
                    }
                }
            }
            Op::Heal => cluster.net.heal(),
            Op::Loss(p) => cluster.net.set_loss(*p),
            Op::GossipDelay(d) => cluster.net.set_gossip_delay(*d),
            Op::RollingRestart(gap) => {
                for n in 0..cluster.len() {
                    let at = cluster.trace.now_us();
                    cluster.crash(n).await;
                    down.push(DownInterval { node: n, from_us: at, until_us: None });
                    advance(&mut cluster, rate, *gap).await;
                    cluster.restart(n).await;
                    end_down(&mut down, n, cluster.trace.now_us());
                    advance(&mut cluster, rate, *gap).await;
                }
            }
            Op::AddNode => {
                cluster.add_node().await;
            }
            Op::AssertConverged(within) => {
                if let Some(v) = converge(&mut cluster, rate, *within).await {
                    violations.push(v);
                }
            }
        }
    }
    // Stop the load and let every request finish.
    advance(&mut cluster, 0.0, scenario.config.request_timeout + Duration::from_secs(1)).await;
    cluster.drain(Duration::from_secs(5)).await;
    let mut gateways = Vec::new();
    for i in 0..cluster.len() {
        let snapshot = cluster.snapshot(i).await;
        gateways.push(GatewayCounts {
            accepted: cluster.accepted(i),
            retries: snapshot.retries,
            hedges: snapshot.hedges,
            incarnations: cluster.incarnations(i),
        });
    }
    let events = cluster.trace.events();
    violations.extend(invariants::check(&events, &down, &gateways, &scenario.bounds));
    let mut report = Report {
        name: scenario.name.clone(),
        seed: scenario.config.seed,
        trace_hash: cluster.trace.hash(),
        schedule_hash: cluster.trace.schedule_hash(),
        accepted: 0,
        ok: 0,
        errors: 0,
        error_kinds: Default::default(),
        entry_lost: 0,
        violations,
    };
    for (_, event) in &events {
        match event {
            Event::Accepted { .. } => report.accepted += 1,
            Event::Answered { outcome: Outcome::Ok { .. }, .. } => report.ok += 1,
            Event::Answered { outcome, .. } => {
                report.errors += 1;
                *report.error_kinds.entry(format!("{outcome:?}")).or_default() += 1;
            }
            Event::EntryLost { .. } => report.entry_lost += 1,
            _ => {}
        }
    }
    cluster.stop().await;
    report
}

/// Runs a scenario on a fresh single-threaded runtime with a paused clock: deterministic
/// scheduling, and virtual time that jumps whenever every task waits.
pub fn run_blocking(scenario: &Scenario) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a tokio runtime. This is a bug.");
    runtime.block_on(run(scenario))
}

fn end_down(down: &mut [DownInterval], node: usize, at: u64) {
    if let Some(interval) = down.iter_mut().rev().find(|d| d.node == node && d.until_us.is_none()) {
        interval.until_us = Some(at);
    }
}

async fn advance(cluster: &mut SimCluster, rate: f64, duration: Duration) {
    if rate > 0.0 {
        cluster.load(rate, duration).await;
    } else {
        tokio::time::sleep(duration).await;
    }
}

/// Waits (with load) until every up, non-hung node sees exactly the up, non-hung nodes.
async fn converge(cluster: &mut SimCluster, rate: f64, within: Duration) -> Option<Violation> {
    let started = cluster.trace.now_us();
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    loop {
        let alive: Vec<usize> = (0..cluster.len()).filter(|&i| cluster.is_up(i) && !cluster.net.is_hung(i)).collect();
        let expected: BTreeSet<String> = alive.iter().map(|&i| cluster.node_id(i).to_owned()).collect();
        let mut agreed = true;
        for &i in &alive {
            if cluster.live_view(i).await != expected {
                agreed = false;
                break;
            }
        }
        if agreed {
            return None;
        }
        if waited >= within {
            let mut views = Vec::new();
            for &i in &alive {
                views.push(format!("{}: {:?}", cluster.node_id(i), cluster.live_view(i).await));
            }
            return Some(Violation::NoConvergence { since_us: started, within, views });
        }
        advance(cluster, rate, step).await;
        waited += step;
    }
}

/// A random fault schedule for `seed`: 3 to 8 nodes, load below capacity, four to eight faults
/// among crash, restart, hang, resume, slow node, partition (both ways or one way), heal, gossip
/// loss and delay; then everything healed and membership required to converge.
pub fn random_scenario(seed: u64) -> Scenario {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let mut rng = SmallRng::seed_from_u64(seed);
    let nodes = rng.random_range(3..=8usize);
    let config = SimConfig { nodes, seed, ..SimConfig::default() };
    let capacity = nodes as f64 * config.actors_per_node as f64 / config.mean_service.as_secs_f64();
    let mut ops = vec![Op::Rate(capacity * rng.random_range(0.2..0.7))];
    let mut crashed = Vec::new();
    let mut hung = Vec::new();
    for _ in 0..rng.random_range(4..=8) {
        let n = rng.random_range(0..nodes);
        let op = match rng.random_range(0..9) {
            0 if !crashed.contains(&n) && crashed.len() + hung.len() + 2 < nodes => {
                crashed.push(n);
                Op::Crash(n)
            }
            1 if !crashed.is_empty() => Op::Restart(crashed.swap_remove(0)),
            2 if !hung.contains(&n) && !crashed.contains(&n) && crashed.len() + hung.len() + 2 < nodes => {
                hung.push(n);
                Op::Hang(n)
            }
            3 if !hung.is_empty() => Op::Resume(hung.swap_remove(0)),
            4 => Op::Slow(n, rng.random_range(2.0..20.0)),
            5 => {
                let split = rng.random_range(1..nodes);
                Op::Partition((0..split).collect(), (split..nodes).collect())
            }
            6 => Op::PartitionOneWay(vec![n], (0..nodes).filter(|&m| m != n).collect()),
            7 => Op::Loss(rng.random_range(0.0..0.3)),
            _ => Op::GossipDelay(Duration::from_millis(rng.random_range(1..100))),
        };
        ops.push(op);
        ops.push(Op::Wait(Duration::from_millis(rng.random_range(500..6_000))));
    }
    ops.push(Op::Heal);
    ops.push(Op::Loss(0.0));
    ops.push(Op::GossipDelay(Duration::from_millis(1)));
    ops.extend(hung.into_iter().map(Op::Resume));
    ops.extend(crashed.into_iter().map(Op::Restart));
    ops.push(Op::AssertConverged(Duration::from_secs(20)));
    ops.push(Op::Wait(Duration::from_secs(1)));
    Scenario { name: format!("random-{seed}"), config, ops, bounds: Bounds::default() }
}
