//! The placement policies compared, each deciding from what its gateway could know.
//!
//! The project's policy and the gossip-only P2C build their `LoadView`s with the gateway's own
//! `LoadView::new(..).at_rate(..)` (local actors: the exact gauge and measured rate; remote ones:
//! the gossiped value, its age and the gossiped rate, or never published) and call the real
//! `senti_routing::estimate`, `local_plus_sampled_remote` (as many remote samples as each gateway's
//! `RemoteSampling` says) and `power_of_two_choices`; the oracle calls
//! `least_loaded`. Random, round-robin and least-connections are what balancers without load
//! reports do, one per gateway or one in front of every actor (the seed recipe). Beyond these
//! seven, clearly labelled rows: references with perfect information (what sampling costs) and
//! hypothetical changes to the gateway (what would close the gap), never the gateway's code.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::index;
use rand::Rng;
use senti_routing::{
    estimate, least_loaded, local_plus_sampled_remote, mean_backlog, mean_rate, power_of_two_choices, use_notice,
    Candidate, EstimateParams, IdleNotices, LoadView, RemoteSampling, Reported, RoutingParams, IDLE_NOTICE_FANOUT,
    NOTICE_AFTER_ATTEMPTS,
};

use crate::quality::gossip::Report;

/// One way to choose the inference actor of a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// Uniformly among all actors.
    Random,
    /// Each gateway cycles through all actors, from its own random starting point.
    RoundRobin,
    /// The fewest attempts in flight from this gateway (what independent nginx `least_conn`
    /// balancers do: each counts only its own connections); ties broken uniformly at random, as
    /// nginx's round-robin among equals would spread them.
    LeastConnections,
    /// Power-of-two-choices on `estimate` with the gateway's outstanding attempts left out: only
    /// the reported backlog (exact for local actors, gossiped for remote ones).
    GossipP2c(EstimateParams),
    /// The gateway's policy: power-of-two-choices on `estimate` (aged gossip + own outstanding
    /// attempts), ties to local actors.
    Project(EstimateParams),
    /// Omniscient join-shortest-queue: `least_loaded` on every actor's true work, in tokens, counting
    /// attempts still on the wire to it.
    Oracle,
    /// Reference, not deployable: the least loaded of `d` distinct actors sampled uniformly, on
    /// every actor's true work as [`Policy::Oracle`] sees it (`d` = 2 calls `power_of_two_choices`).
    /// What sampling costs even with perfect information.
    SampledOracle(usize),
    /// Hypothetical, not the gateway's code: the project's policy with ties between equal estimates
    /// broken at random instead of towards the lower index (local actors still win ties).
    ProjectRandomTies(EstimateParams),
    /// Hypothetical, not the gateway's code: an idle local actor (exact gauge) if there is one,
    /// else [`Policy::LeastConnections`].
    IdleLocalFirst,
    /// The seed recipe's architecture: one nginx `least_conn` balancer in front of every actor. It
    /// sees every request, so its count of attempts in flight per actor is the whole cluster's;
    /// every attempt crosses the network from the balancer (no request is local). Ties at random.
    SingleLeastConnections,
    /// Hypothetical, not the gateway's code yet: the project's policy with [`Tweaks`].
    ProjectWith(EstimateParams, Tweaks),
    /// Hypothetical, what the gateway did before answers carried loads: the project's policy on
    /// gossip alone, without the backlog each answer brings back.
    ProjectGossipOnly(EstimateParams),
}

/// Changes to the project's placement, tried in the simulator before (or instead of) the gateway.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tweaks {
    /// Remote actors sampled per placement, always this many (the gateway: `None`, as many as
    /// its `RemoteSampling` says).
    pub remote_samples: Option<usize>,
    /// Measured throughputs ignored: every actor's work counted in its own tokens, as if all
    /// actors were equally fast (the gateway: false).
    pub speed_blind: bool,
    /// Gateways each idle period is told to, always this many (0: no idle notices, placement on
    /// estimates alone; the gateway: `None`, `IDLE_NOTICE_FANOUT`).
    pub notice_fanout: Option<usize>,
    /// Attempts' worth of work ahead of a choice beyond which a notice replaces it (the gateway:
    /// `None`, `NOTICE_AFTER_ATTEMPTS`).
    pub notice_after_attempts: Option<f64>,
}

