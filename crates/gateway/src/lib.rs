//! senti's HTTP API: axum handlers over the engine, one error-to-status mapping, metrics, the
//! web page and the generated OpenAPI document.
//!
//! A request's path here: [`app`] (router + middleware: node header, metrics, auth) ->
//! `api::classify` (validate limits, compute the deadline) -> `Engine::classify` (gateway actor)
//! -> back as JSON, or as an [`ApiError`] mapped to its status in `error.rs`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod app;
mod auth;
mod cluster;
mod error;
mod extract;
mod metrics;
mod state;
mod ui;

pub use api::{
    AnalyzeRequest, AnalyzeResponse, ClassifyRequest, ClassifyResponse, ClassifyResult, ModelInfo, Status,
    SERVED_BY_HEADER, TIMEOUT_HEADER,
};
pub use app::{app, openapi, NODE_HEADER};
pub use cluster::{ClusterResponse, RoutingReport, TargetJson};
pub use error::{ApiError, ErrorBody, ErrorDetail, LimitInfo};
pub use state::AppState;
