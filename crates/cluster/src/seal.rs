//! Sealed gossip: a chitchat [`Transport`] over UDP where every datagram is authenticated and
//! encrypted, and every message is validated before chitchat decodes it.
//!
//! ```text
//! send:  envelope -> chitchat's encoder (codec.rs) -> trim the delta if the seal
//!        would not fit (wire::fit) -> seal with the primary key (datagram.rs) -> UDP
//! recv:  UDP -> open with the key its id names (datagram.rs)        unsealed, malformed,
//!                                                                   unknown_key, auth
//!        -> replay window (replay.rs)                               stale, future, replay
//!        -> guard: bounded decode, limits, member table (guard.rs)  decode, limits, semantics,
//!                                                                   self_delta, members, node_state
//!        -> chitchat's decoder (codec.rs) -> chitchat               codec, loopback
//! ```
//! A datagram dropped at any step is counted in `senti_gossip_rejected_total{reason}` (labels on
//! the right) and in [`SealedUdpTransport::stats`], and logged at most once per
//! [`SealConfig::warn_interval`]. Nothing of a datagram is decoded before its tag verifies.
//!
//! Wiring (`Cluster::start` in lib.rs does this with the keyring of `cluster.key_file`):
//! ```ignore
//! let keyring = KeyringHandle::new(Keyring::from_keys(Key::parse(&primary_text)?, others)?);
//! let config = SealConfig { self_id_opt: Some(self_id.clone()), ..SealConfig::default() };
//! let transport = SealedUdpTransport::with_config(keyring.clone(), config)?;
//! let chitchat = spawn_chitchat(chitchat_config, initial_keys, &transport).await?;
//! // later, on every node in turn: keyring.add(new)?; keyring.set_primary(new.id())?; keyring.remove(old)?;
//! ```

mod admission;
mod codec;
mod datagram;
mod replay;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::{ChitchatEnvelope, ChitchatId};

pub use admission::{Admission, Rejection};
pub use codec::{ChitchatCodec, CodecError};
pub use datagram::{open, seal, OpenError, Opened, SealError, SEAL_OVERHEAD};

pub use replay::{ReplayError, ReplayWindow};
pub use stats::{register_metrics, RejectReason, TransportStats};

use crate::guard::{GuardLimits, LimitsError};
use crate::keyring::KeyringHandle;
use crate::wire::{self, MAX_UDP_PAYLOAD};
use stats::{Counters, RejectLog};

/// The longest chitchat message a sealed datagram carries. chitchat writes messages up to
/// [`MAX_UDP_PAYLOAD`]; longer ones get their delta trimmed (see [`wire::fit`]).
pub const MAX_SEALED_MESSAGE: usize = MAX_UDP_PAYLOAD - SEAL_OVERHEAD;

/// Settings of a sealed transport besides its keys.
#[derive(Debug, Clone)]
pub struct SealConfig {
    /// Caps on messages and state (see [`GuardLimits`]).
    pub limits: GuardLimits,
    /// This node's chitchat id: deltas about it are refused (set it; `None` only for tests and
    /// forgers).
    pub self_id_opt: Option<ChitchatId>,
    /// How far a datagram's send time may be from this node's clock, either way. Clocks of the
    /// cluster must agree within it (NTP does by far).
    pub replay_window: Duration,
    /// Most datagrams remembered by the replay window; beyond, it narrows (see replay.rs).
    pub replay_capacity: usize,
    /// At most one warning per this interval about rejected datagrams.
    pub warn_interval: Duration,
}

impl Default for SealConfig {
    fn default() -> Self {
        SealConfig {
            limits: GuardLimits::default(),
            self_id_opt: None,
            replay_window: Duration::from_secs(60),
            // A node receives a few tens of datagrams per second: 60 s of them is a few thousand.
            replay_capacity: 16_384,
            warn_interval: Duration::from_secs(10),
        }
    }
}

/// chitchat's transport, sealed: `spawn_chitchat(config, keys, &transport)`. Sockets opened from
/// one transport share its keyring (rotate through the [`KeyringHandle`]) and its counters.
#[derive(Clone)]
pub struct SealedUdpTransport {
    keyring: KeyringHandle,
    config: Arc<SealConfig>,
    counters: Arc<Counters>,
}

impl SealedUdpTransport {
    /// A transport with the default [`SealConfig`] (no self id: prefer
    /// [`SealedUdpTransport::with_config`] in a node).
    pub fn new(keyring: KeyringHandle) -> SealedUdpTransport {
        SealedUdpTransport { keyring, config: Arc::new(SealConfig::default()), counters: Arc::default() }
    }

    /// A transport with `config`, whose limits are checked.
    pub fn with_config(keyring: KeyringHandle, config: SealConfig) -> Result<SealedUdpTransport, LimitsError> {
        config.limits.validate()?;
        Ok(SealedUdpTransport { keyring, config: Arc::new(config), counters: Arc::default() })
    }

    /// The keyring its sockets seal and open with.
    pub fn keyring(&self) -> &KeyringHandle {
        &self.keyring
    }

    /// What its sockets did so far.
    pub fn stats(&self) -> TransportStats {
        self.counters.snapshot()
    }
}

#[async_trait]
impl Transport for SealedUdpTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("failed to bind to {listen_addr}/UDP for sealed gossip"))?;
        let codec = ChitchatCodec::open().await.context("cannot open the loopback gossip codec")?;
        Ok(Box::new(SealedSocket {
            socket,
            codec,
            codec_broken: false,
            admission: Admission::new(self.keyring.clone(), &self.config, crate::unix_ms_now()),
            keyring: self.keyring.clone(),
            counters: self.counters.clone(),
            reject_log: RejectLog::new(self.config.warn_interval),
            recv_buf: vec![0u8; 1 << 16],
            send_buf: Vec::with_capacity(MAX_UDP_PAYLOAD),
            stage: Stage::Idle,
        }))
    }
}

