//! A delay proxy for the LAN suite's delay fault (this kernel has no netem): a transparent TCP
//! proxy inside one host's namespace that every remote-actor session of that host passes through,
//! both ways, and that holds each chunk it forwards for a delay with jitter while a delay is set.
//!
//! ```text
//!   host h's namespace                                                   another host
//!   node ─connect x:7281─▶ nat output redirect ─▶ proxy ─marked socket (exempt)─▶ x:7281
//!   node:7281 ◀─ proxy (marked) ◀─ nat prerouting redirect ◀─connect h:7281── node of x
//! ```
//! The redirect ([`Lan::redirect_sessions`]) and the proxy are in place before the host's node
//! starts and stay for the whole run, forwarding at once while no delay is set: a redirect added
//! later would not catch the sessions already open (conntrack keeps their path), and resetting
//! them to force new ones through would be another fault than a delay. A delay then slows the live
//! sessions where they are, and lifting it lets them go on.
//!
//! What a chunk goes through: the proxy reads it (so its kernel acknowledges it at once), holds
//! it for `base` + uniform(-`jitter`, +`jitter`), but never releases it before the chunk read
//! ahead of it in the same direction (a stream stays in order; with a fast sender the holds bunch
//! towards the upper end: [`Held`] reports what they were), then writes it on. Each direction is
//! held once, so a round trip through the host grows by twice the delay. The proxy's sockets
//! carry the sessions' own options (TCP_NODELAY, TCP_USER_TIMEOUT, keepalive), so a dead link
//! still aborts a connection within the same second; an abort on either side resets the other,
//! and an end of stream is passed on after the bytes before it. Since the proxy acknowledges
//! before it holds, the nodes' TCP_USER_TIMEOUT never sees the delayed round trip: honest only
//! for delays whose round trip stays under it, which [`MAX_DELAY`] keeps. Gossip (UDP) is not
//! delayed.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections at once (more are reset), at most
//! [`MAX_HELD_BYTES`] held per direction of a connection (its reader waits for room), no hold
//! longer than [`MAX_DELAY`]. Dropped, the redirect goes and the proxy's thread ends.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use senti_cluster::testsuite::{connect_timeout, prepare_session_socket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::netns::Lan;

/// The socket mark of the proxy's own connections, which the redirect lets through.
const PROXY_MARK: u32 = 0x5e17;
/// Most connections through one proxy at once; more are reset when accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// Most bytes held in one direction of a connection (besides the one read in progress).
pub const MAX_HELD_BYTES: usize = 1 << 20;
/// Longest hold a [`Delay`] may ask for (`base` + `jitter`): a round trip of twice that stays
/// under the sessions' 1 s TCP_USER_TIMEOUT, so no connection a real link of that delay would
/// abort is kept alive by the proxy's early acknowledgements.
pub const MAX_DELAY: Duration = Duration::from_millis(450);
/// Largest chunk read at once.
const CHUNK_BYTES: usize = 16 * 1024;
/// The nodes' redial interval (`advanced.redial_interval_ms`'s default): the proxy's own connect
/// gives up when a node's would, so a SYN lost in an outage is sent again at the next round.
const REDIAL: Duration = Duration::from_millis(500);
/// Holds are counted by whole millisecond up to this; longer ones in the last bucket.
const HISTOGRAM_MS: usize = 2_000;

/// A delay: each chunk held `base` ± `jitter` (uniform; never below zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    /// The mean hold.
    pub base: Duration,
    /// Most a hold differs from `base`.
    pub jitter: Duration,
}

impl fmt::Display for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}±{} ms", self.base.as_millis(), self.jitter.as_millis())
    }
}

/// How long the chunks read while a delay was set were held, from read to written on.
#[derive(Debug, Clone, Default)]
pub struct Held {
    /// Chunks, both directions of every connection.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Holds: the median, the 99th percentile (both to the millisecond below), the shortest and
    /// the longest.
    pub p50: Duration,
    pub p99: Duration,
    pub min: Duration,
    pub max: Duration,
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} chunks ({} bytes) held min {} ms, p50 {} ms, p99 {} ms, max {} ms",
            self.chunks,
            self.bytes,
            self.min.as_millis(),
            self.p50.as_millis(),
            self.p99.as_millis(),
            self.max.as_millis()
        )
    }
}

/// One host's delay proxy and its redirect (both removed on drop).
pub struct DelayProxy {
    lan: Arc<Lan>,
    host: usize,
    shared: Arc<Shared>,
    redirected: bool,
    stop_opt: Option<oneshot::Sender<()>>,
    thread_opt: Option<JoinHandle<()>>,
}

