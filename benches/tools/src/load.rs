//! HTTP load against one senti node: closed loop (`ab -c N`) or open loop at a fixed rate (wrk2).
//!
//! `connections` workers share one request counter (the ticket). Ticket `i` sends the body
//! [`Requests::body`] gives it: by default the texts cycled in payload order across all workers,
//! or a trace with repeats ([`crate::trace`]).
//! - Closed loop: a worker sends its next request as soon as its previous one is answered;
//!   latency runs from the send.
//! - Open loop: ticket `i` is *scheduled* at `t0 + i / rate`. A free worker waits for that time
//!   and sends; if every worker is busy the ticket is sent late, and its latency still runs from
//!   the scheduled time. A server that stalls therefore shows up as latency, not as fewer samples
//!   (no coordinated omission).
//!
//! Samples are the requests started (closed) or scheduled (open) after the warm-up and before the
//! end; each is awaited to its answer or the per-request timeout, so a run lasts at most
//! `warmup + duration + timeout`. `max_requests` bounds every request sent, warm-up included.
//! Latencies are recorded for successful answers only; failures are counted by [`ErrorKind`].
//! Successful answers are also counted by their `x-senti-cache` header (`hit`, `miss`,
//! `partial`): how often the server's result cache answered.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Url;
use serde::Serialize;

use crate::latency::{LatencyRecorder, LatencySummary};
use crate::trace::Requests;

/// Pause after a refused connection, so a dead server does not turn a worker into a busy loop.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// The response header in which senti says whether its result cache answered.
const CACHE_HEADER: &str = "x-senti-cache";

/// Which senti route to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /analyze` with `{"text": ...}`.
    Analyze,
    /// `POST /v1/classify` with `{"texts": [...]}`, this many texts per request.
    Classify {
        /// Texts in each request (at least 1).
        texts_per_request: usize,
    },
}

impl Route {
    /// The request path.
    pub fn path(&self) -> &'static str {
        match self {
            Route::Analyze => "/analyze",
            Route::Classify { .. } => "/v1/classify",
        }
    }

    /// Short name for reports (`analyze`, `classify`).
    pub fn name(&self) -> &'static str {
        match self {
            Route::Analyze => "analyze",
            Route::Classify { .. } => "classify",
        }
    }

    /// Texts carried by one request.
    pub fn texts_per_request(&self) -> usize {
        match self {
            Route::Analyze => 1,
            Route::Classify { texts_per_request } => (*texts_per_request).max(1),
        }
    }

    /// The JSON bodies to cycle through, serialised once up front: request `k` carries the
    /// `texts_per_request` texts that follow text `k * texts_per_request`, wrapping around.
    pub fn bodies(&self, texts: &[String]) -> Vec<Bytes> {
        if texts.is_empty() {
            return Vec::new();
        }
        let per = self.texts_per_request();
        let count = texts.len().div_ceil(per);
        (0..count)
            .map(|k| {
                let body = match self {
                    Route::Analyze => serde_json::json!({ "text": texts[k] }),
                    Route::Classify { .. } => {
                        let group: Vec<&str> = (0..per).map(|j| texts[(k * per + j) % texts.len()].as_str()).collect();
                        serde_json::json!({ "texts": group })
                    }
                };
                Bytes::from(body.to_string())
            })
            .collect()
    }
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Each worker sends as soon as its previous request is answered.
    Closed,
    /// Requests are scheduled at a fixed rate (requests per second).
    Open {
        /// Requests per second, > 0.
        rate: f64,
    },
}

impl Pacing {
    /// When ticket `ticket` is due, counted from the start of the run (open loop only).
    pub fn offset(&self, ticket: u64) -> Option<Duration> {
        match self {
            Pacing::Closed => None,
            Pacing::Open { rate } => Some(Duration::from_secs_f64(ticket as f64 / rate)),
        }
    }
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Route and texts per request.
    pub route: Route,
    /// Closed or open loop.
    pub pacing: Pacing,
    /// Workers, each with its own keep-alive connection (the pool is sized to match).
    pub connections: usize,
    /// Requests before this are sent but not measured.
    pub warmup: Duration,
    /// Measured time after the warm-up.
    pub duration: Duration,
    /// Hard bound on requests sent, warm-up included.
    pub max_requests: u64,
    /// Per-request timeout (connect to last body byte).
    pub timeout: Duration,
}