/// Where the last received datagram is; each carries its sender and sealed size.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Nothing in progress: the next step is receiving.
    Idle,
    /// Admitted; its message (`recv_buf[start..][..len]`) is to be handed to chitchat's decoder.
    Admitted { from: SocketAddr, sealed_len: usize, message: (usize, usize) },
    /// Handed to chitchat's decoder; its envelope is to be read.
    Decoding { from: SocketAddr, sealed_len: usize },
}

/// One sealed gossip socket; chitchat's server task is its only user (every method takes
/// `&mut self`), so its state needs no lock.
struct SealedSocket {
    socket: tokio::net::UdpSocket,
    codec: ChitchatCodec,
    /// The codec failed: rebuild it before its next use (kept as a flag so a dropped future
    /// cannot leave a half-replaced codec).
    codec_broken: bool,
    /// Open, replay window, guard.
    admission: Admission,
    /// Seals outgoing datagrams with its primary key.
    keyring: KeyringHandle,
    counters: Arc<Counters>,
    reject_log: RejectLog,
    recv_buf: Vec<u8>,
    send_buf: Vec<u8>,
    /// Where a received datagram is between steps, so `recv` can be dropped at any await.
    stage: Stage,
}

impl SealedSocket {
    fn reject(&mut self, reason: RejectReason, from: SocketAddr, detail: &dyn std::fmt::Display) {
        self.counters.rejected(reason);
        self.reject_log.record(reason, from, detail);
    }

    async fn repair_codec(&mut self) -> anyhow::Result<()> {
        if self.codec_broken {
            self.codec = ChitchatCodec::open().await.context("cannot reopen the loopback gossip codec")?;
            self.stage = Stage::Idle;
            self.codec_broken = false;
        }
        Ok(())
    }
}

/// UDP receive errors that say nothing about the socket (chitchat's own list).
fn is_transient(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(err.kind(), ErrorKind::OutOfMemory | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused)
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.socket.local_addr().context("failed to get UDP socket address")
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        self.repair_codec().await?;
        let message = match self.codec.encode(envelope).await {
            Ok(message) => message,
            Err(err) => {
                self.codec_broken = true;
                return Err(err).context("cannot encode a gossip message");
            }
        };
        let fitted_opt = if message.len() > MAX_SEALED_MESSAGE {
            let fitted = wire::fit(message, MAX_SEALED_MESSAGE).with_context(|| {
                format!("a gossip message of {} bytes cannot be trimmed to {MAX_SEALED_MESSAGE}", message.len())
            })?;
            self.counters.fitted();
            Some(fitted)
        } else {
            None
        };
        let message = fitted_opt.as_deref().unwrap_or(message);
        let keyring = self.keyring.snapshot();
        datagram::seal(keyring.primary(), crate::unix_ms_now(), message, &mut self.send_buf)?;
        let num_bytes_sent = self.socket.send_to(&self.send_buf, to).await.context("failed to send sealed gossip")?;
        self.counters.sealed();
        Ok(SendOutcome { num_bytes_sent })
    }

    /// Cancel-safe: each step records where the datagram is before the next await.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            self.repair_codec().await?;
            match self.stage {
                Stage::Idle => {
                    let (sealed_len, from) = match self.socket.recv_from(&mut self.recv_buf).await {
                        Ok(received) => received,
                        Err(err) if is_transient(&err) => {
                            tracing::debug!(error = %err, "transient gossip recv error");
                            continue;
                        }
                        Err(err) => return Err(err).context("fatal UDP recv error"),
                    };
                    let buffer_start = self.recv_buf.as_ptr() as usize;
                    let admitted =
                        self.admission.admit(&mut self.recv_buf[..sealed_len], crate::unix_ms_now(), Instant::now());
                    match admitted {
                        Ok(message) => {
                            // Where the opened message lies in the buffer (addresses as integers,
                            // no unsafe pointer arithmetic).
                            let start = message.as_ptr() as usize - buffer_start;
                            self.stage = Stage::Admitted { from, sealed_len, message: (start, message.len()) }
                        }
                        Err(rejection) => self.reject(rejection.reason, from, &rejection.detail),
                    }
                }
                Stage::Admitted { from, sealed_len, message: (start, len) } => {
                    let message = &self.recv_buf[start..][..len];
                    match self.codec.begin_decode(message).await {
                        Ok(()) => self.stage = Stage::Decoding { from, sealed_len },
                        Err(err) => {
                            self.codec_broken = true;
                            self.reject(RejectReason::Codec, from, &err);
                        }
                    }
                }
                Stage::Decoding { from, sealed_len } => {
                    let result = self.codec.finish_decode().await;
                    for _ in 0..self.codec.take_foreign() {
                        self.reject(RejectReason::Loopback, from, &"datagram from another local process");
                    }
                    self.stage = Stage::Idle;
                    match result {
                        Ok(envelope) => {
                            self.counters.accepted();
                            return Ok(RecvOutcome { from_addr: from, envelope, num_bytes_received: sealed_len });
                        }
                        Err(err) => {
                            self.codec_broken = true;
                            self.reject(RejectReason::Codec, from, &err);
                        }
                    }
                }
            }
        }
    }
}
