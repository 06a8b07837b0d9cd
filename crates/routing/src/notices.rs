//! Idle notices (join-idle-queue): an actor whose queue runs empty says so to a few other nodes'
//! gateways, and a gateway whose own choice would queue a request takes the newest such notice.
//!
//! Gossiped and piggybacked loads are tens to hundreds of milliseconds old when a gateway compares
//! them, while a queue changes within milliseconds; sampling more of them does not help on equal
//! nodes (docs/simulations.md). A notice is one fact, fresh when it arrives: this actor had
//! nothing to do. Each idle period sends [`IDLE_NOTICE_FANOUT`] notices; a gateway uses one only
//! when the target its estimates chose has more than [`NOTICE_AFTER_ATTEMPTS`] attempts' worth of
//! work ahead ([`use_notice`]), so work stays on its node while the node keeps up, and moves to a
//! known-idle actor when it does not. Both values come from the simulator's sweep
//! (docs/routing.md). A notice is used once, dropped after [`IDLE_NOTICE_TTL`] (the actor has
//! had time to get work from elsewhere), and never for an actor this gateway already has an
//! attempt on. A gateway keeps at most [`MAX_IDLE_NOTICES`]: notices are input from other nodes
//! and bounded like any.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Gateways of other nodes one idle period is told to.
pub const IDLE_NOTICE_FANOUT: usize = 3;

/// A notice older than this is dropped unused.
pub const IDLE_NOTICE_TTL: Duration = Duration::from_millis(20);

/// Notices one gateway holds at most; the oldest go first.
pub const MAX_IDLE_NOTICES: usize = 64;

/// A notice replaces a choice with more than this many attempts' worth of work ahead: one running
/// and one waiting behind it, not one running alone.
pub const NOTICE_AFTER_ATTEMPTS: f64 = 1.5;

/// Whether a gateway takes a notice instead of its choice, given the choice's estimate, the
/// tokens one attempt is assumed to add ([`EstimateParams::tokens_per_attempt`]) and how many
/// attempts' worth of work ahead is too many ([`NOTICE_AFTER_ATTEMPTS`] in the gateway).
///
/// [`EstimateParams::tokens_per_attempt`]: crate::EstimateParams::tokens_per_attempt
pub fn use_notice(chosen_estimate: f64, tokens_per_attempt: f64, after_attempts: f64) -> bool {
    chosen_estimate > after_attempts * tokens_per_attempt
}

/// One gateway's unused idle notices, oldest first, for targets named by `K`.
#[derive(Debug, Clone)]
pub struct IdleNotices<K> {
    notices: VecDeque<(K, Instant)>,
}

impl<K> Default for IdleNotices<K> {
    fn default() -> Self {
        Self { notices: VecDeque::new() }
    }
}

impl<K: PartialEq> IdleNotices<K> {
    /// A notice that `target` was idle at `since`. A newer notice of the same target replaces an
    /// older one; beyond [`MAX_IDLE_NOTICES`] the oldest is dropped.
    pub fn push(&mut self, target: K, since: Instant) {
        self.notices.retain(|(k, _)| *k != target);
        if self.notices.len() == MAX_IDLE_NOTICES {
            self.notices.pop_front();
        }
        self.notices.push_back((target, since));
    }

    /// What `usable` makes of the newest notice younger than [`IDLE_NOTICE_TTL`] at `now` that it
    /// accepts (`Some`), that notice removed; older notices are dropped, and so are the unusable
    /// ones passed over (this gateway has work on them: they are not idle for it any more).
    pub fn take<T>(&mut self, now: Instant, mut usable: impl FnMut(&K) -> Option<T>) -> Option<T> {
        while let Some(&(_, since)) = self.notices.front() {
            if now.saturating_duration_since(since) < IDLE_NOTICE_TTL {
                break;
            }
            self.notices.pop_front();
        }
        while let Some((target, _)) = self.notices.pop_back() {
            if let Some(usable) = usable(&target) {
                return Some(usable);
            }
        }
        None
    }

    /// Notices held.
    pub fn len(&self) -> usize {
        self.notices.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.notices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every notice is usable, as its own target.
    fn any<K: Copy>(k: &K) -> Option<K> {
        Some(*k)
    }

    #[test]
    fn the_newest_fresh_usable_notice_is_taken_once() {
        let t0 = Instant::now();
        let mut notices = IdleNotices::default();
        notices.push("a", t0);
        notices.push("b", t0 + Duration::from_millis(5));
        notices.push("c", t0 + Duration::from_millis(6));
        let now = t0 + Duration::from_millis(10);
        assert_eq!(
            notices.take(now, |&k| (k != "c").then_some(k)),
            Some("b"),
            "c is not usable, b is the newest usable"
        );
        assert_eq!(notices.take(now, any), Some("a"), "c was dropped when passed over");
        assert_eq!(notices.take(now, any), None);
    }

    #[test]
    fn old_notices_are_dropped() {
        let t0 = Instant::now();
        let mut notices = IdleNotices::default();
        notices.push(1, t0);
        notices.push(2, t0 + Duration::from_millis(15));
        assert_eq!(notices.take(t0 + IDLE_NOTICE_TTL, any), Some(2));
        assert!(notices.is_empty(), "the notice of 1 had expired");
        notices.push(3, t0);
        assert_eq!(notices.take(t0 + IDLE_NOTICE_TTL * 2, any), None);
    }

    #[test]
    fn a_target_has_one_notice_and_the_count_is_bounded() {
        let t0 = Instant::now();
        let mut notices = IdleNotices::default();
        notices.push(7, t0);
        notices.push(7, t0 + Duration::from_millis(1));
        assert_eq!(notices.len(), 1);
        for k in 0..(MAX_IDLE_NOTICES * 3) {
            notices.push(k, t0 + Duration::from_millis(2));
        }
        assert_eq!(notices.len(), MAX_IDLE_NOTICES);
        assert_eq!(notices.take(t0 + Duration::from_millis(3), any), Some(MAX_IDLE_NOTICES * 3 - 1));
    }

    #[test]
    fn a_notice_is_used_only_beyond_the_attempts_of_work_given() {
        assert!(!use_notice(0.0, 64.0, NOTICE_AFTER_ATTEMPTS));
        assert!(!use_notice(96.0, 64.0, 1.5));
        assert!(use_notice(96.5, 64.0, 1.5));
        assert!(use_notice(64.5, 64.0, 1.0));
    }
}
