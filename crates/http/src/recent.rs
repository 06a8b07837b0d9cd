//! The last few errors this node answered, for `/v1/cluster` and the cluster page: an operator
//! sees what failed and why without grepping logs. Bounded: [`RECENT_ERRORS`] records, each
//! message cut to [`MESSAGE_CHARS`] characters.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use senti_engine::RequestId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::state::AppState;

/// Errors kept.
pub const RECENT_ERRORS: usize = 20;
/// Characters of a message kept.
const MESSAGE_CHARS: usize = 200;

/// What [`ApiError`](crate::ApiError) leaves on its response for [`record`] to find.
#[derive(Debug, Clone)]
pub(crate) struct ErrorSummary {
    pub code: &'static str,
    pub message: String,
}

/// One error answered by this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorRecord {
    /// When (unix ms).
    pub at_unix_ms: u64,
    /// The route, e.g. `/v1/classify` (`unmatched` for unknown paths).
    pub route: String,
    /// HTTP status.
    pub status: u16,
    /// The error body's `code`.
    pub code: String,
    /// The error body's `message`, cut to 200 characters.
    pub message: String,
    /// The request's `x-request-id`, to find its log lines.
    pub request_id: String,
}

/// The ring of recent errors, newest last.
#[derive(Debug, Clone, Default)]
pub struct RecentErrors(Arc<Mutex<VecDeque<ErrorRecord>>>);

impl RecentErrors {
    fn push(&self, record: ErrorRecord) {
        let mut ring = self.0.lock().expect("recent errors lock poisoned. This is a bug.");
        if ring.len() == RECENT_ERRORS {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    /// The recorded errors, newest first.
    pub fn newest_first(&self) -> Vec<ErrorRecord> {
        self.0.lock().expect("recent errors lock poisoned. This is a bug.").iter().rev().cloned().collect()
    }
}

/// Middleware: records every error response ([`ErrorSummary`] present) in the state's ring.
pub(crate) async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let request_id = req.extensions().get::<RequestId>().map(|id| id.as_str().to_owned()).unwrap_or_default();
    let response = next.run(req).await;
    if let Some(summary) = response.extensions().get::<ErrorSummary>() {
        let at_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        state.recent_errors.push(ErrorRecord {
            at_unix_ms,
            route,
            status: response.status().as_u16(),
            code: summary.code.to_owned(),
            message: summary.message.chars().take(MESSAGE_CHARS).collect(),
            request_id,
        });
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> ErrorRecord {
        ErrorRecord {
            at_unix_ms: n,
            route: "/v1/classify".into(),
            status: 429,
            code: "queue_full".into(),
            message: String::new(),
            request_id: format!("r{n}"),
        }
    }

    #[test]
    fn keeps_the_newest_twenty_newest_first() {
        let ring = RecentErrors::default();
        for n in 0..25 {
            ring.push(record(n));
        }
        let kept: Vec<u64> = ring.newest_first().iter().map(|r| r.at_unix_ms).collect();
        assert_eq!(kept, (5..25).rev().collect::<Vec<_>>());
    }
}
