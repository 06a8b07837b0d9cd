//! The router: routes, middleware order, fallbacks. `app(state)` is all a test needs.

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::api;
use crate::error::ApiError;
use crate::state::AppState;

/// Response header naming the node that answered.
pub const NODE_HEADER: &str = "x-senti-node";

#[derive(OpenApi)]
#[openapi(
    info(title = "senti", description = "Chinese sentiment analysis (正面 / 负面) over HTTP."),
    paths(api::analyze, api::classify, api::healthz, api::readyz, api::metrics),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail, crate::error::LimitInfo))
)]
struct ApiDoc;

/// The OpenAPI document, generated from the handlers' annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The whole HTTP app of one node.
pub fn app(state: AppState) -> Router {
    let protected = Router::new()
        .route("/analyze", post(api::analyze))
        .route("/v1/classify", post(api::classify))
        .route("/v1/cluster", get(crate::cluster::cluster))
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::auth::require_token));
    Router::new()
        .merge(protected)
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .route("/", get(|| async { Html(crate::ui::INDEX_HTML) }))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(crate::metrics::track))
        .layer(middleware::from_fn_with_state(state.clone(), node_header))
        .with_state(state)
}

async fn node_header(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await.into_response();
    if let Ok(value) = HeaderValue::from_str(&state.node_id) {
        response.headers_mut().insert(NODE_HEADER, value);
    }
    response
}
