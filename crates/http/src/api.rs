//! Handlers and their request/response types. The OpenAPI document is generated from these.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use senti_engine::{EncodedTexts, NodeState, RequestId};
use senti_model::{Manifest, Scores};
use senti_routing::{CacheAnswer, Freshness};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::state::AppState;

/// Header a client may send to ask for a shorter deadline than the server's default.
pub const TIMEOUT_HEADER: &str = "x-senti-timeout-ms";
/// Response header naming the inference actor that answered.
pub const SERVED_BY_HEADER: &str = "x-senti-served-by";
/// Header a client may send to ask for a model (`name` or `name@version`), like the `model` field;
/// every answer carries it too, naming the model that answered.
pub const MODEL_HEADER: &str = "x-senti-model";
/// Response header saying where the answers came from: `hit` (all from the result cache), `miss`
/// (none), `partial`.
pub const CACHE_HEADER: &str = "x-senti-cache";

/// `POST /analyze` request: the seed recipe's API.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AnalyzeRequest {
    /// The text to classify.
    #[schema(example = "这家酒店非常好，服务周到")]
    pub text: String,
    /// The model that must answer, `name` or `name@version` (else this node's model answers).
    #[serde(default)]
    pub model: Option<String>,
}

/// `POST /analyze` response: the seed recipe's API (label in Chinese: 正面 or 负面).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AnalyzeResponse {
    /// The text, echoed.
    pub text: String,
    /// 正面 (positive) or 负面 (negative).
    pub label: String,
    /// Calibrated probability of that label.
    pub score: f32,
}

/// `POST /v1/classify` request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ClassifyRequest {
    /// Texts to classify, at most `limits.max_texts`, each at most `limits.max_text_chars`.
    #[schema(example = json!(["这家酒店非常好，服务周到", "太差了，再也不会来了"]))]
    pub texts: Vec<String>,
    /// The model that must answer, `name` or `name@version` (else this node's model answers).
    #[serde(default)]
    #[schema(example = "senti-zh-small")]
    pub model: Option<String>,
}

/// `POST /v1/classify` response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClassifyResponse {
    /// The model that answered.
    pub model: ModelInfo,
    /// One result per text, in request order.
    pub results: Vec<ClassifyResult>,
}

/// Which model answered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelInfo {
    /// Name from model.toml.
    pub name: String,
    /// Version from model.toml.
    pub version: String,
    /// ONNX variant (`fp32`, `int8`).
    pub variant: String,
}

impl ModelInfo {
    /// From `name@version` and a variant.
    fn of(id: &str, variant: &str) -> Self {
        let (name, version) = id.rsplit_once('@').unwrap_or((id, ""));
        Self { name: name.to_owned(), version: version.to_owned(), variant: variant.to_owned() }
    }
}

/// The classification of one text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClassifyResult {
    /// `positive` or `negative`.
    pub label: String,
    /// 正面 or 负面.
    pub label_zh: String,
    /// Calibrated probability of `label`.
    pub score: f32,
    /// Calibrated probability of every label, by English name.
    pub probabilities: BTreeMap<String, f32>,
    /// Answered from this node's result cache (`Cache-Control: no-cache` asks for a fresh one).
    #[serde(default)]
    pub cached: bool,
}

impl ClassifyResult {
    /// The result of one text from its scores, named with the manifest's labels. The one place a
    /// classification becomes JSON, for the HTTP API and the command line alike.
    pub fn new(scores: &Scores, manifest: &Manifest) -> Self {
        let label = &manifest.labels[scores.label];
        Self {
            label: label.name.clone(),
            label_zh: label.name_zh.clone(),
            score: scores.score(),
            probabilities: manifest.labels.iter().map(|l| (l.name.clone(), scores.probabilities[l.index])).collect(),
            cached: false,
        }
    }
}

/// Liveness and readiness answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// `ok` (liveness); `ready`, `starting`, `failed` or `draining` (readiness).
    pub status: String,
    /// Why the node is not ready, when a part of it failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// The errors of both classification routes, for the OpenAPI document (`error.rs` maps them).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only its OpenAPI description is used
enum ClassifyErrors {
    /// Malformed JSON, invalid UTF-8 or a bad `x-senti-timeout-ms`.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No bearer token (auth on).
    #[response(status = 401)]
    MissingToken(ErrorBody),
    /// A bearer token that is not accepted.
    #[response(status = 403)]
    WrongToken(ErrorBody),
    /// A `model` this node does not serve; the message names the nodes that do.
    #[response(status = 404)]
    ModelNotServed(ErrorBody),
    /// Body over `limits.max_body_bytes`.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Not `application/json`.
    #[response(status = 415)]
    MediaType(ErrorBody),
    /// A missing field, no texts, too many texts, an empty or too long text.
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// Queues full; see Retry-After.
    #[response(status = 429)]
    QueueFull(ErrorBody),
    /// Shutting down or no inference actor.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// Not answered before the deadline.
    #[response(status = 504)]
    Deadline(ErrorBody),
}

