//! A real Prometheus (Debian's package) scrapes a real 3-node loopback cluster, after traffic
//! that makes every series appear, with the shipped configuration, both variants: cluster-config/prometheus/prometheus.yml (static targets; the
//! test rewrites only the three addresses) and prometheus-file-sd.yml (file-based discovery; the
//! test writes the targets file it reads and leaves the configuration as is). Through
//! Prometheus's HTTP API it asserts that every node is scraped (`up == 1`, with its `node`
//! label), that the key series exist, that the alert rules load and evaluate without error, that
//! every series a rule reads exists, and that no availability alert is pending on the
//! (again) healthy cluster. It also evaluates every query of the Grafana dashboard there (valid PromQL).
//!
//! Prometheus comes from scripts/install-prometheus.sh when it is not on PATH; where it cannot
//! be installed (no apt-get, not root) the test prints why and passes without running.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use senti_system_tests::loopback::{load, start_eventful_cluster, traffic_with_every_event};
use senti_system_tests::promql::selectors;
use senti_system_tests::{free_port, repo_root, wait_until, wait_until_ok, Server};
use serde_json::Value;

const CONFIG_DIR: &str = "cluster-config/prometheus";
/// The addresses prometheus.yml lists: the loopback cluster of `make cluster`.
const SHIPPED_TARGETS: [&str; 3] = ["127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082"];
/// The node ids prometheus.yml gives those addresses.
const SHIPPED_NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// The alerts that must stay quiet on a healthy cluster whatever the machine's speed.
const AVAILABILITY_GROUP: &str = "senti-availability";

/// `prometheus` on PATH, installing Debian's package if needed; `None` (after saying why on
/// the terminal, past the test harness's capture) where that is impossible.
fn prometheus_or_skip() -> Option<()> {
    let on_path = |bin: &str| Command::new(bin).arg("--version").output().is_ok_and(|o| o.status.success());
    if on_path("prometheus") && on_path("promtool") {
        return Some(());
    }
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/install-prometheus.sh"))
        .stdin(Stdio::null())
        .status()
        .expect("run scripts/install-prometheus.sh");
    match status.code() {
        Some(0) => Some(()),
        Some(2) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED tests/tests/prometheus.rs: Prometheus cannot be installed on this machine \
                 (scripts/install-prometheus.sh said why above); the scrape test did not run"
            );
            None
        }
        other => panic!("scripts/install-prometheus.sh failed ({other:?})"),
    }
}

/// A scratch folder, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("senti-{name}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One Prometheus process on a free loopback port, its data and log in a scratch folder.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
    _scratch: Scratch,
}

impl Prometheus {
    /// Starts `prometheus` on `config` (inside `scratch`) and waits until it is ready.
    async fn start(scratch: Scratch, config: &Path) -> Self {
        let port = free_port();
        let log = scratch.0.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", scratch.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            // The API's timestamps are in the server's time zone; rfc3339_seconds reads UTC.
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn prometheus");
        let prometheus = Self { child, url: format!("http://127.0.0.1:{port}"), log, _scratch: scratch };
        let ready = format!("{}/-/ready", prometheus.url);
        wait_until(Duration::from_secs(20), "prometheus to be ready", || async {
            reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success())
        })
        .await;
        prometheus
    }

    /// GET an API path; the `data` field of a successful answer.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let response = reqwest::Client::new().get(format!("{}{path}", self.url)).query(query).send().await.unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}\nprometheus log:\n{}", self.log_text());
        body["data"].clone()
    }

    /// An instant query's result vector.
    async fn query(&self, promql: &str) -> Vec<Value> {
        self.api("/api/v1/query", &[("query", promql)]).await["result"].as_array().cloned().unwrap_or_default()
    }

    /// The active targets of the scrape job "senti".
    async fn targets(&self) -> Vec<Value> {
        let data = self.api("/api/v1/targets", &[("state", "active")]).await;
        data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["labels"]["job"] == "senti")
            .cloned()
            .collect()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies the shipped configuration `file` and the rules into a scratch folder, with `edit`
/// applied to the configuration's text.
fn render(name: &str, file: &str, edit: impl FnOnce(String) -> String) -> (Scratch, PathBuf) {
    let scratch = Scratch::new(name);
    let dir = repo_root().join(CONFIG_DIR);
    std::fs::copy(dir.join("senti-alerts.yml"), scratch.0.join("senti-alerts.yml")).unwrap();
    let config = scratch.0.join(file);
    std::fs::write(&config, edit(std::fs::read_to_string(dir.join(file)).unwrap())).unwrap();
    (scratch, config)
}

/// prometheus.yml with its three loopback addresses replaced by the test nodes'.
fn render_static(servers: &[Server]) -> (Scratch, PathBuf) {
    render("prom-static", "prometheus.yml", |mut text| {
        for (shipped, server) in SHIPPED_TARGETS.iter().zip(servers) {
            let quoted = format!("\"{shipped}\"");
            assert_eq!(text.matches(&quoted).count(), 1, "prometheus.yml should list {quoted} once");
            text = text.replace(&quoted, &format!("\"{}\"", server.addr));
        }
        text
    })
}

