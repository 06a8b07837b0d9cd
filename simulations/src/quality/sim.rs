//! The discrete-event simulation of one cell: one policy, one cluster size, one offered load.
//!
//! A virtual clock in nanoseconds and an agenda of events; no tokio, no threads, so a seed fixes
//! the result. One request's life:
//! ```text
//! Arrival (Poisson, uniform over gateways) -- place --> local: enqueue now
//!                                                       remote: Enqueue after hop_rtt / 2
//! Enqueue: queue full -> 429 reply | else FIFO; the actor serves one text at a time and skips
//!          texts whose deadline passed (as the real queue drains them)
//! ServiceEnd -> reply: local now, remote after hop_rtt / 2 -> latency recorded at the gateway
//!              queue empty: idle notices to other gateways (the gateway's policy), after hop_rtt / 2
//! Deadline (arrival + deadline): not answered yet -> dropped, the attempt abandoned
//! ```
//! The gateway's count of outstanding attempts drops when the reply arrives or the deadline
//! passes, whichever is first, as `AttemptEnded` does. Every answer with scores carries the
//! actor's gauge as it left (a 429 none), as an inference actor's does. Periodic events: each node's load
//! publisher and gossip round ([`gossip`](crate::quality::gossip)).
//!
//! Random numbers come from three seeded streams, so every policy sees the same requests (arrival
//! times, gateways, service times: common random numbers make the comparison sharper) and the same
//! gossip schedule; only the policy's own stream differs in use.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp};
use senti_engine::LoadGauge;

use crate::quality::gossip::{Gossip, Report};
use crate::quality::policy::{Inputs, Placer, Policy};
use crate::quality::scenario::{Entry, Scenario, ServiceSampler};

/// What one cell measured, over the requests that arrived after the warm-up.
#[derive(Debug, Clone, PartialEq)]
pub struct CellResult {
    /// [`Policy::label`].
    pub policy: String,
    /// Nodes.
    pub nodes: usize,
    /// Offered load (fraction of capacity).
    pub offered_load: f64,
    /// Requests measured.
    pub measured: u64,
    /// Answered before their deadline.
    pub completed: u64,
    /// Refused because the chosen actor's queue was full (429).
    pub rejected: u64,
    /// Not answered before their deadline.
    pub expired: u64,
    /// Mean latency of the answered requests, ms.
    pub mean_ms: f64,
    /// Median latency over all measured requests, a dropped one counting as infinitely slow;
    /// `None` when more than half were dropped.
    pub p50_ms: Option<f64>,
    /// 99th percentile, likewise; `None` when more than 1% were dropped.
    pub p99_ms: Option<f64>,
    /// Share of measured requests placed on an actor of their own gateway's node.
    pub local_share: f64,
    /// Mean age of the gossiped values the P2C policies compared (all remote candidates), ms.
    pub mean_gossip_age_ms: Option<f64>,
    /// Load publications per actor per simulated second.
    pub publications_per_actor_sec: f64,
    /// Simulated seconds, warm-up included.
    pub simulated_secs: f64,
}

impl CellResult {
    /// Rejected and expired requests as a fraction of those measured.
    pub fn drop_rate(&self) -> f64 {
        (self.rejected + self.expired) as f64 / self.measured.max(1) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrival,
    Enqueue { req: u32 },
    ServiceEnd { actor: u32 },
    Reply { req: u32, rejected: bool },
    Deadline { req: u32 },
    Publish { node: u32 },
    IdleNotice { gateway: u32, actor: u32 },
    GossipRound { node: u32 },
}

/// Events in time order; ties in scheduling order. Events that always come a constant delay after
/// their cause (deadlines, hops) are already in time order and go into FIFO lanes, keeping the heap
/// small (a deadline lane alone holds a second's worth of requests).
#[derive(Default)]
struct Agenda {
    heap: BinaryHeap<Reverse<(u64, u64, Event)>>,
    lanes: [VecDeque<(u64, u64, Event)>; 4],
    seq: u64,
}

const DEADLINE_LANE: usize = 0;
const ENQUEUE_LANE: usize = 1;
const REPLY_LANE: usize = 2;
const NOTICE_LANE: usize = 3;

impl Agenda {
    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, event)));
    }

    fn schedule_fifo(&mut self, lane: usize, at: u64, event: Event) {
        self.seq += 1;
        let lane = &mut self.lanes[lane];
        assert!(lane.back().is_none_or(|&(last, _, _)| last <= at), "FIFO lane out of order. This is a bug.");
        lane.push_back((at, self.seq, event));
    }

    fn pop(&mut self) -> Option<(u64, Event)> {
        let heap_key = self.heap.peek().map(|Reverse((at, seq, _))| (*at, *seq));
        let lane_opt = (0..self.lanes.len())
            .filter_map(|i| self.lanes[i].front().map(|&(at, seq, _)| ((at, seq), i)))
            .min_by_key(|&(key, _)| key);
        match (heap_key, lane_opt) {
            (Some(h), Some((l, lane))) if l < h => self.lanes[lane].pop_front().map(|(at, _, e)| (at, e)),
            (None, Some((_, lane))) => self.lanes[lane].pop_front().map(|(at, _, e)| (at, e)),
            _ => self.heap.pop().map(|Reverse((at, _, e))| (at, e)),
        }
    }
}

