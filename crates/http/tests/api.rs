//! The HTTP API contract, every error case included, against a real engine running the embedded
//! model (ONNX Runtime from `make setup`). Requests go through `app(state)` with `oneshot`: the
//! whole router and middleware, without a socket.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use senti_config::{AuthConfig, Config};
use senti_engine::{Engine, NodeState, Readiness};
use senti_http::{app, AppState, REQUEST_ID_HEADER};
use senti_model::{ModelBundle, ModelSource};
use senti_routing::{Gateway, GatewayArgs, LoadSource, RoutingParams, Target, TargetId};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn state_with(mut config: Config) -> AppState {
    config.server.node_id = Some("test-node".into());
    senti_model::init_runtime(None).expect("ONNX Runtime: run `make setup`");
    let bundle = ModelBundle::load(&ModelSource::Embedded, None).unwrap();
    let engine = Arc::new(Engine::start(bundle, &config).await.unwrap());
    let local = engine
        .actors()
        .iter()
        .map(|a| Target {
            id: TargetId { node: "test-node".into(), actor: a.name.as_str().into() },
            hop: Arc::new(a.actor.clone()),
            load: LoadSource::Local(a.gauge.clone()),
            model: engine.bundle().manifest().id().into(),
            variant: engine.bundle().variant().into(),
        })
        .collect();
    let readiness = Readiness::default();
    let args = GatewayArgs { local, params: RoutingParams::from_config(&config), seed: 1 };
    let gateway = Arc::new(Gateway::start(args).await.unwrap());
    let state = AppState::new(
        engine,
        gateway,
        readiness.clone(),
        config.limits.clone(),
        config.auth.clone(),
        &config.cache,
        config.node_id(),
    );
    readiness.set(NodeState::Ready);
    state
}

async fn default_app() -> (Router, AppState) {
    let state = state_with(Config::default()).await;
    (app(state.clone()), state)
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
    text: String,
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, headers, json, text }
}

fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path).header(header::CONTENT_TYPE, "application/json").body(body.into()).unwrap()
}

fn post_json(path: &str, body: Value) -> Request<Body> {
    post(path, body.to_string())
}

fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.json["error"]["code"], code, "{}", reply.text);
    assert!(reply.json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", reply.text);
}

#[tokio::test]
async fn analyze_keeps_the_seed_recipe_api() {
    let (app, _) = default_app().await;
    let reply = send(&app, post_json("/analyze", json!({"text": "这家酒店非常好，服务周到"}))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["text"], "这家酒店非常好，服务周到");
    assert_eq!(reply.json["label"], "正面");
    let score = reply.json["score"].as_f64().unwrap();
    assert!((0.5..=1.0).contains(&score), "{score}");
    assert_eq!(reply.headers["x-senti-node"], "test-node");
    assert!(reply.headers.contains_key("x-senti-served-by"));
    assert!(reply.headers.contains_key("x-request-id"), "a generated request id comes back");
}

#[tokio::test]
async fn a_client_request_id_is_kept_and_a_bad_one_replaced() {
    let (app, _) = default_app().await;
    let mut req = post_json("/analyze", json!({"text": "好"}));
    req.headers_mut().insert("x-request-id", "client-42".parse().unwrap());
    assert_eq!(send(&app, req).await.headers["x-request-id"], "client-42");
    let mut req = post_json("/analyze", json!({"text": "好"}));
    req.headers_mut().insert("x-request-id", "x".repeat(65).parse().unwrap());
    let reply = send(&app, req).await;
    let id = reply.headers["x-request-id"].to_str().unwrap();
    assert!(!id.is_empty() && id.len() <= 64, "{id}");
}

#[tokio::test]
async fn classify_returns_one_result_per_text_in_order() {
    let (app, _) = default_app().await;
    let texts = ["太差了，再也不会来了", "这家酒店非常好，服务周到", "太差了，再也不会来了"];
    let reply = send(&app, post_json("/v1/classify", json!({ "texts": texts }))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let results = reply.json["results"].as_array().unwrap();
    let labels: Vec<&str> = results.iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["negative", "positive", "negative"]);
    assert_eq!(results[0]["label_zh"], "负面");
    assert_eq!(results[1]["label_zh"], "正面");
    for r in results {
        let p = &r["probabilities"];
        let sum = p["negative"].as_f64().unwrap() + p["positive"].as_f64().unwrap();
        assert!((sum - 1.0).abs() < 1e-4);
        assert_eq!(r["score"], p[r["label"].as_str().unwrap()]);
    }
    assert_eq!(results[0]["score"], results[2]["score"], "same text, same score, whatever the batch");
    assert_eq!(reply.json["model"]["name"], "senti-zh-small");
    assert!(reply.json["model"]["variant"].is_string());
}

