//! Hostile and careless HTTP clients against a real `senti serve` on loopback, over raw sockets
//! (issue 14, part 5): slowloris headers and bodies and idle keep-alive connections are closed
//! after their `[server]` timeouts while normal requests keep succeeding; past
//! `server.max_connections` new connections get a 503 while an open keep-alive one is still
//! answered; only `application/json` is JSON; the cluster view and metrics need the token.
//!
//! The timeouts are set short through the environment (`SENTI__SERVER__*`), so each wait here
//! is a second or two; every bound asserted leaves a second of slack for a loaded machine.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use senti_system_tests::{wait_until, Server};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short timeouts: headers 1 s, bodies 2 s, idle 3 s.
const SHORT_TIMEOUTS: [(&str, &str); 3] = [
    ("SENTI__SERVER__HEADER_TIMEOUT_MS", "1000"),
    ("SENTI__SERVER__BODY_TIMEOUT_MS", "2000"),
    ("SENTI__SERVER__IDLE_TIMEOUT_MS", "3000"),
];

const BODY: &str = r#"{"texts":["这家酒店非常好，服务周到"]}"#;

fn classify_request(content_type: &str) -> String {
    format!(
        "POST /v1/classify HTTP/1.1\r\nHost: senti\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    )
}

fn get_request(path: &str, token_opt: Option<&str>) -> String {
    let auth = token_opt.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: senti\r\n{auth}\r\n")
}

/// Reads one response (headers and a `Content-Length` body): status and body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .expect("a response within 30 s")
            .expect("read");
        assert!(n > 0, "connection closed before a response; got {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let length: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse().ok())
        .expect("a content-length");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed inside a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (status, String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned())
}

/// One request on a new connection.
async fn once(server: &Server, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut stream).await
}

