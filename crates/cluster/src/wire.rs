//! chitchat 0.13's wire format, decoded with bounds and encoded again, without chitchat's own
//! (crate-private) message codec.
//!
//! ```text
//! message      = magic u16 LE (45139) | protocol version u8 (0 | 1) | type u8 | body
//! Syn     (0)  = digest | cluster_id
//! SynAck  (1)  = digest | delta
//! Ack     (2)  = delta
//! BadCluster(3)= (nothing)
//! digest V0    = count u16 | count x (chitchat id | heartbeat u64 | last_gc_version u64 | max_version u64)
//! digest V1    = stream of (chitchat id | heartbeat | last_gc_version | max_version)
//! delta        = stream of ops: 0 node (chitchat id | last_gc_version | from_version_excluded)
//!                               1 key-value (key str | value str | version u64 | status u8 0..=2)
//!                               2 set-max-version (u64)
//! stream       = blocks, each: 1 compressed (len u16 | zstd frame(s)) | 2 raw (len u16 | bytes),
//!                then 0; the blocks' bytes are concatenated and parsed as items
//! chitchat id  = node id str | generation u64 | ip (4 | 6, octets) | port u16;   str = len u16 | utf-8
//! ```
//! Integers are little-endian. [`decode`] mirrors chitchat's decoder exactly (same zstd call into
//! the same 65 535-byte block buffer, same item and op rules, including what makes chitchat's
//! delta builder fail), but stops at [`DecodeLimits`]: chitchat's own decoder has no limit, which
//! is how a 65 KB datagram of compressed blocks grew a node by gigabytes. It is stricter in one
//! way only: trailing bytes after the message, which chitchat ignores and never writes, are an
//! error. Primitive fields (ids, strings, integers) are read with chitchat's public
//! [`Deserializable`] impls, so they cannot drift from chitchat's format.
//!
//! [`encode`] writes what chitchat's encoder would (blocks of 16 KiB, zstd when it helps); it
//! serves [`fit`], which trims a delta that leaves no room for the seal, and the test forger.

use std::collections::HashSet;

use chitchat::{ChitchatId, Deserializable, ProtocolVersion, Serializable};

/// chitchat's magic number, the first two bytes of every message.
pub const CHITCHAT_MAGIC: u16 = 45_139;
/// Magic, protocol version and message type.
pub const CHITCHAT_HEADER_LEN: usize = 4;
/// chitchat's `MAX_UDP_DATAGRAM_PAYLOAD_SIZE` (crate-private there): the largest message it
/// writes, and the largest UDP payload over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// chitchat decompresses every compressed block into a buffer of this size; a block whose frames
/// decompress to more is an error there.
const BLOCK_BUFFER_LEN: usize = u16::MAX as usize;
/// Uncompressed bytes per block when encoding (chitchat's threshold).
const ENCODE_BLOCK_LEN: usize = 16_384;

/// Bounds of one decode. Every allocation the decoder makes is bounded by these and the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most bytes a stream (V1 digest, delta) may decompress to, all blocks together.
    pub max_stream_bytes: usize,
    /// Most blocks in a stream (each block costs a zstd context even when empty).
    pub max_blocks: usize,
    /// Most items (digest entries, delta ops) in one message.
    pub max_items: usize,
}

impl DecodeLimits {
    /// Limits for messages this node's own chitchat wrote (trusted, only bounded by sanity).
    pub const OWN_MESSAGES: DecodeLimits =
        DecodeLimits { max_stream_bytes: 64 << 20, max_blocks: 1 << 16, max_items: 1 << 22 };
}

/// Why bytes are not a chitchat message (or exceed [`DecodeLimits`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A field chitchat's decoder refuses (bad utf-8, ip version, status, tag...).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The first two bytes are not chitchat's magic number.
    #[error("not a chitchat message (magic number)")]
    Magic,
    /// A compressed block does not decompress into chitchat's 65 535-byte block buffer.
    #[error("compressed block does not decompress")]
    Decompress,
    /// A stream or message goes beyond [`DecodeLimits`].
    #[error("{what} over the limit of {limit}")]
    Limit {
        /// Which limit.
        what: &'static str,
        /// Its value.
        limit: usize,
    },
    /// chitchat's delta builder would refuse the op sequence.
    #[error("delta: {0}")]
    Delta(&'static str),
    /// Bytes after the message.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// A decoded chitchat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireMessage {
    /// Protocol version in the header; it selects the digest encoding.
    pub version: ProtocolVersion,
    /// The message.
    pub body: WireBody,
}

