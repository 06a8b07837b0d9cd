//! What sealing costs: CPU per sealed and opened datagram, per step of the receive path, and the
//! gossip CPU of a three-node loopback cluster with and without sealing. Measurements, not
//! checks: all ignored; run them in release on a quiet machine:
//! ```text
//! cargo test --release -p senti-cluster --test seal_cost -- --ignored --nocapture --test-threads 1
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use chitchat::{ChitchatId, ProtocolVersion};
use senti_cluster::testsuite::{encode, DeltaOp, DigestEntry, KeyValue, NodeDelta, TestNode, WireBody, WireMessage};
use senti_cluster::{
    open_datagram, seal_datagram, unix_ms_now, Admission, ChitchatCodec, Key, Keyring, KeyringHandle, SealConfig,
};

/// A SynAck of a three-node senti cluster: three digest entries, one node's keys as senti
/// gossips them (about 600 bytes).
fn typical_syn_ack() -> Vec<u8> {
    let ids: Vec<ChitchatId> = (0..3)
        .map(|i| ChitchatId::new(format!("node-{i}"), 1_733_000_000_000 + i, ([10, 0, 0, i as u8], 7280).into()))
        .collect();
    let digest = ids
        .iter()
        .map(|id| DigestEntry { id: id.clone(), heartbeat: 4_000, last_gc_version: 0, max_version: 900 })
        .collect();
    let keys = [
        ("ready", "true"),
        ("http_addr", "10.0.0.1:8080"),
        ("actor_addr", "10.0.0.1:7281"),
        ("model", "senti-zh-small@1.0.0"),
        ("actors", "a0=12,a1=13"),
        ("load.a0", "1200 3 4550.5 1733000000123"),
        ("load.a1", "800 2 4490.1 1733000000127"),
    ];
    let ops = keys
        .iter()
        .zip(890..)
        .map(|((k, v), version)| {
            DeltaOp::KeyValue(KeyValue { key: (*k).into(), value: (*v).into(), version, status: 0 })
        })
        .collect();
    let delta = vec![NodeDelta { id: ids[1].clone(), last_gc_version: 0, from_version_excluded: 880, ops }];
    let mut out = Vec::new();
    encode(&WireMessage { version: ProtocolVersion::V0, body: WireBody::SynAck { digest, delta } }, &mut out);
    out
}

fn per_op(elapsed: Duration, ops: u64) -> f64 {
    elapsed.as_nanos() as f64 / ops as f64 / 1_000.0
}

#[test]
#[ignore = "measurement"]
fn seal_and_open_cost() {
    let key = Key::generate().unwrap();
    let keyring = Keyring::from_keys(key.clone(), vec![]).unwrap();
    for size in [120usize, 600, 1_500, 16_000, 65_000] {
        let message = vec![0x5au8; size];
        let rounds = (20_000_000 / size.max(1_000)) as u64;
        let mut datagram = Vec::new();
        let start = Instant::now();
        for _ in 0..rounds {
            seal_datagram(&key, 1, &message, &mut datagram).unwrap();
            black_box(open_datagram(&keyring, &mut datagram).unwrap());
        }
        let us = per_op(start.elapsed(), rounds);
        println!("seal+open {size:>6} B: {us:8.2} us per datagram ({:.0} MB/s)", size as f64 / us);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn receive_path_cost() {
    let key = Key::generate().unwrap();
    let keyring = KeyringHandle::new(Keyring::from_keys(key.clone(), vec![]).unwrap());
    let message = typical_syn_ack();
    let rounds = 50_000u64;
    // Each datagram sealed separately, one millisecond apart over the last 50 s, as a steady
    // stream: the replay window takes each once.
    let now_ms = unix_ms_now();
    let datagrams: Vec<Vec<u8>> = (0..rounds)
        .map(|i| {
            let mut out = Vec::new();
            seal_datagram(&key, now_ms - rounds + i, &message, &mut out).unwrap();
            out
        })
        .collect();
    let start = Instant::now();
    let mut sealed = Vec::new();
    for _ in 0..rounds {
        seal_datagram(&key, now_ms, &message, &mut sealed).unwrap();
    }
    let seal_us = per_op(start.elapsed(), rounds);
    let mut admission = Admission::new(keyring, &SealConfig::default(), now_ms - 55_000);
    let start = Instant::now();
    for mut datagram in datagrams {
        admission.admit(&mut datagram, now_ms, Instant::now()).unwrap();
    }
    let admit_us = per_op(start.elapsed(), rounds);
    let mut codec = ChitchatCodec::open().await.unwrap();
    let codec_rounds = 20_000u64;
    let start = Instant::now();
    for _ in 0..codec_rounds {
        let envelope = codec.decode(&message).await.unwrap();
        black_box(codec.encode(envelope).await.unwrap());
    }
    let codec_us = per_op(start.elapsed(), codec_rounds);
    println!("typical SynAck of {} B (sealed {} B):", message.len(), sealed.len());
    println!("  seal (sender)                                  {seal_us:6.2} us");
    println!("  open + replay window + guard (receiver)        {admit_us:6.2} us");
    println!("  chitchat codec over loopback, encode + decode  {codec_us:6.2} us");
}

/// CPU time of this process (user + system), from /proc/self/stat in clock ticks of 10 ms.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// CPU time of a three-node cluster over `run`, and the datagrams it sealed (0 when plain).
async fn cluster_cpu(sealed: bool, run: Duration) -> (Duration, u64) {
    let keyring = KeyringHandle::new(Keyring::from_keys(Key::generate().unwrap(), vec![]).unwrap());
    let keys = [("ready", "true"), ("model", "senti-zh-small@1.0.0"), ("actors", "a0=12,a1=13")];
    let mut nodes: Vec<TestNode> = Vec::new();
    for i in 0..3 {
        let seeds: Vec<_> = nodes.iter().map(|n| n.addr).collect();
        let name = format!("node-{i}");
        let node = if sealed {
            TestNode::sealed(&name, &keyring, &seeds, &keys).await
        } else {
            TestNode::plain(&name, &seeds, &keys).await
        };
        nodes.push(node);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sealed_count = |nodes: &[TestNode]| -> u64 {
        nodes.iter().filter_map(|n| n.transport_opt.as_ref()).map(|t| t.stats().sealed).sum()
    };
    let (cpu_start, start, sealed_start) = (process_cpu(), Instant::now(), sealed_count(&nodes));
    // Every node publishes its load every 200 ms, like a busy senti node.
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut round = 0u64;
    while start.elapsed() < run {
        tick.tick().await;
        round += 1;
        for node in &nodes {
            node.set("load.a0", &format!("{} 3 4550.5 {}", round * 7 % 1_000, unix_ms_now())).await;
        }
    }
    let (cpu, datagrams) = (process_cpu() - cpu_start, sealed_count(&nodes) - sealed_start);
    for node in nodes {
        let _ = node.handle.shutdown().await;
    }
    (cpu, datagrams)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn gossip_cpu_of_three_nodes() {
    let run = Duration::from_secs(20);
    for round in 1..=2 {
        for sealed in [false, true] {
            let (cpu, datagrams) = cluster_cpu(sealed, run).await;
            println!(
                "round {round}, {}: {:.1} ms CPU per second for 3 nodes (gossip every 100 ms), {:.0} sealed datagrams/s",
                if sealed { "sealed" } else { "plain " },
                cpu.as_secs_f64() * 1_000.0 / run.as_secs_f64(),
                datagrams as f64 / run.as_secs_f64()
            );
        }
    }
}
