//! A real cluster on loopback: three `senti` processes that find each other through gossip,
//! route across nodes (and tell each other when their actors run out of work), keep answering while one node hangs (SIGSTOP) and another dies (SIGKILL),
//! and take the restarted node back. A node with the wrong cookie gets no work (its gossip key is
//! right, so it is listed, but no session forms); tests/tests/gossip_security.rs has the node
//! with the wrong gossip key.

use std::collections::HashMap;
use std::time::Duration;

use senti_system_tests::{free_port, shared_key_file, wait_until, Server, TEST_COOKIE};
use serde_json::Value;

/// One node of a test cluster.
struct Node {
    id: String,
    gossip: u16,
    actor: u16,
}

impl Node {
    fn new(id: &str) -> Self {
        Self { id: id.to_owned(), gossip: free_port(), actor: free_port() }
    }

    /// Starts it with the process's shared gossip key file and `cookie`.
    async fn start(&self, seed: u16, cookie: &str) -> Server {
        let key_file = shared_key_file().to_str().unwrap().to_owned();
        let gossip = format!("127.0.0.1:{}", self.gossip);
        let actor = format!("127.0.0.1:{}", self.actor);
        let seeds = format!("[\"127.0.0.1:{seed}\"]");
        let env = [
            ("SENTI__SERVER__NODE_ID", self.id.as_str()),
            ("SENTI__ENGINE__ACTORS", "1"),
            ("SENTI__CLUSTER__ENABLED", "true"),
            ("SENTI_CLUSTER_COOKIE", cookie),
            ("SENTI_CLUSTER_KEY_FILE", key_file.as_str()),
            ("SENTI__CLUSTER__GOSSIP_LISTEN", gossip.as_str()),
            ("SENTI__CLUSTER__ACTOR_LISTEN", actor.as_str()),
            ("SENTI__CLUSTER__SEEDS", seeds.as_str()),
            ("SENTI__ROUTING__ATTEMPT_TIMEOUT_MS", "400"),
            ("RUST_LOG", "warn"),
        ];
        Server::start(&[], &env).await
    }
}

async fn cluster_view(server: &Server) -> Value {
    reqwest::get(server.url("/v1/cluster")).await.unwrap().json().await.unwrap()
}

fn remote_targets(view: &Value) -> Vec<String> {
    view["routing"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["local"] == false)
        .map(|t| t["target"].as_str().unwrap().to_owned())
        .collect()
}

/// Sends `n` requests with at most `concurrency` in flight; returns served-by counts and the
/// statuses that were not 200.
async fn load(server: &Server, n: usize, concurrency: usize) -> (HashMap<String, usize>, Vec<u16>) {
    let (served, failures, _) = timed_load(server, n, concurrency).await;
    (served, failures)
}

/// [`load`], plus the slowest latency seen.
async fn timed_load(server: &Server, n: usize, concurrency: usize) -> (HashMap<String, usize>, Vec<u16>, Duration) {
    let client = reqwest::Client::new();
    let url = server.url("/v1/classify");
    let mut served = HashMap::new();
    let mut failures = Vec::new();
    let mut pending = tokio::task::JoinSet::new();
    let mut slowest_early = Duration::ZERO;
    // Texts never repeat within the process: a repeated one is answered by the entry node's result
    // cache (`x-senti-served-by: cache`), and this test is about where the model runs.
    static SENT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    for _ in 0..n {
        let i = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if pending.len() >= concurrency {
            let (by, status, took) = pending.join_next().await.unwrap().unwrap();
            slowest_early = slowest_early.max(took);
            record(&mut served, &mut failures, by, status);
        }
        let client = client.clone();
        let url = url.clone();
        pending.spawn(async move {
            let body = serde_json::json!({"texts": [format!("第{i}次入住，房间干净，服务很好，推荐"), format!("太差了，再也不会来了{i}")]});
            let started = std::time::Instant::now();
            let response = client.post(&url).json(&body).send().await.unwrap();
            let by = response.headers().get("x-senti-served-by").map(|v| v.to_str().unwrap().to_owned());
            (by, response.status().as_u16(), started.elapsed())
        });
    }
    let mut slowest = slowest_early;
    while let Some(joined) = pending.join_next().await {
        let (by, status, took) = joined.unwrap();
        slowest = slowest.max(took);
        record(&mut served, &mut failures, by, status);
    }
    (served, failures, slowest)
}

