//! Optional bearer-token authentication (off when `auth.tokens` is empty).
//!
//! Guards what reads or spends the cluster: classification, `GET /v1/cluster` (node ids, gossip
//! and actor addresses, recent errors) and `GET /metrics` unless `auth.open_metrics` is set for a
//! Prometheus without a token. Health, readiness, the OpenAPI document and the web pages stay
//! open: probes need no secret, and the pages are static (the cluster page asks for a token and
//! sends it with its `/v1/cluster` requests). Tokens are compared in constant time.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Rejects with 401 (no token) or 403 (unknown token) when tokens are configured.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.auth.tokens.is_empty() {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match presented {
        None => ApiError::MissingToken.into_response(),
        Some(token) if state.auth.tokens.iter().any(|t| constant_time_eq(t.as_bytes(), token.as_bytes())) => {
            next.run(req).await
        }
        Some(_) => ApiError::WrongToken.into_response(),
    }
}

/// [`require_token`], unless `auth.open_metrics` leaves `/metrics` open.
pub async fn require_token_for_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.auth.open_metrics {
        return next.run(req).await;
    }
    require_token(State(state), req, next).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
