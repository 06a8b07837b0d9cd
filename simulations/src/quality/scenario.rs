//! What one cell of the report simulates: the cluster's shape, its offered load, and every
//! modelling assumption, as data with the defaults the report uses.
//!
//! Defaults come from the project's own configuration (`senti_config` defaults: queue capacity,
//! gossip interval, publication policy) and measurements (docs/benchmarks.md: one inference of the
//! default model on one single-threaded actor), so a change there shows up here.

use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, Exp, LogNormal};
use senti_cluster::PublishPolicy;
use senti_config::{AdvancedConfig, EngineConfig};

/// How long one text occupies an inference actor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServiceTime {
    /// `median * exp(sigma * Z)`, Z standard normal: a heavy right tail (long texts, CPU hiccups).
    LogNormal {
        /// The median service time.
        median: Duration,
        /// Standard deviation of the logarithm.
        sigma: f64,
    },
    /// Exponential: memoryless, the textbook M/M/1 server (used to check the simulator).
    Exponential {
        /// The mean service time.
        mean: Duration,
    },
}

impl ServiceTime {
    /// Measured on the default model (docs/benchmarks.md, raw ONNX Runtime, `2x1` batch 1: two
    /// one-thread sessions serve 959 texts/s together, median 1.27 ms, p99 11.46 ms). A log-normal
    /// with that median and sigma 1.0 has mean 2.09 ms (= 2 / 959 s) and p99 13.0 ms.
    pub fn measured_default() -> Self {
        ServiceTime::LogNormal { median: Duration::from_micros(1_270), sigma: 1.0 }
    }

    /// The mean service time.
    pub fn mean(&self) -> Duration {
        match *self {
            ServiceTime::LogNormal { median, sigma } => median.mul_f64((sigma * sigma / 2.0).exp()),
            ServiceTime::Exponential { mean } => mean,
        }
    }

    /// A sampler of service times in nanoseconds. Panics on a zero or negative parameter, which
    /// is a bug in the scenario.
    pub(crate) fn sampler(&self) -> ServiceSampler {
        match *self {
            ServiceTime::LogNormal { median, sigma } => ServiceSampler::LogNormal(
                LogNormal::new((median.as_nanos() as f64).ln(), sigma).expect("invalid log-normal. This is a bug."),
            ),
            ServiceTime::Exponential { mean } => ServiceSampler::Exponential(
                Exp::new(1.0 / mean.as_nanos() as f64).expect("invalid exponential. This is a bug."),
            ),
        }
    }
}

/// A [`ServiceTime`] ready to draw from.
pub(crate) enum ServiceSampler {
    LogNormal(LogNormal<f64>),
    Exponential(Exp<f64>),
}

impl ServiceSampler {
    /// One service time in nanoseconds (at least 1).
    pub(crate) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let nanos = match self {
            ServiceSampler::LogNormal(d) => d.sample(rng),
            ServiceSampler::Exponential(d) => d.sample(rng),
        };
        (nanos.round() as u64).max(1)
    }
}

/// One simulated cluster under one offered load. Every request carries one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Nodes; each runs one gateway and `actors_per_node` inference actors.
    pub nodes: usize,
    /// Inference actors per node (`engine.actors`, default 2).
    pub actors_per_node: usize,
    /// Offered load as a fraction of the cluster's capacity (actors / mean service time).
    pub offered_load: f64,
    /// Service time of one text.
    pub service: ServiceTime,
    /// Tokens of one text: the unit of the reported backlog (the gateway's `reported_backlog` is
    /// in tokens, and one outstanding attempt counts `tokens_per_attempt` = 64 tokens).
    pub tokens_per_text: u64,
    /// Round trip between a gateway and a remote actor (local attempts have none).
    pub hop_rtt: Duration,
    /// Most texts waiting in one actor's queue (`advanced.queue_capacity`); beyond it: 429.
    pub queue_capacity: usize,
    /// A request not answered this long after it arrived is dropped (its attempt abandoned; an
    /// actor skips queued texts whose deadline passed, as the real queue does).
    pub deadline: Duration,
    /// Requests arriving earlier are not measured (queues and gossip settle first).
    pub warmup: Duration,
    /// Requests measured after the warm-up.
    pub measured_requests: usize,
    /// Time between two gossip rounds of one node (`advanced.gossip_interval_ms`).
    pub gossip_interval: Duration,
    /// Peers a node gossips with per round (chitchat's `GOSSIP_COUNT`).
    pub gossip_fanout: usize,
    /// When an actor's backlog is worth publishing (the real `should_publish` policy).
    pub publish: PublishPolicy,
    /// Relative speed of each node's actors (1.0: the measured default; 2.0 serves a text in half
    /// the time). Indexed by node; `Scenario::new` makes every node 1.0.
    pub node_speeds: Vec<f64>,
    /// A node that becomes slower during the run (a gray failure), if any.
    pub slowdown: Option<Slowdown>,
    /// Where requests enter the cluster.
    pub entry: Entry,
    /// Arrival-rate bursts on top of the Poisson arrivals, if any.
    pub bursts: Option<Bursts>,
    /// Seed of every random draw; the same seed gives the same result.
    pub seed: u64,
}

/// One node's actors become `factor` times slower at `at` and stay so.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slowdown {
    /// The node.
    pub node: usize,
    /// Service times are multiplied by this from `at` on.
    pub factor: f64,
    /// Simulated time of the change (services that start later are slower).
    pub at: Duration,
}

/// Which gateways the clients send their requests to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Each request to a gateway chosen uniformly at random.
    Uniform,
    /// Every request to node 0's gateway (clients configured with one address).
    OneGateway,
}

