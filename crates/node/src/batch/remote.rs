//! Scoring batches over HTTP (`senti classify --server URL[,URL...]`): `POST /v1/classify` to
//! one of the servers, failing over between them.
//!
//! | answer | what the client does |
//! |---|---|
//! | 200 | the results (one per text, or the server is treated as failed) |
//! | 429 | waits `Retry-After` (at most [`MAX_RETRY_AFTER`]) and sends again, to any server |
//! | 503, 5xx, no connection, timeout | rests that server for `Retry-After` or [`REST`] and sends to another |
//! | 400, 413, 422 | a text is refused: a batch is split into lone texts, a lone text gets the server's error |
//! | 401, 403, 404 | stops the run: no retry can help |
//!
//! A batch that no server answers within `give_up` stops the run; what was written stays, and
//! `--resume` continues after it.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use senti_http::{ClassifyResponse, ClassifyResult};

use super::output::{Answer, Failure};

/// How long a server that failed is left alone when it gives no `Retry-After`; doubled for each
/// further failure in a row, up to [`MAX_REST`], so a dead server costs one attempt in a while.
pub const REST: Duration = Duration::from_secs(2);
/// The longest rest.
pub const MAX_REST: Duration = Duration::from_secs(30);
/// The longest `Retry-After` obeyed.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A run cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// Refused for a reason every retry would meet again.
    #[error("{server} refused the request ({status}): {message}")]
    Refused { server: String, status: u16, message: String },
    /// No server answered in time.
    #[error("no server answered within {secs} s (last: {last})", secs = .give_up.as_secs())]
    Unavailable { give_up: Duration, last: String },
}

/// One server and its bookkeeping.
#[derive(Debug)]
struct Server {
    base: String,
    resting_until: Mutex<Option<Instant>>,
    /// Failures in a row.
    failures: AtomicU32,
    answered: AtomicU64,
}

/// Counts for the summary.
#[derive(Debug, Default)]
pub struct Retries {
    /// Attempts that failed on a server and went to another one.
    pub failovers: AtomicU64,
    /// 429s obeyed.
    pub throttled: AtomicU64,
}

/// The HTTP scorer.
#[derive(Debug)]
pub struct Remote {
    client: reqwest::Client,
    servers: Vec<Server>,
    next: AtomicUsize,
    token: Option<String>,
    give_up: Duration,
    /// Retries so far.
    pub retries: Retries,
}

enum Attempt {
    Answered(Vec<ClassifyResult>),
    Throttled(Duration),
    Failed { rest: Duration, why: String },
    Refused { status: u16, code: String, message: String },
}

