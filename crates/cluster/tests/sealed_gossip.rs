//! Sealed gossip end to end: real chitchat nodes on real UDP sockets on 127.0.0.1, attacked with
//! packets written in chitchat's wire format (testsuite's `Forger`).
//!
//! Every attack also runs against plain chitchat (`forged_packets_do_affect_plain_chitchat`), so
//! the forger is known to work: when a sealed node shows no effect, the defence is why. Each
//! "nothing changed" assertion first waits until the node has counted the attack packets as
//! rejected, so it cannot pass because they had not arrived yet.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chitchat::transport::Transport;
use chitchat::{ChitchatId, ProtocolVersion};
use rand::distr::{Alphanumeric, SampleString};
use rand::SeedableRng;
use senti_cluster::testsuite::{
    decode, encode, wait_until, DecodeLimits, DeltaOp, Forger, KeyValue, NodeDelta, TestNode, WireBody, WireMessage,
    MAX_UDP_PAYLOAD, TEST_CLUSTER_ID,
};
use senti_cluster::{
    open_datagram, ChitchatCodec, GuardLimits, Key, Keyring, KeyringHandle, RejectReason, SealConfig,
    SealedUdpTransport, SEAL_OVERHEAD,
};
use tokio::net::UdpSocket;

const CONVERGE: Duration = Duration::from_secs(15);

fn ring(key: &Key) -> KeyringHandle {
    KeyringHandle::new(Keyring::from_keys(key.clone(), vec![]).expect("one key"))
}

fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

async fn converged(nodes: &[&TestNode], expected: &BTreeSet<String>) -> bool {
    for node in nodes {
        if node.live().await != *expected {
            return false;
        }
        for name in expected {
            if node.key(name, "name").await.as_deref() != Some(name.as_str()) {
                return false;
            }
        }
    }
    true
}

async fn wait_converged(nodes: &[&TestNode], expected: &[&str]) {
    let expected = names(expected);
    wait_until(CONVERGE, &format!("every node sees {expected:?} live with their keys"), async || {
        converged(nodes, &expected).await
    })
    .await;
}

async fn sealed(name: &str, key: &Key, seeds: &[SocketAddr]) -> TestNode {
    TestNode::sealed(name, &ring(key), seeds, &[("name", name)]).await
}

fn fake_ids(count: usize, prefix: &str) -> Vec<ChitchatId> {
    (0..count).map(|i| ChitchatId::new(format!("{prefix}-{i}"), 1, ([127, 0, 0, 1], 9 + i as u16).into())).collect()
}

