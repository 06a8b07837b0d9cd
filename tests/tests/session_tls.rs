//! Remote-actor sessions over mutual TLS (`cluster.tls_dir`), with real `senti serve` processes
//! on loopback: nodes of one CA form sessions and share work, and what crosses the wire holds no
//! review text; a node of another CA never gets a session; plaintext and silent connections to
//! the actor port are refused without keeping a real node out.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use senti_system_tests::loopback::{wait_full_mesh, LoopbackNode};
use senti_system_tests::{senti_bin, test_dir, wait_until, Server};
use serde_json::Value;

/// A new TLS folder (`senti cluster tls --out`).
fn tls_dir(name: &str) -> PathBuf {
    let dir = test_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let output = std::process::Command::new(senti_bin()).args(["cluster", "tls", "--out"]).arg(&dir).output().unwrap();
    assert!(output.status.success(), "senti cluster tls failed: {}", String::from_utf8_lossy(&output.stderr));
    dir
}

fn env(dir: &Path) -> (&'static str, String) {
    ("SENTI_CLUSTER_TLS_DIR", dir.to_str().unwrap().to_owned())
}

/// A TCP relay from `listen` to `target` that keeps every byte it carries, both ways.
async fn tap(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(target).await else { continue };
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::spawn(pump(in_read, out_write, sink.clone()));
            tokio::spawn(pump(out_read, in_write, sink.clone()));
        }
    });
    (addr, seen)
}

/// Copies `from` to `to`, keeping a copy of every byte in `sink`.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    sink: Arc<Mutex<Vec<u8>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        sink.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn view(server: &Server) -> Value {
    reqwest::get(server.url("/v1/cluster")).await.unwrap().json().await.unwrap()
}

