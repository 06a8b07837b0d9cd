//! The invariants every simulation run must keep, checked over its trace. Each is a plain function
//! of the events, so a fabricated trace can show it firing (see the tests below and
//! `simulations/tests/invariants_catch.rs`).
//!
//! 1. Every accepted request gets exactly one final answer (scores or an explicit error) no later
//!    than its deadline plus `answer_margin`, unless its entry node crashed first.
//! 2. No request runs on the same actor twice; no request has more attempts than one, plus its
//!    gateway's retries and hedges can explain; hedges stay within the hedge budget.
//! 3. Retries stay within the retry budget (`ratio` per accepted request plus a reserve).
//! 4. After a heal, membership converges within a bound (checked by `Op::AssertConverged`).
//! 5. Nothing is routed to a node that has been down (crashed or hung) for longer than the
//!    failure-detection bound.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use crate::trace::{Event, Outcome};

/// What the invariants allow.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    /// Lateness allowed after a deadline (virtual time: covers the last hop back).
    pub answer_margin: Duration,
    /// Longest time a down node may still receive attempts (failure detection + a refresh).
    pub detection: Duration,
    /// Retry budget: per accepted request.
    pub retry_ratio: f64,
    /// Retry budget: reserve per gateway incarnation.
    pub retry_reserve: f64,
    /// Hedge budget: per accepted request.
    pub hedge_ratio: f64,
    /// Hedge budget: reserve per gateway incarnation.
    pub hedge_reserve: f64,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            answer_margin: Duration::from_millis(50),
            detection: Duration::from_secs(10),
            retry_ratio: 0.2,
            retry_reserve: 10.0,
            hedge_ratio: 0.05,
            hedge_reserve: 1.0,
        }
    }
}

/// A node's down time (crash until restart, hang until resume).
#[derive(Debug, Clone, PartialEq)]
pub struct DownInterval {
    /// The node.
    pub node: usize,
    /// Since (virtual µs).
    pub from_us: u64,
    /// Until, if it came back.
    pub until_us: Option<u64>,
}

/// A gateway's counters over the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatewayCounts {
    /// Requests it accepted.
    pub accepted: u64,
    /// Retries it placed.
    pub retries: u64,
    /// Hedges it placed.
    pub hedges: u64,
    /// Times it was started (each restart refills the budgets' reserves).
    pub incarnations: u32,
}