impl Tweaks {
    /// The gateway's placement as it is.
    pub const NONE: Tweaks =
        Tweaks { remote_samples: None, speed_blind: false, notice_fanout: None, notice_after_attempts: None };

    /// No idle notices.
    pub const NO_NOTICES: Tweaks = Tweaks { notice_fanout: Some(0), ..Tweaks::NONE };

    fn label(&self) -> String {
        let mut parts = Vec::new();
        if let Some(samples) = self.remote_samples {
            parts.push(format!("always {samples} remote samples"));
        }
        if self.speed_blind {
            parts.push("speed-blind".to_owned());
        }
        match self.notice_fanout {
            Some(0) => parts.push("no idle notices".to_owned()),
            Some(fanout) => parts.push(format!("notices to {fanout}")),
            None => {}
        }
        if let Some(after) = self.notice_after_attempts {
            parts.push(format!("notice after {after} attempts"));
        }
        parts.join(", ")
    }
}

/// How a P2C-family row differs from the gateway's placement.
#[derive(Debug, Clone, Copy)]
struct Variation {
    /// Count this gateway's outstanding attempts (false: gossip only, chosen by plain P2C).
    count_outstanding: bool,
    /// Candidate `index` = actor XOR `mask` (0: the actor itself).
    mask: usize,
    /// A remote actor's newer of gossip and the backlog its last answer carried.
    read_replies: bool,
    /// Remote samples, always this many (the gateway: `None`, its `RemoteSampling`).
    remote_samples: Option<usize>,
    /// Ignore measured throughputs.
    speed_blind: bool,
    /// Take an idle notice beyond this many attempts' worth of work ahead of the choice
    /// (`senti_routing::use_notice`); `None`: no notices.
    notice_after_attempts: Option<f64>,
}

impl Default for Variation {
    /// The gateway's placement.
    fn default() -> Self {
        Self {
            count_outstanding: true,
            mask: 0,
            read_replies: true,
            remote_samples: None,
            speed_blind: false,
            notice_after_attempts: Some(NOTICE_AFTER_ATTEMPTS),
        }
    }
}

/// The estimate weights the gateway uses with the default configuration (`GatewayState::pre_start`).
pub fn gateway_estimate_params() -> EstimateParams {
    RoutingParams::default().estimate
}

impl Policy {
    /// The policies of the report, in table order.
    pub fn compared() -> Vec<Policy> {
        let params = gateway_estimate_params();
        vec![
            Policy::Random,
            Policy::RoundRobin,
            Policy::LeastConnections,
            Policy::GossipP2c(params),
            Policy::Project(params),
            Policy::Oracle,
            Policy::SingleLeastConnections,
        ]
    }

    /// Whether every request crosses a balancer of its own to reach any actor (none is local).
    pub fn through_balancer(&self) -> bool {
        matches!(self, Policy::SingleLeastConnections)
    }