/// prometheus-file-sd.yml as shipped, and a senti-targets.json beside it listing the test nodes.
fn render_file_sd(servers: &[Server]) -> (Scratch, PathBuf) {
    let (scratch, config) = render("prom-file-sd", "prometheus-file-sd.yml", |text| text);
    let groups: Vec<Value> = servers
        .iter()
        .zip(SHIPPED_NODES)
        .map(|(server, node)| serde_json::json!({ "targets": [server.addr.to_string()], "labels": { "node": node } }))
        .collect();
    std::fs::write(scratch.0.join("senti-targets.json"), serde_json::to_string_pretty(&groups).unwrap()).unwrap();
    (scratch, config)
}

/// Waits until Prometheus has scraped all three nodes successfully, then checks `up` and the
/// `node` labels.
async fn assert_every_node_scraped(prometheus: &Prometheus, servers: &[Server], variant: &str) {
    let want: BTreeSet<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    wait_until(Duration::from_secs(60), &format!("{variant}: every node scraped with health up"), || async {
        let targets = prometheus.targets().await;
        let up: BTreeSet<String> = targets
            .iter()
            .filter(|t| t["health"] == "up")
            .filter_map(|t| t["labels"]["instance"].as_str().map(str::to_owned))
            .collect();
        targets.len() == 3 && up == want
    })
    .await;
    let up = prometheus.query(r#"up{job="senti"}"#).await;
    let by_instance: BTreeMap<String, (String, String)> = up
        .iter()
        .map(|s| {
            let metric = &s["metric"];
            let node = metric["node"].as_str().unwrap_or_default().to_owned();
            (metric["instance"].as_str().unwrap().to_owned(), (node, s["value"][1].as_str().unwrap().to_owned()))
        })
        .collect();
    let expected: BTreeMap<String, (String, String)> = servers
        .iter()
        .zip(SHIPPED_NODES)
        .map(|(server, node)| (server.addr.to_string(), (node.to_owned(), "1".to_owned())))
        .collect();
    assert_eq!(by_instance, expected, "{variant}: up{{job=\"senti\"}} by instance: (node label, value)");
}

/// The series an operator needs first, each on every node (or at least one, for those only
/// the entry node of a request records). Rechecked on every scrape until they are all there:
/// the first scrape of a node can race its first gossip round.
async fn assert_key_series(prometheus: &Prometheus, servers: &[Server]) {
    wait_until_ok(Duration::from_secs(60), "the key series exist on every node", async || {
        key_series_problems(prometheus, servers).await
    })
    .await;
}

async fn key_series_problems(prometheus: &Prometheus, servers: &[Server]) -> Result<(), String> {
    let every_node = [
        r#"senti_http_requests_total{route="/v1/classify", status="200"}"#,
        r#"senti_http_request_seconds_bucket{route="/v1/classify", le="+Inf"}"#,
        "senti_queue_wait_seconds_count",
        "senti_inference_seconds_count",
        "senti_batch_size_count",
        "senti_queue_depth",
        "senti_http_in_flight",
        "senti_gossip_load_age_seconds_count",
        "senti_actor_tokens_per_second",
        "senti_remote_samples",
        r#"senti_idle_notices_total{event="used"}"#,
    ];
    let mut problems = Vec::new();
    for selector in every_node {
        let instances: BTreeSet<String> = prometheus
            .query(&format!("count by (instance) ({selector})"))
            .await
            .iter()
            .map(|s| s["metric"]["instance"].as_str().unwrap().to_owned())
            .collect();
        if instances.len() != servers.len() {
            problems.push(format!("{selector} on {instances:?}, want every node"));
        }
    }
    let local_and_remote = prometheus.query(r#"count by (hop) (senti_attempts_total{hop=~"local|remote"})"#).await;
    if local_and_remote.len() != 2 {
        problems.push(format!("attempts of both hops: {local_and_remote:?}"));
    }
    let members = prometheus.query("senti_cluster_live_members").await;
    if members.len() != 3 || members.iter().any(|m| m["value"][1] != "3") {
        problems.push(format!("every node sees three live members: {members:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n  "))
    }
}

/// The rule groups as Prometheus loaded them.
async fn rule_groups(prometheus: &Prometheus) -> Vec<Value> {
    prometheus.api("/api/v1/rules", &[]).await["groups"].as_array().cloned().unwrap_or_default()
}

/// Every group of senti-alerts.yml is loaded and has been evaluated without error since every
/// node was scraped; every metric a rule reads exists; no
/// availability alert is pending or firing.
async fn assert_rules_evaluate(prometheus: &Prometheus) {
    let names: BTreeSet<String> = prometheus
        .query("group by (__name__) ({__name__=~\".+\"})")
        .await
        .iter()
        .filter_map(|s| s["metric"]["__name__"].as_str().map(str::to_owned))
        .collect();
    let scraped_at = prometheus
        .targets()
        .await
        .iter()
        .filter_map(|t| t["lastScrape"].as_str().map(str::to_owned))
        .max()
        .expect("targets were scraped");
    // RFC 3339 timestamps of one Prometheus in UTC compare as strings only when they have the
    // same number of fractional digits, so compare parsed seconds.
    let scraped_at = rfc3339_seconds(&scraped_at);
    wait_until(Duration::from_secs(40), "every rule group to be evaluated after the scrapes", || async {
        let groups = rule_groups(prometheus).await;
        !groups.is_empty()
            && groups.iter().all(|g| g["lastEvaluation"].as_str().is_some_and(|t| rfc3339_seconds(t) > scraped_at))
    })
    .await;

    wait_until_ok(Duration::from_secs(60), "every alert rule is healthy and no availability alert is on", async || {
        rule_problems(prometheus, &names).await
    })
    .await;
}

/// What is wrong with the loaded rules: groups missing, rules unhealthy or reading metrics no
/// node exports, availability alerts pending or firing.
async fn rule_problems(prometheus: &Prometheus, names: &BTreeSet<String>) -> Result<(), String> {
    let groups = rule_groups(prometheus).await;
    let loaded: BTreeSet<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
    let shipped = std::fs::read_to_string(repo_root().join(CONFIG_DIR).join("senti-alerts.yml")).unwrap();
    let declared: BTreeSet<&str> = shipped.lines().filter_map(|l| l.trim().strip_prefix("- name: ")).collect();
    if loaded != declared {
        return Err(format!(
            "rule groups loaded by Prometheus {loaded:?} vs declared in senti-alerts.yml {declared:?}"
        ));
    }

    let mut problems = Vec::new();
    for group in &groups {
        let group_name = group["name"].as_str().unwrap();
        for rule in group["rules"].as_array().unwrap() {
            let alert = rule["name"].as_str().unwrap();
            if rule["health"] != "ok" {
                problems.push(format!("{alert}: health {} ({})", rule["health"], rule["lastError"]));
            }
            for metric in selectors(rule["query"].as_str().unwrap()).metrics() {
                if !names.contains(&metric) {
                    problems.push(format!("{alert} reads {metric}, which no node exports"));
                }
            }
            if group_name == AVAILABILITY_GROUP && rule["state"] != "inactive" {
                let on: Vec<&Value> = rule["alerts"].as_array().into_iter().flatten().map(|a| &a["labels"]).collect();
                problems.push(format!("{alert} is {} on a healthy cluster: {on:?}", rule["state"]));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("alert rules:\n  {}", problems.join("\n  ")))
    }
}

/// Every query of the Grafana dashboard, with its variables given values, is valid PromQL that
/// this Prometheus evaluates (tests/tests/dashboard.rs checks the names it reads).
async fn assert_dashboard_queries_evaluate(prometheus: &Prometheus) {
    let path = repo_root().join("cluster-config/grafana/senti-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(!exprs.is_empty());
    for expr in exprs {
        let concrete = expr.replace("$__rate_interval", "1m").replace("$instance", ".*");
        let body: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", prometheus.url))
            .query(&[("query", concrete.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["status"], "success", "dashboard query {concrete:?}: {body}");
    }
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp as Prometheus writes them
/// (`2026-01-02T03:04:05.123456789Z`), good enough to order two of them.
fn rfc3339_seconds(timestamp: &str) -> f64 {
    let (date, time) = timestamp.trim_end_matches('Z').split_once('T').expect("an RFC 3339 timestamp");
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    // Days since the epoch from a civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let whole = days * 86_400 + t[0] * 3_600 + t[1] * 60 + t[2];
    whole as f64 + format!("0.{fraction}").parse::<f64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_every_node_with_the_shipped_configuration() {
    if prometheus_or_skip().is_none() {
        return;
    }
    let ids = ["p-a", "p-b", "p-c"];
    let (_nodes, servers) = start_eventful_cluster(ids).await;
    // Every series appears, also those of rare events that alert rules read (queue rejections,
    // ejections); the hung node is back and the cluster whole before Prometheus starts.
    traffic_with_every_event(ids, &servers).await;
    // The third node has served no request of its own yet.
    let third = load(&servers[2], 20, 4, 1).await;
    assert!(third.failures.is_empty(), "{third:?}");

    let (scratch, config) = render_static(&servers);
    let (scratch_sd, config_sd) = render_file_sd(&servers);
    let (static_config, file_sd) =
        tokio::join!(Prometheus::start(scratch, &config), Prometheus::start(scratch_sd, &config_sd));

    tokio::join!(
        assert_every_node_scraped(&static_config, &servers, "prometheus.yml"),
        assert_every_node_scraped(&file_sd, &servers, "prometheus-file-sd.yml"),
    );
    assert_key_series(&static_config, &servers).await;
    assert_rules_evaluate(&static_config).await;
    assert_dashboard_queries_evaluate(&static_config).await;
}

#[test]
fn rfc3339_seconds_orders_prometheus_timestamps() {
    assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), 0.0);
    assert_eq!(rfc3339_seconds("2000-03-01T00:00:01.5Z"), 951_868_801.5);
    assert!(rfc3339_seconds("2026-01-02T03:04:05.9Z") > rfc3339_seconds("2026-01-02T03:04:05.123456789Z"));
}
