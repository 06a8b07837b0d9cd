//! Pure routing decisions of the cluster gateway: where an attempt goes, whether it may be retried or
//! hedged, and which targets to leave alone for a while.
//!
//! No I/O, no async, no clock reads: every function takes `now` or a duration, so unit tests, property
//! tests and the deterministic simulator drive time themselves. One request uses them in this order:
//! ```text
//! new request      RetryBudget::deposit (retry and hedge budgets)
//! place            TargetHealth::is_ejected filters targets; LoadView -> estimate -> Candidate;
//!                  power_of_two_choices (or least_loaded for a few targets)
//! slow attempt     HedgePolicy::hedge_delay(LatencyWindow) passes; hedge budget try_withdraw;
//!                  place again with the first target excluded
//! attempt ends     LatencyWindow::record; TargetHealth::record_success / record_failure (may_eject)
//! retryable error  retry budget try_withdraw; place again with the failed target excluded
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod budget;
mod choose;
mod estimate;
mod hedge;
mod outlier;

pub use budget::RetryBudget;
pub use choose::{least_loaded, local_plus_two_remote, power_of_two_choices, Candidate};
pub use estimate::{estimate, EstimateParams, LoadView};
pub use hedge::{attempt_timeout, HedgePolicy, LatencyWindow};
pub use outlier::{may_eject, OutlierParams, TargetHealth};
