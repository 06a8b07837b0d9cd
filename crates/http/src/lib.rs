//! senti's HTTP API: axum handlers over the engine, one error-to-status mapping, metrics, the
//! web page and the generated OpenAPI document.
//!
//! [`serve`] runs the app on a socket with the `[server]` timeouts and connection cap.
//! A request's path here: [`app`] (router + middleware: request id and span, node header,
//! metrics, auth) -> `api::classify` (validate limits, compute the deadline, tokenize once with
//! `Engine::encode`) -> `Gateway::classify` (the gateway actor, `senti-routing`) -> back as JSON,
//! or as an [`ApiError`] mapped to its status in `error.rs`. The response types here are the API's
//! one definition: the bench tools deserialize them too.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod app;
mod auth;
mod cluster;
mod error;
mod extract;
mod metrics;
mod recent;
mod serve;
mod state;
mod ui;

pub use api::{
    AnalyzeRequest, AnalyzeResponse, ClassifyRequest, ClassifyResponse, ClassifyResult, ModelInfo, Status,
    MODEL_HEADER, SERVED_BY_HEADER, TIMEOUT_HEADER,
};
pub use app::{app, openapi, NODE_HEADER, REQUEST_ID_HEADER};
pub use cluster::ClusterResponse;
pub use error::{ApiError, ErrorBody, ErrorDetail, LimitInfo};
pub use metrics::handle as metrics_handle;
pub use recent::{ErrorRecord, RecentErrors, RECENT_ERRORS};
pub use senti_cluster::{ActorReport, ClusterReport, DeadReport, MemberReport};
pub use senti_routing::{RoutingSnapshot, TargetReport};
pub use serve::{serve, ServeLimits, REFUSING_AT_ONCE};
pub use state::AppState;