/// The four chitchat messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireBody {
    /// Gossip round opening: the sender's digest.
    Syn {
        /// Cluster id, compared by the receiver.
        cluster_id: String,
        /// The sender's digest.
        digest: Vec<DigestEntry>,
    },
    /// Reply to a Syn: the receiver's digest and what the sender lacked.
    SynAck {
        /// The replier's digest.
        digest: Vec<DigestEntry>,
        /// Updates for the Syn's sender.
        delta: Vec<NodeDelta>,
    },
    /// Reply to a SynAck: what the SynAck's sender lacked.
    Ack {
        /// Updates.
        delta: Vec<NodeDelta>,
    },
    /// Reply to a Syn of another cluster id.
    BadCluster,
}

/// One node of a digest: how much of its state the sender has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestEntry {
    /// The node.
    pub id: ChitchatId,
    /// Its heartbeat as the sender saw it.
    pub heartbeat: u64,
    /// Its last tombstone GC version.
    pub last_gc_version: u64,
    /// Its max version.
    pub max_version: u64,
}

/// The ops of a delta about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDelta {
    /// The node.
    pub id: ChitchatId,
    /// The node's last GC version at the sender.
    pub last_gc_version: u64,
    /// The delta holds every change after this version.
    pub from_version_excluded: u64,
    /// Key-values and set-max-version ops, in wire order.
    pub ops: Vec<DeltaOp>,
}

/// An op of a node delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaOp {
    /// A key-value at a version.
    KeyValue(KeyValue),
    /// Sets the node's max version (chitchat writes it only for a node without key-values).
    SetMaxVersion(u64),
}

/// A key-value mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// Key.
    pub key: String,
    /// Value (empty for a deletion).
    pub value: String,
    /// Version, strictly increasing within a node delta.
    pub version: u64,
    /// 0 set, 1 deleted, 2 deleted after a ttl.
    pub status: u8,
}

impl NodeDelta {
    /// The max version chitchat's delta builder computes for this node delta: the last
    /// key-value's version or set-max-version's value, in wire order.
    pub fn max_version(&self) -> u64 {
        self.ops.iter().fold(0, |_, op| match op {
            DeltaOp::KeyValue(kv) => kv.version,
            DeltaOp::SetMaxVersion(version) => *version,
        })
    }
}

impl WireMessage {
    /// The digest, if the message carries one.
    pub fn digest(&self) -> &[DigestEntry] {
        match &self.body {
            WireBody::Syn { digest, .. } | WireBody::SynAck { digest, .. } => digest,
            WireBody::Ack { .. } | WireBody::BadCluster => &[],
        }
    }

    /// The delta, if the message carries one.
    pub fn delta(&self) -> &[NodeDelta] {
        match &self.body {
            WireBody::SynAck { delta, .. } | WireBody::Ack { delta } => delta,
            WireBody::Syn { .. } | WireBody::BadCluster => &[],
        }
    }
}

/// Decodes one chitchat message within `limits`.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<WireMessage, DecodeError> {
    let mut buf = bytes;
    if buf.len() < 3 {
        return Err(DecodeError::Truncated("header"));
    }
    if u16::from_le_bytes([buf[0], buf[1]]) != CHITCHAT_MAGIC {
        return Err(DecodeError::Magic);
    }
    let version = ProtocolVersion::from_code(buf[2]).ok_or(DecodeError::Invalid("protocol version"))?;
    let kind = *buf.get(3).ok_or(DecodeError::Truncated("message type"))?;
    buf = &buf[CHITCHAT_HEADER_LEN..];
    let mut items = 0usize;
    let body = match kind {
        0 => {
            let digest = read_digest(&mut buf, version, limits, &mut items)?;
            let cluster_id = field::<String>(&mut buf, "cluster id")?;
            WireBody::Syn { cluster_id, digest }
        }
        1 => {
            let digest = read_digest(&mut buf, version, limits, &mut items)?;
            let delta = read_delta(&mut buf, limits, &mut items)?;
            WireBody::SynAck { digest, delta }
        }
        2 => WireBody::Ack { delta: read_delta(&mut buf, limits, &mut items)? },
        3 => WireBody::BadCluster,
        _ => return Err(DecodeError::Invalid("message type")),
    };
    if !buf.is_empty() {
        return Err(DecodeError::Trailing(buf.len()));
    }
    Ok(WireMessage { version, body })
}

