//! Benchmarks of one senti node, shared by two binaries:
//!
//! - `senti-bench-raw` ([`raw`]): ONNX Runtime alone, no HTTP and no actors: texts per second for
//!   each batch size and thread count, and the latency of one inference. This is the ceiling.
//! - `senti-loadgen` ([`load`]): HTTP load against a running `senti` on loopback, closed loop
//!   (`ab -c N`) or open loop at a fixed arrival rate (wrk2: latency counted from the scheduled
//!   send time, so a stalled server shows up as latency rather than as fewer samples).
//!
//! - `senti-bench-accuracy`: accuracy of each variant of a model (fp32, int8) on labeled reviews,
//!   and how often they agree: what the faster variant costs.
//!
//! All read real Chinese reviews ([`payload`]) and summarise latencies with an HdrHistogram
//! ([`latency`]); `senti-loadgen` sends them in a [`trace`] (cycled, or with a given share of
//! repeats, to measure the result cache). `scripts/bench-node.sh` runs both side by side and
//! compares them; docs/benchmarks.md records the figures.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod latency;
pub mod load;
pub mod payload;
pub mod raw;
pub mod target;
pub mod trace;

pub use latency::{LatencyRecorder, LatencySummary};
pub use load::{ErrorKind, LoadPlan, LoadReport, Pacing, Route};
pub use payload::{default_payload_path, mix, read_labeled, read_texts, PayloadError};
pub use raw::{median_round, RawConfig, RawResult};
pub use target::{loopback_url, TargetError};
pub use trace::{Requests, Trace};

/// A bin's exit: success, or the error's chain on stderr after the program name, and failure.
pub fn exit_code(program: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{program}: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