/// Classify one text (the seed recipe's API).
#[utoipa::path(post, path = "/analyze", request_body = AnalyzeRequest,
    responses((status = 200, body = AnalyzeResponse), ClassifyErrors))]
pub async fn analyze(
    State(state): State<AppState>,
    Extension(request): Extension<RequestId>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<AnalyzeRequest>,
) -> Result<Response, ApiError> {
    let model_opt = check_model(req.model.as_deref(), &headers, &state).await?;
    check_text(0, &req.text, &state)?;
    let deadline = deadline(&headers, &state)?;
    let texts = state.engine.encode(std::slice::from_ref(&req.text)).await?;
    let (answer, model) = infer(&state, &texts, &headers, deadline, model_opt, request).await?;
    let manifest = state.engine.bundle().manifest();
    let scores = &answer.scores[0];
    let body =
        AnalyzeResponse { text: req.text, label: manifest.labels[scores.label].name_zh.clone(), score: scores.score() };
    Ok(with_served_by(Json(body), &answer, &model))
}

/// Classify a batch of texts.
#[utoipa::path(post, path = "/v1/classify", request_body = ClassifyRequest,
    responses((status = 200, body = ClassifyResponse), ClassifyErrors))]
pub async fn classify(
    State(state): State<AppState>,
    Extension(request): Extension<RequestId>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ClassifyRequest>,
) -> Result<Response, ApiError> {
    let model_opt = check_model(req.model.as_deref(), &headers, &state).await?;
    let max = state.limits.max_texts;
    if req.texts.is_empty() {
        return Err(ApiError::NoTexts);
    }
    if req.texts.len() > max {
        return Err(ApiError::TooManyTexts { count: req.texts.len(), max: max as u64 });
    }
    for (index, text) in req.texts.iter().enumerate() {
        check_text(index, text, &state)?;
    }
    let deadline = deadline(&headers, &state)?;
    let texts = state.engine.encode(&req.texts).await?;
    let (answer, model) = infer(&state, &texts, &headers, deadline, model_opt, request).await?;
    let bundle = state.engine.bundle();
    let manifest = bundle.manifest();
    let results = answer
        .scores
        .iter()
        .zip(&answer.cached)
        .map(|(scores, &cached)| ClassifyResult { cached, ..ClassifyResult::new(scores, manifest) })
        .collect();
    let response = with_served_by(Json(ClassifyResponse { model: model.clone(), results }), &answer, &model);
    Ok(response)
}

/// Classifies `texts` on `model_opt`'s actors if given, else the newest model version's where
/// they keep up ([`senti_routing::ServedModels`]); returns the answers and the model that gave
/// them. When this node's own model answers (always, unless the cluster is between two versions)
/// the node's result cache is used: cached texts are answered at once, texts already in flight
/// wait for that computation, the rest go to the gateway as one request pinned to this model, so
/// the cache only ever holds and serves this model's answers. Otherwise the gateway is asked
/// directly.
async fn infer(
    state: &AppState,
    texts: &EncodedTexts,
    headers: &HeaderMap,
    deadline: Instant,
    model_opt: Option<Arc<str>>,
    request: RequestId,
) -> Result<(CacheAnswer, ModelInfo), ApiError> {
    let ours = &state.model_id;
    let own_only = match &model_opt {
        Some(model) => model == ours,
        None => state.gateway.is_newest(ours),
    };
    if !own_only {
        let classified = state.gateway.classify(Arc::new(texts.clone()), deadline, model_opt, request).await?;
        let model = ModelInfo::of(&classified.model, &classified.variant);
        let cached = vec![false; classified.scores.len()];
        let answer = CacheAnswer { scores: classified.scores, cached, served_by: Some(classified.served_by) };
        return Ok((answer, model));
    }
    let freshness = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map_or(Freshness::Any, Freshness::from_cache_control);
    let gateway = state.gateway.clone();
    let pinned = Some(ours.clone());
    let compute = move |batch| async move { gateway.classify(batch, deadline, pinned, request).await };
    Ok((state.cache.classify(texts, freshness, deadline, compute).await?, model_info(state)))
}

/// The model this node serves.
pub(crate) fn model_info(state: &AppState) -> ModelInfo {
    let bundle = state.engine.bundle();
    let manifest = bundle.manifest();
    ModelInfo { name: manifest.name.clone(), version: manifest.version.clone(), variant: bundle.variant().to_owned() }
}

