//! `senti classify --server`: a file scored over real `senti serve` processes on loopback.
//!
//! Every line must come back exactly once, in input order, with its own text, while a node is
//! killed mid-run (the client fails over) and while the client itself is killed and resumed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use senti_system_tests::loopback::start_cluster;
use senti_system_tests::{repo_root, senti_bin, test_dir, Server};
use serde_json::Value;

/// Distinct short reviews (the cache must not answer them) with a bad line at 10 (empty), 20
/// (too long) and 30 (not UTF-8).
fn write_input(path: &Path, lines: usize) -> Vec<Vec<u8>> {
    const PHRASES: [&str; 6] = [
        "物流很快，东西不错",
        "质量太差，退货了",
        "服务周到，下次还来",
        "等了两个小时，太失望",
        "包装完好，很满意",
        "味道一般，不会再买",
    ];
    let lines: Vec<Vec<u8>> = (1..=lines)
        .map(|i| match i {
            10 => Vec::new(),
            20 => "长".repeat(5_000).into_bytes(),
            30 => b"\xff\xfe bad bytes".to_vec(),
            _ => format!("第{i}位顾客：{}", PHRASES[i % PHRASES.len()]).into_bytes(),
        })
        .collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for line in &lines {
        file.write_all(line).unwrap();
        file.write_all(b"\n").unwrap();
    }
    file.flush().unwrap();
    lines
}

fn client(args: &[&str], stderr: &Path) -> Child {
    Command::new(senti_bin())
        .current_dir(repo_root())
        .arg("classify")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut Child, limit: Duration, stderr: &Path) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("senti classify did not finish within {limit:?}: {}", std::fs::read_to_string(stderr).unwrap_or_default());
}