async fn metric(server: &Server, line_start: &str) -> f64 {
    let page = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    page.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_tls_between_nodes_of_one_ca_only() {
    let (ours, theirs) = (tls_dir("tls-ours"), tls_dir("tls-theirs"));
    let ids = ["tls-a", "tls-b", "tls-c"];
    let nodes = ids.map(LoopbackNode::new);
    // b advertises a relay in front of its actor port: a (the smaller id dials) reaches b
    // through it, so the test sees every byte of that session.
    let (relay, captured) = tap(SocketAddr::from(([127, 0, 0, 1], nodes[1].actor))).await;
    let relay_env = relay.to_string();
    let ours_env = env(&ours);
    let common = [(ours_env.0, ours_env.1.as_str()), ("SENTI__ADVANCED__REMOTE_HOP_COST_TOKENS", "0")];
    let b_env = [common[0], common[1], ("SENTI__CLUSTER__ACTOR_ADVERTISE", relay_env.as_str())];
    let seed = nodes[0].gossip;
    let (a, b, c) =
        tokio::join!(nodes[0].start(seed, &common), nodes[1].start(seed, &b_env), nodes[2].start(seed, &common));
    let servers = vec![a, b, c];
    wait_full_mesh(ids, &servers).await;

    // Work crosses the sessions: requests into a, answered by the others too.
    let marker = "这段评论只应在加密会话里出现";
    let client = reqwest::Client::new();
    let mut served_by_b = 0;
    for round in 0..40 {
        let requests = (0..6).map(|i| {
            let body = serde_json::json!({ "texts": [format!("{marker}，第{round}轮第{i}条，服务很好")] });
            client.post(servers[0].url("/v1/classify")).json(&body).send()
        });
        for response in futures_join(requests).await {
            let response = response.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            let by = response.headers()["x-senti-served-by"].to_str().unwrap().to_owned();
            served_by_b += usize::from(by.starts_with("tls-b/"));
        }
        if served_by_b >= 5 {
            break;
        }
    }
    assert!(served_by_b >= 5, "work entering a must also be served by b over the session (served {served_by_b})");
    let bytes = captured.lock().unwrap().clone();
    assert!(bytes.len() > 1_000, "the relay carried the session ({} bytes)", bytes.len());
    assert!(!contains(&bytes, marker.as_bytes()), "review text crossed the session readable");
    assert!(!contains(&bytes, senti_system_tests::TEST_COOKIE.as_bytes()), "the cookie crossed the session readable");
    assert!(!contains(&bytes, b"tls-b/"), "node names crossed the session readable");
    // TLS 1.3 application data records.
    assert!(contains(&bytes, &[0x17, 0x03, 0x03]), "no TLS records in the session");

    // A plaintext peer speaking to the actor port is refused at once.
    let actor_a = SocketAddr::from(([127, 0, 0, 1], nodes[0].actor));
    let mut plain = TcpStream::connect(actor_a).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    plain.write_all(&[0, 0, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).unwrap();
    // The answer is at most a TLS alert (record type 0x15), then the connection is closed.
    let mut answer = Vec::new();
    let read = plain.read_to_end(&mut answer);
    assert!(read.is_ok(), "a plaintext connection was kept open: {read:?}");
    assert!(answer.is_empty() || answer[0] == 0x15, "a plaintext peer got more than a TLS alert: {answer:?}");

    // Silent connections (a slowloris on the actor port) hold handshake slots only until the
    // timeout; a node started meanwhile still gets its sessions. Its id sorts first, so it is
    // the one that dials, into a's full listener.
    let silent: Vec<TcpStream> = (0..80).map(|_| TcpStream::connect(actor_a).unwrap()).collect();
    let d = LoopbackNode::new("tls-0");
    let d_server = d.start(seed, &common).await;
    let mut with_d = servers;
    with_d.push(d_server);
    wait_until(Duration::from_secs(30), "tls-0 to get sessions with every node", || async {
        let v = view(&with_d[3]).await;
        let remote: Vec<String> = v["routing"]["targets"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter(|t| t["local"] == false)
                    .filter_map(|t| t["target"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ["tls-a/", "tls-b/", "tls-c/"].iter().all(|p| remote.iter().any(|r| r.starts_with(p)))
    })
    .await;
    let a_server = &with_d[0];
    wait_until(Duration::from_secs(15), "a to close the silent connections at the handshake timeout", || async {
        metric(a_server, "senti_session_tls_refused_total{reason=\"timeout\"}").await >= 64.0
    })
    .await;
    let busy = metric(a_server, "senti_session_tls_refused_total{reason=\"busy\"}").await;
    assert!(busy >= 16.0, "connections beyond the handshake slots were refused at once: {busy}");
    drop(silent);

    // A node of another CA (right gossip key and cookie) is a gossip member but never gets a
    // session, and says why.
    let theirs_env = env(&theirs);
    let stranger = LoopbackNode::new("tls-e");
    let e_server = stranger.start(seed, &[(theirs_env.0, theirs_env.1.as_str())]).await;
    let started = Instant::now();
    wait_until(Duration::from_secs(20), "tls-e to report why it has no sessions", || async {
        let v = view(&e_server).await;
        v["membership"]["members"].as_array().is_some_and(|members| {
            members.iter().any(|m| m["node_id"] == "tls-a" && m["session"] == false && m["session_error"].is_string())
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(started.elapsed())).await;
    for server in &with_d {
        let v = view(server).await;
        let targets = v["routing"]["targets"].to_string();
        assert!(!targets.contains("tls-e/"), "a node of another CA became a routing target: {targets}");
    }
    let refused = metric(&with_d[0], "senti_session_tls_refused_total{reason=\"handshake\"}").await;
    let e_error = view(&e_server).await.to_string();
    assert!(refused >= 1.0 || e_error.contains("TLS handshake"), "the other CA's handshakes were refused: {e_error}");
    drop(e_server);
    drop(with_d);
}

/// Runs the requests concurrently and returns their results in order.
async fn futures_join<F, T>(requests: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = requests.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
