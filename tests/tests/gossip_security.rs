//! Sealed gossip between real `senti` processes on loopback: a node started with another gossip
//! key file never becomes a member, while the nodes holding the cluster's key see each other;
//! unsealed packets forged in chitchat's wire format (fake members, a heartbeat bump, a key
//! overwrite, the two packets that panicked plain chitchat's gossip task, a compression bomb)
//! change nothing.
//!
//! Each "nothing changed" assertion first waits until the target node has counted the packets as
//! rejected (`senti_gossip_rejected_total{reason}` on its /metrics), so it cannot pass because
//! they had not arrived yet.

use std::collections::BTreeSet;
use std::time::Duration;

use chitchat::ChitchatId;
use senti_cluster::testsuite::Forger;
use senti_system_tests::loopback::LoopbackNode;
use senti_system_tests::{new_key_file, test_dir, wait_until, Server};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(30);

async fn view(server: &Server) -> Value {
    reqwest::get(server.url("/v1/cluster")).await.unwrap().json().await.unwrap()
}

/// Node ids of the live members a node lists, itself included.
async fn members(server: &Server) -> BTreeSet<String> {
    let view = view(server).await;
    view["membership"]["members"]
        .as_array()
        .map(|members| members.iter().filter_map(|m| m["node_id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Node ids of every node a node knows of, live or dead.
async fn known(server: &Server) -> BTreeSet<String> {
    let view = view(server).await;
    let dead = view["membership"]["dead"].as_array().cloned().unwrap_or_default();
    let mut known = members(server).await;
    known.extend(dead.iter().filter_map(|d| d["node_id"].as_str().map(str::to_owned)));
    known
}

fn ids(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_gossip_key_never_becomes_a_member() {
    let (a, b, stranger) = (LoopbackNode::new("k-a"), LoopbackNode::new("k-b"), LoopbackNode::new("k-stranger"));
    let other_key = new_key_file(&test_dir());
    let other = other_key.to_str().unwrap();
    let seed = a.gossip;
    let stranger_env = [("SENTI_CLUSTER_KEY_FILE", other)];
    let (server_a, server_b, server_stranger) =
        tokio::join!(a.start(seed, &[]), b.start(seed, &[]), stranger.start(seed, &stranger_env));
    let pair = ids(&["k-a", "k-b"]);
    for server in [&server_a, &server_b] {
        wait_until(CONVERGE, "k-a and k-b to list each other", || async { members(server).await == pair }).await;
    }
    // The stranger keeps gossiping to its seed, k-a: wait until k-a has dropped its datagrams.
    wait_until(CONVERGE, "k-a to reject datagrams sealed with an unknown key", || async {
        server_a.counter("senti_gossip_rejected_total", "reason=\"unknown_key\"").await >= 3.0
    })
    .await;
    assert!(server_a.counter("senti_gossip_datagrams_total", "direction=\"accepted\"").await > 0.0);
    assert_eq!(known(&server_a).await, pair);
    assert_eq!(known(&server_b).await, pair);
    assert_eq!(known(&server_stranger).await, ids(&["k-stranger"]));
    assert_eq!(view(&server_stranger).await["routing"]["targets"].as_array().map(|t| t.len()), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsealed_forged_packets_change_nothing() {
    let (a, b) = (LoopbackNode::new("f-a"), LoopbackNode::new("f-b"));
    let seed = a.gossip;
    let (server_a, server_b) = tokio::join!(a.start(seed, &[]), b.start(seed, &[]));
    let pair = ids(&["f-a", "f-b"]);
    for server in [&server_a, &server_b] {
        wait_until(CONVERGE, "f-a and f-b to list each other", || async { members(server).await == pair }).await;
    }
    let before = view(&server_a).await["membership"]["members"].clone();
    // The ids the nodes use are in their /v1/cluster; the cluster id is `cluster.cluster_id`'s
    // default, sent in clear, as an attacker would read it off the wire.
    let generation = |view: &Value, node: &str| {
        view["membership"]["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["node_id"] == node))
            .and_then(|m| m["generation"].as_u64())
            .unwrap()
    };
    let victim =
        ChitchatId::new("f-b".to_owned(), generation(&view(&server_a).await, "f-b"), ([127, 0, 0, 1], b.gossip).into());
    let forger = Forger::new("senti");
    let fakes: Vec<ChitchatId> =
        (0..3).map(|i| ChitchatId::new(format!("fake-{i}"), 1, ([127, 0, 0, 1], 9 + i).into())).collect();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = ("127.0.0.1", a.gossip);
    for round in 1..=20u64 {
        let packets = [
            forger.fake_members(&fakes, &[("ready", "true"), ("actor_addr", "127.0.0.1:9")], round * 10),
            forger.heartbeat_bump(&victim, 1_000_000 + round),
            forger.key_overwrite(&victim, &[("ready", "false"), ("model", "evil@1")], 1_000 + round),
            forger.version_above_max(&victim),
            forger.oversized_digest(3_000),
            forger.compression_bomb(2_000),
        ];
        for packet in packets {
            socket.send_to(&packet, target).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until(CONVERGE, "f-a to reject the 120 forged packets", || async {
        server_a.counter("senti_gossip_rejected_total", "reason=\"unsealed\"").await >= 120.0
    })
    .await;
    // Several gossip rounds after the last forged packet: both nodes are still members of each
    // other, with the same keys as before, and ready.
    for server in [&server_a, &server_b] {
        assert_eq!(known(server).await, pair);
        let ready = reqwest::get(server.url("/readyz")).await.unwrap().status();
        assert!(ready.is_success(), "{ready}");
    }
    let after = view(&server_a).await["membership"]["members"].clone();
    let keys = |members: &Value| -> Vec<(Value, Value, Value)> {
        members
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["node_id"].clone(), m["ready"].clone(), m["model"].clone()))
            .collect()
    };
    assert_eq!(keys(&after), keys(&before));
}