    /// Short name for tables and plot legends; non-default weights are spelled out.
    pub fn label(&self) -> String {
        let weights = |params: &EstimateParams| {
            let default = gateway_estimate_params();
            let mut changed = Vec::new();
            if params.tokens_per_attempt != default.tokens_per_attempt {
                changed.push(format!("tokens_per_attempt {}", params.tokens_per_attempt));
            }
            if params.trust_half_life != default.trust_half_life {
                changed.push(format!("half-life {} ms", params.trust_half_life.as_millis()));
            }
            if params.failure_penalty_tokens != default.failure_penalty_tokens {
                changed.push(format!("failure penalty {}", params.failure_penalty_tokens));
            }
            if params.remote_hop_cost_tokens != default.remote_hop_cost_tokens {
                changed.push(format!("hop cost {}", params.remote_hop_cost_tokens));
            }
            if changed.is_empty() {
                String::new()
            } else {
                format!(" ({})", changed.join(", "))
            }
        };
        match self {
            Policy::Random => "random".into(),
            Policy::RoundRobin => "round-robin".into(),
            Policy::LeastConnections => "least-connections (per gateway)".into(),
            Policy::GossipP2c(params) => format!("P2C on gossip only{}", weights(params)),
            Policy::Project(params) => format!("project: P2C on gossip + outstanding{}", weights(params)),
            Policy::Oracle => "oracle: JSQ on true queues".into(),
            Policy::SampledOracle(2) => "reference: P2C on true queues".into(),
            Policy::SampledOracle(d) => format!("reference: best of {d} on true queues"),
            Policy::ProjectRandomTies(params) => format!("hypothetical: project, random ties{}", weights(params)),
            Policy::IdleLocalFirst => "hypothetical: idle local actor, else least-connections".into(),
            Policy::SingleLeastConnections => "one least_conn balancer (nginx, the seed recipe)".into(),
            Policy::ProjectWith(params, tweaks) => {
                format!("hypothetical: project, {}{}", tweaks.label(), weights(params))
            }
            Policy::ProjectGossipOnly(params) => {
                format!("hypothetical: project without backlog on replies{}", weights(params))
            }
        }
    }
}

/// What a gateway knows when it places one request.
pub(crate) struct Inputs<'a> {
    /// The gateway's node.
    pub node: usize,
    /// Actors per node (actor `i` runs on node `i / actors_per_node`).
    pub actors_per_node: usize,
    /// Simulated now, nanoseconds.
    pub now_ns: u64,
    /// The same, as an instant (for the routing crate's types that keep time).
    pub now: Instant,
    /// Every actor's gauge: tokens queued and running (read only for local actors).
    pub gauge_tokens: &'a [u64],
    /// Every actor's true pending work in tokens, attempts on the wire included (oracle only).
    pub true_tokens: &'a [u64],
    /// Every actor's measured throughput, tokens per second (read only for local actors).
    pub rates: &'a [f64],
    /// An actor's true speed now (oracle only).
    pub speed: &'a dyn Fn(usize) -> f64,
    /// This gateway's gossip view, by actor.
    pub gossip: &'a [Option<Report>],
    /// This gateway's attempts in flight, by actor.
    pub outstanding: &'a [u32],
    /// Every gateway's attempts in flight, by actor (the single balancer only).
    pub total_outstanding: &'a [u32],
    /// The backlog each actor's latest answer to this gateway carried, by actor.
    pub replied: &'a [Option<Report>],
}

/// The true work ahead on `actor`, in tokens at speed 1.0 (its tokens over its speed now).
fn true_wait(inputs: &Inputs, actor: usize) -> f64 {
    inputs.true_tokens[actor] as f64 / (inputs.speed)(actor)
}

/// A policy with its per-gateway state and its own random numbers.
pub(crate) struct Placer {
    policy: Policy,
    rng: SmallRng,
    /// Next actor of each gateway's round-robin.
    next: Vec<usize>,
    /// Reused candidate list.
    candidates: Vec<Candidate>,
    /// Whether to add the ages of the values compared to `age_sum` (measured requests only).
    pub record_ages: bool,
    /// Sum and count of the age of the published remote values P2C policies compared (diagnostics).
    pub age_sum: Duration,
    /// See `age_sum`.
    pub age_count: u64,
    /// Each gateway's count of remote samples, as its `GatewayState` keeps it.
    sampling: Vec<RemoteSampling>,
    /// Each gateway's idle notices, by actor, as its `GatewayState` keeps them.
    idle_notices: Vec<IdleNotices<usize>>,
}

impl Placer {
    pub(crate) fn new(policy: Policy, gateways: usize, actors: usize, mut rng: SmallRng) -> Self {
        let next = (0..gateways).map(|_| rng.random_range(0..actors)).collect();
        Self {
            policy,
            rng,
            next,
            candidates: Vec::with_capacity(actors),
            record_ages: false,
            age_sum: Duration::ZERO,
            age_count: 0,
            sampling: vec![RemoteSampling::default(); gateways],
            idle_notices: vec![IdleNotices::default(); gateways],
        }
    }