fn record(served: &mut HashMap<String, usize>, failures: &mut Vec<u16>, by: Option<String>, status: u16) {
    if status == 200 {
        let node = by.unwrap_or_default().split('/').next().unwrap_or_default().to_owned();
        *served.entry(node).or_default() += 1;
    } else {
        failures.push(status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_work_and_survive_a_hang_and_a_crash() {
    let (a, b, c) = (Node::new("n-a"), Node::new("n-b"), Node::new("n-c"));
    let server_a = a.start(a.gossip, TEST_COOKIE).await;
    let server_b = b.start(a.gossip, TEST_COOKIE).await;
    let mut server_c = c.start(a.gossip, TEST_COOKIE).await;

    wait_until(Duration::from_secs(30), "n-a to route to both other nodes", || async {
        let view = cluster_view(&server_a).await;
        let remote = remote_targets(&view);
        remote.contains(&"n-b/a0".to_owned()) && remote.contains(&"n-c/a0".to_owned())
    })
    .await;
    let view = cluster_view(&server_a).await;
    let members = view["membership"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{view:#}");
    assert!(members.iter().all(|m| m["ready"] == true && m["session"] == true), "{view:#}");
    // Every member announces its model and the variant its actors run (the embedded default's).
    assert!(
        members.iter().all(|m| m["model"].as_str().is_some_and(|v| v.contains('@')) && m["variant"] == "int8"),
        "{view:#}"
    );

    // Work entering at one node is served by actors on every node.
    let (served, failures) = load(&server_a, 90, 12).await;
    assert!(failures.is_empty(), "{failures:?}");
    for node in ["n-a", "n-b", "n-c"] {
        assert!(served.contains_key(node), "{node} served nothing: {served:?}");
    }
    // n-b's and n-c's actors ran out of work (at the latest when the load ended), and their
    // gateways said so to the others (idle notices, the gateway message that crosses nodes).
    wait_until(Duration::from_secs(5), "n-b and n-c to send idle notices, n-a to hear them", || async {
        server_a.counter("senti_idle_notices_total", "event=\"received\"").await > 0.0
            && server_b.counter("senti_idle_notices_total", "event=\"sent\"").await > 0.0
            && server_c.counter("senti_idle_notices_total", "event=\"sent\"").await > 0.0
    })
    .await;

    // n-b hangs (still a TCP peer, silent): attempts on it time out and fail over; gossip then
    // declares it dead and it leaves the rotation. No request fails and none waits for long.
    server_b.signal(nix::sys::signal::Signal::SIGSTOP);
    let (_, failures, slowest) = timed_load(&server_a, 40, 8).await;
    assert!(failures.is_empty(), "requests failed while n-b hung: {failures:?}");
    assert!(slowest < Duration::from_secs(3), "a request waited {slowest:?} while n-b hung");
    wait_until(Duration::from_secs(15), "n-b to be declared dead", || async {
        let view = cluster_view(&server_a).await;
        !remote_targets(&view).iter().any(|t| t.starts_with("n-b/"))
            && view["membership"]["dead"].as_array().unwrap().iter().any(|d| d["node_id"] == "n-b")
    })
    .await;

    // n-c dies outright: its session drops, in-flight attempts fail over.
    let pending = tokio::spawn({
        let url = server_a.url("/v1/classify");
        async move {
            let client = reqwest::Client::new();
            let mut statuses = Vec::new();
            for i in 0..30 {
                let body = serde_json::json!({"texts": [format!("物流很快{i}"), format!("一般般吧{i}")]});
                statuses.push(client.post(&url).json(&body).send().await.unwrap().status().as_u16());
            }
            statuses
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server_c.child.kill().unwrap();
    let statuses = pending.await.unwrap();
    assert!(statuses.iter().all(|&s| s == 200), "requests failed when n-c died: {statuses:?}");
    let (served, failures) = load(&server_a, 20, 4).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(served.keys().collect::<Vec<_>>(), ["n-a"], "only n-a is left");
    let _ = server_c.wait_exit(Duration::from_secs(5)).await;
    server_b.signal(nix::sys::signal::Signal::SIGCONT);

    // n-c restarts (same id and ports, a new generation): it rejoins and takes load again.
    let _server_c = c.start(a.gossip, TEST_COOKIE).await;
    wait_until(Duration::from_secs(30), "the restarted n-c to be a target again", || async {
        remote_targets(&cluster_view(&server_a).await).contains(&"n-c/a0".to_owned())
    })
    .await;
    let (served, failures) = load(&server_a, 60, 12).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(served.contains_key("n-c"), "the restarted n-c took no load: {served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_cookie_gets_no_work() {
    let (a, b) = (Node::new("w-a"), Node::new("w-b"));
    let server_a = a.start(a.gossip, TEST_COOKIE).await;
    let _server_b = b.start(a.gossip, "another-cookie-of-16-chars").await;
    // Many gossip rounds (200 ms each) and dial rounds (500 ms): the gossip key is the same, so
    // the nodes may list each other, but the session handshake refuses the other cookie, so
    // neither ever routes to the other.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for server in [&server_a, &_server_b] {
        let view = cluster_view(server).await;
        assert!(remote_targets(&view).is_empty(), "{view:#}");
    }
    let (served, failures) = load(&server_a, 10, 4).await;
    assert!(failures.is_empty());
    assert_eq!(served.keys().collect::<Vec<_>>(), ["w-a"]);
}
