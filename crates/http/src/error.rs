//! The one place where errors become HTTP statuses.
//!
//! Every error body has the same shape: `{"error": {"code", "message", "limit"?}}` where `limit`
//! names the configuration key and value that was exceeded, so a client knows what to change.
//! Bad input is always a 4xx; 5xx is kept for the server's own failures.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use senti_engine::InferError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::recent::ErrorSummary;

/// A limit that a request exceeded.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct LimitInfo {
    /// Configuration key, e.g. `limits.max_text_chars`.
    pub name: &'static str,
    /// The configured value.
    pub value: u64,
}

/// Error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `text_too_long`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// The limit that applies, when one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitInfo>,
}

/// Every way a request can fail.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 400: the body is not JSON.
    MalformedJson(String),
    /// 400: the body is not UTF-8.
    InvalidUtf8,
    /// 401: no bearer token.
    MissingToken,
    /// 403: a bearer token that is not accepted.
    WrongToken,
    /// 404
    NotFound,
    /// 405
    MethodNotAllowed,
    /// 413: the body is larger than `limits.max_body_bytes`.
    BodyTooLarge(u64),
    /// 415: not `application/json`.
    UnsupportedMediaType,
    /// 422: JSON of the wrong shape (missing field, wrong type).
    InvalidRequest(String),
    /// 422: an empty or whitespace-only text.
    EmptyText {
        /// Position in `texts` (0 for /analyze).
        index: usize,
    },
    /// 422: no texts at all.
    NoTexts,
    /// 422: a text longer than `limits.max_text_chars`.
    TextTooLong {
        /// Position in `texts`.
        index: usize,
        /// Its length in characters.
        chars: usize,
        /// The limit.
        max: u64,
    },
    /// 422: more texts than `limits.max_texts`.
    TooManyTexts {
        /// How many were sent.
        count: usize,
        /// The limit.
        max: u64,
    },
    /// 400: a `model` field or `x-senti-model` header that is not `name` or `name@version`.
    BadModel,
    /// 404: a model this node does not serve.
    ModelNotServed {
        /// As asked.
        requested: String,
        /// What this node serves, `name@version`.
        served: String,
        /// HTTP addresses of ready nodes that serve the requested model, per gossip.
        elsewhere: Vec<String>,
    },
    /// 400: a bad `x-senti-timeout-ms` header.
    BadTimeout(String),
    /// 429: queues full.
    QueueFull(Duration),
    /// 503: shutting down.
    ShuttingDown,
    /// 503: `server.max_connections` connections are open; this one is closed after the answer.
    TooManyConnections(u64),
    /// 503: not ready or no actor available.
    Unavailable,
    /// 504: the deadline passed.
    DeadlineExceeded,
    /// 500: the model failed.
    Inference(String),
}

impl From<InferError> for ApiError {
    fn from(err: InferError) -> Self {
        match err {
            InferError::QueueFull { retry_after } => ApiError::QueueFull(retry_after),
            InferError::DeadlineExceeded | InferError::AttemptTimedOut => ApiError::DeadlineExceeded,
            InferError::ShuttingDown => ApiError::ShuttingDown,
            InferError::Unavailable => ApiError::Unavailable,
            InferError::Model(failure) => ApiError::Inference(failure.to_string()),
            InferError::Invalid(message) => ApiError::InvalidRequest(message),
        }
    }
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String, Option<LimitInfo>) {
        use ApiError::*;
        match self {
            MalformedJson(m) => {
                (StatusCode::BAD_REQUEST, "malformed_json", format!("the body is not valid JSON: {m}"), None)
            }
            InvalidUtf8 => (StatusCode::BAD_REQUEST, "invalid_utf8", "the body is not valid UTF-8".into(), None),
            MissingToken => (
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "this server requires `Authorization: Bearer <token>`".into(),
                None,
            ),
            WrongToken => (StatusCode::FORBIDDEN, "wrong_token", "the bearer token is not accepted".into(), None),
            NotFound => (StatusCode::NOT_FOUND, "not_found", "no such route; see GET /openapi.json".into(), None),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method; see GET /openapi.json".into(),
                None,
            ),
            BodyTooLarge(max) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body exceeds {max} bytes"),
                Some(LimitInfo { name: "limits.max_body_bytes", value: *max }),
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`".into(),
                None,
            ),
            InvalidRequest(m) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", m.clone(), None),
            EmptyText { index } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "empty_text",
                format!("text {index} is empty or only whitespace"),
                None,
            ),
            NoTexts => {
                (StatusCode::UNPROCESSABLE_ENTITY, "no_texts", "`texts` must contain at least one text".into(), None)
            }
            TextTooLong { index, chars, max } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "text_too_long",
                format!("text {index} has {chars} characters; the limit is {max}"),
                Some(LimitInfo { name: "limits.max_text_chars", value: *max }),
            ),
            TooManyTexts { count, max } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "too_many_texts",
                format!("the request has {count} texts; the limit is {max}"),
                Some(LimitInfo { name: "limits.max_texts", value: *max }),
            ),
            BadTimeout(m) => (StatusCode::BAD_REQUEST, "bad_timeout", m.clone(), None),
            QueueFull(after) => (
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                format!(
                    "the inference queues are full: each holds `advanced.queue_capacity` texts or more work than \
                     it can finish before the request's deadline (`limits.request_timeout_ms` or the request's \
                     timeout); retry after {} s",
                    retry_after_secs(*after)
                ),
                None,
            ),
            ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the node is shutting down; send the request to another node".into(),
                None,
            ),
            TooManyConnections(max) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                format!(
                    "this node serves {max} connections at once and all are taken; retry shortly or use another node"
                ),
                Some(LimitInfo { name: "server.max_connections", value: *max }),
            ),
            Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "no inference actor is ready".into(), None),
            BadModel => (
                StatusCode::BAD_REQUEST,
                "bad_model",
                "`model` (or the `x-senti-model` header) must be `name` or `name@version`".into(),
                None,
            ),
            ModelNotServed { requested, served, elsewhere } => {
                let there = if elsewhere.is_empty() {
                    "no ready node of the cluster serves it".to_owned()
                } else {
                    format!("it is served by {}", elsewhere.join(", "))
                };
                (
                    StatusCode::NOT_FOUND,
                    "model_not_served",
                    format!("this node serves {served}, not {requested}; {there}"),
                    None,
                )
            }
            DeadlineExceeded => (
                StatusCode::GATEWAY_TIMEOUT,
                "deadline_exceeded",
                "the request was not answered before its deadline".into(),
                None,
            ),
            Inference(m) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "inference_failed", format!("inference failed: {m}"), None)
            }
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }
}

fn retry_after_secs(after: Duration) -> u64 {
    after.as_secs_f64().ceil().max(1.0) as u64
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, limit) = self.parts();
        // Refused connections are counted and logged (rate-limited) by the server loop instead.
        if status.is_server_error() && !matches!(self, ApiError::TooManyConnections(_)) {
            tracing::warn!(%status, code, %message, "request failed");
        }
        let summary = ErrorSummary { code, message: message.clone() };
        let mut response = (status, Json(ErrorBody { error: ErrorDetail { code, message, limit } })).into_response();
        response.extensions_mut().insert(summary);
        let headers = response.headers_mut();
        match &self {
            ApiError::QueueFull(after) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(*after)));
            }
            ApiError::ShuttingDown | ApiError::TooManyConnections(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::MissingToken | ApiError::WrongToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
