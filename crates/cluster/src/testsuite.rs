//! Test helpers (feature `testsuite`) for this crate's tests and later multi-process tests:
//! chitchat's wire format (wire.rs), a forger of attack packets, chitchat nodes on loopback
//! with or without sealing, and the session sockets' options (for proxies that stand in for a
//! session's socket).

mod forger;
mod nodes;

pub use forger::Forger;
pub use nodes::{free_udp_addr, test_chitchat_config, wait_until, TestNode, TEST_CLUSTER_ID};

pub use crate::transport::{connect_timeout, prepare as prepare_session_socket};

pub use crate::wire::{
    decode, delta_ops_bytes, encode, encode_stream, fit, DecodeError, DecodeLimits, DeltaOp, DigestEntry, KeyValue,
    NodeDelta, WireBody, WireMessage, CHITCHAT_HEADER_LEN, CHITCHAT_MAGIC, MAX_UDP_PAYLOAD,
};