#[tokio::test]
async fn malformed_bodies_get_clear_4xx() {
    let (app, _) = default_app().await;
    assert_error(&send(&app, post("/v1/classify", "{\"texts\": [")).await, StatusCode::BAD_REQUEST, "malformed_json");
    assert_error(
        &send(&app, post("/analyze", vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'])).await,
        StatusCode::BAD_REQUEST,
        "invalid_utf8",
    );
    assert_error(
        &send(&app, post_json("/analyze", json!({"txt": "x"}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    assert_error(
        &send(&app, post_json("/v1/classify", json!({"texts": "one"}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    assert_error(
        &send(&app, post_json("/v1/classify", json!({"texts": [1, 2]}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    assert_error(
        &send(&app, post_json("/analyze", json!({"text": "  \n"}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "empty_text",
    );
    let reply = send(&app, post_json("/v1/classify", json!({"texts": ["好", ""]}))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "empty_text");
    assert!(reply.json["error"]["message"].as_str().unwrap().contains("text 1"));
    assert_error(
        &send(&app, post_json("/v1/classify", json!({"texts": []}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no_texts",
    );
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let (app, _) = default_app().await;
    let req = Request::post("/analyze")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{\"text\":\"好\"}"))
        .unwrap();
    assert_error(&send(&app, req).await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let req = Request::post("/analyze").body(Body::from("{\"text\":\"好\"}")).unwrap();
    assert_error(&send(&app, req).await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let req = Request::post("/analyze")
        .header(header::CONTENT_TYPE, "application/evil+json")
        .body(Body::from("{\"text\":\"好\"}"))
        .unwrap();
    assert_error(&send(&app, req).await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let req = Request::post("/analyze")
        .header(header::CONTENT_TYPE, "application/json; charset=latin1")
        .body(Body::from("{\"text\":\"好\"}"))
        .unwrap();
    assert_error(&send(&app, req).await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let req = Request::post("/analyze")
        .header(header::CONTENT_TYPE, "Application/JSON; charset=UTF-8")
        .body(Body::from("{\"text\":\"好\"}"))
        .unwrap();
    assert_eq!(send(&app, req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn every_limit_is_named_in_its_error() {
    let config = Config::from_toml("[limits]\nmax_text_chars = 10\nmax_texts = 3\nmax_body_bytes = 1000\n").unwrap();
    let app = app(state_with(config).await);
    let reply = send(&app, post_json("/analyze", json!({"text": "一二三四五六七八九十十"}))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "text_too_long");
    assert_eq!(reply.json["error"]["limit"], json!({"name": "limits.max_text_chars", "value": 10}));
    let ok = send(&app, post_json("/analyze", json!({"text": "一二三四五六七八九十"}))).await;
    assert_eq!(ok.status, StatusCode::OK, "exactly at the limit is fine: {}", ok.text);

    let reply = send(&app, post_json("/v1/classify", json!({"texts": ["好", "好", "好", "好"]}))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "too_many_texts");
    assert_eq!(reply.json["error"]["limit"], json!({"name": "limits.max_texts", "value": 3}));

    let reply = send(&app, post_json("/analyze", json!({"text": "好".repeat(2000)}))).await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert_eq!(reply.json["error"]["limit"], json!({"name": "limits.max_body_bytes", "value": 1000}));
    // Without Content-Length (a streamed body) the limit still holds.
    let stream = futures_stream_body(vec!["{\"text\": \"".into(), "好".repeat(600), "\"}".into()]);
    let req = Request::post("/analyze").header(header::CONTENT_TYPE, "application/json").body(stream).unwrap();
    assert_error(&send(&app, req).await, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
}

fn futures_stream_body(chunks: Vec<String>) -> Body {
    let stream =
        futures_util::stream::iter(chunks.into_iter().map(|c| Ok::<_, std::io::Error>(axum::body::Bytes::from(c))));
    Body::from_stream(stream)
}

#[tokio::test]
async fn bearer_tokens_when_configured() {
    let auth = AuthConfig { tokens: vec!["s3cret".into()], ..AuthConfig::default() };
    let app = app(state_with(Config { auth, ..Config::default() }).await);
    let body = json!({"text": "好"});
    assert_error(&send(&app, post_json("/analyze", body.clone())).await, StatusCode::UNAUTHORIZED, "missing_token");
    let mut req = post_json("/analyze", body.clone());
    req.headers_mut().insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
    assert_error(&send(&app, req).await, StatusCode::FORBIDDEN, "wrong_token");
    let mut req = post_json("/analyze", body);
    req.headers_mut().insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
    assert_eq!(send(&app, req).await.status, StatusCode::OK);
    // Probes and the (static) pages stay open.
    for path in ["/healthz", "/readyz", "/", "/cluster", "/openapi.json"] {
        let reply = send(&app, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
    }
    // What the cluster looks like, and its metrics, need the token.
    for path in ["/v1/cluster", "/metrics"] {
        let reply = send(&app, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "missing_token");
        assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
        let req = Request::get(path).header(header::AUTHORIZATION, "Bearer s3cret").body(Body::empty()).unwrap();
        assert_eq!(send(&app, req).await.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn open_metrics_leaves_only_metrics_open() {
    let auth = AuthConfig { tokens: vec!["s3cret".into()], open_metrics: true };
    let app = app(state_with(Config { auth, ..Config::default() }).await);
    let metrics = send(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text);
    let cluster = send(&app, Request::get("/v1/cluster").body(Body::empty()).unwrap()).await;
    assert_error(&cluster, StatusCode::UNAUTHORIZED, "missing_token");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let (app, _) = default_app().await;
    assert_error(
        &send(&app, Request::get("/nope").body(Body::empty()).unwrap()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &send(&app, Request::get("/analyze").body(Body::empty()).unwrap()).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn full_queue_is_429_with_retry_after() {
    let config =
        Config::from_toml("[engine]\nactors = 1\n[advanced]\nqueue_capacity = 4\n[limits]\nmax_texts = 4\n").unwrap();
    let app = app(state_with(config).await);
    let long = "房间干净整洁，早餐种类丰富，前台服务热情，交通也方便。".repeat(8);
    // Distinct texts: identical ones would be computed once (result cache, coalescing).
    let requests = (0..40).map(|i| {
        let app = app.clone();
        let body = json!({"texts": (0..4).map(|j| format!("{long}{i}-{j}")).collect::<Vec<_>>()});
        tokio::spawn(async move { send(&app, post_json("/v1/classify", body)).await })
    });
    let mut ok = 0;
    let mut full = 0;
    for handle in requests.collect::<Vec<_>>() {
        let reply = handle.await.unwrap();
        match reply.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                full += 1;
                assert_eq!(reply.json["error"]["code"], "queue_full");
                let after: u64 = reply.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
                assert!(after >= 1);
            }
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    assert!(ok >= 1, "the queue took some work");
    assert!(full >= 1, "40 concurrent requests must overflow a 4-text queue");
}

#[tokio::test]
async fn deadlines_and_timeout_header() {
    let (app, _) = default_app().await;
    let long = "等了两个小时才送到，饭菜都凉了，客服态度也很差。".repeat(10);
    let texts: Vec<String> = (0..200).map(|i| format!("{long}{i}")).collect();
    let mut req = post_json("/v1/classify", json!({ "texts": texts }));
    req.headers_mut().insert("x-senti-timeout-ms", "1".parse().unwrap());
    assert_error(&send(&app, req).await, StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded");
    let mut req = post_json("/analyze", json!({"text": "好"}));
    req.headers_mut().insert("x-senti-timeout-ms", "soon".parse().unwrap());
    assert_error(&send(&app, req).await, StatusCode::BAD_REQUEST, "bad_timeout");
}

#[tokio::test]
async fn shutting_down_is_503_and_not_ready() {
    let (app, state) = default_app().await;
    let ready = send(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(ready.status, StatusCode::OK);
    state.readiness.set(NodeState::Draining);
    let reply = send(&app, post_json("/analyze", json!({"text": "好"}))).await;
    assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, "shutting_down");
    let ready = send(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json["status"], "draining");
}

#[tokio::test]
async fn readiness_waits_for_the_known_answer_check() {
    let state = state_with(Config::default()).await;
    state.readiness.set(NodeState::Failed("known-answer check failed".into()));
    let app = app(state.clone());
    let reply = send(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json["status"], "failed");
    assert_eq!(reply.json["reason"], "known-answer check failed");
}

#[tokio::test]
async fn metrics_openapi_and_page() {
    let (app, _) = default_app().await;
    send(&app, post_json("/v1/classify", json!({"texts": ["好", "差"]}))).await;
    send(&app, post_json("/v1/classify", json!({"texts": []}))).await;
    let metrics = send(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(metrics.status, StatusCode::OK);
    for name in [
        "senti_http_requests_total",
        "senti_queue_wait_seconds_bucket",
        "senti_inference_seconds_bucket",
        "senti_batch_size_bucket",
        "senti_queue_depth",
        "senti_http_in_flight",
    ] {
        assert!(metrics.text.contains(name), "missing {name} in:\n{}", metrics.text);
    }
    assert!(metrics.text.contains("status=\"422\""), "{}", metrics.text);

    let doc = send(&app, Request::get("/openapi.json").body(Body::empty()).unwrap()).await;
    for path in ["/analyze", "/v1/classify", "/v1/cluster", "/healthz", "/readyz", "/metrics"] {
        assert!(doc.json["paths"][path].is_object(), "openapi lacks {path}");
    }
    for path in ["/analyze", "/v1/classify"] {
        let responses = &doc.json["paths"][path]["post"]["responses"];
        for status in ["200", "400", "404", "413", "415", "422", "429", "503", "504"] {
            assert!(responses[status].is_object(), "{path} lacks {status} in the openapi document");
        }
    }
    assert!(doc.json["components"]["schemas"]["ClusterResponse"].is_object());
    let page = send(&app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert!(!page.text.contains("http://") && !page.text.contains("https://"), "the page loads nothing from elsewhere");
    let cluster_page = send(&app, Request::get("/cluster").body(Body::empty()).unwrap()).await;
    assert_eq!(cluster_page.status, StatusCode::OK);
    assert!(cluster_page.text.contains("fetch(\"/v1/cluster\""));
    assert!(!cluster_page.text.contains("https://") && !cluster_page.text.contains(" src="), "loads nothing else");
}

#[tokio::test]
async fn a_cancelled_request_does_not_block_others() {
    let (app, _) = default_app().await;
    let long = "物流很快，包装完好，东西也不错，下次还会再来买。".repeat(8);
    let slow = {
        let app = app.clone();
        let texts: Vec<String> = (0..256).map(|i| format!("{long}{i}")).collect();
        tokio::spawn(async move { send(&app, post_json("/v1/classify", json!({ "texts": texts }))).await })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    slow.abort();
    let reply = send(&app, post_json("/analyze", json!({"text": "太差了"}))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

#[tokio::test]
async fn cluster_view_of_a_lone_node_lists_its_local_actors() {
    let (app, _) = default_app().await;
    let reply = send(&app, Request::get("/v1/cluster").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["membership"], Value::Null, "clustering is off");
    let targets = reply.json["routing"]["targets"].as_array().unwrap();
    let names: Vec<&str> = targets.iter().map(|t| t["target"].as_str().unwrap()).collect();
    assert_eq!(names, ["test-node/a0", "test-node/a1"]);
    assert!(targets.iter().all(|t| t["local"] == true && t["ejected_for_ms"].is_null()));
    assert_eq!(reply.json["recent_errors"], json!([]));

    // Traffic per target and the errors answered show up in the next view.
    let ok = send(&app, post_json("/v1/classify", json!({"texts": ["好"]}))).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    let refused = send(&app, post_json("/v1/classify", json!({"texts": []}))).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let view = send(&app, Request::get("/v1/cluster").body(Body::empty()).unwrap()).await;
    let attempts: u64 =
        view.json["routing"]["targets"].as_array().unwrap().iter().map(|t| t["attempts"].as_u64().unwrap()).sum();
    assert_eq!(attempts, 1, "{}", view.text);
    let errors = view.json["recent_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{}", view.text);
    assert_eq!(errors[0]["route"], "/v1/classify");
    assert_eq!(errors[0]["status"], 422);
    assert_eq!(errors[0]["code"], refused.json["error"]["code"]);
    assert_eq!(errors[0]["request_id"], refused.headers[REQUEST_ID_HEADER].to_str().unwrap());
}

#[tokio::test]
async fn a_request_may_ask_for_the_model_that_answers() {
    let (app, _) = default_app().await;
    let served = send(&app, post_json("/v1/classify", json!({"texts": ["好"]}))).await;
    let (name, version) =
        (served.json["model"]["name"].as_str().unwrap(), served.json["model"]["version"].as_str().unwrap());
    for asked in [name.to_owned(), format!("{name}@{version}")] {
        let reply = send(&app, post_json("/v1/classify", json!({"texts": ["好"], "model": asked}))).await;
        assert_eq!(reply.status, StatusCode::OK, "{asked}: {}", reply.text);
        assert_eq!(reply.json["model"], served.json["model"]);
        let reply = send(&app, post_json("/analyze", json!({"text": "好", "model": asked}))).await;
        assert_eq!(reply.status, StatusCode::OK, "{asked}: {}", reply.text);
        assert_eq!(reply.headers["x-senti-model"], format!("{name}@{version}").as_str(), "the answer names its model");
    }

    let other = send(&app, post_json("/v1/classify", json!({"texts": ["好"], "model": format!("{name}@0.0.1")}))).await;
    assert_error(&other, StatusCode::NOT_FOUND, "model_not_served");
    let message = other.json["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("serves {name}@{version}")) && message.contains("no ready node"), "{message}");
    let mut by_header = post_json("/analyze", json!({"text": "好"}));
    by_header.headers_mut().insert("x-senti-model", "another-model".parse().unwrap());
    assert_error(&send(&app, by_header).await, StatusCode::NOT_FOUND, "model_not_served");
    for bad in ["@1", "name@", " "] {
        let reply = send(&app, post_json("/v1/classify", json!({"texts": ["好"], "model": bad}))).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "bad_model");
    }
}

#[tokio::test]
async fn repeated_texts_are_answered_from_the_cache_unless_asked_not_to() {
    let (app, state) = default_app().await;
    let texts = ["服务很好，下次还来", "质量太差了，退货"];
    let first = send(&app, post_json("/v1/classify", json!({ "texts": texts }))).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.headers["x-senti-cache"], "miss");
    let second = send(&app, post_json("/v1/classify", json!({ "texts": texts }))).await;
    assert_eq!(second.headers["x-senti-cache"], "hit");
    assert_eq!(second.headers["x-senti-served-by"], "cache");
    for (a, b) in first.json["results"].as_array().unwrap().iter().zip(second.json["results"].as_array().unwrap()) {
        assert_eq!(a["cached"], false);
        assert_eq!(b["cached"], true);
        assert_eq!(a["label"], b["label"]);
        assert_eq!(a["probabilities"], b["probabilities"], "a cached answer is the computed one");
    }
    // One text new, one cached: the cache is keyed by token ids, so spaces the tokenizer drops
    // make no new entry.
    let mixed = send(&app, post_json("/v1/classify", json!({"texts": [" 服务很好， 下次还来 ", "还行吧"]}))).await;
    assert_eq!(mixed.headers["x-senti-cache"], "partial");
    assert_eq!(mixed.json["results"][0]["cached"], true, "{}", mixed.text);
    assert_eq!(mixed.json["results"][1]["cached"], false);
    let mut req = post_json("/v1/classify", json!({ "texts": texts }));
    req.headers_mut().insert(header::CACHE_CONTROL, "no-cache".parse().unwrap());
    let fresh = send(&app, req).await;
    assert_eq!(fresh.headers["x-senti-cache"], "miss");
    assert_ne!(fresh.headers["x-senti-served-by"], "cache");
    let analyze = send(&app, post_json("/analyze", json!({"text": "质量太差了，退货"}))).await;
    assert_eq!(analyze.headers["x-senti-cache"], "hit");
    assert_eq!(analyze.json["label"], "负面");
    assert_eq!(state.cache.stats().entries, 3);
    let metrics = send(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    for name in ["senti_cache_lookups_total{result=\"hit\"}", "senti_cache_bytes", "senti_cache_max_bytes"] {
        assert!(metrics.text.contains(name), "missing {name} in:\n{}", metrics.text);
    }
}

#[tokio::test]
async fn a_cache_of_zero_bytes_keeps_nothing() {
    let config = Config::from_toml("[cache]\nmax_bytes = 0\n").unwrap();
    let state = state_with(config).await;
    let app = app(state.clone());
    for _ in 0..2 {
        let reply = send(&app, post_json("/analyze", json!({"text": "好评"}))).await;
        assert_eq!(reply.headers["x-senti-cache"], "miss");
    }
    assert_eq!(state.cache.stats().entries, 0);
}
