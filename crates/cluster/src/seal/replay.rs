//! The replay window: a captured sealed datagram, sent again later, is refused.
//!
//! Why a timestamp window and a set of recent nonces rather than per-sender counters: the sender's
//! clock and nonce are inside the sealed part (authenticated), so the receiver needs no state per
//! sender and no trust in who the sender claims to be, and a restarted sender needs no counter
//! kept on disk. A datagram is accepted once, only if
//! ```text
//! now - window <= sent <= now + window     stale or future otherwise (clocks must agree within the window)
//! sent > floor                             floor = this receiver's start, raised when the set is full
//! nonce not seen within the window         replay otherwise
//! ```
//! Memory is bounded: nonces older than the window are dropped (their datagrams are stale anyway),
//! and when the set holds `capacity` nonces the oldest goes and the floor rises to its time, so
//! an evicted nonce can never be accepted again: a full set makes the window narrower, never open.
//! The floor starting at the receiver's start time covers restarts: what was captured before a
//! node started is refused by it, although it forgot which nonces it had seen.

use std::collections::BTreeSet;
use std::time::Duration;

/// Why the window refused a datagram. The labels are those of `senti_gossip_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Sent more than the window ago, before this receiver started, or before the floor.
    #[error("stale datagram")]
    Stale,
    /// Sent more than the window in the future (or the sender's clock is ahead).
    #[error("datagram from the future")]
    Future,
    /// Seen already.
    #[error("replayed datagram")]
    Replay,
}

/// Recently accepted datagrams of one receiver.
#[derive(Debug)]
pub struct ReplayWindow {
    window_ms: u64,
    capacity: usize,
    /// Datagrams sent at or before this time are refused (start time, then evictions).
    floor_ms: u64,
    /// (sent at, nonce) of every datagram accepted within the window; ordered by time so the
    /// oldest go first.
    seen: BTreeSet<(u64, [u8; 24])>,
}

impl ReplayWindow {
    /// A window of `window` either side of now, holding at most `capacity` nonces, refusing
    /// anything sent at or before `start_unix_ms`.
    pub fn new(window: Duration, capacity: usize, start_unix_ms: u64) -> ReplayWindow {
        ReplayWindow {
            window_ms: window.as_millis() as u64,
            capacity: capacity.max(1),
            floor_ms: start_unix_ms,
            seen: BTreeSet::new(),
        }
    }

    /// Accepts the datagram (and remembers it) or says why not.
    pub fn check(&mut self, sent_unix_ms: u64, nonce: [u8; 24], now_unix_ms: u64) -> Result<(), ReplayError> {
        if sent_unix_ms.saturating_add(self.window_ms) < now_unix_ms || sent_unix_ms <= self.floor_ms {
            return Err(ReplayError::Stale);
        }
        if sent_unix_ms > now_unix_ms.saturating_add(self.window_ms) {
            return Err(ReplayError::Future);
        }
        if self.seen.contains(&(sent_unix_ms, nonce)) {
            return Err(ReplayError::Replay);
        }
        while let Some(&(oldest, _)) = self.seen.first() {
            if oldest.saturating_add(self.window_ms) >= now_unix_ms {
                break;
            }
            self.seen.pop_first();
        }
        while self.seen.len() >= self.capacity {
            if let Some((oldest, _)) = self.seen.pop_first() {
                self.floor_ms = self.floor_ms.max(oldest);
            }
        }
        if sent_unix_ms <= self.floor_ms {
            return Err(ReplayError::Stale);
        }
        self.seen.insert((sent_unix_ms, nonce));
        Ok(())
    }

    /// Nonces held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// No nonce held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_000_000;

    fn nonce(n: u32) -> [u8; 24] {
        let mut nonce = [0u8; 24];
        nonce[..4].copy_from_slice(&n.to_le_bytes());
        nonce
    }

    #[test]
    fn a_datagram_is_accepted_once() {
        let mut window = ReplayWindow::new(Duration::from_secs(60), 100, START);
        window.check(START + 10, nonce(1), START + 20).unwrap();
        assert_eq!(window.check(START + 10, nonce(1), START + 30), Err(ReplayError::Replay));
        window.check(START + 10, nonce(2), START + 30).unwrap();
    }

    #[test]
    fn stale_future_and_pre_start_datagrams_are_refused() {
        let mut window = ReplayWindow::new(Duration::from_secs(60), 100, START);
        let now = START + 120_000;
        assert_eq!(window.check(now - 60_001, nonce(1), now), Err(ReplayError::Stale));
        window.check(now - 60_000, nonce(1), now).unwrap();
        assert_eq!(window.check(now + 60_001, nonce(2), now), Err(ReplayError::Future));
        window.check(now + 60_000, nonce(2), now).unwrap();
        // Captured before this receiver started: refused although never seen.
        let mut restarted = ReplayWindow::new(Duration::from_secs(60), 100, START);
        assert_eq!(restarted.check(START - 5, nonce(3), START + 1), Err(ReplayError::Stale));
        assert_eq!(restarted.check(START, nonce(3), START + 1), Err(ReplayError::Stale));
    }

    #[test]
    fn old_nonces_are_dropped_and_their_datagrams_stay_refused() {
        let mut window = ReplayWindow::new(Duration::from_secs(1), 100, START);
        for n in 0..50 {
            window.check(START + 1 + n as u64, nonce(n), START + 10).unwrap();
        }
        assert_eq!(window.len(), 50);
        window.check(START + 5_000, nonce(99), START + 5_000).unwrap();
        assert_eq!(window.len(), 1);
        assert_eq!(window.check(START + 1, nonce(0), START + 5_000), Err(ReplayError::Stale));
    }

    #[test]
    fn a_full_window_narrows_instead_of_forgetting() {
        let mut window = ReplayWindow::new(Duration::from_secs(60), 10, START);
        for n in 0..1_000u32 {
            window.check(START + 1 + n as u64, nonce(n), START + 2_000).unwrap();
            assert!(window.len() <= 10);
        }
        // Every accepted datagram, replayed, is refused: the evicted ones as stale.
        for n in 0..1_000u32 {
            assert!(window.check(START + 1 + n as u64, nonce(n), START + 2_000).is_err(), "{n}");
        }
    }
}