/// A broken invariant, with what is needed to understand it.
#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
    /// (1) No answer at all.
    NoAnswer {
        /// Request.
        request: u64,
    },
    /// (1) More than one answer.
    AnsweredTwice {
        /// Request.
        request: u64,
    },
    /// (1) Answered after deadline + margin.
    Late {
        /// Request.
        request: u64,
        /// How late past the deadline.
        late_by: Duration,
    },
    /// (2) The same actor twice for one request.
    SameActorTwice {
        /// Request.
        request: u64,
        /// Node and actor index.
        actor: (usize, usize),
    },
    /// (2) More attempts than retries and hedges explain.
    UnexplainedAttempts {
        /// Extra attempts seen.
        extra: u64,
        /// Retries + hedges the gateways reported.
        explained: u64,
    },
    /// (2) Hedges beyond the budget.
    HedgeBudget {
        /// Gateway node.
        node: usize,
        /// Hedges placed.
        hedges: u64,
        /// Allowed.
        allowed: f64,
    },
    /// (3) Retries beyond the budget.
    RetryBudget {
        /// Gateway node.
        node: usize,
        /// Retries placed.
        retries: u64,
        /// Allowed.
        allowed: f64,
    },
    /// (4) Membership did not converge in time.
    NoConvergence {
        /// When the check started (µs).
        since_us: u64,
        /// Its bound.
        within: Duration,
        /// Each node's view when it gave up.
        views: Vec<String>,
    },
    /// (5) Routed to a node down for longer than the detection bound.
    RoutedToDead {
        /// Request.
        request: u64,
        /// The down node.
        node: usize,
        /// How long it had been down.
        down_for: Duration,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Checks invariants 1, 2, 3 and 5 over a finished run.
pub fn check(
    events: &[(u64, Event)],
    down: &[DownInterval],
    gateways: &[GatewayCounts],
    bounds: &Bounds,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut deadlines: HashMap<u64, u64> = HashMap::new();
    let mut answers: HashMap<u64, u32> = HashMap::new();
    let mut lost: HashSet<u64> = HashSet::new();
    let mut actors_of: HashMap<u64, HashSet<(usize, usize)>> = HashMap::new();
    let mut attempts: HashMap<u64, u64> = HashMap::new();
    for (at, event) in events {
        match event {
            Event::Accepted { request, deadline_us, .. } => {
                deadlines.insert(*request, *deadline_us);
            }
            Event::EntryLost { request } => {
                lost.insert(*request);
            }
            Event::Answered { request, outcome } => {
                let count = answers.entry(*request).or_default();
                *count += 1;
                if *count == 2 {
                    violations.push(Violation::AnsweredTwice { request: *request });
                }
                if *outcome == Outcome::NoAnswer {
                    violations.push(Violation::NoAnswer { request: *request });
                }
                let deadline = deadlines.get(request).copied().unwrap_or(u64::MAX);
                let margin = bounds.answer_margin.as_micros() as u64;
                if *at > deadline.saturating_add(margin) {
                    violations
                        .push(Violation::Late { request: *request, late_by: Duration::from_micros(at - deadline) });
                }
            }
            Event::Sent { request, from, to, actor } => {
                *attempts.entry(*request).or_default() += 1;
                if !actors_of.entry(*request).or_default().insert((*to, *actor)) {
                    violations.push(Violation::SameActorTwice { request: *request, actor: (*to, *actor) });
                }
                if to != from {
                    for d in down.iter().filter(|d| d.node == *to) {
                        let still_down = d.until_us.is_none_or(|until| *at < until);
                        if *at >= d.from_us && still_down {
                            let down_for = Duration::from_micros(at - d.from_us);
                            if down_for > bounds.detection {
                                violations.push(Violation::RoutedToDead { request: *request, node: *to, down_for });
                            }
                        }
                    }
                }
            }
            Event::Step(_) => {}
        }
    }
    for request in deadlines.keys() {
        if !answers.contains_key(request) && !lost.contains(request) {
            violations.push(Violation::NoAnswer { request: *request });
        }
    }
    let extra: u64 = attempts.values().map(|n| n.saturating_sub(1)).sum();
    let explained: u64 = gateways.iter().map(|g| g.retries + g.hedges).sum();
    if extra > explained {
        violations.push(Violation::UnexplainedAttempts { extra, explained });
    }
    for (node, g) in gateways.iter().enumerate() {
        let incarnations = g.incarnations.max(1) as f64;
        let allowed = bounds.retry_reserve * incarnations + bounds.retry_ratio * g.accepted as f64;
        if g.retries as f64 > allowed + 1e-9 {
            violations.push(Violation::RetryBudget { node, retries: g.retries, allowed });
        }
        let allowed = bounds.hedge_reserve * incarnations + bounds.hedge_ratio * g.accepted as f64;
        if g.hedges as f64 > allowed + 1e-9 {
            violations.push(Violation::HedgeBudget { node, hedges: g.hedges, allowed });
        }
    }
    violations.sort_by_key(|v| format!("{v:?}"));
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(request: u64, deadline_us: u64) -> Event {
        Event::Accepted { request, entry: 0, deadline_us }
    }

    fn ok(request: u64) -> Event {
        Event::Answered { request, outcome: Outcome::Ok { served_by: "n/a0".into(), attempts: 1 } }
    }

    fn sent(request: u64, to: usize, actor: usize) -> Event {
        Event::Sent { request, from: 0, to, actor }
    }

    fn one_gateway(retries: u64, hedges: u64) -> Vec<GatewayCounts> {
        vec![GatewayCounts { accepted: 100, retries, hedges, incarnations: 1 }]
    }

    #[test]
    fn a_clean_trace_passes() {
        let events = vec![(0, accepted(1, 1_000)), (10, sent(1, 1, 0)), (900, ok(1))];
        assert!(check(&events, &[], &one_gateway(0, 0), &Bounds::default()).is_empty());
    }

    #[test]
    fn missing_late_and_double_answers_are_caught() {
        let events = vec![
            (0, accepted(1, 1_000)),
            (0, accepted(2, 1_000)),
            (0, accepted(3, 1_000)),
            (200_000, ok(2)),
            (10, ok(3)),
            (20, ok(3)),
        ];
        let v = check(&events, &[], &one_gateway(0, 0), &Bounds::default());
        assert!(v.contains(&Violation::NoAnswer { request: 1 }), "{v:?}");
        assert!(v.iter().any(|v| matches!(v, Violation::Late { request: 2, .. })), "{v:?}");
        assert!(v.contains(&Violation::AnsweredTwice { request: 3 }), "{v:?}");
    }

    #[test]
    fn the_same_actor_twice_and_unexplained_attempts_are_caught() {
        let events = vec![(0, accepted(1, 1_000)), (1, sent(1, 1, 0)), (2, sent(1, 1, 0)), (3, ok(1))];
        let v = check(&events, &[], &one_gateway(0, 0), &Bounds::default());
        assert!(v.contains(&Violation::SameActorTwice { request: 1, actor: (1, 0) }), "{v:?}");
        assert!(v.contains(&Violation::UnexplainedAttempts { extra: 1, explained: 0 }), "{v:?}");
    }

    #[test]
    fn budgets_are_enforced() {
        let v = check(&[], &[], &one_gateway(31, 7), &Bounds::default());
        assert!(v.iter().any(|v| matches!(v, Violation::RetryBudget { retries: 31, .. })), "{v:?}");
        assert!(v.iter().any(|v| matches!(v, Violation::HedgeBudget { hedges: 7, .. })), "{v:?}");
        assert!(check(&[], &[], &one_gateway(30, 6), &Bounds::default()).is_empty());
    }

    #[test]
    fn routing_to_a_long_dead_node_is_caught() {
        let down = vec![DownInterval { node: 2, from_us: 0, until_us: None }];
        let events = vec![(0, accepted(1, 20_000_000)), (11_000_000, sent(1, 2, 0)), (11_000_001, ok(1))];
        let v = check(&events, &down, &one_gateway(0, 0), &Bounds::default());
        assert!(v.iter().any(|v| matches!(v, Violation::RoutedToDead { node: 2, .. })), "{v:?}");
        let events = vec![(0, accepted(1, 20_000_000)), (9_000_000, sent(1, 2, 0)), (9_000_001, ok(1))];
        assert!(check(&events, &down, &one_gateway(0, 0), &Bounds::default()).is_empty());
    }
}
