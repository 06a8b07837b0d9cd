//! The rolling model upgrade of docs/operations.md, on a real 3-node loopback cluster under
//! load: each node in turn is stopped with SIGTERM (it drains), and started again on the new
//! model. Clients send to every node and, as the procedure asks, try the next node when one
//! cannot be reached or answers 503 (draining). Zero requests may fail.
//!
//! The "new model" is the default model's files with the next patch version in model.toml: the
//! same tokenizer, window and labels (the same `compat`), so while versions are mixed every node
//! may route to every other, old nodes prefer the new version, and a request that asks for a
//! version reaches it from any node. That exercises the whole procedure (drain, mixed versions,
//! preference, requests that ask for a version, what `/v1/cluster` and the metrics show) without
//! shipping a second model.
//!
//! The same clients also watch a gossip key rotation, step by step as docs/security.md gives it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use senti_system_tests::loopback::{wait_full_mesh, LoopbackNode};
use senti_system_tests::{free_port, repo_root, wait_until_ok, Server};
use serde_json::{json, Value};

const IDS: [&str; 3] = ["u-a", "u-b", "u-c"];
const CLIENTS: usize = 4;
/// Draining nodes answer many 503s by design: no warning for each.
const QUIET: &[(&str, &str)] = &[("RUST_LOG", "error")];

/// A copy of the default model whose model.toml says the next patch `version`; removed on drop.
struct NextModel {
    dir: PathBuf,
    version: String,
}

