//! How an actor's backlog reaches the other gateways: the real publication policy, then an
//! epidemic model of chitchat.
//!
//! Publication: every `publish.min_interval` (100 ms, each node at its own phase) a node reads its
//! actors' gauges and asks `senti_cluster::should_publish` whether each value is worth a gossip
//! update; a published value carries its publication time, as `load.<actor>` does.
//!
//! Propagation, modelled on chitchat 0.13 rather than drawn from a delay distribution: every
//! `gossip_interval` (200 ms, each node at its own phase) a node picks `gossip_fanout` (3) distinct
//! random peers and exchanges state with each (syn, syn-ack, ack: both sides end with the newer
//! value of every key). The exchange is instantaneous: a loopback or LAN round trip is a fraction
//! of a millisecond against a 200 ms round. A gateway does not read chitchat's state directly but
//! the live-nodes watcher, which chitchat refreshes once per round of its own node, just before that
//! round's exchanges (`update_nodes_liveness` in `gossip_multiple`); so a gateway sees a value at the
//! first round of its node after the value arrived. The cluster layer's 250 ms refresh re-reads the
//! same watcher and adds nothing. The age the gateway gives a value is measured from its
//! publication, as `remote_targets` does with `published_unix_ms` (clocks assumed in sync).

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::index;
use senti_cluster::{should_publish, PublishPolicy, Published};

/// One published backlog value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Report {
    /// Tokens queued and running when published.
    pub backlog_tokens: u64,
    /// The actor's measured throughput then (tokens per second; 0: not measured yet), which
    /// `load.<actor>` carries beside the backlog.
    pub tokens_per_sec: f64,
    /// When it was published (simulated nanoseconds).
    pub published_ns: u64,
}

/// Every node's gossip state and every gateway's view of it.
pub(crate) struct Gossip {
    actors: usize,
    /// What each node's chitchat holds: `known[node * actors + actor]`.
    known: Vec<Option<Report>>,
    /// What each node's gateway sees (the watcher's last snapshot), laid out like `known`.
    view: Vec<Option<Report>>,
    /// Last publication of each actor, for `should_publish`.
    last: Vec<Option<Published>>,
    /// Publications so far.
    pub publications: u64,
}

impl Gossip {
    /// No value published anywhere yet.
    pub(crate) fn new(nodes: usize, actors: usize) -> Self {
        Self {
            actors,
            known: vec![None; nodes * actors],
            view: vec![None; nodes * actors],
            last: vec![None; actors],
            publications: 0,
        }
    }

    /// The publisher tick of `node`: `gauge(actor)` reads an actor's backlog and throughput;
    /// `actors` are the node's own.
    pub(crate) fn publish_tick(
        &mut self,
        node: usize,
        actors: std::ops::Range<usize>,
        gauge: impl Fn(usize) -> (u64, f64),
        now_ns: u64,
        base: Instant,
        policy: &PublishPolicy,
    ) {
        let at = base + Duration::from_nanos(now_ns);
        for actor in actors {
            let (backlog_tokens, tokens_per_sec) = gauge(actor);
            if should_publish(self.last[actor].as_ref(), backlog_tokens, at, policy) {
                self.last[actor] = Some(Published { backlog_tokens, at });
                self.known[node * self.actors + actor] =
                    Some(Report { backlog_tokens, tokens_per_sec, published_ns: now_ns });
                self.publications += 1;
            }
        }
    }

    /// One gossip round of `node` among `nodes`: its gateway's view catches up with what the node
    /// knows, then it exchanges state with `fanout` random peers.
    pub(crate) fn round(&mut self, node: usize, nodes: usize, fanout: usize, rng: &mut SmallRng) {
        let own = node * self.actors..(node + 1) * self.actors;
        self.view[own.clone()].copy_from_slice(&self.known[own]);
        let others = nodes - 1;
        for pick in index::sample(rng, others, fanout.min(others)) {
            let peer = if pick >= node { pick + 1 } else { pick };
            self.exchange(node, peer);
        }
    }

    /// Both nodes keep the newer value of every actor.
    fn exchange(&mut self, a: usize, b: usize) {
        for actor in 0..self.actors {
            let (ia, ib) = (a * self.actors + actor, b * self.actors + actor);
            let newest = match (self.known[ia], self.known[ib]) {
                (Some(x), Some(y)) => Some(if y.published_ns > x.published_ns { y } else { x }),
                (x, y) => x.or(y),
            };
            self.known[ia] = newest;
            self.known[ib] = newest;
        }
    }

    /// The gateway of `node`'s view of every actor (index = actor).
    pub(crate) fn view_of(&self, node: usize) -> &[Option<Report>] {
        &self.view[node * self.actors..(node + 1) * self.actors]
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use senti_config::AdvancedConfig;

    use super::*;

    #[test]
    fn a_value_reaches_every_gateway_within_a_few_rounds() {
        let (nodes, actors) = (32, 64);
        let mut gossip = Gossip::new(nodes, actors);
        let policy = PublishPolicy::from_config(&AdvancedConfig::default());
        gossip.publish_tick(5, 10..12, |_| (96, 900.0), 0, Instant::now(), &policy);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut rounds_until_everywhere = None;
        for round in 1..=20 {
            (0..nodes).for_each(|node| gossip.round(node, nodes, 3, &mut rng));
            if (0..nodes).all(|n| n == 5 || gossip.view_of(n)[11].is_some()) {
                rounds_until_everywhere = Some(round);
                break;
            }
        }
        // Push-pull with fanout 3 over 32 nodes: about log4(32) = 2.5 rounds, plus one for the watcher.
        let rounds = rounds_until_everywhere.expect("never spread");
        assert!((2..=6).contains(&rounds), "{rounds} rounds");
        assert_eq!(gossip.view_of(0)[11], Some(Report { backlog_tokens: 96, tokens_per_sec: 900.0, published_ns: 0 }));
        assert_eq!(gossip.view_of(0)[12], None, "nothing published for it");
    }
}
