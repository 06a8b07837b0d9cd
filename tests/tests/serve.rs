//! `senti` as a user runs it: a real process, a real socket on loopback.

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use senti_system_tests::{repo_root, senti_bin, wait_until, Server};
use serde_json::{json, Value};

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let mut server = Server::start(&["--config", "/dev/null"], &[]).await;
    let client = reqwest::Client::new();
    let long = "房间干净整洁，早餐种类丰富，前台服务热情，交通也方便，强烈推荐给大家。".repeat(3);
    let requests: Vec<_> = (0..6)
        .map(|r| {
            let client = client.clone();
            let url = server.url("/v1/classify");
            // Distinct texts: identical ones would be computed once (result cache, coalescing).
            let texts: Vec<String> = (0..128).map(|t| format!("{long}{r}-{t}")).collect();
            let body = json!({ "texts": texts });
            tokio::spawn(async move { client.post(url).json(&body).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    // Signal once all six are inside the server (the /metrics request itself is the seventh).
    let metrics_url = server.url("/metrics");
    wait_until(Duration::from_secs(30), "six requests in flight", || {
        let client = client.clone();
        let url = metrics_url.clone();
        async move {
            let Ok(response) = client.get(&url).send().await else { return false };
            let text = response.text().await.unwrap_or_default();
            text.lines()
                .find(|l| l.starts_with("senti_http_in_flight "))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v >= 7.0)
        }
    })
    .await;
    server.signal(Signal::SIGTERM);
    for request in requests {
        let status = request.await.unwrap().expect("an accepted request is answered, not dropped");
        assert_eq!(status, 200, "accepted before SIGTERM, so it must complete");
    }
    assert_eq!(server.wait_exit(Duration::from_secs(30)).await, Some(0));
}

#[tokio::test]
async fn readme_curl_examples_work_as_written() {
    let server = Server::start(&[], &[]).await;
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let examples: Vec<String> = readme
        .split("```")
        .skip(1)
        .step_by(2)
        .flat_map(|block| block.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| line.trim_start().starts_with("curl ") && line.contains("127.0.0.1:8080"))
        .collect();
    assert!(examples.len() >= 3, "README should show curl examples, found {examples:?}");
    for example in examples {
        let command = example.replace("127.0.0.1:8080", &server.addr.to_string());
        let output = Command::new("bash").arg("-c").arg(&command).output().unwrap();
        assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8_lossy(&output.stdout);
        if command.contains("/analyze") || command.contains("/v1/classify") {
            let value: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{command}: {e}: {stdout}"));
            assert!(value.get("error").is_none(), "{command}: {stdout}");
        }
    }
}

#[test]
fn classify_command_prints_json_lines() {
    let output = Command::new(senti_bin())
        .current_dir(repo_root())
        .args(["classify", "这家酒店非常好，服务周到", "太差了，再也不会来了"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["label"], "positive");
    assert_eq!(lines[0]["label_zh"], "正面");
    assert_eq!(lines[1]["label"], "negative");

    let file = std::env::temp_dir().join(format!("senti-classify-{}.txt", std::process::id()));
    std::fs::write(&file, "物流很快，东西不错\n\n质量太差，退货了\n").unwrap();
    let output =
        Command::new(senti_bin()).current_dir(repo_root()).arg("classify").arg("--file").arg(&file).output().unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "one line out per line in, blank lines included");
    assert_eq!(lines[0]["label"], "positive");
    assert_eq!(lines[1]["line"], 2);
    assert_eq!(lines[1]["error"]["code"], "empty_text");
    assert_eq!(lines[2]["label"], "negative");
}

#[test]
fn missing_onnx_runtime_says_what_to_do() {
    let output = Command::new(senti_bin())
        .current_dir(std::env::temp_dir())
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.31.1")
        .args(["classify", "好"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("make setup") && stderr.contains("ORT_DYLIB_PATH"), "{stderr}");
}

#[test]
fn invalid_configuration_names_the_key() {
    let output = Command::new(senti_bin())
        .current_dir(repo_root())
        .env("SENTI__ENGINE__ACTORS", "0")
        .args(["classify", "好"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`engine.actors` must be at least 1, got 0"), "{stderr}");
}