struct Request {
    arrival: u64,
    /// Service time at speed 1.0; the actor's node divides it by its speed when the text starts.
    service: u64,
    gateway: u32,
    actor: u32,
    /// Placed on an actor of its gateway's node (no hop). Never for a policy that places every
    /// request through a balancer of its own.
    local: bool,
    /// Answered, refused or expired.
    done: bool,
    /// The gateway stopped counting the attempt as outstanding.
    attempt_ended: bool,
    measured: bool,
    /// The actor's gauge when its answer left it, and when: what a reply could carry back.
    answered_with: Option<Report>,
}

struct Sim<'a> {
    scenario: &'a Scenario,
    now: u64,
    base: Instant,
    agenda: Agenda,
    requests: Vec<Request>,
    /// Each actor's FIFO queue of requests (not the one in service).
    queues: Vec<VecDeque<u32>>,
    /// Each actor's request in service, and how long it takes at the node's speed when it started.
    running: Vec<Option<(u32, u64)>>,
    /// Each actor's measured throughput in tokens per second, as its `LoadGauge` keeps it (0
    /// before its first text): what a local gauge shows and gossip carries.
    rates: Vec<f64>,
    /// Each actor's `LoadGauge`, used for its throughput alone (`rates` copies it).
    throughput: Vec<LoadGauge>,
    /// Each actor's gauge in tokens: queued + running texts, as `LoadGauge::backlog_tokens`.
    gauge_tokens: Vec<u64>,
    /// Each actor's true pending work in tokens: the gauge plus attempts on the wire to it.
    true_tokens: Vec<u64>,
    /// `outstanding[gateway * actors + actor]`: the gateway's attempts not ended.
    outstanding: Vec<u32>,
    /// Every gateway's attempts not ended, by actor: what one balancer in front of every request sees.
    total_outstanding: Vec<u32>,
    /// `replied[gateway * actors + actor]`: the backlog the actor's latest answer to the gateway
    /// carried (the project's policy reads it; the gateway's answers carry the actor's load).
    replied: Vec<Option<Report>>,
    gossip: Gossip,
    placer: Placer,
    arrivals_rng: SmallRng,
    gossip_rng: SmallRng,
    /// Which gateways an idle notice goes to.
    notice_rng: SmallRng,
    interarrival: Exp<f64>,
    service: ServiceSampler,
    deadline_ns: u64,
    half_hop_ns: u64,
    warmup_ns: u64,
    measured_so_far: usize,
    unresolved_measured: usize,
    latencies_ns: Vec<u64>,
    rejected: u64,
    expired: u64,
    local_placements: u64,
}