/// Reads one field with chitchat's own decoder; its errors are all "truncated or invalid".
fn field<T: Deserializable>(buf: &mut &[u8], what: &'static str) -> Result<T, DecodeError> {
    if buf.is_empty() {
        return Err(DecodeError::Truncated(what));
    }
    T::deserialize(buf).map_err(|_| DecodeError::Invalid(what))
}

fn count_item(items: &mut usize, limits: &DecodeLimits) -> Result<(), DecodeError> {
    *items += 1;
    if *items > limits.max_items {
        return Err(DecodeError::Limit { what: "items", limit: limits.max_items });
    }
    Ok(())
}

fn read_digest_entry(buf: &mut &[u8]) -> Result<DigestEntry, DecodeError> {
    Ok(DigestEntry {
        id: field::<ChitchatId>(buf, "digest node id")?,
        heartbeat: field::<u64>(buf, "digest heartbeat")?,
        last_gc_version: field::<u64>(buf, "digest last gc version")?,
        max_version: field::<u64>(buf, "digest max version")?,
    })
}

fn read_digest(
    buf: &mut &[u8],
    version: ProtocolVersion,
    limits: &DecodeLimits,
    items: &mut usize,
) -> Result<Vec<DigestEntry>, DecodeError> {
    let mut entries = Vec::new();
    match version {
        ProtocolVersion::V0 => {
            let count = field::<u16>(buf, "digest length")?;
            for _ in 0..count {
                count_item(items, limits)?;
                entries.push(read_digest_entry(buf)?);
            }
        }
        ProtocolVersion::V1 => {
            let stream = read_stream(buf, limits)?;
            let mut cursor = &stream[..];
            while !cursor.is_empty() {
                count_item(items, limits)?;
                entries.push(read_digest_entry(&mut cursor)?);
            }
        }
    }
    Ok(entries)
}

/// Reads a block stream as chitchat does, bounded by `limits`.
fn read_stream(buf: &mut &[u8], limits: &DecodeLimits) -> Result<Vec<u8>, DecodeError> {
    let mut stream = Vec::new();
    let mut block_buffer: Vec<u8> = Vec::new();
    let mut blocks = 0usize;
    loop {
        let tag = field::<u8>(buf, "block type")?;
        if tag == 0 {
            return Ok(stream);
        }
        blocks += 1;
        if blocks > limits.max_blocks {
            return Err(DecodeError::Limit { what: "blocks", limit: limits.max_blocks });
        }
        let len = field::<u16>(buf, "block length")? as usize;
        let bytes = buf.get(..len).ok_or(DecodeError::Truncated("block"))?;
        *buf = &buf[len..];
        let block: &[u8] = match tag {
            1 => {
                if block_buffer.is_empty() {
                    block_buffer = vec![0u8; BLOCK_BUFFER_LEN];
                }
                let n = zstd::bulk::decompress_to_buffer(bytes, &mut block_buffer[..])
                    .map_err(|_| DecodeError::Decompress)?;
                &block_buffer[..n]
            }
            2 => bytes,
            _ => return Err(DecodeError::Invalid("block type")),
        };
        if stream.len() + block.len() > limits.max_stream_bytes {
            return Err(DecodeError::Limit { what: "decompressed bytes", limit: limits.max_stream_bytes });
        }
        stream.extend_from_slice(block);
    }
}

fn read_delta(buf: &mut &[u8], limits: &DecodeLimits, items: &mut usize) -> Result<Vec<NodeDelta>, DecodeError> {
    let stream = read_stream(buf, limits)?;
    let mut cursor = &stream[..];
    let mut nodes: Vec<NodeDelta> = Vec::new();
    let mut seen: HashSet<ChitchatId> = HashSet::new();
    // The builder's running max version of the current node (chitchat's `DeltaBuilder`).
    let mut current_max = 0u64;
    while !cursor.is_empty() {
        count_item(items, limits)?;
        match field::<u8>(&mut cursor, "delta op tag")? {
            0 => {
                let id = field::<ChitchatId>(&mut cursor, "delta node id")?;
                let last_gc_version = field::<u64>(&mut cursor, "delta last gc version")?;
                let from_version_excluded = field::<u64>(&mut cursor, "delta from version")?;
                if !seen.insert(id.clone()) {
                    return Err(DecodeError::Delta("a node appears twice"));
                }
                current_max = 0;
                nodes.push(NodeDelta { id, last_gc_version, from_version_excluded, ops: Vec::new() });
            }
            1 => {
                let key = field::<String>(&mut cursor, "key")?;
                let value = field::<String>(&mut cursor, "value")?;
                let version = field::<u64>(&mut cursor, "key version")?;
                let status = field::<u8>(&mut cursor, "key status")?;
                if status > 2 {
                    return Err(DecodeError::Invalid("key status"));
                }
                let node = nodes.last_mut().ok_or(DecodeError::Delta("key-value before any node"))?;
                if version <= current_max {
                    return Err(DecodeError::Delta("key versions not strictly increasing"));
                }
                current_max = version;
                node.ops.push(DeltaOp::KeyValue(KeyValue { key, value, version, status }));
            }
            2 => {
                let version = field::<u64>(&mut cursor, "max version")?;
                let node = nodes.last_mut().ok_or(DecodeError::Delta("set-max-version before any node"))?;
                current_max = version;
                node.ops.push(DeltaOp::SetMaxVersion(version));
            }
            _ => return Err(DecodeError::Invalid("delta op tag")),
        }
    }
    Ok(nodes)
}