/// Why a request did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// An answer with a non-2xx status.
    Status(u16),
    /// The connection could not be made.
    Connect,
    /// No complete answer within the per-request timeout.
    Timeout,
    /// The answer's body could not be read.
    Body,
    /// Anything else reqwest reports.
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Status(code) => write!(f, "status_{code}"),
            ErrorKind::Connect => f.write_str("connect"),
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::Body => f.write_str("body"),
            ErrorKind::Other => f.write_str("other"),
        }
    }
}

impl ErrorKind {
    fn of(err: &reqwest::Error) -> Self {
        if err.is_timeout() {
            ErrorKind::Timeout
        } else if err.is_connect() {
            ErrorKind::Connect
        } else if err.is_body() || err.is_decode() {
            ErrorKind::Body
        } else {
            ErrorKind::Other
        }
    }
}

/// The outcome of one run; `--json` writes it as is.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Base URL; several, separated by commas, when requests were spread over several nodes.
    pub url: String,
    /// `analyze` or `classify`.
    pub route: &'static str,
    /// Texts per request.
    pub texts_per_request: usize,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Workers (connections).
    pub concurrency: usize,
    /// Target rate of an open loop, requests per second.
    pub rate: Option<f64>,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Planned measured time, seconds.
    pub duration_s: f64,
    /// Measured time: from the end of the warm-up to the last sample's answer (at least the
    /// planned duration, unless `max_requests` stopped the run first).
    pub elapsed_s: f64,
    /// Every request sent, warm-up included.
    pub sent_total: u64,
    /// Whether `max_requests` stopped the run before its duration.
    pub stopped_by_max_requests: bool,
    /// Measured requests (samples).
    pub requests: u64,
    /// Measured requests answered with 2xx.
    pub ok: u64,
    /// Measured failures by kind (`status_429`, `connect`, `timeout`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Answered requests (any outcome) per second of `elapsed_s`.
    pub qps: f64,
    /// Successful requests per second.
    pub ok_qps: f64,
    /// Texts of successful requests per second.
    pub texts_per_s: f64,
    /// Latency of successful requests, milliseconds.
    pub latency_ms: LatencySummary,
    /// Latency of failed requests (any kind), milliseconds: how fast a refusal comes back.
    pub error_latency_ms: LatencySummary,
    /// Measured successful answers by their `x-senti-cache` header (`hit`, `miss`, `partial`;
    /// `other` for anything else); empty when the server sends no such header.
    pub cache: BTreeMap<String, u64>,
    /// Measured requests and failures per base URL, in the order given (one entry per URL), so
    /// that failures of requests sent to one node (a dead one, say) can be told apart.
    pub per_url: Vec<UrlCount>,
}

/// One base URL's share of a run.
#[derive(Debug, Clone, Serialize)]
pub struct UrlCount {
    /// The base URL.
    pub url: String,
    /// Measured requests sent to it.
    pub requests: u64,
    /// Those that failed (any kind).
    pub errors: u64,
}

impl LoadReport {
    /// Share of the measured successful answers whose `x-senti-cache` was `hit`; `None` when
    /// none carried the header.
    pub fn cache_hit_rate(&self) -> Option<f64> {
        let answers: u64 = self.cache.values().sum();
        (answers > 0).then(|| self.cache.get("hit").copied().unwrap_or(0) as f64 / answers as f64)
    }
}

/// An HTTP/1.1 client whose keep-alive pool holds `connections` connections, with no proxy, and
/// `localhost` pinned to 127.0.0.1.
pub fn client(connections: usize, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(timeout)
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], 0)))
        .build()
}

/// Runs `plan` against `bases` (already checked to be loopback; request `n` goes to
/// `bases[n % bases.len()]`, so several nodes share the load evenly) and returns the merged report.
pub async fn run(client: reqwest::Client, bases: &[Url], plan: &LoadPlan, requests: Requests) -> LoadReport {
    let t0 = Instant::now();
    let measure_from = t0 + plan.warmup;
    let shared = Arc::new(Shared {
        client,
        urls: bases.iter().map(|base| base.join(plan.route.path()).unwrap_or_else(|_| base.clone())).collect(),
        requests,
        pacing: plan.pacing,
        max_requests: plan.max_requests,
        t0,
        measure_from,
        end: measure_from + plan.duration,
        tickets: AtomicU64::new(0),
    });
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..plan.connections.max(1) {
        workers.spawn(worker(shared.clone()));
    }
    let mut total = Tally::default();
    while let Some(joined) = workers.join_next().await {
        // A worker only panics on a bug; its samples are lost, the others still count.
        if let Ok(tally) = joined {
            total.merge(&tally);
        }
    }
    report(bases, plan, &shared, &total)
}

