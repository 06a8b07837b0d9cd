//! The HTTP server loop: the app's router on hyper HTTP/1 connections, with what `axum::serve`
//! lacks for a port open to a LAN: a header-read timeout, a body-read timeout, a keep-alive idle
//! timeout and a cap on open connections (`[server]` keys, defaults like nginx and Envoy).
//!
//! Each connection has a [`Clock`] that its socket wrapper, its request body and its response
//! body move through four phases; a watchdog beside the connection closes it when the current
//! phase's deadline passes:
//! - `header`: from the connection's start, or from the first byte of a request on a kept-alive
//!   connection, until hyper has parsed the request's head (`server.header_timeout_ms`);
//! - `handling`: the app runs. While the request body has not ended, the whole body must arrive
//!   within `server.body_timeout_ms` of the head; the handler itself is bounded by the request's
//!   deadline, not here;
//! - `writing`: the answer is being written; a client that reads none of it for
//!   `server.idle_timeout_ms` is dropped;
//! - `idle`: between requests on a kept-alive connection (`server.idle_timeout_ms`).
//!
//! Beyond `server.max_connections` a new connection is answered 503 (`too_many_connections`) and
//! closed, by at most [`REFUSING_AT_ONCE`] short tasks; the open connections keep being served.
//! Graceful shutdown is axum's: stop accepting, let every connection finish its request, close
//! idle ones at once, return when all are gone. The timeouts also bound how long a stalled client
//! can hold the drain up.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use senti_config::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
// tokio's clock, so that tests can pause it.
use tokio::time::Instant;
use tower::ServiceExt;

use crate::error::ApiError;

/// Connections past the cap that are being answered 503 at once; more are closed unanswered.
pub const REFUSING_AT_ONCE: usize = 32;
/// How long a refused connection may take to send its request and read the 503.
const REFUSAL_TIME: Duration = Duration::from_secs(2);
/// The most of a refused request's body read (and dropped) before the 503, so that closing the
/// socket does not reset it under the client's feet.
const REFUSAL_BODY_BYTES: usize = 64 * 1024;
/// Least time between two log lines about refused connections.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The `[server]` settings the loop enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// `server.header_timeout_ms`
    pub header_timeout: Duration,
    /// `server.body_timeout_ms`
    pub body_timeout: Duration,
    /// `server.idle_timeout_ms`
    pub idle_timeout: Duration,
    /// `server.max_connections`
    pub max_connections: usize,
}

impl ServeLimits {
    /// The limits of a validated `[server]` section.
    pub fn from_config(server: &ServerConfig) -> Self {
        Self {
            header_timeout: Duration::from_millis(server.header_timeout_ms),
            body_timeout: Duration::from_millis(server.body_timeout_ms),
            idle_timeout: Duration::from_millis(server.idle_timeout_ms),
            max_connections: server.max_connections.max(1),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains: no new connections, every
/// open one finishes its request in flight and closes. Returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    // Every connection task holds a receiver: `send(true)` asks them to drain, `closed()` says
    // they are all gone.
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut last_refusal_log: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    accept_error(err).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(connection(stream, app.clone(), limits, drain_rx.clone(), slot));
            }
            Err(_) => {
                metrics::counter!("senti_http_connections_refused_total").increment(1);
                // At most one line per 10 s: a flood must not flood the log too.
                if last_refusal_log.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL) {
                    last_refusal_log = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached; answering new connections 503 (`server.max_connections`)"
                    );
                }
                if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(refuse(stream, limits.max_connections, refusal));
                }
            }
        }
    }
    drop(listener);
    tracing::debug!(open = limits.max_connections - slots.available_permits(), "draining HTTP connections");
    let _ = drain_tx.send(true);
    drop(drain_rx);
    drain_tx.closed().await;
    Ok(())
}

