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
    /// Seed of every random draw; the same seed gives the same result.
    pub seed: u64,
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
            seed,
        }
    }

    /// Inference actors in the cluster.
    pub fn total_actors(&self) -> usize {
        self.nodes * self.actors_per_node
    }

    /// Requests per second the cluster can serve.
    pub fn capacity_per_sec(&self) -> f64 {
        self.total_actors() as f64 / self.service.mean().as_secs_f64()
    }

    /// Requests per second offered.
    pub fn arrival_rate_per_sec(&self) -> f64 {
        self.offered_load * self.capacity_per_sec()
    }
}