/// What the test's thread and the proxy's thread share.
struct Shared {
    /// The delay in force: `base` in microseconds in the high 32 bits, `jitter` in the low ones
    /// (0: forward at once). Written by [`DelayProxy::set`] on the test's thread, read for every
    /// chunk on the proxy's: one atomic, so a chunk never sees half of a change and neither thread
    /// waits for the other.
    delay_us: AtomicU64,
    /// Holds of the chunks read while a delay was set. Written by the proxy's writers, read by
    /// [`DelayProxy::held`], reset when a delay is set.
    histogram: Mutex<Histogram>,
    /// Connections open (at most [`MAX_CONNECTIONS`]).
    connections: AtomicUsize,
}

struct Histogram {
    by_ms: Vec<u64>,
    bytes: u64,
    min: Duration,
    max: Duration,
}

impl Histogram {
    fn new() -> Self {
        Self { by_ms: vec![0; HISTOGRAM_MS + 1], bytes: 0, min: Duration::MAX, max: Duration::ZERO }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Histogram> {
        self.histogram.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A chunk's hold under the delay in force, and whether a delay is set (it is then counted).
    fn draw(&self, rng: &mut SmallRng) -> (Duration, bool) {
        let packed = self.delay_us.load(Ordering::Relaxed);
        let (base_us, jitter_us) = (packed >> 32, packed & u64::from(u32::MAX));
        if packed == 0 {
            return (Duration::ZERO, false);
        }
        let hold_us = (base_us + rng.random_range(0..=2 * jitter_us)).saturating_sub(jitter_us);
        (Duration::from_micros(hold_us), true)
    }

    fn record(&self, held: Duration, bytes: usize) {
        let mut histogram = self.lock();
        let bucket = (held.as_millis() as usize).min(HISTOGRAM_MS);
        histogram.by_ms[bucket] += 1;
        histogram.bytes += bytes as u64;
        histogram.min = histogram.min.min(held);
        histogram.max = histogram.max.max(held);
    }
}

impl DelayProxy {
    /// Starts a proxy on host `host` and redirects that host's connections of TCP port `port`
    /// (the actor port) through it, both ways; it forwards at once until [`DelayProxy::set`].
    /// Call it before the host's node starts: sessions opened earlier keep their direct path.
    pub fn start(lan: &Arc<Lan>, host: usize, port: u16) -> Result<Self, String> {
        let shared = Arc::new(Shared {
            delay_us: AtomicU64::new(0),
            histogram: Mutex::new(Histogram::new()),
            connections: AtomicUsize::new(0),
        });
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let serving = shared.clone();
        let thread = lan.spawn_on_host(host, move || async move {
            let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).await {
                Ok(listener) => listener,
                Err(err) => {
                    let _ = bound_tx.send(Err(format!("the delay proxy cannot listen: {err}")));
                    return;
                }
            };
            let port = listener.local_addr().map(|a| a.port()).map_err(|err| err.to_string());
            let _ = bound_tx.send(port);
            tokio::select! {
                () = serve(listener, serving) => {}
                _ = stop_rx => {}
            }
        });
        let mut proxy = Self {
            lan: lan.clone(),
            host,
            shared,
            redirected: false,
            stop_opt: Some(stop_tx),
            thread_opt: Some(thread),
        };
        let proxy_port = bound_rx.recv().map_err(|_| "the delay proxy's thread ended before it listened")??;
        lan.redirect_sessions(host, port, proxy_port, PROXY_MARK)?;
        proxy.redirected = true;
        Ok(proxy)
    }

    /// Holds every chunk read from now on for `delay_opt` (`None`: forwards at once; chunks
    /// already held keep their release time). Setting a delay starts [`DelayProxy::held`]'s
    /// count afresh.
    pub fn set(&self, delay_opt: Option<Delay>) {
        let packed = delay_opt.map_or(0, |delay| {
            assert!(delay.base + delay.jitter <= MAX_DELAY, "a delay of {delay} is above the proxy's {MAX_DELAY:?}");
            ((delay.base.as_micros() as u64) << 32) | delay.jitter.as_micros() as u64
        });
        if packed != 0 {
            *self.shared.lock() = Histogram::new();
        }
        self.shared.delay_us.store(packed, Ordering::Relaxed);
    }

    /// How long the chunks read since the last delay was set were held (once the last of them
    /// is written on: at most [`MAX_DELAY`] after the delay is lifted).
    pub fn held(&self) -> Held {
        let histogram = self.shared.lock();
        let chunks: u64 = histogram.by_ms.iter().sum();
        let quantile = |q: f64| {
            let rank = ((chunks as f64 * q).ceil() as u64).max(1);
            let mut seen = 0;
            let bucket = histogram.by_ms.iter().position(|n| {
                seen += n;
                seen >= rank
            });
            Duration::from_millis(bucket.unwrap_or(0) as u64)
        };
        if chunks == 0 {
            return Held::default();
        }
        Held {
            chunks,
            bytes: histogram.bytes,
            p50: quantile(0.5),
            p99: quantile(0.99),
            min: histogram.min,
            max: histogram.max,
        }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        if self.redirected {
            if let Err(err) = self.lan.remove_redirect(self.host) {
                eprintln!("delay proxy: {err}");
            }
        }
        if let Some(stop) = self.stop_opt.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread_opt.take() {
            if thread.join().is_err() {
                eprintln!("delay proxy: the proxy's thread on host {} panicked", self.host);
            }
        }
    }
}

/// Accepts redirected connections until the proxy stops (its runtime drops every connection).
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut accepted: u64 = 0;
    loop {
        let downstream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                eprintln!("delay proxy: cannot accept: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        accepted += 1;
        if shared.connections.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            eprintln!("delay proxy: more than {MAX_CONNECTIONS} connections at once, one reset");
            reset(&downstream);
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            connection(downstream, &shared, accepted).await;
            shared.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Forwards one redirected connection to where it was going, both ways, until both ends close
/// it (or either fails: then both are reset).
async fn connection(mut downstream: TcpStream, shared: &Shared, seed: u64) {
    prepare_session_socket(&downstream);
    let target = socket2::SockRef::from(&downstream).original_dst_v4().ok().and_then(|addr| addr.as_socket());
    let Some(target) = target else {
        eprintln!("delay proxy: a connection without an original destination, reset");
        return reset(&downstream);
    };
    let mut upstream = match connect_marked(target).await {
        Ok(upstream) => upstream,
        // As a refused or unanswered connect would look to the node: its handshake fails.
        Err(_) => return reset(&downstream),
    };
    prepare_session_socket(&upstream);
    let forwarded = {
        let (mut down_read, mut down_write) = downstream.split();
        let (mut up_read, mut up_write) = upstream.split();
        tokio::try_join!(
            pipe(&mut down_read, &mut up_write, shared, SmallRng::seed_from_u64(2 * seed)),
            pipe(&mut up_read, &mut down_write, shared, SmallRng::seed_from_u64(2 * seed + 1)),
        )
    };
    if forwarded.is_err() {
        reset(&downstream);
        reset(&upstream);
    }
}

/// Connects to `target` from a socket marked [`PROXY_MARK`] (the redirect lets it through),
/// within the nodes' own connect limit.
async fn connect_marked(target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket2::SockRef::from(&socket).set_mark(PROXY_MARK)?;
    let limit = connect_timeout(REDIAL);
    tokio::time::timeout(limit, socket.connect(target)).await.map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// Makes the stream's close a reset (linger 0): the other end sees the connection fail, not end.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// One chunk on its way; an empty one is the end of the stream.
struct Chunk<'a> {
    bytes: Vec<u8>,
    read_at: Instant,
    release_at: Instant,
    /// Read while a delay was set: its hold is counted.
    counted: bool,
    /// Its share of [`MAX_HELD_BYTES`], given back once written on.
    _room: SemaphorePermit<'a>,
}

/// Forwards one direction: reads chunks from `from` and writes each to `to` at its release
/// time, in order, then passes the end of stream on. An error on either side ends it.
async fn pipe<R, W>(from: &mut R, to: &mut W, shared: &Shared, mut rng: SmallRng) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let room = Semaphore::new(MAX_HELD_BYTES);
    // Every chunk holds at least one byte of room, so the room bounds their count too.
    let (tx, mut rx) = mpsc::unbounded_channel::<Chunk<'_>>();
    let read = async {
        let mut buf = vec![0; CHUNK_BYTES];
        let mut last_release = Instant::now();
        loop {
            let n = from.read(&mut buf).await?;
            let read_at = Instant::now();
            let (hold, counted) = shared.draw(&mut rng);
            let release_at = (read_at + hold).max(last_release);
            last_release = release_at;
            let permits = n.max(1) as u32;
            let room = room.acquire_many(permits).await.expect("the room is never closed. This is a bug.");
            let chunk = Chunk { bytes: buf[..n].to_vec(), read_at, release_at, counted, _room: room };
            if tx.send(chunk).is_err() {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    let write = async {
        while let Some(chunk) = rx.recv().await {
            if chunk.release_at > Instant::now() {
                tokio::time::sleep_until(chunk.release_at).await;
            }
            if chunk.bytes.is_empty() {
                return to.shutdown().await;
            }
            to.write_all(&chunk.bytes).await?;
            if chunk.counted {
                shared.record(chunk.read_at.elapsed(), chunk.bytes.len());
            }
        }
        Ok(())
    };
    tokio::try_join!(read, write).map(|_| ())
}
