//! chitchat's own message encoder and decoder, reached through a private loopback socket pair.
//!
//! chitchat 0.13 keeps `ChitchatEnvelope::{serialize, deserialize}` and every way to build a
//! `Digest` crate-private: the only public code that turns an envelope into bytes and back is its
//! `UdpSocket`. So the codec owns one, bound to 127.0.0.1 on a random port (`inner`), and a plain
//! socket connected to it (`peer`):
//! ```text
//! encode: inner.send(envelope -> peer)  ->  peer.recv()   = chitchat's bytes
//! decode: peer.send(bytes -> inner)     ->  inner.recv()  = chitchat's envelope
//! ```
//! `peer` is connected, so the kernel gives it datagrams from `inner` only. `inner` cannot be
//! connected (chitchat owns that socket): another process of this host can send to it. What it
//! sends is decoded by chitchat (that cost is not ours to bound: see the crate's security notes)
//! and then dropped here because it does not come from `peer`; it never reaches the gossip state.
//!
//! Decoding is two steps so the socket's `recv` stays cancel-safe: `begin_decode` hands the bytes
//! over and records them as pending; `finish_decode` awaits chitchat's envelope. Either can be
//! dropped and the next call picks up where it stopped, without mixing up datagrams.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use chitchat::transport::{RecvOutcome, Socket, UdpSocket};
use chitchat::ChitchatEnvelope;
use tokio::time::Instant;

/// How long chitchat gets to decode bytes the guard accepted. It takes microseconds; running out
/// means chitchat refused bytes the guard accepted (a bug), and the codec is rebuilt.
const DECODE_TIMEOUT: Duration = Duration::from_secs(1);

/// chitchat's codec over a private loopback pair. One per sealed socket.
pub struct ChitchatCodec {
    inner: UdpSocket,
    peer: tokio::net::UdpSocket,
    peer_addr: SocketAddr,
    buf: Vec<u8>,
    /// Bytes handed to `inner` whose envelope was not read yet: the deadline to read it by.
    pending_opt: Option<Instant>,
    /// Datagrams that reached `inner` from anywhere but `peer`, dropped.
    foreign: u64,
}

/// The codec failed (sockets broken, or chitchat did not decode what it was given in time).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A loopback socket failed.
    #[error("loopback codec socket: {0:#}")]
    Io(anyhow::Error),
    /// chitchat did not produce the envelope in time.
    #[error("chitchat did not decode a validated message within {0:?}")]
    Timeout(Duration),
    /// `finish_decode` without `begin_decode`.
    #[error("no message pending")]
    NothingPending,
}

impl ChitchatCodec {
    /// Binds the loopback pair.
    pub async fn open() -> Result<ChitchatCodec, CodecError> {
        let loopback: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
        let inner = UdpSocket::open(loopback).await.map_err(CodecError::Io)?;
        let inner_addr = inner.local_addr().map_err(CodecError::Io)?;
        let peer = tokio::net::UdpSocket::bind(loopback).await.context("bind").map_err(CodecError::Io)?;
        peer.connect(inner_addr).await.context("connect").map_err(CodecError::Io)?;
        let peer_addr = peer.local_addr().context("local addr").map_err(CodecError::Io)?;
        Ok(ChitchatCodec { inner, peer, peer_addr, buf: vec![0u8; 1 << 16], pending_opt: None, foreign: 0 })
    }

    /// chitchat's bytes for `envelope`.
    pub async fn encode(&mut self, envelope: ChitchatEnvelope) -> Result<&[u8], CodecError> {
        // A datagram left over from an encode whose future was dropped would be read as this one.
        while self.peer.try_recv(&mut self.buf).is_ok() {}
        self.inner.send(self.peer_addr, envelope).await.map_err(CodecError::Io)?;
        let len = tokio::time::timeout(DECODE_TIMEOUT, self.peer.recv(&mut self.buf))
            .await
            .map_err(|_| CodecError::Timeout(DECODE_TIMEOUT))?
            .context("recv")
            .map_err(CodecError::Io)?;
        Ok(&self.buf[..len])
    }

    /// chitchat's envelope for `bytes` (both steps of a decode).
    pub async fn decode(&mut self, bytes: &[u8]) -> Result<ChitchatEnvelope, CodecError> {
        self.begin_decode(bytes).await?;
        self.finish_decode().await
    }

    /// Hands `bytes` to chitchat's decoder. Cancel-safe: dropped before it completes, nothing was
    /// handed over and nothing is pending.
    pub async fn begin_decode(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        self.peer.send(bytes).await.context("send").map_err(CodecError::Io)?;
        self.pending_opt = Some(Instant::now() + DECODE_TIMEOUT);
        Ok(())
    }

    /// Whether a decode was begun and not finished.
    pub fn is_pending(&self) -> bool {
        self.pending_opt.is_some()
    }

    /// The envelope of the pending decode. Cancel-safe.
    pub async fn finish_decode(&mut self) -> Result<ChitchatEnvelope, CodecError> {
        let deadline = self.pending_opt.ok_or(CodecError::NothingPending)?;
        loop {
            let received = tokio::time::timeout_at(deadline, self.inner.recv()).await;
            let RecvOutcome { from_addr, envelope, .. } = match received {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(err)) => {
                    self.pending_opt = None;
                    return Err(CodecError::Io(err));
                }
                Err(_) => {
                    self.pending_opt = None;
                    return Err(CodecError::Timeout(DECODE_TIMEOUT));
                }
            };
            if from_addr == self.peer_addr {
                self.pending_opt = None;
                return Ok(envelope);
            }
            self.foreign += 1;
        }
    }

    /// Datagrams that reached chitchat's loopback socket from another process and were dropped,
    /// since the previous call.
    pub fn take_foreign(&mut self) -> u64 {
        std::mem::take(&mut self.foreign)
    }
}
