//! A cluster of `senti` processes on loopback for the monitoring tests: nodes started together,
//! joined through the first node's gossip address, and traffic to send them, including traffic
//! that makes every series of `/metrics` appear (some only exist after their first event).
//! (tests/tests/cluster.rs keeps its own copy of the node setup, next to the failures it injects.)

use std::time::Duration;

use crate::{free_port, shared_key_file, wait_until, Server, TEST_COOKIE};

/// One node's identity and cluster ports.
pub struct LoopbackNode {
    /// `server.node_id`.
    pub id: String,
    /// UDP gossip port.
    pub gossip: u16,
    /// TCP remote-actor port.
    pub actor: u16,
}

impl LoopbackNode {
    /// A node with free ports.
    pub fn new(id: &str) -> Self {
        Self { id: id.to_owned(), gossip: free_port(), actor: free_port() }
    }

    /// Starts it with one inference actor, joining through `seed`, with `extra` environment
    /// (`SENTI__...` overrides) on top; waits until it is ready. Its gossip keys are the
    /// process's [`shared_key_file`] unless `extra` sets `SENTI_CLUSTER_KEY_FILE`.
    pub async fn start(&self, seed: u16, extra: &[(&str, &str)]) -> Server {
        let key_file = shared_key_file().to_str().expect("the repository path is UTF-8").to_owned();
        let gossip = format!("127.0.0.1:{}", self.gossip);
        let actor = format!("127.0.0.1:{}", self.actor);
        let seeds = format!("[\"127.0.0.1:{seed}\"]");
        let mut env = vec![
            ("SENTI__SERVER__NODE_ID", self.id.as_str()),
            ("SENTI__ENGINE__ACTORS", "1"),
            ("SENTI__CLUSTER__ENABLED", "true"),
            ("SENTI_CLUSTER_COOKIE", TEST_COOKIE),
            ("SENTI_CLUSTER_KEY_FILE", key_file.as_str()),
            ("SENTI__CLUSTER__GOSSIP_LISTEN", gossip.as_str()),
            ("SENTI__CLUSTER__ACTOR_LISTEN", actor.as_str()),
            ("SENTI__CLUSTER__SEEDS", seeds.as_str()),
            ("RUST_LOG", "warn"),
        ];
        env.extend_from_slice(extra);
        Server::start(&[], &env).await
    }
}

/// Starts three nodes at once (they load their models in parallel), each with its `extra`
/// environment, all seeded with the first one's gossip address, and waits until every node
/// routes to an actor of every other node.
pub async fn start_cluster(ids: [&str; 3], extra: [&[(&str, &str)]; 3]) -> (Vec<LoopbackNode>, Vec<Server>) {
    let nodes = ids.map(LoopbackNode::new);
    let seed = nodes[0].gossip;
    let (a, b, c) =
        tokio::join!(nodes[0].start(seed, extra[0]), nodes[1].start(seed, extra[1]), nodes[2].start(seed, extra[2]));
    let servers = vec![a, b, c];
    wait_full_mesh(ids, &servers).await;
    (nodes.into(), servers)
}

/// Waits until every node routes to an actor of every other node (`ids` in `servers` order).
pub async fn wait_full_mesh(ids: [&str; 3], servers: &[Server]) {
    for server in servers {
        wait_until(Duration::from_secs(30), "every node to route to every other node", || async {
            let Ok(response) = reqwest::get(server.url("/v1/cluster")).await else { return false };
            let Ok(view) = response.json::<serde_json::Value>().await else { return false };
            let remote: Vec<&str> = view["routing"]["targets"]
                .as_array()
                .map(|targets| {
                    targets.iter().filter(|t| t["local"] == false).filter_map(|t| t["target"].as_str()).collect()
                })
                .unwrap_or_default();
            ids.iter()
                .filter(|id| view["node_id"] != **id)
                .all(|id| remote.iter().any(|target| target.starts_with(&format!("{id}/"))))
        })
        .await;
    }
}

