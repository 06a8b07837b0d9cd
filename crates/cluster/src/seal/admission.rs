//! The receive path of a sealed socket without the socket: open, replay window, guard. The socket
//! and the fuzz harness run this same code.

use std::time::Instant;

use super::datagram::{self, OpenError};
use super::replay::{ReplayError, ReplayWindow};
use super::stats::RejectReason;
use super::SealConfig;
use crate::guard::Guard;
use crate::keyring::KeyringHandle;

/// A dropped datagram: why, and a detail for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({detail})", reason.label())]
pub struct Rejection {
    /// The metric label.
    pub reason: RejectReason,
    /// What exactly.
    pub detail: String,
}

/// Everything a received datagram passes before chitchat's decoder sees it. Owned by one socket.
#[derive(Debug)]
pub struct Admission {
    keyring: KeyringHandle,
    replay: ReplayWindow,
    guard: Guard,
}

impl Admission {
    /// The receive path of a socket started at `start_unix_ms` (datagrams sent before are stale).
    pub fn new(keyring: KeyringHandle, config: &SealConfig, start_unix_ms: u64) -> Admission {
        Admission {
            keyring,
            replay: ReplayWindow::new(config.replay_window, config.replay_capacity, start_unix_ms),
            guard: Guard::new(config.limits.clone(), config.self_id_opt.clone()),
        }
    }

    /// Opens `datagram` in place and checks it; the chitchat message if it passes.
    pub fn admit<'a>(&mut self, datagram: &'a mut [u8], now_unix_ms: u64, now: Instant) -> Result<&'a [u8], Rejection> {
        let keyring = self.keyring.snapshot();
        let opened = datagram::open(&keyring, datagram).map_err(|err| {
            let reason = match err {
                OpenError::Unsealed => RejectReason::Unsealed,
                OpenError::Malformed => RejectReason::Malformed,
                OpenError::UnknownKey(_) => RejectReason::UnknownKey,
                OpenError::Auth => RejectReason::Auth,
            };
            Rejection { reason, detail: err.to_string() }
        })?;
        self.replay.check(opened.sent_unix_ms, opened.nonce, now_unix_ms).map_err(|err| {
            let reason = match err {
                ReplayError::Stale => RejectReason::Stale,
                ReplayError::Future => RejectReason::Future,
                ReplayError::Replay => RejectReason::Replay,
            };
            Rejection { reason, detail: err.to_string() }
        })?;
        self.guard
            .check(opened.plaintext, now)
            .map_err(|err| Rejection { reason: RejectReason::of_guard(&err), detail: err.to_string() })?;
        Ok(opened.plaintext)
    }
}
