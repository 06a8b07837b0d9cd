//! The JSON body extractor: every way a body can be wrong gets its own clear error.
//!
//! axum's `Json` rejects with plain-text bodies; this one checks, in order, the content type (415:
//! only `application/json`, any case, with at most a `charset=utf-8` parameter: no `+json`
//! suffixes, no other charsets),
//! the size (413, without reading more than the limit), UTF-8 (400), JSON syntax (400) and the
//! shape (422), and answers in the API's error format.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON request body of type `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(is_json);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let max = state.limits.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > max) {
            return Err(ApiError::BodyTooLarge(max as u64));
        }
        let bytes = axum::body::to_bytes(Body::new(req.into_body()), max)
            .await
            .map_err(|_| ApiError::BodyTooLarge(max as u64))?;
        let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::InvalidUtf8)?;
        // One pass straight into `T`; serde_json says whether the text was not JSON (400) or JSON
        // of the wrong shape (422).
        serde_json::from_str(text).map(JsonBody).map_err(|err| match err.classify() {
            serde_json::error::Category::Data => ApiError::InvalidRequest(err.to_string()),
            _ => ApiError::MalformedJson(err.to_string()),
        })
    }
}

/// `application/json`, optionally with `charset=utf-8` (quoted or not), case-insensitive. The
/// body is read as UTF-8 whatever it says, so any other charset would be a lie we act on.
fn is_json(content_type: &str) -> bool {
    let mut parts = content_type.split(';').map(str::trim);
    if !parts.next().is_some_and(|mime| mime.eq_ignore_ascii_case("application/json")) {
        return false;
    }
    parts.filter(|p| !p.is_empty()).all(|param| {
        param.split_once('=').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("charset") && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn only_application_json_with_an_optional_utf8_charset_is_json() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/json;",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "application/evil+json",
            "application/json-seq",
            "text/json",
            "application/json; charset=latin1",
            "application/json; boundary=x",
            "application/json, text/plain",
            "",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }
}