/// Like `axum::serve`: connection-level errors are the client's business; others (EMFILE: out of
/// file descriptors) pause accepting for a second rather than spin.
async fn accept_error(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "accept failed; pausing 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Serves one connection until it closes, times out, or drains.
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: ServeLimits,
    mut drain: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let open = metrics::gauge!("senti_http_connections");
    open.increment(1.0);
    let clock = Arc::new(Clock::new());
    let io = TokioIo::new(Watched { inner: stream, clock: clock.clone() });
    let service_clock = clock.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let clock = service_clock.clone();
        let app = app.clone();
        async move {
            clock.request_started(req.body().is_end_stream());
            let req = req.map(|body| Body::new(TimedBody { inner: body, clock: clock.clone(), ended: false }));
            let response = app.oneshot(req).await?;
            clock.response_started();
            Ok::<_, Infallible>(response.map(|body| WrittenBody { inner: body, clock }))
        }
    });
    // hyper's own header timeout also runs while a kept-alive connection is idle, which would make
    // the idle timeout the header timeout; the clock keeps the two apart.
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None::<Duration>)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                break;
            }
            phase = clock.expired(limits) => {
                metrics::counter!("senti_http_connection_timeouts_total", "phase" => phase).increment(1);
                tracing::debug!(phase, "closing a connection that outlived its timeout");
                break;
            }
            _ = drain.wait_for(|drain| *drain), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    open.decrement(1.0);
}

/// Answers a connection past the cap with 503 and closes it, within [`REFUSAL_TIME`].
async fn refuse(stream: TcpStream, max_connections: usize, _refusal: OwnedSemaphorePermit) {
    let service = service_fn(move |req: Request<Incoming>| async move {
        let _ = http_body_util::Limited::new(req.into_body(), REFUSAL_BODY_BYTES).collect().await;
        Ok::<_, Infallible>(ApiError::TooManyConnections(max_connections as u64).into_response())
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(REFUSAL_TIME)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(REFUSAL_TIME, conn).await;
}

/// Where a connection is in its request/answer cycle, and since when.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Reading a request's head.
    Header,
    /// The app has the request.
    Handling,
    /// The app answered; the answer is being written.
    Writing,
    /// Between requests.
    Idle,
}

#[derive(Debug)]
struct ClockState {
    phase: Phase,
    /// When `phase` began.
    since: Instant,
    /// When the request's head was parsed, while its body has not ended.
    body_open_since: Option<Instant>,
    /// The last byte read or written.
    last_io: Instant,
}

/// One connection's phase, moved by its socket, its bodies and its service; read by its watchdog.
/// A mutex, not atomics: three fields change together, never contended (one connection's tasks).
#[derive(Debug)]
struct Clock {
    state: Mutex<ClockState>,
    /// Wakes the watchdog when a deadline may have moved earlier.
    moved: Notify,
}

impl Clock {
    fn new() -> Self {
        let now = Instant::now();
        // A new connection is expected to send a request: it gets the header timeout, not the
        // (longer) idle one, so connections opened and left silent are closed soonest.
        let state = ClockState { phase: Phase::Header, since: now, body_open_since: None, last_io: now };
        Self { state: Mutex::new(state), moved: Notify::new() }
    }

    fn update(&self, change: impl FnOnce(&mut ClockState)) {
        change(&mut self.state.lock().expect("connection clock poisoned. This is a bug."));
        self.moved.notify_one();
    }

    fn bytes_read(&self) {
        let mut state = self.state.lock().expect("connection clock poisoned. This is a bug.");
        let now = Instant::now();
        state.last_io = now;
        if state.phase == Phase::Idle {
            state.phase = Phase::Header;
            state.since = now;
            drop(state);
            self.moved.notify_one();
        }
    }

    fn bytes_written(&self) {
        self.state.lock().expect("connection clock poisoned. This is a bug.").last_io = Instant::now();
    }

    fn request_started(&self, body_done: bool) {
        self.update(|s| {
            let now = Instant::now();
            s.phase = Phase::Handling;
            s.since = now;
            s.body_open_since = (!body_done).then_some(now);
        });
    }

    fn body_ended(&self) {
        self.update(|s| s.body_open_since = None);
    }

    fn response_started(&self) {
        self.update(|s| {
            let now = Instant::now();
            s.phase = Phase::Writing;
            s.since = now;
            s.last_io = now;
        });
    }

    fn response_done(&self) {
        self.update(|s| {
            s.phase = Phase::Idle;
            s.since = Instant::now();
            s.body_open_since = None;
        });
    }

    /// The earliest deadline that applies now, and the phase it belongs to.
    fn deadline(&self, limits: ServeLimits) -> Option<(Instant, &'static str)> {
        let s = self.state.lock().expect("connection clock poisoned. This is a bug.");
        let body = s.body_open_since.map(|at| (at + limits.body_timeout, "body"));
        let own = match s.phase {
            Phase::Header => Some((s.since + limits.header_timeout, "header")),
            Phase::Handling => None,
            Phase::Writing => Some((s.last_io + limits.idle_timeout, "write")),
            Phase::Idle => Some((s.since + limits.idle_timeout, "idle")),
        };
        [body, own].into_iter().flatten().min_by_key(|(at, _)| *at)
    }

    /// Resolves with the phase's name once the connection has outlived that phase's timeout.
    async fn expired(&self, limits: ServeLimits) -> &'static str {
        loop {
            let moved = self.moved.notified();
            match self.deadline(limits) {
                Some((at, phase)) if at <= Instant::now() => return phase,
                Some((at, _)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = moved => {}
                    }
                }
                None => moved.await,
            }
        }
    }
}

