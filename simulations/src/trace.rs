//! The event trace of one simulation run: what was accepted, sent where, answered how, and when
//! (virtual microseconds since the start). Invariants are checked over it, and its hash shows that
//! a seed replays the same run.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Scores from `served_by` after `attempts` attempts.
    Ok {
        /// `node/actor`.
        served_by: String,
        /// Attempts made.
        attempts: u32,
    },
    /// An explicit error (its `Display`).
    Err(String),
    /// The gateway dropped the request without any answer: always an invariant violation.
    NoAnswer,
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// A scenario step (fault, heal, load change), as its `Display`.
    Step(String),
    /// A client request entered the gateway of node `entry`; it must be answered by `deadline_us`.
    Accepted {
        /// Request id.
        request: u64,
        /// Entry node.
        entry: usize,
        /// Deadline, virtual microseconds.
        deadline_us: u64,
    },
    /// An attempt was sent.
    Sent {
        /// Request id.
        request: u64,
        /// Gateway's node.
        from: usize,
        /// Actor's node.
        to: usize,
        /// Actor index on its node.
        actor: usize,
    },
    /// The client got its answer.
    Answered {
        /// Request id.
        request: u64,
        /// What it got.
        outcome: Outcome,
    },
    /// The entry node crashed before answering (the client's connection broke; the cluster had
    /// not accepted anything it could lose).
    EntryLost {
        /// Request id.
        request: u64,
    },
}

struct Inner {
    start: tokio::time::Instant,
    events: Vec<(u64, Event)>,
}

/// Shared, append-only trace.
#[derive(Clone)]
pub struct Trace(Arc<Mutex<Inner>>);

impl Default for Trace {
    fn default() -> Self {
        Trace(Arc::new(Mutex::new(Inner { start: tokio::time::Instant::now(), events: Vec::new() })))
    }
}

impl Trace {
    /// Appends an event at the current virtual time.
    pub fn record(&self, event: Event) {
        let mut inner = self.0.lock().expect("trace lock poisoned. This is a bug.");
        let at = inner.start.elapsed().as_micros() as u64;
        inner.events.push((at, event));
    }

    /// Virtual microseconds since the start.
    pub fn now_us(&self) -> u64 {
        self.0.lock().expect("trace lock poisoned. This is a bug.").start.elapsed().as_micros() as u64
    }

    /// A copy of every event with its time.
    pub fn events(&self) -> Vec<(u64, Event)> {
        self.0.lock().expect("trace lock poisoned. This is a bug.").events.clone()
    }

    /// A hash of the schedule: every step and every accepted request (time, id, entry node,
    /// deadline). These come only from the scenario and the seeded generator, so a seed always
    /// replays the same schedule.
    pub fn schedule_hash(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        for event in &self.0.lock().expect("trace lock poisoned. This is a bug.").events {
            if matches!(event.1, Event::Step(_) | Event::Accepted { .. }) {
                event.hash(&mut hasher);
            }
        }
        hasher.finish()
    }

    /// A hash of the whole trace (times included). Equal runs give equal hashes, but two runs of
    /// one seed are not always equal runs: chitchat 0.13 picks gossip peers with an OS-seeded
    /// generator that cannot be injected, so membership news can arrive in a different order.
    pub fn hash(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.0.lock().expect("trace lock poisoned. This is a bug.").events.hash(&mut hasher);
        hasher.finish()
    }
}