/// The model version a request asks for (the `model` field, else the `x-senti-model` header):
/// `None` when it names none, or only this node's model name (any version, the newest preferred).
/// A version is answered only by actors that serve it; the gateway can reach those of this node's
/// model and of the versions that read the same token ids (`compat` in gossip). Another model, or
/// a version none of those serve, is a 404 that names the nodes that serve it, as gossip shows
/// them: send the request there.
async fn check_model(field: Option<&str>, headers: &HeaderMap, state: &AppState) -> Result<Option<Arc<str>>, ApiError> {
    let header = headers.get(MODEL_HEADER).map(|v| v.to_str().map_err(|_| ApiError::BadModel));
    let Some(requested) = field.map(Ok).or(header).transpose()? else {
        return Ok(None);
    };
    let requested = requested.trim();
    let ours = model_info(state);
    let (name, version) = match requested.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (requested, None),
    };
    if name.is_empty() || version == Some("") {
        return Err(ApiError::BadModel);
    }
    if name == ours.name {
        match version {
            None => return Ok(None),
            Some(_) if state.gateway.models().serves(requested) => return Ok(Some(requested.into())),
            Some(_) => {}
        }
    }
    let mut elsewhere = Vec::new();
    if let Some(cluster) = state.cluster.get() {
        for member in cluster.report().await.members {
            let serves = member.model.as_deref().is_some_and(|m| match version {
                Some(_) => m == requested,
                None => m.split_once('@').is_some_and(|(n, _)| n == name),
            });
            if let (true, true, Some(http)) = (serves, member.ready, member.http_addr) {
                elsewhere.push(http.to_string());
            }
        }
    }
    Err(ApiError::ModelNotServed { requested: requested.to_owned(), served: state.model_id.to_string(), elsewhere })
}

/// Alive: the process answers HTTP.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok".into(), reason: None })
}

/// Ready: the model is loaded and a known-answer inference passed; 503 otherwise or while
/// shutting down.
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Status), (status = 503, body = Status)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Status>) {
    let (status, reason) = match state.readiness.get() {
        NodeState::Ready => return (StatusCode::OK, Json(Status { status: "ready".into(), reason: None })),
        NodeState::Starting => ("starting", None),
        NodeState::Draining => ("draining", None),
        NodeState::Failed(reason) => ("failed", Some(reason)),
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(Status { status: status.into(), reason }))
}

/// Prometheus metrics in text format.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain", body = String), (status = 401), (status = 403)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    for actor in state.engine.actors().iter() {
        let load = actor.gauge.snapshot();
        metrics::gauge!("senti_actor_queued_texts", "actor" => actor.name.clone()).set(load.queued_texts as f64);
        metrics::gauge!("senti_actor_running_texts", "actor" => actor.name.clone()).set(load.running_texts as f64);
        metrics::gauge!("senti_actor_tokens_per_second", "actor" => actor.name.clone()).set(load.tokens_per_sec);
    }
    metrics::gauge!("senti_node_ready").set(f64::from(u8::from(state.readiness.is_ready())));
    // Counters that only move on an event exist from the first scrape, so rates and alerts that
    // read them see 0 rather than no series.
    metrics::counter!("senti_cache_evictions_total").increment(0);
    for result in ["hit", "miss", "coalesced"] {
        metrics::counter!("senti_cache_lookups_total", "result" => result).increment(0);
    }
    let cache = state.cache.stats();
    metrics::gauge!("senti_cache_entries").set(cache.entries as f64);
    metrics::gauge!("senti_cache_bytes").set(cache.bytes as f64);
    metrics::gauge!("senti_cache_max_bytes").set(cache.max_bytes as f64);
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render())
}

fn check_text(index: usize, text: &str, state: &AppState) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::EmptyText { index });
    }
    let max = state.limits.max_text_chars;
    // Counting stops just past the limit: a huge text is not walked to the end.
    let chars = text.chars().take(max + 1).count();
    if chars > max {
        return Err(ApiError::TextTooLong { index, chars: text.chars().count(), max: max as u64 });
    }
    Ok(())
}

fn deadline(headers: &HeaderMap, state: &AppState) -> Result<Instant, ApiError> {
    let default_ms = state.limits.request_timeout_ms;
    let ms = match headers.get(TIMEOUT_HEADER) {
        None => default_ms,
        Some(value) => {
            let ms = value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).filter(|&ms| ms > 0).ok_or_else(
                || ApiError::BadTimeout(format!("`{TIMEOUT_HEADER}` must be a positive whole number of milliseconds")),
            )?;
            ms.min(default_ms)
        }
    };
    Ok(Instant::now() + Duration::from_millis(ms))
}

/// The answer with the actor that served it (`cache` when the result cache answered every text),
/// whether the cache answered, and the model that answered (`name@version`, the form a request's
/// `model` takes) as headers: `/analyze`'s body has no room for them.
fn with_served_by(body: impl IntoResponse, answer: &CacheAnswer, model: &ModelInfo) -> Response {
    let mut response = body.into_response();
    let served_by = answer.served_by.as_ref().map_or_else(|| "cache".to_owned(), ToString::to_string);
    if let Ok(value) = HeaderValue::from_str(&served_by) {
        response.headers_mut().insert(SERVED_BY_HEADER, value);
    }
    let hits = answer.cached.iter().filter(|&&c| c).count();
    let cache = match hits {
        0 => "miss",
        n if n == answer.cached.len() => "hit",
        _ => "partial",
    };
    response.headers_mut().insert(CACHE_HEADER, HeaderValue::from_static(cache));
    if let Ok(value) = HeaderValue::from_str(&format!("{}@{}", model.name, model.version)) {
        response.headers_mut().insert(MODEL_HEADER, value);
    }
    response
}