/// How long until the server closes `stream` (EOF or reset), if within `limit`. Whatever the
/// server sends before closing is read and dropped.
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), since: Instant, limit: Duration) -> Option<Duration> {
    let mut chunk = [0u8; 1024];
    loop {
        let left = limit.checked_sub(since.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

fn error_code(body: &str) -> Value {
    serde_json::from_str::<Value>(body).unwrap_or_else(|e| panic!("{e}: {body}"))["error"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_closed_while_others_are_served() {
    let mut server = Server::start(&[], &SHORT_TIMEOUTS).await;

    // Half a header, then nothing.
    let mut half_header = TcpStream::connect(server.addr).await.unwrap();
    half_header.write_all(b"POST /v1/classify HTTP/1.1\r\nHost: senti\r\nContent-Ty").await.unwrap();
    let half_header_sent = Instant::now();
    // Whole headers, then a body byte every 300 ms: done in 30 s if allowed.
    let mut trickle = TcpStream::connect(server.addr).await.unwrap();
    trickle
        .write_all(b"POST /v1/classify HTTP/1.1\r\nHost: senti\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let trickle_started = Instant::now();
    let (mut trickle_read, mut trickle_write) = trickle.into_split();
    let trickler = tokio::spawn(async move {
        for _ in 0..100 {
            if trickle_write.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let trickle_closed =
        tokio::spawn(async move { closed_within(&mut trickle_read, trickle_started, Duration::from_secs(40)).await });
    // A kept-alive connection that goes quiet after one request.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(classify_request("application/json").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut idle).await.0, 200);
    let idle_since = Instant::now();

    // Meanwhile, ordinary requests on their own connections all succeed.
    let served = {
        let addr = server.addr;
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut statuses = Vec::new();
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                let response = client
                    .post(format!("http://{addr}/v1/classify"))
                    .header("content-type", "application/json")
                    .body(BODY)
                    .send()
                    .await;
                statuses.push(response.map(|r| r.status().as_u16()).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            statuses
        })
    };

    let header_closed = closed_within(&mut half_header, half_header_sent, Duration::from_secs(10))
        .await
        .expect("a half-sent header is cut off");
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(2500)).contains(&header_closed),
        "server.header_timeout_ms = 1000, closed after {header_closed:?}"
    );
    let idle_closed = closed_within(&mut idle, idle_since, Duration::from_secs(10)).await.expect("idle is cut off");
    assert!(
        (Duration::from_millis(2900)..Duration::from_millis(4500)).contains(&idle_closed),
        "server.idle_timeout_ms = 3000, closed after {idle_closed:?}"
    );
    let trickle_closed = trickle_closed.await.unwrap().expect("a trickled body is cut off");
    trickler.abort();
    assert!(
        (Duration::from_millis(1900)..Duration::from_millis(3500)).contains(&trickle_closed),
        "server.body_timeout_ms = 2000, closed after {trickle_closed:?}"
    );
    let statuses = served.await.unwrap();
    assert!(statuses.len() >= 5, "{statuses:?}");
    assert!(statuses.iter().all(|&s| s == 200), "ordinary requests failed meanwhile: {statuses:?}");

    // The timeouts count what they cut.
    let (_, metrics) = once(&server, &get_request("/metrics", None)).await;
    for phase in ["header", "body", "idle"] {
        let line = format!("senti_http_connection_timeouts_total{{phase=\"{phase}\"}}");
        assert!(metrics.contains(&line), "missing {line}");
    }

    // A stalled client cannot hold a drain up for longer than its timeout.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(b"GET /healthz HTTP/1.1\r\nHo").await.unwrap();
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(10)).await, Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(5), "drain took {:?}", signalled.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_new_connections_get_503_and_open_ones_are_served() {
    let server = Server::start(&[], &[("SENTI__SERVER__MAX_CONNECTIONS", "4")]).await;
    // Server::start's readiness probes may still hold a slot for a moment: wait until a fresh
    // connection is the only one.
    wait_until(Duration::from_secs(10), "readiness probes' connections to close", || async {
        let (_, metrics) = once(&server, &get_request("/metrics", None)).await;
        metrics.lines().any(|l| l == "senti_http_connections 1")
    })
    .await;

    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(classify_request("application/json").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut kept).await.0, 200);
    let mut holders = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(get_request("/healthz", None).as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut stream).await.0, 200);
        holders.push(stream);
    }

    let (status, body) = once(&server, &classify_request("application/json")).await;
    assert_eq!(status, 503, "{body}");
    let error = error_code(&body);
    assert_eq!(error["code"], "too_many_connections", "{body}");
    assert_eq!(error["limit"]["name"], "server.max_connections");
    assert_eq!(error["limit"]["value"], 4);

    // The open keep-alive connection is still answered.
    for _ in 0..3 {
        kept.write_all(classify_request("application/json").as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut kept).await.0, 200);
    }
    // A freed slot is taken again.
    drop(holders.pop());
    wait_until(Duration::from_secs(10), "a freed slot to serve a new connection", || async {
        once(&server, &get_request("/healthz", None)).await.0 == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_json_is_json_and_the_cluster_view_needs_the_token() {
    let server = Server::start(&[], &[("SENTI_AUTH_TOKENS", "s3cret")]).await;
    let authorized = |request: String| request.replacen("\r\n\r\n", "\r\nAuthorization: Bearer s3cret\r\n\r\n", 1);

    for content_type in ["application/evil+json", "text/plain", "application/json; charset=latin1"] {
        let (status, body) = once(&server, &authorized(classify_request(content_type))).await;
        assert_eq!(status, 415, "{content_type}: {body}");
        assert_eq!(error_code(&body)["code"], "unsupported_media_type");
    }
    let (status, body) = once(&server, &authorized(classify_request("application/json; charset=utf-8"))).await;
    assert_eq!(status, 200, "{body}");

    for path in ["/v1/cluster", "/metrics"] {
        let (status, body) = once(&server, &get_request(path, None)).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(error_code(&body)["code"], "missing_token");
        let (status, body) = once(&server, &get_request(path, Some("wrong"))).await;
        assert_eq!(status, 403, "{path}: {body}");
        let (status, body) = once(&server, &get_request(path, Some("s3cret"))).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(once(&server, &get_request(path, None)).await.0, 200, "{path} stays open for probes");
    }
}
