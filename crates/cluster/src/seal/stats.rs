//! What the sealed transport counts and logs: every rejected datagram by reason, in the metrics
//! (`senti_gossip_rejected_total{reason}`), in counters readable in process ([`TransportStats`]),
//! and in the log at a bounded rate (one warning per interval, with the number left unsaid).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a datagram was dropped before chitchat saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// A plain chitchat message (no seal).
    Unsealed,
    /// Not a sealed datagram.
    Malformed,
    /// Sealed with a key the ring does not hold.
    UnknownKey,
    /// The tag did not verify.
    Auth,
    /// Sent too long ago, or before this node started.
    Stale,
    /// Sent too far in the future.
    Future,
    /// Seen already.
    Replay,
    /// Not a chitchat message, or over the decode limits.
    Decode,
    /// A count or length over the limits.
    Limits,
    /// A structure chitchat asserts on.
    Semantics,
    /// A delta about this node.
    SelfDelta,
    /// The member table is full.
    Members,
    /// A node would hold too many keys or bytes.
    NodeState,
    /// chitchat's decoder disagreed with the guard, or the loopback codec failed.
    Codec,
    /// A datagram reached the loopback codec from another local process.
    Loopback,
}

impl RejectReason {
    /// Every reason, in label order of the counters.
    pub const ALL: [RejectReason; 15] = [
        RejectReason::Unsealed,
        RejectReason::Malformed,
        RejectReason::UnknownKey,
        RejectReason::Auth,
        RejectReason::Stale,
        RejectReason::Future,
        RejectReason::Replay,
        RejectReason::Decode,
        RejectReason::Limits,
        RejectReason::Semantics,
        RejectReason::SelfDelta,
        RejectReason::Members,
        RejectReason::NodeState,
        RejectReason::Codec,
        RejectReason::Loopback,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Unsealed => "unsealed",
            RejectReason::Malformed => "malformed",
            RejectReason::UnknownKey => "unknown_key",
            RejectReason::Auth => "auth",
            RejectReason::Stale => "stale",
            RejectReason::Future => "future",
            RejectReason::Replay => "replay",
            RejectReason::Decode => "decode",
            RejectReason::Limits => "limits",
            RejectReason::Semantics => "semantics",
            RejectReason::SelfDelta => "self_delta",
            RejectReason::Members => "members",
            RejectReason::NodeState => "node_state",
            RejectReason::Codec => "codec",
            RejectReason::Loopback => "loopback",
        }
    }

    /// The reason of a guard refusal.
    pub fn of_guard(error: &crate::GuardError) -> RejectReason {
        match error {
            crate::GuardError::Decode(_) => RejectReason::Decode,
            crate::GuardError::Limit { .. } => RejectReason::Limits,
            crate::GuardError::Semantics(_) => RejectReason::Semantics,
            crate::GuardError::SelfDelta => RejectReason::SelfDelta,
            crate::GuardError::Members { .. } => RejectReason::Members,
            crate::GuardError::NodeState { .. } => RejectReason::NodeState,
        }
    }
}

/// Describes the transport's metrics and creates every series at zero, so `/metrics` lists
/// `senti_gossip_rejected_total{reason}` for every reason before the first rejection (a rate
/// over a series that appears only with its first event misses that event).
pub fn register_metrics() {
    metrics::describe_counter!(
        "senti_gossip_datagrams_total",
        "Gossip datagrams sealed and sent, or opened and accepted"
    );
    metrics::describe_counter!(
        "senti_gossip_rejected_total",
        "Gossip datagrams dropped before chitchat saw them, by reason"
    );
    metrics::describe_counter!("senti_gossip_fitted_total", "Outgoing gossip messages trimmed to fit the seal");
    for direction in ["sent", "accepted"] {
        metrics::counter!("senti_gossip_datagrams_total", "direction" => direction).increment(0);
    }
    for reason in RejectReason::ALL {
        metrics::counter!("senti_gossip_rejected_total", "reason" => reason.label()).increment(0);
    }
    metrics::counter!("senti_gossip_fitted_total").increment(0);
}

/// Counters shared by every socket of one transport. Written by the sockets, read by anyone.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    sealed: AtomicU64,
    accepted: AtomicU64,
    fitted: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
}

impl Counters {
    pub(crate) fn sealed(&self) {
        self.sealed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("senti_gossip_datagrams_total", "direction" => "sent").increment(1);
    }

    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("senti_gossip_datagrams_total", "direction" => "accepted").increment(1);
    }

    pub(crate) fn fitted(&self) {
        self.fitted.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("senti_gossip_fitted_total").increment(1);
    }

    pub(crate) fn rejected(&self, reason: RejectReason) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("senti_gossip_rejected_total", "reason" => reason.label()).increment(1);
    }

    pub(crate) fn snapshot(&self) -> TransportStats {
        TransportStats {
            sealed: self.sealed.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            fitted: self.fitted.load(Ordering::Relaxed),
            rejected: RejectReason::ALL.map(|reason| (reason, self.rejected[reason as usize].load(Ordering::Relaxed))),
        }
    }
}

/// What a transport's sockets did so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportStats {
    /// Datagrams sealed and sent.
    pub sealed: u64,
    /// Datagrams opened, validated and handed to chitchat.
    pub accepted: u64,
    /// Outgoing messages whose delta was trimmed to leave room for the seal.
    pub fitted: u64,
    /// Datagrams dropped, by reason.
    pub rejected: [(RejectReason, u64); RejectReason::ALL.len()],
}

impl TransportStats {
    /// Datagrams dropped for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize].1
    }

    /// Datagrams dropped for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, count)| count).sum()
    }
}

/// Warns about rejected datagrams at most once per interval; the warning says how many were not
/// logged since the previous one. Every rejection is still counted and logged at debug level.
#[derive(Debug)]
pub(crate) struct RejectLog {
    interval: Duration,
    last_warn_opt: Option<Instant>,
    unlogged: u64,
}

impl RejectLog {
    pub(crate) fn new(interval: Duration) -> RejectLog {
        RejectLog { interval, last_warn_opt: None, unlogged: 0 }
    }

    pub(crate) fn record(&mut self, reason: RejectReason, from: SocketAddr, detail: &dyn std::fmt::Display) {
        tracing::debug!(reason = reason.label(), %from, %detail, "gossip datagram rejected");
        let now = Instant::now();
        if self.last_warn_opt.is_some_and(|last| now.duration_since(last) < self.interval) {
            self.unlogged += 1;
            return;
        }
        tracing::warn!(
            reason = reason.label(),
            %from,
            %detail,
            unlogged_since_last = self.unlogged,
            "gossip datagram rejected"
        );
        self.last_warn_opt = Some(now);
        self.unlogged = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_counters() {
        for (index, reason) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
        let counters = Counters::default();
        counters.rejected(RejectReason::Replay);
        counters.rejected(RejectReason::Replay);
        counters.rejected(RejectReason::Auth);
        let stats = counters.snapshot();
        assert_eq!((stats.rejected(RejectReason::Replay), stats.rejected(RejectReason::Auth)), (2, 1));
        assert_eq!(stats.rejected_total(), 3);
    }

    #[test]
    fn warnings_are_rate_limited() {
        let mut log = RejectLog::new(Duration::from_secs(3_600));
        let from: SocketAddr = ([127, 0, 0, 1], 1).into();
        for _ in 0..1_000 {
            log.record(RejectReason::Auth, from, &"x");
        }
        assert_eq!(log.unlogged, 999);
    }
}