/// Every `period`, the first `length` of it arrives at `factor` times the mean rate and the rest
/// slower, so that the mean rate stays the offered load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bursts {
    /// Time from one burst's start to the next.
    pub period: Duration,
    /// How long a burst lasts.
    pub length: Duration,
    /// The burst's rate over the mean rate (above 1; `length * factor` at most `period`).
    pub factor: f64,
}

impl Bursts {
    /// The arrival rate at simulated time `at_ns`, over the mean rate.
    pub(crate) fn rate_factor(&self, at_ns: u64) -> f64 {
        let period = self.period.as_nanos() as u64;
        if at_ns % period < self.length.as_nanos() as u64 {
            self.factor
        } else {
            let burst_share = self.length.as_secs_f64() / self.period.as_secs_f64();
            (1.0 - burst_share * self.factor) / (1.0 - burst_share)
        }
    }
}

/// The cluster shapes of the report: identical healthy nodes, and the cases where cluster-wide
/// load information should pay (issue 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Identical, healthy nodes; clients spread over every gateway; steady Poisson arrivals.
    Equal,
    /// Node speeds 1x, 2x, 4x in turn (node i at `[1, 2, 4][i % 3]`): a 1-core and a 4-core
    /// machine in one cluster.
    Unequal,
    /// Node 0 becomes 3x slower halfway through the measured requests. Offered load is a share of
    /// the capacity after the change.
    Slowed,
    /// Every request enters through node 0's gateway.
    OneEntry,
    /// Every second, 200 ms at 1.5x the mean rate (the rest at 0.875x).
    Bursts,
}

impl Variant {
    /// Every variant, in report order.
    pub const ALL: [Variant; 5] =
        [Variant::Equal, Variant::Unequal, Variant::Slowed, Variant::OneEntry, Variant::Bursts];

    /// The name on the command line and in file names.
    pub fn name(&self) -> &'static str {
        match self {
            Variant::Equal => "equal",
            Variant::Unequal => "unequal",
            Variant::Slowed => "slowed",
            Variant::OneEntry => "one-entry",
            Variant::Bursts => "bursts",
        }
    }

    /// What the variant is, for report headings.
    pub fn describe(&self) -> &'static str {
        match self {
            Variant::Equal => "equal nodes, clients on every gateway",
            Variant::Unequal => "unequal nodes (speeds 1x, 2x, 4x in turn)",
            Variant::Slowed => "node 0 becomes 3x slower halfway through",
            Variant::OneEntry => "every request enters through one gateway",
            Variant::Bursts => "bursts: 200 ms of every second at 1.5x the mean rate",
        }
    }

    /// The variant named `name`.
    pub fn parse(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == name)
    }

    /// `scenario` changed into this variant (its nodes, load and request count already set).
    pub fn apply(&self, mut scenario: Scenario) -> Scenario {
        match self {
            Variant::Equal => {}
            Variant::Unequal => {
                scenario.node_speeds = (0..scenario.nodes).map(|i| [1.0, 2.0, 4.0][i % 3]).collect();
            }
            Variant::Slowed => {
                // The capacity (and so the arrival rate) counts the node as slowed, whenever that
                // happens; the time is set once the rate is known.
                let mut slowdown = Slowdown { node: 0, factor: 3.0, at: Duration::ZERO };
                scenario.slowdown = Some(slowdown);
                let measured_secs = scenario.measured_requests as f64 / scenario.arrival_rate_per_sec();
                slowdown.at = scenario.warmup + Duration::from_secs_f64(measured_secs / 2.0);
                scenario.slowdown = Some(slowdown);
            }
            Variant::OneEntry => scenario.entry = Entry::OneGateway,
            Variant::Bursts => {
                scenario.bursts =
                    Some(Bursts { period: Duration::from_secs(1), length: Duration::from_millis(200), factor: 1.5 });
            }
        }
        scenario
    }
}

impl Scenario {
    /// The report's defaults for `nodes` nodes at `offered_load`.
    pub fn new(nodes: usize, offered_load: f64, seed: u64) -> Self {
        let advanced = AdvancedConfig::default();
        let engine = EngineConfig::default();
        Self {
            nodes,
            actors_per_node: engine.actors,
            offered_load,
            service: ServiceTime::measured_default(),
            tokens_per_text: 32,
            hop_rtt: Duration::from_micros(200),
            queue_capacity: advanced.queue_capacity,
            deadline: Duration::from_secs(1),
            warmup: Duration::from_secs(2),
            measured_requests: 200_000,
            gossip_interval: Duration::from_millis(advanced.gossip_interval_ms),
            gossip_fanout: 3,
            publish: PublishPolicy::from_config(&advanced),
            node_speeds: vec![1.0; nodes],
            slowdown: None,
            entry: Entry::Uniform,
            bursts: None,
            seed,
        }
    }

    /// Inference actors in the cluster.
    pub fn total_actors(&self) -> usize {
        self.nodes * self.actors_per_node
    }

    /// How fast `node`'s actors serve at simulated time `at_ns`, relative to the default.
    pub fn speed(&self, node: usize, at_ns: u64) -> f64 {
        let base = self.node_speeds.get(node).copied().unwrap_or(1.0);
        match self.slowdown {
            Some(s) if s.node == node && at_ns >= s.at.as_nanos() as u64 => base / s.factor,
            _ => base,
        }
    }

    /// Requests per second the cluster can serve: after the slowdown, if there is one (the
    /// capacity the offered load must fit in for the whole run).
    pub fn capacity_per_sec(&self) -> f64 {
        let speeds: f64 = (0..self.nodes).map(|node| self.speed(node, u64::MAX)).sum();
        speeds * self.actors_per_node as f64 / self.service.mean().as_secs_f64()
    }

    /// Requests per second offered.
    pub fn arrival_rate_per_sec(&self) -> f64 {
        self.offered_load * self.capacity_per_sec()
    }
}