/// Independent random streams from one seed.
fn stream(seed: u64, stream: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The highest arrival rate over the mean: arrivals are drawn at that rate and thinned.
fn peak_factor(scenario: &Scenario) -> f64 {
    scenario.bursts.map_or(1.0, |b| b.factor.max(1.0))
}

/// Runs one cell to the end: every measured request answered, refused or expired.
pub fn run(scenario: &Scenario, policy: &Policy) -> CellResult {
    assert!(scenario.nodes >= 2 && scenario.actors_per_node >= 1, "a cluster needs two nodes. This is a bug.");
    assert!(scenario.offered_load > 0.0, "no load. This is a bug.");
    let actors = scenario.total_actors();
    // Each node's publisher and gossip round run at their own phase.
    let mut gossip_rng = stream(scenario.seed, 2);
    let mut agenda = Agenda::default();
    let publish_ns = scenario.publish.min_interval.as_nanos() as u64;
    let round_ns = scenario.gossip_interval.as_nanos() as u64;
    for node in 0..scenario.nodes as u32 {
        agenda.schedule(gossip_rng.random_range(0..publish_ns.max(1)), Event::Publish { node });
        agenda.schedule(gossip_rng.random_range(0..round_ns.max(1)), Event::GossipRound { node });
    }
    let mut sim = Sim {
        scenario,
        now: 0,
        base: Instant::now(),
        agenda,
        requests: Vec::with_capacity(scenario.measured_requests * 2),
        queues: vec![VecDeque::new(); actors],
        running: vec![None; actors],
        rates: vec![0.0; actors],
        throughput: (0..actors).map(|_| LoadGauge::default()).collect(),
        gauge_tokens: vec![0; actors],
        true_tokens: vec![0; actors],
        outstanding: vec![0; scenario.nodes * actors],
        total_outstanding: vec![0; actors],
        replied: vec![None; scenario.nodes * actors],
        gossip: Gossip::new(scenario.nodes, actors),
        placer: Placer::new(*policy, scenario.nodes, actors, stream(scenario.seed, 3)),
        arrivals_rng: stream(scenario.seed, 1),
        gossip_rng,
        notice_rng: stream(scenario.seed, 4),
        interarrival: Exp::new(scenario.arrival_rate_per_sec() * peak_factor(scenario) / 1e9)
            .expect("invalid arrival rate. This is a bug."),
        service: scenario.service.sampler(),
        deadline_ns: scenario.deadline.as_nanos() as u64,
        half_hop_ns: scenario.hop_rtt.as_nanos() as u64 / 2,
        warmup_ns: scenario.warmup.as_nanos() as u64,
        measured_so_far: 0,
        unresolved_measured: 0,
        latencies_ns: Vec::with_capacity(scenario.measured_requests),
        rejected: 0,
        expired: 0,
        local_placements: 0,
    };
    let first = sim.next_interarrival();
    sim.agenda.schedule(first, Event::Arrival);

    while let Some((at, event)) = sim.agenda.pop() {
        sim.now = at;
        match event {
            Event::Arrival => sim.arrival(),
            Event::Enqueue { req } => sim.enqueue(req),
            Event::ServiceEnd { actor } => sim.service_end(actor as usize),
            Event::Reply { req, rejected } => sim.reply_arrived(req, rejected),
            Event::Deadline { req } => sim.deadline(req),
            Event::Publish { node } => {
                sim.publish(node as usize);
                sim.agenda.schedule(at + publish_ns, event);
            }
            Event::IdleNotice { gateway, actor } => {
                let since = sim.base + Duration::from_nanos(at.saturating_sub(sim.half_hop_ns));
                sim.placer.idle_notice(gateway as usize, actor as usize, since);
            }
            Event::GossipRound { node } => {
                sim.gossip.round(node as usize, scenario.nodes, scenario.gossip_fanout, &mut sim.gossip_rng);
                sim.agenda.schedule(at + round_ns, event);
            }
        }
        if sim.measured_so_far == scenario.measured_requests && sim.unresolved_measured == 0 {
            break;
        }
    }
    sim.result(policy)
}

impl Sim<'_> {
    /// Time to the next arrival: Poisson at the mean rate, or with bursts a Poisson process at
    /// the peak rate thinned to the rate of each moment (exact for a piecewise-constant rate).
    fn next_interarrival(&mut self) -> u64 {
        let mut gap = 0u64;
        loop {
            gap += (self.interarrival.sample(&mut self.arrivals_rng).round() as u64).max(1);
            let Some(bursts) = self.scenario.bursts else { return gap };
            let keep = bursts.rate_factor(self.now + gap) / peak_factor(self.scenario);
            if self.arrivals_rng.random::<f64>() < keep {
                return gap;
            }
        }
    }

    fn arrival(&mut self) {
        let actors = self.scenario.total_actors();
        let gateway = match self.scenario.entry {
            Entry::Uniform => self.arrivals_rng.random_range(0..self.scenario.nodes),
            Entry::OneGateway => 0,
        };
        let service = self.service.sample(&mut self.arrivals_rng);
        let next = self.now + self.next_interarrival();
        let measured = self.now >= self.warmup_ns && self.measured_so_far < self.scenario.measured_requests;
        if measured {
            self.measured_so_far += 1;
            self.unresolved_measured += 1;
        }
        if self.measured_so_far < self.scenario.measured_requests {
            self.agenda.schedule(next, Event::Arrival);
        }
        self.placer.record_ages = measured;
        let outstanding = &self.outstanding[gateway * actors..(gateway + 1) * actors];
        let replied = &self.replied[gateway * actors..(gateway + 1) * actors];
        let (scenario, now) = (self.scenario, self.now);
        let speed = |actor: usize| scenario.speed(actor / scenario.actors_per_node, now);
        let inputs = Inputs {
            node: gateway,
            actors_per_node: self.scenario.actors_per_node,
            now_ns: self.now,
            now: self.base + Duration::from_nanos(self.now),
            gauge_tokens: &self.gauge_tokens,
            true_tokens: &self.true_tokens,
            rates: &self.rates,
            speed: &speed,
            gossip: self.gossip.view_of(gateway),
            outstanding,
            total_outstanding: &self.total_outstanding,
            replied,
        };
        let actor = self.placer.place(&inputs);
        let req = u32::try_from(self.requests.len()).expect("more than 4 billion requests. This is a bug.");
        let request = Request {
            arrival: self.now,
            service,
            gateway: gateway as u32,
            actor: actor as u32,
            local: !self.placer.through_balancer() && actor / self.scenario.actors_per_node == gateway,
            done: false,
            attempt_ended: false,
            measured,
            answered_with: None,
        };
        let local = request.local;
        if measured && local {
            self.local_placements += 1;
        }
        self.requests.push(request);
        self.outstanding[gateway * actors + actor] += 1;
        self.total_outstanding[actor] += 1;
        self.true_tokens[actor] += self.scenario.tokens_per_text;
        self.agenda.schedule_fifo(DEADLINE_LANE, self.now + self.deadline_ns, Event::Deadline { req });
        if local {
            self.enqueue(req);
        } else {
            self.agenda.schedule_fifo(ENQUEUE_LANE, self.now + self.half_hop_ns, Event::Enqueue { req });
        }
    }

    fn enqueue(&mut self, req: u32) {
        let actor = self.requests[req as usize].actor as usize;
        if self.queues[actor].len() >= self.scenario.queue_capacity {
            self.true_tokens[actor] -= self.scenario.tokens_per_text;
            self.send_reply(req, true);
            return;
        }
        self.queues[actor].push_back(req);
        self.gauge_tokens[actor] += self.scenario.tokens_per_text;
        if self.running[actor].is_none() {
            self.start_next(actor);
        }
    }

    /// Serves the oldest queued text whose deadline has not passed; drops the expired ones.
    fn start_next(&mut self, actor: usize) {
        let tokens = self.scenario.tokens_per_text;
        while let Some(req) = self.queues[actor].pop_front() {
            let request = &self.requests[req as usize];
            if request.arrival + self.deadline_ns <= self.now {
                self.gauge_tokens[actor] -= tokens;
                self.true_tokens[actor] -= tokens;
                continue;
            }
            let speed = self.scenario.speed(actor / self.scenario.actors_per_node, self.now);
            let took = ((request.service as f64 / speed).round() as u64).max(1);
            self.running[actor] = Some((req, took));
            self.agenda.schedule(self.now + took, Event::ServiceEnd { actor: actor as u32 });
            return;
        }
    }

    fn service_end(&mut self, actor: usize) {
        let (req, took) = self.running[actor].take().expect("service ended on an idle actor. This is a bug.");
        // The actor's real gauge keeps its throughput, as `InferenceActor` does after a batch.
        self.throughput[actor].record_batch(self.scenario.tokens_per_text as usize, Duration::from_nanos(took));
        self.rates[actor] = self.throughput[actor].snapshot().tokens_per_sec;
        self.gauge_tokens[actor] -= self.scenario.tokens_per_text;
        self.true_tokens[actor] -= self.scenario.tokens_per_text;
        self.send_reply(req, false);
        self.start_next(actor);
        if self.running[actor].is_none() {
            self.send_idle_notices(actor);
        }
    }

    /// An actor ran empty: its gateway tells the policy's count of gateways of other nodes
    /// (`IDLE_NOTICE_FANOUT` for the gateway's), drawn uniformly without repeats, which hear it
    /// half a hop later.
    fn send_idle_notices(&mut self, actor: usize) {
        let own = actor / self.scenario.actors_per_node;
        let others = self.scenario.nodes - 1;
        let fanout = self.placer.notice_fanout().min(others);
        if fanout == 0 {
            return;
        }
        for offset in index::sample(&mut self.notice_rng, others, fanout) {
            let gateway = (own + 1 + offset) % self.scenario.nodes;
            let event = Event::IdleNotice { gateway: gateway as u32, actor: actor as u32 };
            self.agenda.schedule_fifo(NOTICE_LANE, self.now + self.half_hop_ns, event);
        }
    }

    fn send_reply(&mut self, req: u32, rejected: bool) {
        let actor = self.requests[req as usize].actor as usize;
        let backlog_tokens = self.gauge_tokens[actor];
        let report = Report { backlog_tokens, tokens_per_sec: self.rates[actor], published_ns: self.now };
        // As in the gateway, scores carry the load and a refusal (429) does not.
        self.requests[req as usize].answered_with = (!rejected).then_some(report);
        if self.requests[req as usize].local {
            self.reply_arrived(req, rejected);
        } else {
            self.agenda.schedule_fifo(REPLY_LANE, self.now + self.half_hop_ns, Event::Reply { req, rejected });
        }
    }

    fn reply_arrived(&mut self, req: u32, rejected: bool) {
        self.end_attempt(req);
        let now = self.now;
        let actors = self.scenario.total_actors();
        let request = &mut self.requests[req as usize];
        let slot = &mut self.replied[request.gateway as usize * actors + request.actor as usize];
        if slot.is_none_or(|last| request.answered_with.is_some_and(|new| new.published_ns >= last.published_ns)) {
            *slot = request.answered_with;
        }
        if request.done {
            return;
        }
        request.done = true;
        if !request.measured {
            return;
        }
        self.unresolved_measured -= 1;
        if rejected {
            self.rejected += 1;
        } else {
            self.latencies_ns.push(now - request.arrival);
        }
    }

    fn deadline(&mut self, req: u32) {
        self.end_attempt(req);
        let request = &mut self.requests[req as usize];
        if request.done {
            return;
        }
        request.done = true;
        if request.measured {
            self.unresolved_measured -= 1;
            self.expired += 1;
        }
    }

    fn end_attempt(&mut self, req: u32) {
        let actors = self.scenario.total_actors();
        let request = &mut self.requests[req as usize];
        if !request.attempt_ended {
            request.attempt_ended = true;
            self.outstanding[request.gateway as usize * actors + request.actor as usize] -= 1;
            self.total_outstanding[request.actor as usize] -= 1;
        }
    }

    fn publish(&mut self, node: usize) {
        let per_node = self.scenario.actors_per_node;
        let (gauges, rates) = (&self.gauge_tokens, &self.rates);
        self.gossip.publish_tick(
            node,
            node * per_node..(node + 1) * per_node,
            |actor| (gauges[actor], rates[actor]),
            self.now,
            self.base,
            &self.scenario.publish,
        );
    }

    fn result(mut self, policy: &Policy) -> CellResult {
        self.latencies_ns.sort_unstable();
        let measured = self.measured_so_far as u64;
        let completed = self.latencies_ns.len() as u64;
        let to_ms = |ns: u64| ns as f64 / 1e6;
        // Nearest rank over every measured request; dropped ones sort after all answered ones.
        let quantile = |q: f64| {
            let rank = ((q * measured as f64).ceil() as u64).max(1);
            (rank <= completed).then(|| to_ms(self.latencies_ns[rank as usize - 1]))
        };
        let secs = self.now as f64 / 1e9;
        CellResult {
            policy: policy.label(),
            nodes: self.scenario.nodes,
            offered_load: self.scenario.offered_load,
            measured,
            completed,
            rejected: self.rejected,
            expired: self.expired,
            mean_ms: self.latencies_ns.iter().map(|&ns| to_ms(ns)).sum::<f64>() / completed.max(1) as f64,
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            local_share: self.local_placements as f64 / measured.max(1) as f64,
            mean_gossip_age_ms: (self.placer.age_count > 0)
                .then(|| self.placer.age_sum.as_secs_f64() * 1e3 / self.placer.age_count as f64),
            publications_per_actor_sec: self.gossip.publications as f64
                / self.scenario.total_actors() as f64
                / secs.max(1e-9),
            simulated_secs: secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::quality::scenario::ServiceTime;

    fn small(policy_load: f64, seed: u64) -> Scenario {
        Scenario {
            measured_requests: 30_000,
            warmup: Duration::from_millis(500),
            ..Scenario::new(4, policy_load, seed)
        }
    }

    #[test]
    fn same_seed_same_result_other_seed_other_result() {
        let params = crate::quality::gateway_estimate_params();
        let others = [
            Policy::SampledOracle(2),
            Policy::SampledOracle(4),
            Policy::ProjectRandomTies(params),
            Policy::IdleLocalFirst,
            Policy::ProjectGossipOnly(params),
        ];
        for policy in Policy::compared().into_iter().chain(others) {
            let a = run(&small(0.85, 7), &policy);
            assert_eq!(a, run(&small(0.85, 7), &policy), "{}", policy.label());
            assert_ne!(a, run(&small(0.85, 8), &policy), "{}", policy.label());
            assert_eq!(a.measured, 30_000);
            assert_eq!(a.completed + a.rejected + a.expired, a.measured);
        }
    }

    /// Random placement over M/M/1 servers with no hop: each actor is M/M/1 at the offered load,
    /// mean sojourn E[S] / (1 - rho) and p99 E[S] ln(100) / (1 - rho).
    #[test]
    fn random_placement_matches_mm1_theory() {
        let mean = Duration::from_millis(1);
        let scenario = Scenario {
            service: ServiceTime::Exponential { mean },
            hop_rtt: Duration::ZERO,
            measured_requests: 200_000,
            warmup: Duration::from_secs(1),
            ..Scenario::new(8, 0.5, 42)
        };
        let result = run(&scenario, &Policy::Random);
        assert!((result.mean_ms - 2.0).abs() < 0.1, "mean {} ms, theory 2 ms", result.mean_ms);
        let p99 = result.p99_ms.unwrap();
        let theory = 2.0 * 100f64.ln();
        assert!((p99 - theory).abs() < 0.08 * theory, "p99 {p99} ms, theory {theory} ms");
        assert_eq!(result.drop_rate(), 0.0);
    }

    #[test]
    fn every_variant_is_deterministic_and_keeps_its_shape() {
        let policy = Policy::Project(crate::quality::gateway_estimate_params());
        for variant in crate::quality::Variant::ALL {
            let scenario = variant.apply(small(0.85, 5));
            let a = run(&scenario, &policy);
            assert_eq!(a, run(&scenario, &policy), "{variant:?}");
            assert_eq!(a.completed + a.rejected + a.expired, a.measured, "{variant:?}");
            let share = a.local_share;
            match variant {
                // Every request enters at node 0: only its own actors count as local.
                crate::quality::Variant::OneEntry => assert!(share < 0.5, "{share}"),
                _ => assert!(share > 0.3, "{variant:?}: {share}"),
            }
        }
        let slowed = crate::quality::Variant::Slowed.apply(small(0.85, 5));
        assert!(
            slowed.capacity_per_sec() < small(0.85, 5).capacity_per_sec(),
            "load is a share of the slowed capacity"
        );
    }

    /// Nodes at 1x, 2x and 4x: counting work at each actor's measured speed (the gateway) beats
    /// counting tokens alone, and a balancer that counts connections adapts to speed by itself.
    #[test]
    fn speed_awareness_pays_on_unequal_nodes() {
        let params = crate::quality::gateway_estimate_params();
        let scenario = crate::quality::Variant::Unequal.apply(Scenario { measured_requests: 60_000, ..small(0.85, 3) });
        let aware = run(&scenario, &Policy::Project(params));
        let blind_tweaks = crate::quality::Tweaks { speed_blind: true, ..crate::quality::Tweaks::NONE };
        let blind = run(&scenario, &Policy::ProjectWith(params, blind_tweaks));
        let per_gateway = run(&scenario, &Policy::LeastConnections);
        let (aware_p99, blind_p99) = (aware.p99_ms.unwrap(), blind.p99_ms.unwrap());
        assert!(aware_p99 < 0.8 * blind_p99, "speed-aware {aware_p99} ms vs blind {blind_p99} ms");
        assert!(aware_p99 < per_gateway.p99_ms.unwrap(), "{aware:?} vs {per_gateway:?}");
    }

    #[test]
    fn the_oracle_beats_random_and_a_tiny_deadline_drops() {
        let oracle = run(&small(0.9, 1), &Policy::Oracle);
        let random = run(&small(0.9, 1), &Policy::Random);
        assert!(oracle.p99_ms.unwrap() < random.p99_ms.unwrap(), "{oracle:?} vs {random:?}");
        let strict = Scenario { deadline: Duration::from_millis(3), ..small(0.9, 1) };
        let dropped = run(&strict, &Policy::Random);
        assert!(dropped.expired > 0 && dropped.p99_ms.is_none(), "{dropped:?}");
    }
}