/// The connection's socket, reporting bytes to the clock.
struct Watched {
    inner: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.clock.bytes_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        if written > 0 {
            self.clock.bytes_written();
        }
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs))?;
        if written > 0 {
            self.clock.bytes_written();
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The request body: tells the clock when it has ended (or is dropped unread).
struct TimedBody {
    inner: Incoming,
    clock: Arc<Clock>,
    ended: bool,
}

impl TimedBody {
    fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.clock.body_ended();
        }
    }
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() || self.inner.is_end_stream() {
            self.end();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        self.end();
    }
}

/// The response body: hyper drops it once written, which ends the request's cycle.
struct WrittenBody {
    inner: Body,
    clock: Arc<Clock>,
}

impl hyper::body::Body for WrittenBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for WrittenBody {
    fn drop(&mut self) {
        self.clock.response_done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ServeLimits {
        ServeLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
        }
    }

    fn phase_in(clock: &Clock) -> (&'static str, Duration) {
        let (at, phase) = clock.deadline(limits()).unwrap();
        (phase, at.saturating_duration_since(Instant::now()))
    }

    #[test]
    fn each_phase_has_its_own_timeout() {
        let clock = Clock::new();
        let (phase, left) = phase_in(&clock);
        assert_eq!(phase, "header", "a new connection must send a request soon");
        assert!(left <= Duration::from_secs(10));
        clock.request_started(false);
        assert_eq!(phase_in(&clock).0, "body");
        clock.body_ended();
        assert_eq!(clock.deadline(limits()), None, "the handler runs under the request's deadline");
        clock.response_started();
        assert_eq!(phase_in(&clock).0, "write");
        clock.response_done();
        let (phase, left) = phase_in(&clock);
        assert_eq!(phase, "idle");
        assert!(left > Duration::from_secs(50));
        clock.bytes_read();
        assert_eq!(phase_in(&clock).0, "header", "the first byte of the next request starts its header timeout");
        clock.request_started(true);
        assert_eq!(clock.deadline(limits()), None, "no body to wait for");
    }

    #[test]
    fn an_unread_body_keeps_its_deadline_while_the_answer_is_written() {
        let clock = Clock::new();
        clock.request_started(false);
        clock.response_started();
        let (phase, left) = phase_in(&clock);
        assert_eq!(phase, "body");
        assert!(left <= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_fires_when_the_deadline_passes() {
        // Paused time: tokio's clock jumps to each sleep's end, so ten seconds cost nothing.
        let clock = Clock::new();
        let started = Instant::now();
        assert_eq!(clock.expired(limits()).await, "header");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(10) && waited < Duration::from_millis(10_010), "{waited:?}");
        clock.request_started(true);
        clock.response_started();
        clock.response_done();
        let started = Instant::now();
        assert_eq!(clock.expired(limits()).await, "idle");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(60) && waited < Duration::from_millis(60_010), "{waited:?}");
    }
}