    /// How many gateways an idle actor tells under this policy: the gateway's placement and its
    /// variations `IDLE_NOTICE_FANOUT` unless [`Tweaks::notice_fanout`] says otherwise, the others
    /// none.
    pub(crate) fn notice_fanout(&self) -> usize {
        match self.policy {
            Policy::Project(_) | Policy::ProjectGossipOnly(_) | Policy::ProjectRandomTies(_) => IDLE_NOTICE_FANOUT,
            Policy::ProjectWith(_, tweaks) => tweaks.notice_fanout.unwrap_or(IDLE_NOTICE_FANOUT),
            _ => 0,
        }
    }

    /// An idle notice reached `gateway`: `actor` ran empty at `since`.
    pub(crate) fn idle_notice(&mut self, gateway: usize, actor: usize, since: Instant) {
        self.idle_notices[gateway].push(actor, since);
    }

    /// Whether the policy places every request through a balancer of its own (none is local).
    pub(crate) fn through_balancer(&self) -> bool {
        self.policy.through_balancer()
    }

    /// The actor for one request.
    pub(crate) fn place(&mut self, inputs: &Inputs) -> usize {
        let actors = inputs.outstanding.len();
        match self.policy {
            Policy::Random => self.rng.random_range(0..actors),
            Policy::RoundRobin => {
                let actor = self.next[inputs.node];
                self.next[inputs.node] = (actor + 1) % actors;
                actor
            }
            Policy::LeastConnections => self.least_connections(inputs.outstanding),
            Policy::SingleLeastConnections => self.least_connections(inputs.total_outstanding),
            Policy::ProjectWith(params, tweaks) => self.p2c_with(
                inputs,
                &params,
                Variation {
                    remote_samples: tweaks.remote_samples,
                    speed_blind: tweaks.speed_blind,
                    notice_after_attempts: match tweaks.notice_fanout {
                        Some(0) => None,
                        _ => Some(tweaks.notice_after_attempts.unwrap_or(NOTICE_AFTER_ATTEMPTS)),
                    },
                    ..Variation::default()
                },
            ),
            Policy::GossipP2c(params) => self.p2c_with(
                inputs,
                &params,
                Variation {
                    count_outstanding: false,
                    read_replies: false,
                    notice_after_attempts: None,
                    ..Variation::default()
                },
            ),
            Policy::Project(params) => self.p2c_with(inputs, &params, Variation::default()),
            Policy::ProjectGossipOnly(params) => {
                self.p2c_with(inputs, &params, Variation { read_replies: false, ..Variation::default() })
            }
            Policy::Oracle => {
                self.true_candidates(inputs);
                least_loaded(&self.candidates).expect("no actors. This is a bug.")
            }
            Policy::SampledOracle(2) => {
                self.true_candidates(inputs);
                power_of_two_choices(&self.candidates, &mut self.rng).expect("no actors. This is a bug.")
            }
            Policy::SampledOracle(d) => index::sample(&mut self.rng, actors, d.min(actors))
                .into_iter()
                .min_by(|&a, &b| true_wait(inputs, a).total_cmp(&true_wait(inputs, b)))
                .expect("no actors. This is a bug."),
            Policy::ProjectRandomTies(params) => {
                // `power_of_two_choices` breaks ties towards the lower `index`. Labels XORed with a
                // fresh random mask keep the order of estimates but make the lower label of any two
                // actors a fair coin (it is decided by the highest bit where they differ, which the
                // mask flips half of the time).
                let mask = self.rng.random_range(0..actors.next_power_of_two());
                self.p2c_with(inputs, &params, Variation { mask, ..Variation::default() })
            }
            Policy::IdleLocalFirst => {
                let local = inputs.node * inputs.actors_per_node..(inputs.node + 1) * inputs.actors_per_node;
                match local.into_iter().find(|&actor| inputs.gauge_tokens[actor] == 0) {
                    Some(actor) => actor,
                    None => self.least_connections(inputs.outstanding),
                }
            }
        }
    }

