//! The Grafana dashboard (cluster-config/grafana/senti-dashboard.json) is well formed and every
//! query in it reads metrics and labels that senti really exports. Grafana itself is not
//! installed here: the metric names come from the `/metrics` pages of a real 3-node loopback
//! cluster after traffic that makes every series appear, including those that only exist after
//! their first event (queue rejections, retries, hedges, ejections: see
//! [`traffic_with_every_event`]).

use std::collections::BTreeSet;
use std::time::Duration;

use senti_system_tests::loopback::{start_eventful_cluster, traffic_with_every_event};
use senti_system_tests::promql::{missing, Exposition};
use senti_system_tests::repo_root;
use serde_json::Value;

const DASHBOARD: &str = "cluster-config/grafana/senti-dashboard.json";

/// Every PromQL expression of the dashboard, named by where it is: panel targets and the
/// template variables' queries (`label_values(metric, label)` reads `metric`).
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default().to_owned();
            out.push((format!("panel {:?} target {}", panel["title"], target["refId"]), expr));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap_or_default();
        let expr = match query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')) {
            Some(args) => args.rsplit_once(',').map_or("", |(metric, _label)| metric).trim().to_owned(),
            None => query.to_owned(),
        };
        out.push((format!("variable {}", variable["name"]), expr));
    }
    out
}

/// Panels, including those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// What is wrong with the dashboard's shape: the fields Grafana needs to import it with a
/// Prometheus data source chosen at import and a node selector.
fn shape_problems(dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let schema = dashboard["schemaVersion"].as_u64().unwrap_or(0);
    if !(36..=41).contains(&schema) {
        problems.push(format!("schemaVersion {schema}, expected about 39"));
    }
    for key in ["uid", "title"] {
        if dashboard[key].as_str().is_none_or(str::is_empty) {
            problems.push(format!("no {key}"));
        }
    }
    let variables = dashboard["templating"]["list"].as_array().cloned().unwrap_or_default();
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name).cloned();
    match variable("datasource") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        _ => problems.push("no `datasource` variable of type datasource (prometheus)".into()),
    }
    match variable("instance") {
        Some(v) if v["type"] == "query" && v["includeAll"] == true => {}
        _ => problems.push("no `instance` query variable with an All option".into()),
    }
    let mut ids = BTreeSet::new();
    for panel in panels(dashboard) {
        let title = &panel["title"];
        if !ids.insert(panel["id"].as_u64().unwrap_or(0)) {
            problems.push(format!("panel {title}: duplicate or missing id"));
        }
        let grid = &panel["gridPos"];
        if ["h", "w", "x", "y"].iter().any(|k| grid[k].as_u64().is_none())
            || grid["x"].as_u64().unwrap_or(0) + grid["w"].as_u64().unwrap_or(0) > 24
        {
            problems.push(format!("panel {title}: bad gridPos {grid}"));
        }
        if panel["type"] == "row" {
            continue;
        }
        if panel["datasource"]["uid"] != "${datasource}" {
            problems.push(format!("panel {title}: datasource is not ${{datasource}}"));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title}: no query"));
        }
        for target in &targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            if !expr.contains("$instance") {
                problems.push(format!("panel {title}: query {expr:?} ignores the node selector ($instance)"));
            }
        }
    }
    problems
}

/// Every problem of every query against the metrics in `exposition`.
fn query_problems(dashboard: &Value, exposition: &Exposition) -> Vec<String> {
    queries(dashboard)
        .into_iter()
        .flat_map(|(place, expr)| missing(&expr, exposition).into_iter().map(move |p| format!("{place}: {p}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_reads_metrics_a_real_cluster_exports() {
    let text = std::fs::read_to_string(repo_root().join(DASHBOARD)).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    let problems = shape_problems(&dashboard);
    assert!(problems.is_empty(), "{DASHBOARD}:\n  {}", problems.join("\n  "));
    assert!(queries(&dashboard).len() >= 20, "the dashboard lost its queries");

    let ids = ["d-a", "d-b", "d-c"];
    let (_nodes, servers) = start_eventful_cluster(ids).await;
    traffic_with_every_event(ids, &servers).await;

    let mut exposition = Exposition::default();
    for server in &servers {
        let page = reqwest::Client::new()
            .get(server.url("/metrics"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        exposition.add(&page);
    }
    let problems = query_problems(&dashboard, &exposition);
    assert!(
        problems.is_empty(),
        "{DASHBOARD} reads series no node exports:\n  {}\nexported: {:?}",
        problems.join("\n  "),
        exposition.samples.keys().collect::<Vec<_>>()
    );

    // The check can fail: a misspelt metric, a label the metric does not have, a histogram read
    // without its _bucket suffix and a panel that forgets the node selector are all reported.
    let mutated = text
        .replacen("senti_hedges_total", "senti_hedge_total", 1)
        .replacen("hop)", "hops)", 1)
        .replacen("senti_batch_size_bucket", "senti_batch_size", 1)
        .replacen("senti_http_in_flight{instance=~\\\"$instance\\\"}", "senti_http_in_flight", 1);
    let mutated: Value = serde_json::from_str(&mutated).unwrap();
    let caught = [query_problems(&mutated, &exposition), shape_problems(&mutated)].concat().join("\n");
    for expected in [
        "`senti_hedge_total` is not exported",
        "grouping label `hops`",
        "`senti_batch_size` is not exported (a histogram",
        "ignores the node selector",
    ] {
        assert!(caught.contains(expected), "the mutated dashboard was not caught ({expected}):\n{caught}");
    }
}