/// Encodes `message` as chitchat would.
pub fn encode(message: &WireMessage, out: &mut Vec<u8>) {
    out.extend_from_slice(&CHITCHAT_MAGIC.to_le_bytes());
    out.push(message.version.to_code());
    match &message.body {
        WireBody::Syn { cluster_id, digest } => {
            out.push(0);
            encode_digest(message.version, digest, out);
            cluster_id.serialize(out);
        }
        WireBody::SynAck { digest, delta } => {
            out.push(1);
            encode_digest(message.version, digest, out);
            encode_delta(delta, out);
        }
        WireBody::Ack { delta } => {
            out.push(2);
            encode_delta(delta, out);
        }
        WireBody::BadCluster => out.push(3),
    }
}

fn encode_digest_entry(entry: &DigestEntry, out: &mut Vec<u8>) {
    entry.id.serialize(out);
    entry.heartbeat.serialize(out);
    entry.last_gc_version.serialize(out);
    entry.max_version.serialize(out);
}

fn encode_digest(version: ProtocolVersion, digest: &[DigestEntry], out: &mut Vec<u8>) {
    match version {
        ProtocolVersion::V0 => {
            (digest.len() as u16).serialize(out);
            for entry in digest {
                encode_digest_entry(entry, out);
            }
        }
        ProtocolVersion::V1 => {
            let mut raw = Vec::new();
            for entry in digest {
                encode_digest_entry(entry, &mut raw);
            }
            encode_stream(&raw, out);
        }
    }
}

/// The raw (uncompressed) op bytes of a delta.
pub fn delta_ops_bytes(delta: &[NodeDelta], out: &mut Vec<u8>) {
    for node in delta {
        out.push(0);
        node.id.serialize(out);
        node.last_gc_version.serialize(out);
        node.from_version_excluded.serialize(out);
        for op in &node.ops {
            match op {
                DeltaOp::KeyValue(kv) => {
                    out.push(1);
                    kv.key.serialize(out);
                    kv.value.serialize(out);
                    kv.version.serialize(out);
                    out.push(kv.status);
                }
                DeltaOp::SetMaxVersion(version) => {
                    out.push(2);
                    version.serialize(out);
                }
            }
        }
    }
}

fn encode_delta(delta: &[NodeDelta], out: &mut Vec<u8>) {
    let mut raw = Vec::new();
    delta_ops_bytes(delta, &mut raw);
    encode_stream(&raw, out);
}

/// Writes `raw` as a block stream: 16 KiB blocks, zstd-compressed when that is shorter.
pub fn encode_stream(raw: &[u8], out: &mut Vec<u8>) {
    for chunk in raw.chunks(ENCODE_BLOCK_LEN) {
        match zstd::bulk::compress(chunk, 0) {
            Ok(compressed) if compressed.len() < chunk.len() => {
                out.push(1);
                (compressed.len() as u16).serialize(out);
                out.extend_from_slice(&compressed);
            }
            _ => {
                out.push(2);
                (chunk.len() as u16).serialize(out);
                out.extend_from_slice(chunk);
            }
        }
    }
    out.push(0);
}