/// Receives datagrams on `tap` until one comes from `from`.
async fn recv_from(tap: &UdpSocket, from: SocketAddr, limit: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 1 << 16];
    tokio::time::timeout(limit, async {
        loop {
            let (len, sender) = tap.recv_from(&mut buf).await.ok()?;
            if sender == from {
                return Some(buf[..len].to_vec());
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Drops every datagram already queued on `tap`.
fn drain(tap: &UdpSocket) {
    let mut buf = vec![0u8; 1 << 16];
    while tap.try_recv_from(&mut buf).is_ok() {}
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_the_same_keyring_converge() {
    let key = Key::generate().unwrap();
    let a = sealed("node-a", &key, &[]).await;
    let b = sealed("node-b", &key, &[a.addr]).await;
    let c = sealed("node-c", &key, &[a.addr]).await;
    wait_converged(&[&a, &b, &c], &["node-a", "node-b", "node-c"]).await;
    for node in [&a, &b, &c] {
        let stats = node.stats();
        assert!(stats.sealed > 0 && stats.accepted > 0, "{stats:?}");
        assert_eq!(stats.rejected_total(), 0, "{stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_wrong_key_never_becomes_a_member() {
    let key = Key::generate().unwrap();
    let a = sealed("node-a", &key, &[]).await;
    let b = sealed("node-b", &key, &[a.addr]).await;
    // Another key; and another secret under the same id (an attacker who saw the id).
    let c = sealed("node-c", &Key::generate().unwrap(), &[a.addr, b.addr]).await;
    let same_id = Key::from_parts(key.id(), *Key::generate().unwrap().secret_for_tests()).unwrap();
    let d = sealed("node-d", &same_id, &[a.addr, b.addr]).await;
    wait_converged(&[&a, &b], &["node-a", "node-b"]).await;
    wait_until(CONVERGE, "both members refused many datagrams of each intruder", async || {
        [&a, &b]
            .iter()
            .all(|n| n.stats().rejected(RejectReason::UnknownKey) >= 10 && n.stats().rejected(RejectReason::Auth) >= 10)
    })
    .await;
    for member in [&a, &b] {
        assert_eq!(member.known().await, names(&["node-a", "node-b"]));
        assert_eq!(member.live().await, names(&["node-a", "node-b"]));
    }
    assert_eq!(c.known().await, names(&["node-c"]));
    assert_eq!(d.known().await, names(&["node-d"]));
    assert_eq!(c.stats().accepted + d.stats().accepted, 0);
}

/// The attack packets of the issue, unsealed: fake members (ten rounds with a growing heartbeat),
/// a heartbeat bump, a key overwrite, the two crash packets and a decompression bomb.
fn attack_packets(forger: &Forger, victim_peer: &ChitchatId, fakes: &[ChitchatId]) -> Vec<Vec<u8>> {
    let mut packets: Vec<Vec<u8>> =
        (1..=10).map(|hb| forger.fake_members(fakes, &[("name", "fake"), ("ready", "true")], hb)).collect();
    packets.push(forger.heartbeat_bump(victim_peer, 1 << 40));
    packets.push(forger.key_overwrite(victim_peer, &[("name", "forged"), ("ready", "false")], 1 << 30));
    packets.push(forger.version_above_max(&fakes[0]));
    packets.push(forger.version_above_max(victim_peer));
    packets.push(forger.oversized_digest(3_000));
    packets.push(forger.compression_bomb(2_000));
    packets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_packets_have_no_effect_on_sealed_nodes() {
    let key = Key::generate().unwrap();
    let a = sealed("node-a", &key, &[]).await;
    let b = sealed("node-b", &key, &[a.addr]).await;
    wait_converged(&[&a, &b], &["node-a", "node-b"]).await;
    let before = (a.fingerprint().await, b.fingerprint().await);
    let heartbeat_before = a.heartbeat("node-b").await.unwrap();

    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let forger = Forger::new(TEST_CLUSTER_ID);
    let packets = attack_packets(&forger, &b.id, &fake_ids(3, "fake"));
    for packet in &packets {
        attacker.send_to(packet, a.addr).await.unwrap();
        attacker.send_to(packet, b.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = packets.len() as u64;
    wait_until(CONVERGE, "both nodes counted every forged packet as unsealed", async || {
        a.stats().rejected(RejectReason::Unsealed) == sent && b.stats().rejected(RejectReason::Unsealed) == sent
    })
    .await;
    assert_eq!((a.fingerprint().await, b.fingerprint().await), before, "membership and every key unchanged");
    assert!(!a.gossip_stopped().await && !b.gossip_stopped().await);
    // The heartbeat bump did not stick: b's real heartbeats keep arriving at a.
    wait_until(CONVERGE, "a receives 10 more heartbeats of b", async || {
        a.heartbeat("node-b").await.unwrap() > heartbeat_before + 10
    })
    .await;
    assert!(a.heartbeat("node-b").await.unwrap() < 1 << 40);
    assert!(converged(&[&a, &b], &names(&["node-a", "node-b"])).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_packets_do_affect_plain_chitchat() {
    // The control: the same forger against chitchat's own UDP transport.
    let p = TestNode::plain("node-p", &[], &[("name", "node-p")]).await;
    let q = TestNode::plain("node-q", &[p.addr], &[("name", "node-q")]).await;
    wait_converged(&[&p, &q], &["node-p", "node-q"]).await;
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let forger = Forger::new(TEST_CLUSTER_ID);
    let fakes = fake_ids(3, "fake");

    for heartbeat in 1..=20 {
        let packet = forger.fake_members(&fakes, &[("name", "fake"), ("ready", "true")], heartbeat);
        attacker.send_to(&packet, p.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until(CONVERGE, "p holds the fake members, live and ready", async || {
        let live = p.live().await;
        live.contains("fake-0") && live.contains("fake-2") && p.key("fake-1", "ready").await.as_deref() == Some("true")
    })
    .await;

    attacker.send_to(&forger.key_overwrite(&q.id, &[("name", "forged")], 1 << 30), p.addr).await.unwrap();
    wait_until(CONVERGE, "p keeps the forged key of q", async || {
        p.key("node-q", "name").await.as_deref() == Some("forged")
    })
    .await;

    attacker.send_to(&forger.heartbeat_bump(&q.id, 1 << 40), p.addr).await.unwrap();
    wait_until(CONVERGE, "p declares q dead", async || !p.live().await.contains("node-q")).await;

    attacker.send_to(&forger.version_above_max(&fakes[1]), p.addr).await.unwrap();
    wait_until(CONVERGE, "p's gossip task panicked", async || p.gossip_stopped().await).await;

    attacker.send_to(&forger.oversized_digest(3_000), q.addr).await.unwrap();
    wait_until(CONVERGE, "q's gossip task panicked", async || q.gossip_stopped().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_holding_the_key_cannot_crash_or_bloat_another() {
    let key = Key::generate().unwrap();
    let a = sealed("node-a", &key, &[]).await;
    let b = sealed("node-b", &key, &[a.addr]).await;
    wait_converged(&[&a, &b], &["node-a", "node-b"]).await;
    let before = a.fingerprint().await;
    let insider = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let forger = Forger::new(TEST_CLUSTER_ID);
    let refused = [
        (forger.version_above_max(&b.id), RejectReason::Semantics),
        (forger.oversized_digest(3_000), RejectReason::Limits),
        (forger.compression_bomb(2_000), RejectReason::Decode),
        (forger.key_overwrite(&a.id, &[("name", "forged")], 1 << 30), RejectReason::SelfDelta),
        (forger.key_overwrite(&b.id, &[("name", "forged")], u64::MAX - 1), RejectReason::Limits),
    ];
    for (packet, _) in &refused {
        insider.send_to(&Forger::seal(&key, packet), a.addr).await.unwrap();
    }
    wait_until(CONVERGE, "a refused each packet for its reason", async || {
        let stats = a.stats();
        [
            (RejectReason::Semantics, 1),
            (RejectReason::Limits, 2),
            (RejectReason::Decode, 1),
            (RejectReason::SelfDelta, 1),
        ]
        .iter()
        .all(|(reason, count)| stats.rejected(*reason) == *count)
    })
    .await;
    assert_eq!(a.fingerprint().await, before);

    // Members beyond the cap (128 by default), 60 at a time: the first two batches are plausible
    // lies and accepted, the third is refused whole.
    for batch in 0..3 {
        let fakes = fake_ids(60, &format!("fake{batch}"));
        insider
            .send_to(&Forger::seal(&key, &forger.fake_members(&fakes, &[("name", "fake")], 1)), a.addr)
            .await
            .unwrap();
    }
    wait_until(CONVERGE, "a refused the batch beyond the member cap", async || {
        a.stats().rejected(RejectReason::Members) == 1
    })
    .await;
    assert_eq!(a.known().await.len(), 2 + 120);
    assert!(!a.gossip_stopped().await);
    assert!(converged(&[&a, &b], &names(&["node-a", "node-b"])).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_datagram_replayed_is_refused() {
    let key = Key::generate().unwrap();
    let tap = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tap_addr = tap.local_addr().unwrap();
    // `a` gossips to its seed, the tap, every round: the tap captures sealed Syns.
    let a = sealed("node-a", &key, &[tap_addr]).await;
    let b = sealed("node-b", &key, &[]).await;
    let short_window = SealConfig { replay_window: Duration::from_secs(1), ..SealConfig::default() };
    let c = TestNode::sealed_with("node-c", &ring(&key), &[], &[], short_window).await;

    // Datagrams `a` sealed before `b` started are stale to `b` (see the last case below), and on
    // a busy machine one sealed just before may reach the tap after any drain: deliver fresh
    // captures until `b` answers one, and replay that one.
    drain(&tap);
    let captured = tokio::time::timeout(CONVERGE, async {
        loop {
            let Some(syn) = recv_from(&tap, a.addr, CONVERGE).await else { continue };
            tap.send_to(&syn, b.addr).await.unwrap();
            if recv_from(&tap, b.addr, Duration::from_millis(1_000)).await.is_some() {
                return syn;
            }
        }
    })
    .await
    .expect("b answers a fresh sealed Syn of a");
    tap.send_to(&captured, b.addr).await.unwrap();
    wait_until(CONVERGE, "b refused the replay", async || b.stats().rejected(RejectReason::Replay) == 1).await;
    assert!(recv_from(&tap, b.addr, Duration::from_millis(500)).await.is_none(), "no answer to the replay");

    // Delivered late, beyond the window, a datagram never seen is refused too.
    let late = recv_from(&tap, a.addr, CONVERGE).await.expect("another sealed Syn of a");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    tap.send_to(&late, c.addr).await.unwrap();
    wait_until(CONVERGE, "c refused the stale datagram", async || c.stats().rejected(RejectReason::Stale) == 1).await;
    assert_eq!(c.stats().accepted, 0);

    // Captured before a node started: refused by it although it never saw it.
    let early = recv_from(&tap, a.addr, CONVERGE).await.expect("another sealed Syn of a");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let e = sealed("node-e", &key, &[]).await;
    tap.send_to(&early, e.addr).await.unwrap();
    wait_until(CONVERGE, "e refused what was sent before it started", async || {
        e.stats().rejected(RejectReason::Stale) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_datagram_reveals_neither_key_nor_content() {
    let key = Key::generate().unwrap();
    let tap = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let needle = "needle-value-7f3a9c";
    let a = TestNode::sealed("node-a", &ring(&key), &[tap.local_addr().unwrap()], &[("marker", needle)]).await;
    let syn = recv_from(&tap, a.addr, CONVERGE).await.expect("a sealed Syn of a");
    for pattern in [&b"node-a"[..], TEST_CLUSTER_ID.as_bytes()] {
        assert!(!contains(&syn, pattern), "{:?} in a sealed Syn", String::from_utf8_lossy(pattern));
    }
    // Ask `a` for everything it holds, as a member would: its answer carries the marker key.
    tap.send_to(&Forger::seal(&key, &Forger::new(TEST_CLUSTER_ID).syn(vec![])), a.addr).await.unwrap();
    let keyring = Keyring::from_keys(key.clone(), vec![]).unwrap();
    let syn_ack = loop {
        let datagram = recv_from(&tap, a.addr, CONVERGE).await.expect("a's sealed SynAck");
        let mut copy = datagram.clone();
        // Byte 3 of a chitchat message is its type; 1 is SynAck (a also keeps sending Syns).
        if open_datagram(&keyring, &mut copy).unwrap().plaintext[3] == 1 {
            break datagram;
        }
    };
    let secret = key.secret_for_tests();
    let (secret_hex, key_text) = (hex::encode(secret), key.to_text());
    let forbidden: [&[u8]; 6] =
        [needle.as_bytes(), b"node-a", TEST_CLUSTER_ID.as_bytes(), secret, secret_hex.as_bytes(), key_text.as_bytes()];
    for datagram in [&syn, &syn_ack] {
        for pattern in forbidden {
            assert!(!contains(datagram, pattern), "{:?} in a sealed datagram", String::from_utf8_lossy(pattern));
        }
    }
    // The same datagram, opened with the key, does carry them.
    let mut syn_ack = syn_ack;
    let opened = open_datagram(&keyring, &mut syn_ack).unwrap();
    assert!(contains(opened.plaintext, needle.as_bytes()) && contains(opened.plaintext, b"node-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_keys_keeps_the_cluster_converged() {
    let old = Key::generate().unwrap();
    let rings = [ring(&old), ring(&old), ring(&old)];
    let a = TestNode::sealed("node-a", &rings[0], &[], &[("name", "node-a")]).await;
    let b = TestNode::sealed("node-b", &rings[1], &[a.addr], &[("name", "node-b")]).await;
    let c = TestNode::sealed("node-c", &rings[2], &[a.addr], &[("name", "node-c")]).await;
    let all = names(&["node-a", "node-b", "node-c"]);
    wait_converged(&[&a, &b, &c], &["node-a", "node-b", "node-c"]).await;
    let nodes = Arc::new([a, b, c]);

    // Watches the membership every 20 ms during the whole rotation.
    let breaks = Arc::new(AtomicU64::new(0));
    let watcher = tokio::spawn({
        let (nodes, breaks, all) = (nodes.clone(), breaks.clone(), all.clone());
        async move {
            loop {
                for node in nodes.iter() {
                    if node.live().await != all {
                        breaks.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    // After each change, a new value written on each node must reach every node.
    let mut round = 0;
    let mut gossip_flows = async || {
        round += 1;
        for node in nodes.iter() {
            node.set("round", &round.to_string()).await;
        }
        let expected = round.to_string();
        wait_until(CONVERGE, &format!("round {round} reached every node"), async || {
            for node in nodes.iter() {
                for name in ["node-a", "node-b", "node-c"] {
                    if node.key(name, "round").await.as_deref() != Some(expected.as_str()) {
                        return false;
                    }
                }
            }
            true
        })
        .await;
    };

    let new = Key::generate().unwrap();
    for ring in &rings {
        ring.add(new.clone()).unwrap();
        gossip_flows().await;
    }
    for ring in &rings {
        ring.set_primary(new.id()).unwrap();
        gossip_flows().await;
    }
    for ring in &rings {
        ring.remove(old.id()).unwrap();
        gossip_flows().await;
    }
    watcher.abort();
    assert_eq!(breaks.load(Ordering::Relaxed), 0, "a node saw the membership change during the rotation");
    for node in nodes.iter() {
        assert_eq!(node.stats().rejected_total(), 0, "{:?}", node.stats());
    }

    // The old key no longer opens anything.
    let late = sealed("node-late", &old, &[nodes[0].addr]).await;
    wait_until(CONVERGE, "a refused the old key", async || nodes[0].stats().rejected(RejectReason::UnknownKey) >= 5)
        .await;
    assert!(!nodes[0].known().await.contains("node-late"));
    assert_eq!(late.known().await, names(&["node-late"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_state_crosses_in_several_sealed_datagrams() {
    // 150 keys of 1 000 random characters: about 150 KB of state, more than two datagrams.
    let limits = GuardLimits { max_value_len: 2_000, max_node_bytes: 512 << 10, ..GuardLimits::default() };
    let config = SealConfig { limits, ..SealConfig::default() };
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let values: Vec<(String, String)> =
        (0..150).map(|i| (format!("k{i:03}"), Alphanumeric.sample_string(&mut rng, 1_000))).collect();
    let keys: Vec<(&str, &str)> = values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let key = Key::generate().unwrap();
    let a = TestNode::sealed_with("node-a", &ring(&key), &[], &keys, config.clone()).await;
    let b = TestNode::sealed_with("node-b", &ring(&key), &[a.addr], &[], config).await;
    wait_until(Duration::from_secs(30), "b holds all of a's keys", async || {
        for (k, v) in &values {
            if b.key("node-a", k).await.as_deref() != Some(v.as_str()) {
                return false;
            }
        }
        true
    })
    .await;
    assert_eq!(b.stats().rejected_total(), 0, "{:?}", b.stats());
}

/// An Ack within the last few bytes of chitchat's budget of 65 507 (the IPv4 maximum), encoded
/// as chitchat encodes it: one node, key-values of random characters in compressed blocks.
fn full_size_ack(target: &ChitchatId) -> Vec<u8> {
    let encode = |values: &[String]| {
        let ops = values
            .iter()
            .enumerate()
            .map(|(i, value)| {
                DeltaOp::KeyValue(KeyValue {
                    key: format!("k{i:03}"),
                    value: value.clone(),
                    version: i as u64 + 1,
                    status: 0,
                })
            })
            .collect();
        let delta = vec![NodeDelta { id: target.clone(), last_gc_version: 0, from_version_excluded: 0, ops }];
        let mut out = Vec::new();
        encode(&WireMessage { version: ProtocolVersion::V0, body: WireBody::Ack { delta } }, &mut out);
        out
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut values: Vec<String> = Vec::new();
    loop {
        let message = encode(&values);
        if message.len() > MAX_UDP_PAYLOAD - SEAL_OVERHEAD / 2 {
            assert!(message.len() <= MAX_UDP_PAYLOAD, "overshot: {}", message.len());
            return message;
        }
        // Whole values while far, then one character at a time.
        let room = MAX_UDP_PAYLOAD - message.len();
        if room > 2_000 {
            values.push(Alphanumeric.sample_string(&mut rng, 1_000));
        } else {
            let last = values.last_mut().expect("values were pushed while far from the budget");
            last.push_str(&Alphanumeric.sample_string(&mut rng, 1));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_size_message_is_trimmed_to_leave_room_for_the_seal() {
    let key = Key::generate().unwrap();
    let target = ChitchatId::new("node-t".to_owned(), 1, ([127, 0, 0, 1], 9).into());
    let message = full_size_ack(&target);
    assert!(message.len() + SEAL_OVERHEAD > MAX_UDP_PAYLOAD, "sealed as is, it would not fit one datagram");
    // chitchat's own decoder and encoder: the envelope chitchat would hand the transport, and
    // proof that the test's encoder writes what chitchat writes.
    let mut codec = ChitchatCodec::open().await.unwrap();
    let envelope = codec.decode(&message).await.unwrap();
    let copy = codec.decode(&message).await.unwrap();
    let reencoded = codec.encode(copy).await.unwrap().to_vec();
    assert_eq!(reencoded, message);

    let transport = SealedUdpTransport::new(ring(&key));
    let mut sender = transport.open("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut receiver = transport.open("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let sent = sender.send(receiver.local_addr().unwrap(), envelope).await.unwrap();
    assert!(sent.num_bytes_sent <= MAX_UDP_PAYLOAD, "{}", sent.num_bytes_sent);
    let received = tokio::time::timeout(CONVERGE, receiver.recv()).await.unwrap().unwrap();
    assert_eq!(transport.stats().fitted, 1);
    // What arrived is the message minus its last key-values, as chitchat itself trims a delta.
    let limits = DecodeLimits { max_stream_bytes: 1 << 20, max_blocks: 64, max_items: 1_000 };
    let original = decode(&message, &limits).unwrap();
    let arrived = decode(codec.encode(received.envelope).await.unwrap(), &limits).unwrap();
    let (all, kept) = (&original.delta()[0].ops, &arrived.delta()[0].ops);
    assert!(!kept.is_empty() && kept.len() < all.len(), "{} of {}", kept.len(), all.len());
    assert_eq!(kept[..], all[..kept.len()]);
}