impl Remote {
    /// A scorer over `servers` (base URLs), each attempt at most `timeout`, each batch given up
    /// after `give_up`.
    pub fn new(
        servers: &[String],
        token: Option<String>,
        timeout: Duration,
        give_up: Duration,
    ) -> anyhow::Result<Remote> {
        anyhow::ensure!(!servers.is_empty(), "--server needs at least one URL");
        let servers = servers
            .iter()
            .map(|url| {
                let base = url.trim_end_matches('/').to_owned();
                anyhow::ensure!(
                    base.starts_with("http://"),
                    "--server {url}: give an http:// URL, e.g. http://10.0.0.5:8080"
                );
                Ok(Server {
                    base,
                    resting_until: Mutex::new(None),
                    failures: AtomicU32::new(0),
                    answered: AtomicU64::new(0),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let client = reqwest::Client::builder().timeout(timeout).connect_timeout(Duration::from_secs(3)).build()?;
        Ok(Remote { client, servers, next: AtomicUsize::new(0), token, give_up, retries: Retries::default() })
    }

    /// Texts answered per server, for the summary.
    pub fn answered(&self) -> Vec<(String, u64)> {
        self.servers.iter().map(|s| (s.base.clone(), s.answered.load(Ordering::Relaxed))).collect()
    }

    /// One answer per text, in order.
    pub async fn score(&self, texts: &[String]) -> Result<Vec<Answer>, Stop> {
        let until = Instant::now() + self.give_up;
        let mut last = String::from("no attempt yet");
        loop {
            if Instant::now() >= until {
                return Err(Stop::Unavailable { give_up: self.give_up, last });
            }
            let server = self.pick(until).await;
            match self.attempt(server, texts).await {
                Attempt::Answered(results) => {
                    server.failures.store(0, Ordering::Relaxed);
                    server.answered.fetch_add(texts.len() as u64, Ordering::Relaxed);
                    return Ok(results.into_iter().map(Ok).collect());
                }
                Attempt::Throttled(wait) => {
                    self.retries.throttled.fetch_add(1, Ordering::Relaxed);
                    last = format!("{}: 429 busy", server.base);
                    tokio::time::sleep(wait.min(until.saturating_duration_since(Instant::now()))).await;
                }
                Attempt::Failed { rest, why } => {
                    self.retries.failovers.fetch_add(1, Ordering::Relaxed);
                    let doublings = server.failures.fetch_add(1, Ordering::Relaxed).min(4);
                    let rest = (rest * 2u32.pow(doublings)).min(MAX_REST);
                    *server.resting_until.lock().expect("no panics under this lock") = Some(Instant::now() + rest);
                    last = format!("{}: {why}", server.base);
                }
                Attempt::Refused { status, code, message } if matches!(status, 401 | 403 | 404) => {
                    return Err(Stop::Refused {
                        server: server.base.clone(),
                        status,
                        message: format!("{code}: {message}"),
                    });
                }
                Attempt::Refused { code, message, .. } if texts.len() == 1 => {
                    return Ok(vec![Err(Failure { code, message })]);
                }
                Attempt::Refused { .. } => return Box::pin(self.score_one_by_one(texts)).await,
            }
        }
    }

    /// A refused batch, text by text: only the faulty texts get errors.
    async fn score_one_by_one(&self, texts: &[String]) -> Result<Vec<Answer>, Stop> {
        let mut answers = Vec::with_capacity(texts.len());
        for text in texts {
            answers.extend(self.score(std::slice::from_ref(text)).await?);
        }
        Ok(answers)
    }

    /// The next server in turn that is not resting; when all rest, waits for the first back.
    async fn pick(&self, until: Instant) -> &Server {
        loop {
            let now = Instant::now();
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let mut soonest = until;
            for i in 0..self.servers.len() {
                let server = &self.servers[(start + i) % self.servers.len()];
                let resting = *server.resting_until.lock().expect("no panics under this lock");
                match resting {
                    Some(back) if back > now => soonest = soonest.min(back),
                    _ => return server,
                }
            }
            if now >= until {
                return &self.servers[start % self.servers.len()];
            }
            tokio::time::sleep_until(soonest.into()).await;
        }
    }

    async fn attempt(&self, server: &Server, texts: &[String]) -> Attempt {
        let mut request =
            self.client.post(format!("{}/v1/classify", server.base)).json(&serde_json::json!({ "texts": texts }));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return Attempt::Failed { rest: REST, why: describe(&err) },
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
        match status {
            StatusCode::OK => match response.json::<ClassifyResponse>().await {
                Ok(answer) if answer.results.len() == texts.len() => Attempt::Answered(answer.results),
                Ok(answer) => Attempt::Failed {
                    rest: REST,
                    why: format!("{} results for {} texts", answer.results.len(), texts.len()),
                },
                Err(err) => Attempt::Failed { rest: REST, why: format!("unreadable answer: {}", describe(&err)) },
            },
            StatusCode::TOO_MANY_REQUESTS => Attempt::Throttled(retry_after.unwrap_or(Duration::from_secs(1))),
            s if s.is_client_error() => {
                let (code, message) = error_of(response).await;
                Attempt::Refused { status: s.as_u16(), code, message }
            }
            s => {
                let (code, message) = error_of(response).await;
                Attempt::Failed { rest: retry_after.unwrap_or(REST), why: format!("{s}: {code}: {message}") }
            }
        }
    }
}

/// The `error.code` and `error.message` of senti's JSON error body, or what there is.
async fn error_of(response: reqwest::Response) -> (String, String) {
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let field = |name: &str| body["error"][name].as_str().map(str::to_owned);
    (
        field("code").unwrap_or_else(|| format!("http_{}", status.as_u16())),
        field("message").unwrap_or_else(|| status.canonical_reason().unwrap_or("no message").to_owned()),
    )
}

fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "cannot connect"
    } else {
        "failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    let mut innermost = err.to_string();
    while let Some(inner) = source {
        innermost = inner.to_string();
        source = inner.source();
    }
    format!("{kind}: {innermost}")
}

#[cfg(test)]
mod tests {
    //! Against a mock HTTP server (a scripted TCP responder, for these unit tests only); the real
    //! servers are in tests/tests/batch_client.rs.

    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Answers each request with `respond(texts of the request, request number)`: status, extra
    /// headers, body.
    async fn mock(respond: impl Fn(&[String], usize) -> (u16, &'static str, String) + Send + Sync + 'static) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let respond = Arc::new(respond);
        let count = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let (respond, count) = (respond.clone(), count.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        let Some(head_end) = text.find("\r\n\r\n") else { continue };
                        let length: usize = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() < head_end + 4 + length {
                            continue;
                        }
                        let body: serde_json::Value =
                            serde_json::from_slice(&buf[head_end + 4..head_end + 4 + length]).unwrap();
                        buf.drain(..head_end + 4 + length);
                        let texts: Vec<String> = serde_json::from_value(body["texts"].clone()).unwrap();
                        let (status, headers, body) = respond(&texts, count.fetch_add(1, Ordering::SeqCst));
                        let response = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}\r\n{body}",
                            body.len()
                        );
                        socket.write_all(response.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        url
    }

    fn answers(texts: &[String]) -> String {
        let result =
            r#"{"label":"positive","label_zh":"正面","score":0.9,"probabilities":{"positive":0.9,"negative":0.1}}"#;
        let results = vec![result; texts.len()].join(",");
        format!(r#"{{"model":{{"name":"m","version":"1","variant":"int8"}},"results":[{results}]}}"#)
    }

    fn texts(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| (*t).to_owned()).collect()
    }

    #[tokio::test]
    async fn a_dead_server_is_passed_over_and_429_is_waited_out() {
        let dead = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let busy_once = mock(|texts, n| match n {
            0 => (429, "retry-after: 1\r\n", r#"{"error":{"code":"queue_full","message":"busy"}}"#.to_owned()),
            _ => (200, "", answers(texts)),
        })
        .await;
        let remote = Remote::new(&[dead, busy_once], None, Duration::from_secs(5), Duration::from_secs(20)).unwrap();
        let started = Instant::now();
        for _ in 0..3 {
            let scored = remote.score(&texts(&["好", "不错"])).await.unwrap();
            assert!(scored.iter().all(|a| a.as_ref().is_ok_and(|r| r.label == "positive")), "{scored:?}");
        }
        assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was obeyed");
        assert_eq!(remote.retries.throttled.load(Ordering::Relaxed), 1);
        // The dead server was tried once, then rests (2 s, then 4 s) while the batches go to the
        // live one: not once per batch.
        assert!((1..=2).contains(&remote.retries.failovers.load(Ordering::Relaxed)));
        assert_eq!(remote.answered().iter().map(|(_, n)| n).collect::<Vec<_>>(), [&0, &6]);
    }

    #[tokio::test]
    async fn a_refused_batch_is_split_so_only_the_faulty_text_fails() {
        let picky = mock(|texts, _| {
            if texts.iter().any(|t| t == "坏") {
                (400, "", r#"{"error":{"code":"text_too_long","message":"too long for this server"}}"#.to_owned())
            } else {
                (200, "", answers(texts))
            }
        })
        .await;
        let remote = Remote::new(&[picky], None, Duration::from_secs(5), Duration::from_secs(20)).unwrap();
        let scored = remote.score(&texts(&["好", "坏", "不错"])).await.unwrap();
        assert!(scored[0].is_ok() && scored[2].is_ok(), "{scored:?}");
        let failure = scored[1].as_ref().unwrap_err();
        assert_eq!((failure.code.as_str(), failure.message.as_str()), ("text_too_long", "too long for this server"));
    }

    #[tokio::test]
    async fn a_wrong_token_stops_the_run() {
        let locked =
            mock(|_, _| (401, "", r#"{"error":{"code":"unauthorized","message":"bad token"}}"#.to_owned())).await;
        let remote =
            Remote::new(&[locked], Some("nope".to_owned()), Duration::from_secs(5), Duration::from_secs(20)).unwrap();
        let err = remote.score(&texts(&["好"])).await.unwrap_err();
        assert!(matches!(err, Stop::Refused { status: 401, .. }), "{err}");
        assert!(err.to_string().contains("unauthorized: bad token"), "{err}");
    }

    #[tokio::test]
    async fn no_answer_within_the_give_up_time_stops_the_run() {
        let down = mock(|_, _| {
            (503, "retry-after: 1\r\n", r#"{"error":{"code":"shutting_down","message":"bye"}}"#.to_owned())
        })
        .await;
        let remote = Remote::new(&[down], None, Duration::from_secs(5), Duration::from_millis(1_500)).unwrap();
        let err = remote.score(&texts(&["好"])).await.unwrap_err();
        assert!(matches!(err, Stop::Unavailable { .. }) && err.to_string().contains("shutting_down"), "{err}");
    }
}