    /// Every actor with its true pending work, in time at its speed now, as the estimate.
    fn true_candidates(&mut self, inputs: &Inputs) {
        self.candidates.clear();
        self.candidates.extend((0..inputs.true_tokens.len()).map(|index| Candidate {
            index,
            estimate: true_wait(inputs, index),
            is_local: index / inputs.actors_per_node == inputs.node,
        }));
    }

    /// Minimum outstanding, uniformly among ties (reservoir sampling in one pass).
    fn least_connections(&mut self, outstanding: &[u32]) -> usize {
        let (mut best, mut lowest, mut ties) = (0, u32::MAX, 0u32);
        for (actor, &count) in outstanding.iter().enumerate() {
            if count < lowest {
                (best, lowest, ties) = (actor, count, 1);
            } else if count == lowest {
                ties += 1;
                if self.rng.random_range(0..ties) == 0 {
                    best = actor;
                }
            }
        }
        best
    }

    /// The gateway's placement, or a [`Variation`] of it: one `LoadView` per actor, `estimate`,
    /// `local_plus_two_remote` (gossip only: `power_of_two_choices`).
    fn p2c_with(&mut self, inputs: &Inputs, params: &EstimateParams, variation: Variation) -> usize {
        self.candidates.clear();
        let is_local = |index: usize| index / inputs.actors_per_node == inputs.node;
        let newest = |index: usize| match (inputs.gossip[index], inputs.replied[index]) {
            (Some(gossiped), Some(replied))
                if variation.read_replies && replied.published_ns > gossiped.published_ns =>
            {
                Some(replied)
            }
            (None, replied) if variation.read_replies => replied,
            (gossiped, _) => gossiped,
        };
        let reported = |index: usize| {
            if is_local(index) {
                Reported::Local { backlog_tokens: inputs.gauge_tokens[index] as f64 }
            } else {
                match newest(index) {
                    Some(report) => {
                        let age = Duration::from_nanos(inputs.now_ns.saturating_sub(report.published_ns));
                        Reported::Gossiped { backlog_tokens: report.backlog_tokens as f64, age }
                    }
                    None => Reported::Never,
                }
            }
        };
        // `LoadSource::tokens_per_sec`: the local gauge's rate, a remote actor's as last heard.
        let rate = |index: usize| {
            let rate =
                if is_local(index) { inputs.rates[index] } else { newest(index).map_or(0.0, |r| r.tokens_per_sec) };
            (!variation.speed_blind && rate > 0.0).then_some(rate)
        };
        let actors = inputs.gossip.len();
        // The gateway's priors over every target, as `GatewayState::priors` computes them.
        let mean = mean_backlog((0..actors).map(reported));
        let mean_rate_opt = mean_rate((0..actors).map(rate));
        for index in 0..actors {
            let reported = reported(index);
            if let (true, Reported::Gossiped { age, .. }) = (self.record_ages, reported) {
                self.age_sum += age;
                self.age_count += 1;
            }
            let outstanding = if variation.count_outstanding { inputs.outstanding[index] } else { 0 };
            let view = LoadView::new(reported, mean, outstanding, 0.0).at_rate(rate(index), mean_rate_opt);
            let estimate = estimate(&view, params);
            self.candidates.push(Candidate { index: index ^ variation.mask, estimate, is_local: view.is_local });
        }
        let chosen = if variation.count_outstanding {
            // The project's policy: exactly the gateway's chooser and its count of remote samples.
            let sampling = &mut self.sampling[inputs.node];
            let samples = variation.remote_samples.unwrap_or_else(|| sampling.samples());
            let mut chosen = local_plus_sampled_remote(&self.candidates, samples, &mut self.rng);
            if let Some(index) = chosen {
                // As the gateway: the share counts where the estimates sent the work.
                sampling.record((index ^ variation.mask) / inputs.actors_per_node != inputs.node);
                // An idle notice instead of a choice that would queue.
                let estimate = self.candidates[index ^ variation.mask].estimate;
                let after_opt = variation.notice_after_attempts;
                if after_opt.is_some_and(|after| use_notice(estimate, params.tokens_per_attempt, after)) {
                    let outstanding = inputs.outstanding;
                    let notices = &mut self.idle_notices[inputs.node];
                    if let Some(actor) = notices.take(inputs.now, |&actor| (outstanding[actor] == 0).then_some(actor)) {
                        chosen = Some(actor ^ variation.mask);
                    }
                }
            }
            chosen
        } else {
            power_of_two_choices(&self.candidates, &mut self.rng)
        };
        chosen.expect("no actors. This is a bug.") ^ variation.mask
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn the_oracle_never_picks_a_longer_queue_than_another() {
        let mut rng = SmallRng::seed_from_u64(11);
        let mut placer = Placer::new(Policy::Oracle, 4, 8, SmallRng::seed_from_u64(1));
        for _ in 0..2_000 {
            let true_tokens: Vec<u64> = (0..8).map(|_| 32 * rng.random_range(0..4u64)).collect();
            let node = rng.random_range(0..4);
            let inputs = Inputs {
                node,
                actors_per_node: 2,
                now_ns: 0,
                now: Instant::now(),
                gauge_tokens: &true_tokens,
                true_tokens: &true_tokens,
                rates: &[0.0; 8],
                speed: &|_| 1.0,
                gossip: &[None; 8],
                outstanding: &[0; 8],
                total_outstanding: &[0; 8],
                replied: &[None; 8],
            };
            let chosen = placer.place(&inputs);
            let shortest = *true_tokens.iter().min().unwrap();
            assert_eq!(true_tokens[chosen], shortest, "{true_tokens:?} -> {chosen}");
            let local_shortest = (node * 2..node * 2 + 2).any(|a| true_tokens[a] == shortest);
            assert_eq!(chosen / 2 == node, local_shortest, "ties go to a local actor: {true_tokens:?} -> {chosen}");
        }
    }

    #[test]
    fn least_connections_spreads_ties_and_avoids_busy_actors() {
        let mut placer = Placer::new(Policy::LeastConnections, 1, 4, SmallRng::seed_from_u64(2));
        let mut counts = [0u32; 4];
        for _ in 0..4_000 {
            counts[placer.least_connections(&[1, 0, 0, 2])] += 1;
        }
        assert_eq!((counts[0], counts[3]), (0, 0));
        assert!((1_800..2_200).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn the_project_policy_counts_outstanding_and_gossip_only_does_not() {
        // Every actor looks idle; gateway 1 (owning actors 2 and 3) has 3 attempts on actor 0.
        let gossip = [Some(Report { backlog_tokens: 0, tokens_per_sec: 0.0, published_ns: 0 }); 4];
        let inputs = Inputs {
            node: 1,
            actors_per_node: 2,
            now_ns: 0,
            now: Instant::now(),
            gauge_tokens: &[0; 4],
            true_tokens: &[0; 4],
            rates: &[0.0; 4],
            speed: &|_| 1.0,
            gossip: &gossip,
            outstanding: &[3, 0, 0, 0],
            total_outstanding: &[3, 0, 0, 0],
            replied: &[None; 4],
        };
        let params = gateway_estimate_params();
        let mut project = Placer::new(Policy::Project(params), 2, 4, SmallRng::seed_from_u64(3));
        let mut gossip_only = Placer::new(Policy::GossipP2c(params), 2, 4, SmallRng::seed_from_u64(3));
        let (mut project_0, mut gossip_0) = (0, 0);
        for _ in 0..1_200 {
            project_0 += u32::from(project.place(&inputs) == 0);
            gossip_0 += u32::from(gossip_only.place(&inputs) == 0);
        }
        assert_eq!(project_0, 0, "actor 0 has 3 outstanding: it loses every pair it is in");
        // Gossip only: actor 0 ties with actor 1 and wins the coin half the time (1 pair in 6, so
        // 1 draw in 12); local actors win every other pair.
        assert!((60..160).contains(&gossip_0), "{gossip_0}");
    }
}