impl NextModel {
    fn new() -> Self {
        let shipped = repo_root().join("models/senti-zh-small");
        let dir = std::env::temp_dir().join(format!("senti-next-model-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut version = String::new();
        for entry in std::fs::read_dir(&shipped).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_owned();
            if name == "model.toml" {
                let manifest = std::fs::read_to_string(&path).unwrap();
                let line = manifest.lines().find(|l| l.starts_with("version = ")).expect("model.toml has a version");
                let shipped_version = line.trim_start_matches("version = ").trim_matches('"');
                let (head, patch) = shipped_version.rsplit_once('.').expect("a dotted version");
                version = format!("{head}.{}", patch.parse::<u64>().expect("a numeric patch") + 1);
                std::fs::write(dir.join(&name), manifest.replace(line, &format!("version = \"{version}\""))).unwrap();
            } else if path.is_file() {
                std::fs::copy(&path, dir.join(&name)).unwrap();
            }
        }
        Self { dir, version }
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for NextModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Outcome {
    ok: usize,
    /// Requests that no node answered with 200: (status or 0 for no answer, body).
    failed: Vec<(u16, String)>,
    /// Requests answered by the new version.
    by_new: usize,
}

/// One request, tried on each node in turn from `first`, moving on when a node cannot be reached
/// or answers 503: what a client (or a balancer) does during a rolling upgrade.
async fn classify_with_failover(
    client: &reqwest::Client,
    addrs: &[SocketAddr],
    first: usize,
    i: usize,
) -> Result<Value, (u16, String)> {
    let mut last = (0, String::new());
    for k in 0..addrs.len() {
        let addr = addrs[(first + k) % addrs.len()];
        let body = json!({ "texts": [format!("第{i}次入住，房间干净，服务很好，推荐")] });
        match client.post(format!("http://{addr}/v1/classify")).json(&body).send().await {
            Ok(response) if response.status() == 200 => return Ok(response.json().await.unwrap()),
            Ok(response) if response.status() == 503 => last = (503, response.text().await.unwrap_or_default()),
            Ok(response) => return Err((response.status().as_u16(), response.text().await.unwrap_or_default())),
            // Refused, or a pooled keep-alive connection the stopping node closed as the request
            // went out (HTTP/1.1's race): classifying is idempotent, so the next node is asked.
            Err(err) => last = (0, err.to_string()),
        }
    }
    Err(last)
}

/// [`CLIENTS`] closed-loop clients sending to every node with [`classify_with_failover`] until
/// stopped; `version` is the model version whose answers are counted in [`Outcome::by_new`].
struct Load {
    addrs: Arc<RwLock<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    clients: tokio::task::JoinSet<Outcome>,
}

impl Load {
    fn start(servers: &[Server], version: Option<String>) -> Load {
        let addrs = Arc::new(RwLock::new(servers.iter().map(|s| s.addr).collect::<Vec<_>>()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = tokio::task::JoinSet::new();
        for client_index in 0..CLIENTS {
            let (addrs, stop, version) = (addrs.clone(), stop.clone(), version.clone());
            clients.spawn(async move {
                let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
                let mut outcome = Outcome::default();
                let mut i = client_index;
                while !stop.load(Ordering::Relaxed) {
                    let now: Vec<SocketAddr> = addrs.read().unwrap().clone();
                    match classify_with_failover(&client, &now, i, i).await {
                        Ok(body) => {
                            outcome.ok += 1;
                            let new = version.as_deref().is_some_and(|v| body["model"]["version"] == v);
                            outcome.by_new += usize::from(new);
                        }
                        Err(failure) => outcome.failed.push(failure),
                    }
                    i += CLIENTS;
                }
                outcome
            });
        }
        Load { addrs, stop, clients }
    }

    /// Node `index` now listens at `addr` (a restart).
    fn moved(&self, index: usize, addr: SocketAddr) {
        self.addrs.write().unwrap()[index] = addr;
    }

    /// Stops the clients and adds up what they saw.
    async fn stop(mut self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Outcome::default();
        while let Some(outcome) = self.clients.join_next().await {
            let outcome = outcome.unwrap();
            total.ok += outcome.ok;
            total.by_new += outcome.by_new;
            total.failed.extend(outcome.failed);
        }
        total
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_under_load_fails_no_request() {
    let next = NextModel::new();
    let nodes = IDS.map(LoopbackNode::new);
    let seed = nodes[0].gossip;
    let (a, b, c) = tokio::join!(nodes[0].start(seed, QUIET), nodes[1].start(seed, QUIET), nodes[2].start(seed, QUIET));
    let mut servers = vec![a, b, c];
    wait_full_mesh(IDS, &servers).await;

    let load = Load::start(&servers, Some(next.version.clone()));
    let new_model = next.path().to_str().unwrap().to_owned();
    for (index, node) in nodes.iter().enumerate() {
        // Drain and stop the old process; start the new one on the same node id and ports.
        servers[index].signal(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(servers[index].wait_exit(Duration::from_secs(30)).await, Some(0), "{} drains and exits 0", node.id);
        let restarted =
            node.start(seed_for(&nodes, index), &[QUIET, &[("SENTI__MODEL__PATH", new_model.as_str())]].concat()).await;
        load.moved(index, restarted.addr);
        servers[index] = restarted;

        // Mixed versions: the upgraded node answers a request for the new version; a node still
        // on the old one routes such a request to the new version's actors (once gossip told
        // it), prefers them for requests that name no version, shows both versions in
        // `/v1/cluster` and its metrics, and refuses a version nobody serves.
        let asked = format!("senti-zh-small@{}", next.version);
        let (status, body) = ask(&servers[index], Some(&asked)).await;
        assert_eq!((status, &body["model"]["version"]), (200, &json!(next.version)), "{body}");
        if let Some(old) = servers.get(index + 1) {
            wait_until_ok(Duration::from_secs(10), "the old node routes to the new version", async || {
                match ask(old, Some(&asked)).await {
                    (200, body) if body["model"]["version"] == json!(next.version) => Ok(()),
                    (status, body) => Err(format!("{status} {body}")),
                }
            })
            .await;
            wait_until_ok(Duration::from_secs(10), "the old node prefers the new version", async || {
                match ask(old, None).await {
                    (200, body) if body["model"]["version"] == json!(next.version) => Ok(()),
                    (status, body) => Err(format!("{status} {body}")),
                }
            })
            .await;
            let (status, body) = ask(old, Some("senti-zh-small@0.0.1")).await;
            assert_eq!((status, &body["error"]["code"]), (404, &json!("model_not_served")), "{body}");
            let view: Value = reqwest::get(old.url("/v1/cluster")).await.unwrap().json().await.unwrap();
            let mut versions: Vec<&str> =
                view["membership"]["members"].as_array().unwrap().iter().filter_map(|m| m["model"].as_str()).collect();
            versions.sort_unstable();
            versions.dedup();
            assert_eq!(versions.len(), 2, "both versions in /v1/cluster: {view:#}");
            let metrics = reqwest::get(old.url("/metrics")).await.unwrap().text().await.unwrap();
            for version in versions {
                let series = format!("senti_cluster_members{{model=\"{version}\"}}");
                assert!(metrics.lines().any(|l| l.starts_with(&series)), "{series} in the metrics");
            }
        }
    }
    // Every node on the new version routes to every other again.
    wait_full_mesh(IDS, &servers).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total = load.stop().await;
    eprintln!(
        "rolling upgrade of 3 nodes, {CLIENTS} closed-loop clients: {} requests answered ({} by the new version), {} failed",
        total.ok,
        total.by_new,
        total.failed.len()
    );
    assert!(total.failed.is_empty(), "{} requests failed during the upgrade: {:?}", total.failed.len(), total.failed);
    assert!(total.ok >= 50, "too little traffic to mean anything: {total:?}");
    assert!(total.by_new > 0, "the new version answered nothing: {total:?}");
    for server in &servers {
        let (status, body) = ask(server, None).await;
        assert_eq!(
            (status, &body["model"]["version"]),
            (200, &json!(next.version)),
            "{} serves the new version",
            server.addr
        );
    }
}

/// One text to `server`, asking for `model` if given: the status and the body.
async fn ask(server: &Server, model: Option<&str>) -> (u16, Value) {
    let reply = reqwest::Client::new()
        .post(server.url("/v1/classify"))
        .json(&json!({ "texts": ["好"], "model": model }))
        .send()
        .await
        .unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

/// The gossip seed for a node restarting: another node's (a node cannot seed itself back in).
fn seed_for(nodes: &[LoopbackNode; 3], index: usize) -> u16 {
    nodes[(index + 1) % nodes.len()].gossip
}

/// The gossip keys of a key file, in order (`sgk1-...` lines).
fn key_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().filter(|l| l.starts_with("sgk1-")).map(str::to_owned).collect()
}

/// Rewrites a key file with exactly `keys`, first key first (mode 600 kept: the file exists).
fn write_keys(path: &Path, keys: &[String]) {
    std::fs::write(path, keys.iter().map(|k| format!("{k}\n")).collect::<String>()).unwrap();
}

/// The rotation of docs/security.md on a running 3-node cluster under load: each node has its own
/// key file; add the new key everywhere, make it first everywhere, remove the old one everywhere,
/// each step a rolling restart. Zero requests may fail, and gossip never splits: no node ever
/// refuses a datagram for a key it does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossip_key_rotation_under_load_fails_no_request() {
    const IDS: [&str; 3] = ["k-a", "k-b", "k-c"];
    let dir = senti_system_tests::test_dir();
    let files: Vec<PathBuf> = IDS.iter().map(|id| dir.join(format!("rotation-{id}.key"))).collect();
    let first = senti_system_tests::new_key_file(&dir);
    for file in &files {
        std::fs::copy(&first, file).unwrap();
    }
    let old_key = key_lines(&first);
    let added = senti_system_tests::new_key_file(&dir);
    let new_key = key_lines(&added);
    assert_ne!(old_key, new_key);
    let env = |i: usize| -> Vec<(&'static str, String)> {
        vec![("RUST_LOG", "error".to_owned()), ("SENTI_CLUSTER_KEY_FILE", files[i].to_str().unwrap().to_owned())]
    };
    let nodes = IDS.map(LoopbackNode::new);
    let start = async |i: usize, seed: u16| {
        let env = env(i);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        nodes[i].start(seed, &env).await
    };
    let seed = nodes[0].gossip;
    let (a, b, c) = tokio::join!(start(0, seed), start(1, seed), start(2, seed));
    let mut servers = vec![a, b, c];
    wait_full_mesh(IDS, &servers).await;

    let load = Load::start(&servers, None);
    let steps = [
        ("add the new key", [old_key.clone(), new_key.clone()].concat()),
        ("make it first", [new_key.clone(), old_key.clone()].concat()),
        ("remove the old key", new_key.clone()),
    ];
    for (step, keys) in &steps {
        for (index, file) in files.iter().enumerate() {
            write_keys(file, keys);
            servers[index].signal(nix::sys::signal::Signal::SIGTERM);
            assert_eq!(
                servers[index].wait_exit(Duration::from_secs(30)).await,
                Some(0),
                "{step}: {} exits 0",
                IDS[index]
            );
            let restarted = start(index, seed_for(&nodes, index)).await;
            load.moved(index, restarted.addr);
            servers[index] = restarted;
            wait_full_mesh(IDS, &servers).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total = load.stop().await;
    eprintln!(
        "gossip key rotation of 3 nodes (3 rolling restarts), {CLIENTS} closed-loop clients: {} requests answered, {} failed",
        total.ok,
        total.failed.len()
    );
    assert!(total.failed.is_empty(), "{} requests failed during the rotation: {:?}", total.failed.len(), total.failed);
    assert!(total.ok >= 50, "too little traffic to mean anything: {total:?}");
    for server in &servers {
        let page = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
        let unknown = page
            .lines()
            .find(|l| l.starts_with("senti_gossip_rejected_total{reason=\"unknown_key\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        assert_eq!(unknown, Some(0.0), "{} refused datagrams of a key it did not hold", server.addr);
    }
}