/// Re-encodes `plaintext` (a message this node's chitchat wrote) in at most `max_len` bytes by
/// dropping the delta's last ops, as chitchat itself does when it reaches its size budget. chitchat
/// budgets a whole datagram for the message, leaving no room for the seal; this makes the room.
/// A node is never cut right after its node op (chitchat would read that as a reset). `None` if
/// the message cannot be decoded or even an empty delta does not fit (a digest that large is
/// prevented by [`crate::GuardLimits`]).
pub fn fit(plaintext: &[u8], max_len: usize) -> Option<Vec<u8>> {
    let message = decode(plaintext, &DecodeLimits::OWN_MESSAGES).ok()?;
    let delta = message.delta();
    // Cut points: after every key-value or set-max-version op, counted in wire order.
    let cuts: Vec<(usize, usize)> =
        delta.iter().enumerate().flat_map(|(node, delta)| (1..=delta.ops.len()).map(move |ops| (node, ops))).collect();
    let encode_cut = |cut: Option<(usize, usize)>| -> Vec<u8> {
        let kept: Vec<NodeDelta> = match cut {
            None => Vec::new(),
            Some((node, ops)) => {
                let mut kept: Vec<NodeDelta> = delta[..=node].to_vec();
                kept[node].ops.truncate(ops);
                kept
            }
        };
        let body = match &message.body {
            WireBody::SynAck { digest, .. } => WireBody::SynAck { digest: digest.clone(), delta: kept },
            WireBody::Ack { .. } => WireBody::Ack { delta: kept },
            other => other.clone(),
        };
        let mut out = Vec::with_capacity(max_len);
        encode(&WireMessage { version: message.version, body }, &mut out);
        out
    };
    // Binary search for the longest prefix of cut points that fits.
    let (mut fits, mut too_long) = (0usize, cuts.len() + 1);
    let mut best = encode_cut(None);
    if best.len() > max_len {
        return None;
    }
    while too_long - fits > 1 {
        let middle = (fits + too_long) / 2;
        let candidate = encode_cut(Some(cuts[middle - 1]));
        if candidate.len() <= max_len {
            fits = middle;
            best = candidate;
        } else {
            too_long = middle;
        }
    }
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, port: u16) -> ChitchatId {
        ChitchatId::new(name.to_owned(), 7, ([127, 0, 0, 1], port).into())
    }

    fn sample(version: ProtocolVersion) -> WireMessage {
        let digest = (0..5)
            .map(|i| DigestEntry {
                id: id(&format!("node-{i}"), 7000 + i),
                heartbeat: 10,
                last_gc_version: 0,
                max_version: 3,
            })
            .collect();
        let delta = vec![
            NodeDelta {
                id: id("node-1", 7001),
                last_gc_version: 0,
                from_version_excluded: 0,
                ops: vec![
                    DeltaOp::KeyValue(KeyValue { key: "a".into(), value: "x".repeat(40), version: 1, status: 0 }),
                    DeltaOp::KeyValue(KeyValue { key: "b".into(), value: String::new(), version: 3, status: 1 }),
                ],
            },
            NodeDelta {
                id: id("node-2", 7002),
                last_gc_version: 0,
                from_version_excluded: 0,
                ops: vec![DeltaOp::SetMaxVersion(4)],
            },
        ];
        WireMessage { version, body: WireBody::SynAck { digest, delta } }
    }

    #[test]
    fn every_message_round_trips() {
        for version in [ProtocolVersion::V0, ProtocolVersion::V1] {
            let syn_ack = sample(version);
            let WireBody::SynAck { digest, delta } = syn_ack.body.clone() else { unreachable!() };
            for message in [
                syn_ack,
                WireMessage { version, body: WireBody::Syn { cluster_id: "c".into(), digest } },
                WireMessage { version, body: WireBody::Ack { delta } },
                WireMessage { version, body: WireBody::BadCluster },
            ] {
                let mut bytes = Vec::new();
                encode(&message, &mut bytes);
                assert_eq!(decode(&bytes, &DecodeLimits::OWN_MESSAGES).unwrap(), message);
            }
        }
    }

    #[test]
    fn trailing_bytes_and_bad_headers_are_refused() {
        let mut bytes = Vec::new();
        encode(&sample(ProtocolVersion::V0), &mut bytes);
        let limits = DecodeLimits::OWN_MESSAGES;
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode(&trailing, &limits), Err(DecodeError::Trailing(1)));
        assert_eq!(decode(&bytes[..bytes.len() - 1], &limits).unwrap_err(), DecodeError::Truncated("block type"));
        assert_eq!(decode(&[0x53, 0xB0], &limits), Err(DecodeError::Truncated("header")));
        assert_eq!(decode(&[0x53, 0xB1, 0, 3], &limits), Err(DecodeError::Magic));
        assert_eq!(decode(&[0x53, 0xB0, 2, 3], &limits), Err(DecodeError::Invalid("protocol version")));
        assert_eq!(decode(&[0x53, 0xB0, 0, 255], &limits), Err(DecodeError::Invalid("message type")));
    }

    #[test]
    fn a_compressed_block_bomb_stops_at_the_limit() {
        // 64 KiB of zeros compresses to a few bytes; 200 such blocks would be 13 MB.
        let frame = zstd::bulk::compress(&vec![0u8; BLOCK_BUFFER_LEN], 19).unwrap();
        assert!(frame.len() < 64, "{}", frame.len());
        let mut bytes = vec![0x53, 0xB0, 0, 2];
        for _ in 0..200 {
            bytes.push(1);
            bytes.extend_from_slice(&(frame.len() as u16).to_le_bytes());
            bytes.extend_from_slice(&frame);
        }
        bytes.push(0);
        let limits = DecodeLimits { max_stream_bytes: 1 << 20, max_blocks: 1_000, max_items: 1_000 };
        assert_eq!(decode(&bytes, &limits), Err(DecodeError::Limit { what: "decompressed bytes", limit: 1 << 20 }));
        let few_blocks = DecodeLimits { max_blocks: 10, ..limits };
        assert_eq!(decode(&bytes, &few_blocks), Err(DecodeError::Limit { what: "blocks", limit: 10 }));
    }

    #[test]
    fn a_block_larger_than_chitchats_buffer_is_refused_like_chitchat_does() {
        let frame = zstd::bulk::compress(&vec![7u8; BLOCK_BUFFER_LEN + 1], 3).unwrap();
        let mut bytes = vec![0x53, 0xB0, 0, 2, 1];
        bytes.extend_from_slice(&(frame.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&frame);
        bytes.push(0);
        assert_eq!(decode(&bytes, &DecodeLimits::OWN_MESSAGES), Err(DecodeError::Decompress));
    }

    #[test]
    fn delta_builder_rules_are_mirrored() {
        let node = |ops| NodeDelta { id: id("n", 1), last_gc_version: 0, from_version_excluded: 0, ops };
        let kv = |version| DeltaOp::KeyValue(KeyValue { key: "k".into(), value: "v".into(), version, status: 0 });
        let cases = [
            (vec![node(vec![kv(2), kv(2)])], DecodeError::Delta("key versions not strictly increasing")),
            (vec![node(vec![kv(0)])], DecodeError::Delta("key versions not strictly increasing")),
            (
                vec![node(vec![DeltaOp::SetMaxVersion(9), kv(5)])],
                DecodeError::Delta("key versions not strictly increasing"),
            ),
            (vec![node(vec![]), node(vec![])], DecodeError::Delta("a node appears twice")),
        ];
        for (delta, expected) in cases {
            let mut bytes = Vec::new();
            encode(&WireMessage { version: ProtocolVersion::V0, body: WireBody::Ack { delta } }, &mut bytes);
            assert_eq!(decode(&bytes, &DecodeLimits::OWN_MESSAGES), Err(expected));
        }
        // A set-max-version below the last key version decodes (chitchat accepts it too): the
        // guard refuses it.
        let delta = vec![node(vec![kv(1000), DeltaOp::SetMaxVersion(5)])];
        let mut bytes = Vec::new();
        encode(&WireMessage { version: ProtocolVersion::V0, body: WireBody::Ack { delta } }, &mut bytes);
        assert_eq!(decode(&bytes, &DecodeLimits::OWN_MESSAGES).unwrap().delta()[0].max_version(), 5);
    }

    #[test]
    fn fit_drops_the_last_ops_and_never_leaves_a_bare_node() {
        let mut message = sample(ProtocolVersion::V0);
        let mut bytes = Vec::new();
        encode(&message, &mut bytes);
        assert_eq!(fit(&bytes, bytes.len()).unwrap(), bytes);
        // One byte less: the last node (set-max-version only) goes entirely.
        let fitted = fit(&bytes, bytes.len() - 1).unwrap();
        let decoded = decode(&fitted, &DecodeLimits::OWN_MESSAGES).unwrap();
        assert_eq!(decoded.delta().len(), 1);
        assert_eq!(decoded.delta()[0].ops.len(), 2);
        assert_eq!(decoded.digest(), message.digest());
        // Room for the digest only: an empty delta.
        let WireBody::SynAck { delta, .. } = &mut message.body else { unreachable!() };
        delta.clear();
        let mut empty = Vec::new();
        encode(&message, &mut empty);
        assert_eq!(fit(&bytes, empty.len()).unwrap(), empty);
        assert_eq!(fit(&bytes, empty.len() - 1), None);
    }
}
