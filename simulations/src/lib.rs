//! The senti cluster in one process, for chaos scenarios and the routing-quality report.
//!
//! ```text
//! scenario.rs    Vec<Op> (crash, restart, hang, slow, partition, loss, ...) run on virtual time
//! cluster.rs     N nodes: real GatewayActor, real chitchat + senti gossip keys, real load
//!                publisher and target refresh; simulated network and inference
//! net.rs         the simulated network (chitchat Transport + hop fates), seeded
//! hop.rs         the inter-node hop over it (the `Hop` trait real ractor_cluster hops implement)
//! actor.rs       simulated inference actor (mock of ONNX inference; simulations only)
//! trace.rs       event trace and its hash
//! invariants.rs  what every run must keep, as functions of the trace
//! quality.rs     routing-quality report: policies against an oracle (discrete-event, seeded)
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod actor;
pub mod cluster;
pub mod hop;
pub mod invariants;
pub mod net;
pub mod quality;
pub mod scenario;
pub mod trace;

pub use cluster::{SimCluster, SimConfig};
pub use invariants::{Bounds, Violation};
pub use scenario::{run, run_blocking, Op, Report, Scenario};