/// Waits until `out` holds at least `records` lines (the CSV header counts as one).
async fn wait_for_records(out: &Path, records: usize, child: &mut Child) {
    let until = Instant::now() + Duration::from_secs(180);
    loop {
        let lines = std::fs::read(out).map(|b| b.iter().filter(|&&c| c == b'\n').count()).unwrap_or(0);
        if lines >= records {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "the client ended before writing {records} records");
        assert!(Instant::now() < until, "fewer than {records} records after 180 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every input line answered once, in order, with its own text: errors exactly on the bad lines.
fn check_jsonl(out: &Path, input: &[Vec<u8>]) {
    let records: Vec<Value> =
        std::fs::read_to_string(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), input.len(), "one record per input line");
    for (i, (record, text)) in records.iter().zip(input).enumerate() {
        assert_eq!(record["line"], i + 1, "record {i} is out of order: {record}");
        assert_eq!(record["text"], String::from_utf8_lossy(text).as_ref(), "line {}", i + 1);
        let expected = match i + 1 {
            10 => Some("empty_text"),
            20 => Some("text_too_long"),
            30 => Some("invalid_utf8"),
            _ => None,
        };
        match expected {
            Some(code) => assert_eq!(record["error"]["code"], code, "line {}", i + 1),
            None => assert!(["positive", "negative"].contains(&record["label"].as_str().unwrap_or("")), "{record}"),
        }
    }
}

fn texts_per_server(stderr: &str) -> Vec<(String, u64)> {
    let list = stderr.rsplit("texts per server: ").next().unwrap_or("").lines().next().unwrap_or("");
    list.split(", ")
        .filter_map(|entry| {
            let (url, n) = entry.rsplit_once(' ')?;
            Some((url.to_owned(), n.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_is_scored_over_a_cluster_while_a_node_is_killed() {
    let dir = test_dir();
    let (input_path, out, stderr) =
        (dir.join("batch-100k.txt"), dir.join("batch-100k.jsonl"), dir.join("batch-100k.stderr"));
    let input = write_input(&input_path, 100_000);
    let (_nodes, mut servers) = start_cluster(["bc-a", "bc-b", "bc-c"], [&[], &[], &[]]).await;
    let urls: Vec<String> = servers.iter().map(|s| s.url("")).collect();
    let servers_arg = urls.join(",");
    let mut run = client(
        &[
            "--server",
            &servers_arg,
            "--file",
            input_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--batch",
            "64",
            "--concurrency",
            "6",
        ],
        &stderr,
    );
    wait_for_records(&out, 30_000, &mut run).await;
    servers[2].child.kill().unwrap();
    let killed_at = std::fs::read_to_string(&out).unwrap().lines().count();
    assert!(wait_exit(&mut run, Duration::from_secs(300), &stderr), "{}", std::fs::read_to_string(&stderr).unwrap());
    let stderr = std::fs::read_to_string(&stderr).unwrap();
    eprintln!("{stderr}");
    assert!(killed_at < 90_000, "node c was killed too late ({killed_at} records) to test failover");
    check_jsonl(&out, &input);
    assert!(stderr.contains("line 20: text_too_long"), "bad lines are reported with their numbers: {stderr}");
    let per_server = texts_per_server(&stderr);
    assert_eq!(per_server.len(), 3, "{stderr}");
    assert_eq!(per_server.iter().map(|(_, n)| n).sum::<u64>(), 100_000 - 3, "{stderr}");
    assert!(per_server[2].1 < per_server[0].1 && per_server[2].1 < per_server[1].1, "c was killed: {per_server:?}");
    drop(servers);
}

/// Reads senti's CSV output: (line, text, label, error) per record.
fn read_csv(out: &Path) -> Vec<(u64, String, String, String)> {
    let mut reader = csv::Reader::from_path(out).unwrap();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].parse().unwrap(), r[1].to_owned(), r[2].to_owned(), r[5].to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_resumes_where_it_stopped() {
    let dir = test_dir();
    let (input_path, out, stderr): (PathBuf, PathBuf, PathBuf) =
        (dir.join("resume-in.csv"), dir.join("resume-out.csv"), dir.join("resume.stderr"));
    let server = Server::start(&[], &[("SENTI__ENGINE__ACTORS", "1"), ("RUST_LOG", "warn")]).await;
    let mut csv_in = csv::Writer::from_path(&input_path).unwrap();
    csv_in.write_record(["id", "review"]).unwrap();
    let total = 20_000;
    for i in 1..=total {
        let text = if i % 2 == 0 {
            format!("第{i}单，质量很好，\"推荐\"")
        } else {
            format!("第{i}单，\n太差了，退货")
        };
        csv_in.write_record([i.to_string(), text]).unwrap();
    }
    csv_in.flush().unwrap();
    drop(csv_in);
    let url = server.url("");
    let args = [
        "--server",
        &url,
        "--file",
        input_path.to_str().unwrap(),
        "--column",
        "review",
        "--out",
        out.to_str().unwrap(),
    ];

    let mut first = client(&args, &stderr);
    wait_for_records(&out, 5_000, &mut first).await;
    first.kill().unwrap();
    first.wait().unwrap();
    // A record cut by the kill, as a write interrupted mid-record leaves it.
    std::fs::OpenOptions::new().append(true).open(&out).unwrap().write_all(b"99999,\"cut rec").unwrap();
    let stopped_at = read_csv_prefix_len(&out);
    assert!(stopped_at < total, "the first run finished before it was killed");

    let mut again = client(&args, &stderr);
    assert!(!wait_exit(&mut again, Duration::from_secs(30), &stderr), "an existing --out is not overwritten");
    assert!(std::fs::read_to_string(&stderr).unwrap().contains("give --resume"));

    let resume_args = [&args[..], &["--resume"]].concat();
    let mut resumed = client(&resume_args, &stderr);
    assert!(
        wait_exit(&mut resumed, Duration::from_secs(300), &stderr),
        "{}",
        std::fs::read_to_string(&stderr).unwrap()
    );
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(log.contains("resumed after input line"), "{log}");

    let records = read_csv(&out);
    assert_eq!(records.len(), total, "every record exactly once");
    for (i, (line, text, label, error)) in records.iter().enumerate() {
        let n = i + 1;
        // Each CSV record of the input has one quoted text; odd ones span two lines.
        let expected_line = 2 + (n as u64 - 1) + (n as u64 - 1).div_ceil(2);
        assert_eq!(*line, expected_line, "record {n}");
        let expected = if n % 2 == 0 {
            format!("第{n}单，质量很好，\"推荐\"")
        } else {
            format!("第{n}单，\n太差了，退货")
        };
        assert_eq!(text, &expected, "record {n}");
        assert!(error.is_empty() && (label == "positive" || label == "negative"), "record {n}: {label} {error}");
    }
}

/// Complete records in a CSV output that may end with a cut record.
fn read_csv_prefix_len(out: &Path) -> usize {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_path(out).unwrap();
    reader.records().filter_map(Result::ok).filter(|r| r.len() == 6).count()
}