/// What every worker reads.
struct Shared {
    client: reqwest::Client,
    /// Route URLs, taken in turn by ticket.
    urls: Vec<Url>,
    requests: Requests,
    pacing: Pacing,
    max_requests: u64,
    t0: Instant,
    measure_from: Instant,
    end: Instant,
    /// Next ticket; workers take them in turn (`fetch_add`), so each request has one number.
    tickets: AtomicU64,
}

/// One worker's counts, merged after the run.
#[derive(Default)]
struct Tally {
    latency: LatencyRecorder,
    error_latency: LatencyRecorder,
    sent: u64,
    samples: u64,
    ok: u64,
    errors: BTreeMap<ErrorKind, u64>,
    cache: BTreeMap<&'static str, u64>,
    /// Measured requests and failures per URL index.
    per_url: BTreeMap<usize, (u64, u64)>,
    last_done_opt: Option<Instant>,
}

impl Tally {
    fn merge(&mut self, other: &Tally) {
        self.latency.merge(&other.latency);
        self.error_latency.merge(&other.error_latency);
        self.sent += other.sent;
        self.samples += other.samples;
        self.ok += other.ok;
        for (kind, n) in &other.errors {
            *self.errors.entry(*kind).or_default() += n;
        }
        for (state, n) in &other.cache {
            *self.cache.entry(state).or_default() += n;
        }
        for (index, (requests, errors)) in &other.per_url {
            let counts = self.per_url.entry(*index).or_default();
            counts.0 += requests;
            counts.1 += errors;
        }
        self.last_done_opt = self.last_done_opt.max(other.last_done_opt);
    }
}

async fn worker(shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    loop {
        let ticket = shared.tickets.fetch_add(1, Ordering::Relaxed);
        if ticket >= shared.max_requests {
            break;
        }
        let start = match shared.pacing.offset(ticket) {
            None => Instant::now(),
            Some(offset) => {
                let due = shared.t0 + offset;
                if due >= shared.end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                due
            }
        };
        if start >= shared.end {
            break;
        }
        let Some(body) = shared.requests.body(ticket) else {
            break; // no texts at all: nothing to send
        };
        let Some(index) = ticket.checked_rem(shared.urls.len() as u64).map(|i| i as usize) else {
            break; // no URL at all: nothing to send to
        };
        let url = &shared.urls[index];
        let outcome = send(&shared.client, url, body).await;
        let done = Instant::now();
        tally.sent += 1;
        if start >= shared.measure_from {
            tally.samples += 1;
            tally.last_done_opt = Some(done);
            let counts = tally.per_url.entry(index).or_default();
            counts.0 += 1;
            counts.1 += u64::from(outcome.is_err());
            match &outcome {
                Ok(cache_opt) => {
                    tally.ok += 1;
                    tally.latency.record(done - start);
                    if let Some(state) = cache_opt {
                        *tally.cache.entry(state).or_default() += 1;
                    }
                }
                Err(kind) => {
                    *tally.errors.entry(*kind).or_default() += 1;
                    tally.error_latency.record(done - start);
                }
            }
        }
        if outcome == Err(ErrorKind::Connect) {
            tokio::time::sleep(CONNECT_RETRY_PAUSE).await;
        }
    }
    tally
}

/// One POST, body read to the end (so the connection can be reused); a success carries its
/// `x-senti-cache` header, if any.
async fn send(client: &reqwest::Client, url: &Url, body: Bytes) -> Result<Option<&'static str>, ErrorKind> {
    let response = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|err| ErrorKind::of(&err))?;
    let status = response.status();
    let cache_opt = response.headers().get(CACHE_HEADER).map(|value| match value.as_bytes() {
        b"hit" => "hit",
        b"miss" => "miss",
        b"partial" => "partial",
        _ => "other",
    });
    response.bytes().await.map_err(|err| ErrorKind::of(&err))?;
    if status.is_success() {
        Ok(cache_opt)
    } else {
        Err(ErrorKind::Status(status.as_u16()))
    }
}

