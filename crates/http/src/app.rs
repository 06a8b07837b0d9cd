//! The router: routes, middleware order, fallbacks. `app(state)` is all a test needs.

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use senti_engine::RequestId;
use tracing::Instrument;
use utoipa::OpenApi;

use crate::api;
use crate::error::ApiError;
use crate::state::AppState;

/// Response header naming the node that answered.
pub const NODE_HEADER: &str = "x-senti-node";
/// Request and response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(OpenApi)]
#[openapi(
    info(title = "senti", description = "Chinese sentiment analysis (正面 / 负面) over HTTP."),
    paths(api::analyze, api::classify, crate::cluster::cluster, api::healthz, api::readyz, api::metrics),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail, crate::error::LimitInfo))
)]
struct ApiDoc;

/// The OpenAPI document, generated from the handlers' annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The whole HTTP app of one node.
pub fn app(state: AppState) -> Router {
    let inference = Router::new()
        .route("/analyze", post(api::analyze))
        .route("/v1/classify", post(api::classify))
        .route_layer(middleware::from_fn_with_state(state.clone(), admit));
    let protected = Router::new()
        .merge(inference)
        .route("/v1/cluster", get(crate::cluster::cluster))
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::auth::require_token));
    let metrics = Router::new()
        .route("/metrics", get(api::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::auth::require_token_for_metrics));
    Router::new()
        .merge(protected)
        .merge(metrics)
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .route("/", get(|| async { Html(crate::ui::INDEX_HTML) }))
        .route("/cluster", get(|| async { Html(crate::ui::CLUSTER_HTML) }))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(crate::metrics::track))
        .layer(middleware::from_fn_with_state(state.clone(), crate::recent::record))
        .layer(middleware::from_fn_with_state(state.clone(), node_header))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// A draining node refuses inference requests that arrive from now on (503, retry elsewhere);
/// those admitted before run to the end, whatever stage they are in (body, tokenizer, queue).
async fn admit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.readiness.is_draining() {
        return ApiError::ShuttingDown.into_response();
    }
    next.run(req).await
}

async fn node_header(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await.into_response();
    if let Ok(value) = HeaderValue::from_str(&state.node_id) {
        response.headers_mut().insert(NODE_HEADER, value);
    }
    response
}

/// Gives every request an id (the client's `x-request-id` if acceptable, else a new one), a
/// tracing span that every log line of the request carries, here and on the node that runs it,
/// and the id back in the response.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::parse)
        .unwrap_or_else(RequestId::generate);
    req.extensions_mut().insert(id.clone());
    let span = tracing::info_span!("request", id = %id);
    let mut response = next.run(req).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}
