//! The gateway actor and the pure routing decisions it makes: where an attempt goes, whether it
//! may be retried or hedged, and which targets to leave alone for a while.
//!
//! ```text
//! Gateway (handle) ──Classify──> GatewayActor (gateway.rs)
//!                                 │ place: LoadSource -> LoadView -> estimate -> Candidate ->
//!                                 │        local_plus_sampled_remote; ejected targets skipped
//!                                 ▼
//!                                attempt task (attempt.rs) ──Hop::send──> inference actor,
//!                                 │                                        here or on another node
//!                                 └─ AttemptEnded / Retry / Hedge ──> GatewayActor
//! ```
//! The policies are pure: no I/O, no async, no clock reads; every function takes `now` or a
//! duration, so unit tests, property tests and the deterministic simulator drive time themselves.
//! One request uses them in this order:
//! ```text
//! new request      RetryBudget::deposit (retry and hedge budgets)
//! place            TargetHealth::is_ejected filters targets; mean_backlog; LoadView::new -> estimate ->
//!                  Candidate; local_plus_sampled_remote, RemoteSampling; use_notice -> IdleNotices::take
//! slow attempt     HedgePolicy::hedge_delay(LatencyWindow, queue wait + expected) passes; hedge budget try_withdraw;
//!                  place again on another node
//! attempt ends     LatencyWindow::record; TargetHealth::record_success / record_failure (may_eject)
//! retryable error  retry budget try_withdraw; place again with the failed target excluded
//! ```
//! The cluster layer (`senti-cluster`) tells the gateway about other nodes' actors with
//! [`GatewayMsg::SetRemoteTargets`], and about their gateways, where this node's idle notices go
//! (notices.rs), with [`GatewayMsg::SetNoticeRecipients`]; it depends on this crate's types, not
//! on the engine's.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod attempt;
mod budget;
mod cache;
mod choose;
mod estimate;
mod gateway;
mod hedge;
mod hop;
mod job;
mod models;
mod notices;
mod outlier;
mod params;
mod target;
mod wire;

pub use attempt::AttemptOutcome;
pub use budget::RetryBudget;
pub use cache::{CacheAnswer, CacheStats, Freshness, ResultCache};
pub use choose::{
    least_loaded, local_plus_sampled_remote, power_of_two_choices, Candidate, RemoteSampling, FEW_REMOTE_SAMPLES,
    MANY_REMOTE_SAMPLES,
};
pub use estimate::{estimate, mean_backlog, mean_rate, work_ahead, EstimateParams, LoadView, Reported};
pub use gateway::{Gateway, GatewayActor, GatewayArgs, GatewayMsg};
pub use hedge::{attempt_timeout, HedgePolicy, LatencyWindow};
pub use hop::Hop;
pub use job::{Classified, Job};
pub use models::{compare_versions, ServedModels, OLDER_MODEL_PENALTY_TOKENS};
pub use notices::{
    use_notice, IdleNotices, IDLE_NOTICE_FANOUT, IDLE_NOTICE_TTL, MAX_IDLE_NOTICES, NOTICE_AFTER_ATTEMPTS,
};
pub use outlier::{may_eject, OutlierParams, TargetHealth};
pub use params::RoutingParams;
pub use target::{LoadSource, RoutingSnapshot, Target, TargetId, TargetReport};
pub use wire::MAX_NOTICE_BYTES;