fn report(bases: &[Url], plan: &LoadPlan, shared: &Shared, total: &Tally) -> LoadReport {
    let stopped_by_max_requests = total.sent >= plan.max_requests;
    let last_done = total.last_done_opt.unwrap_or(shared.measure_from);
    let until = if stopped_by_max_requests { last_done } else { last_done.max(shared.end) };
    let elapsed = until.saturating_duration_since(shared.measure_from).as_secs_f64();
    let per_second = |n: u64| if elapsed > 0.0 { n as f64 / elapsed } else { 0.0 };
    let (mode, rate) = match plan.pacing {
        Pacing::Closed => ("closed", None),
        Pacing::Open { rate } => ("open", Some(rate)),
    };
    let texts = plan.route.texts_per_request();
    LoadReport {
        url: bases.iter().map(Url::as_str).collect::<Vec<_>>().join(","),
        route: plan.route.name(),
        texts_per_request: texts,
        mode,
        concurrency: plan.connections,
        rate,
        warmup_s: plan.warmup.as_secs_f64(),
        duration_s: plan.duration.as_secs_f64(),
        elapsed_s: elapsed,
        sent_total: total.sent,
        stopped_by_max_requests,
        requests: total.samples,
        ok: total.ok,
        errors: total.errors.iter().map(|(kind, n)| (kind.to_string(), *n)).collect(),
        qps: per_second(total.samples),
        ok_qps: per_second(total.ok),
        texts_per_s: per_second(total.ok * texts as u64),
        latency_ms: total.latency.summary(),
        error_latency_ms: total.error_latency.summary(),
        cache: total.cache.iter().map(|(state, n)| ((*state).to_owned(), *n)).collect(),
        per_url: bases
            .iter()
            .enumerate()
            .map(|(index, base)| {
                let (requests, errors) = total.per_url.get(&index).copied().unwrap_or_default();
                UrlCount { url: base.to_string(), requests, errors }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// A minimal HTTP/1.1 keep-alive server on loopback: answers every request with `status`
    /// after `delay`, saying `x-senti-cache: hit`. Returns its base URL.
    async fn fake_server(status: u16, delay: Duration) -> Url {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve_connection(socket, status, delay));
            }
        });
        Url::parse(&format!("http://{addr}")).unwrap()
    }

    async fn serve_connection(socket: tokio::net::TcpStream, status: u16, delay: Duration) {
        let mut reader = BufReader::new(socket);
        loop {
            let mut length = 0_usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).await.is_err() {
                return;
            }
            tokio::time::sleep(delay).await;
            let answer =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\ncontent-type: application/json\r\nx-senti-cache: hit\r\n\r\n{{}}");
            if reader.get_mut().write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn plan(pacing: Pacing, connections: usize, duration_ms: u64, max_requests: u64) -> LoadPlan {
        LoadPlan {
            route: Route::Analyze,
            pacing,
            connections,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(duration_ms),
            max_requests,
            timeout: Duration::from_secs(2),
        }
    }

    fn bodies() -> Requests {
        Requests::new(Route::Analyze, vec!["很好".to_owned(), "太差了".to_owned()], crate::trace::Trace::Cycle, 0)
    }

    #[test]
    fn classify_bodies_group_consecutive_texts_and_wrap() {
        let texts: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let bodies = Route::Classify { texts_per_request: 2 }.bodies(&texts);
        assert_eq!(bodies, vec![Bytes::from(r#"{"texts":["a","b"]}"#), Bytes::from(r#"{"texts":["c","a"]}"#)]);
        assert_eq!(Route::Analyze.bodies(&texts)[2], Bytes::from(r#"{"text":"c"}"#));
    }

    #[test]
    fn open_loop_schedule_is_fixed_by_ticket() {
        let pacing = Pacing::Open { rate: 200.0 };
        assert_eq!(pacing.offset(0), Some(Duration::ZERO));
        assert_eq!(pacing.offset(200), Some(Duration::from_secs(1)));
        assert_eq!(Pacing::Closed.offset(5), None);
    }

    #[tokio::test]
    async fn closed_loop_counts_successes_and_stops_by_itself() {
        let url = fake_server(200, Duration::from_millis(2)).await;
        let plan = plan(Pacing::Closed, 4, 300, 1_000_000);
        let report = run(client(4, plan.timeout).unwrap(), std::slice::from_ref(&url), &plan, bodies()).await;
        assert!(report.ok > 50, "{report:?}");
        assert_eq!(report.ok, report.requests);
        assert!(report.errors.is_empty());
        assert!(report.latency_ms.p50 >= 2.0, "{report:?}");
        assert!(report.elapsed_s >= 0.3 && report.elapsed_s < 1.0, "{report:?}");
        assert_eq!(report.cache.get("hit").copied(), Some(report.ok), "x-senti-cache counted");
        assert_eq!(report.cache_hit_rate(), Some(1.0));
    }

    #[tokio::test]
    async fn max_requests_is_a_hard_bound() {
        let url = fake_server(200, Duration::ZERO).await;
        let plan = plan(Pacing::Closed, 3, 5_000, 40);
        let started = Instant::now();
        let report = run(client(3, plan.timeout).unwrap(), std::slice::from_ref(&url), &plan, bodies()).await;
        assert_eq!(report.sent_total, 40);
        assert!(report.stopped_by_max_requests);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn errors_are_counted_by_status() {
        let url = fake_server(429, Duration::ZERO).await;
        let plan = plan(Pacing::Closed, 1, 100, 1_000_000);
        let report = run(client(1, plan.timeout).unwrap(), std::slice::from_ref(&url), &plan, bodies()).await;
        assert_eq!(report.ok, 0);
        assert_eq!(report.errors.get("status_429").copied(), Some(report.requests));
    }

    #[tokio::test]
    async fn refused_connections_are_connect_errors() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let plan = plan(Pacing::Closed, 1, 100, 1_000_000);
        let report = run(client(1, plan.timeout).unwrap(), std::slice::from_ref(&url), &plan, bodies()).await;
        assert!(report.errors.get("connect").copied().unwrap_or(0) > 0, "{report:?}");
    }

    /// Two base URLs take requests in turn: one answers 200, the other 429, so half fail.
    #[tokio::test]
    async fn several_urls_share_the_requests_in_turn() {
        let urls = [fake_server(200, Duration::ZERO).await, fake_server(429, Duration::ZERO).await];
        let plan = plan(Pacing::Closed, 1, 200, 1_000_000);
        let report = run(client(1, plan.timeout).unwrap(), &urls, &plan, bodies()).await;
        let refused = report.errors.get("status_429").copied().unwrap_or(0);
        assert!(report.ok.abs_diff(refused) <= 1 && report.ok > 0, "{report:?}");
        assert_eq!(report.url.split(',').count(), 2, "{report:?}");
        assert_eq!(report.per_url[0].errors, 0, "{report:?}");
        assert_eq!(report.per_url[1].errors, report.per_url[1].requests, "{report:?}");
        assert_eq!(report.per_url[0].requests + report.per_url[1].requests, report.requests);
    }

    /// One connection, 20 ms per answer, 200 requests/s offered: the server can do 50/s, so the
    /// open loop falls behind and latency (from the schedule) grows far beyond 20 ms, while a
    /// closed loop would have reported 20 ms.
    #[tokio::test]
    async fn open_loop_measures_from_the_schedule() {
        let url = fake_server(200, Duration::from_millis(20)).await;
        let plan = plan(Pacing::Open { rate: 200.0 }, 1, 400, 1_000_000);
        let report = run(client(1, plan.timeout).unwrap(), std::slice::from_ref(&url), &plan, bodies()).await;
        assert!(report.latency_ms.max > 100.0, "{report:?}");
        assert!(report.ok_qps < 80.0, "{report:?}");
    }

    /// At a rate the server handles easily, an open loop sends at that rate.
    #[tokio::test]
    async fn open_loop_holds_its_rate() {
        let url = fake_server(200, Duration::ZERO).await;
        let plan = plan(Pacing::Open { rate: 100.0 }, 4, 500, 1_000_000);
        let report = run(client(4, plan.timeout).unwrap(), std::slice::from_ref(&url), &plan, bodies()).await;
        assert!((40..=60).contains(&report.requests), "{report:?}");
        assert!(report.latency_ms.p50 < 20.0, "{report:?}");
    }
}