/// Settings under which the rare events happen within seconds, on every node: queues of four
/// texts (requests of four texts refuse each other: queue rejections), an ejection at the first
/// failed attempt and short attempt timeouts (retries and ejections when a node hangs).
const EVENTFUL: &[(&str, &str)] = &[
    ("SENTI__ADVANCED__QUEUE_CAPACITY", "4"),
    ("SENTI__LIMITS__MAX_TEXTS", "4"),
    ("SENTI__ADVANCED__EJECT_CONSECUTIVE_FAILURES", "1"),
    ("SENTI__ROUTING__ATTEMPT_TIMEOUT_MS", "400"),
    // Rejected and timed-out attempts are expected here: no warning for each.
    ("RUST_LOG", "error"),
];
/// The first node hedges every attempt slower than the median and than its queue explains (hedges).
const HEDGING: &[(&str, &str)] = &[
    ("SENTI__ADVANCED__HEDGE_BUDGET_RATIO", "1.0"),
    ("SENTI__ADVANCED__HEDGE_QUANTILE", "0.5"),
    ("SENTI__ADVANCED__HEDGE_MIN_DELAY_MS", "1"),
];
/// The second never hedges: its attempts on a hung node run into their timeout (a hedge would
/// answer first and abandon them, which counts as no failure), so they retry and eject.
const NO_HEDGES: &[(&str, &str)] = &[("SENTI__ADVANCED__HEDGE_BUDGET_RATIO", "0")];

/// [`start_cluster`] with the settings [`traffic_with_every_event`] needs.
pub async fn start_eventful_cluster(ids: [&str; 3]) -> (Vec<LoopbackNode>, Vec<Server>) {
    let (hedging, no_hedges) = ([EVENTFUL, HEDGING].concat(), [EVENTFUL, NO_HEDGES].concat());
    start_cluster(ids, [&hedging, &no_hedges, EVENTFUL]).await
}

/// Traffic after which every series senti exports exists on some node of a cluster from
/// [`start_eventful_cluster`]: requests, attempts of both hops, batches, hedges, queue
/// rejections, retries and an ejection. The third node hangs for a moment (SIGSTOP) and comes
/// back; returns once every node routes to every other again.
pub async fn traffic_with_every_event(ids: [&str; 3], servers: &[Server]) {
    // One-text requests into the first node: local and remote attempts, batches, and 20 attempts
    // or more seen by its gateway (the hedge delay's minimum sample).
    let steady = load(&servers[0], 80, 6, 1).await;
    assert!(steady.failures.is_empty(), "{steady:?}");
    // The second node stalls for 200 ms (SIGSTOP, well within the attempt timeout): the first
    // node's attempts on it are slower than their queue explains, so it hedges them on the third.
    servers[1].signal(nix::sys::signal::Signal::SIGSTOP);
    let resume = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        servers[1].signal(nix::sys::signal::Signal::SIGCONT);
    };
    // Two texts per request: the first of each is in the result cache since the steady load.
    let (stalled, ()) = tokio::join!(load(&servers[0], 24, 6, 2), resume);
    assert!(stalled.failures.is_empty(), "{stalled:?}");
    // Four-text requests into two nodes at once: with queues of four texts, queue rejections
    // (some requests end as 429: that is the point).
    let (at_a, at_b) = tokio::join!(load(&servers[0], 40, 12, 4), load(&servers[1], 30, 8, 4));
    assert!(at_a.ok > 0 && at_b.ok > 0, "no request succeeded: {at_a:?} {at_b:?}");
    // The third node hangs: the second's attempts on it time out after 400 ms, are retried
    // elsewhere, and eject it.
    servers[2].signal(nix::sys::signal::Signal::SIGSTOP);
    let hung = load(&servers[1], 24, 8, 1).await;
    servers[2].signal(nix::sys::signal::Signal::SIGCONT);
    assert!(hung.ok > 0, "nothing succeeded while a node hung: {hung:?}");
    wait_full_mesh(ids, servers).await;
}

/// Outcome of [`load`]: statuses by count.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Requests answered 200.
    pub ok: usize,
    /// Statuses other than 200.
    pub failures: Vec<u16>,
}

/// Sends `n` classify requests of `texts` texts each to `server`, at most `concurrency` in flight.
pub async fn load(server: &Server, n: usize, concurrency: usize, texts: usize) -> LoadReport {
    let client = reqwest::Client::new();
    let url = server.url("/v1/classify");
    let mut report = LoadReport::default();
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..n {
        if pending.len() >= concurrency {
            record(&mut report, pending.join_next().await.unwrap().unwrap());
        }
        let (client, url) = (client.clone(), url.clone());
        pending.spawn(async move {
            let body: Vec<String> = (0..texts).map(|t| format!("第{i}次入住，房间{t}号干净，服务很好，推荐")).collect();
            client.post(&url).json(&serde_json::json!({ "texts": body })).send().await.unwrap().status().as_u16()
        });
    }
    while let Some(joined) = pending.join_next().await {
        record(&mut report, joined.unwrap());
    }
    report
}

fn record(report: &mut LoadReport, status: u16) {
    if status == 200 {
        report.ok += 1;
    } else {
        report.failures.push(status);
    }
}
