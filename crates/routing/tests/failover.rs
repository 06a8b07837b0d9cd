//! The gateway over a real engine (the embedded model, ONNX Runtime from `make setup`): a dead
//! inference actor is failed over, a draining node refuses new requests, and a queue longer than
//! the attempt timeout is served within the request's deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use senti_config::{Config, EngineConfig};
use senti_engine::{Engine, RequestId};
use senti_model::{ModelBundle, ModelSource};
use senti_routing::{Gateway, GatewayArgs, LoadSource, RoutingParams, Target, TargetId};

async fn node(actors: usize) -> (Engine, Gateway) {
    node_with(Config { engine: EngineConfig { actors, threads_per_actor: 1 }, ..Config::default() }).await
}

async fn node_with(config: Config) -> (Engine, Gateway) {
    senti_model::init_runtime(None).expect("ONNX Runtime: run `make setup`");
    let bundle = ModelBundle::load(&ModelSource::Embedded, None).unwrap();
    let engine = Engine::start(bundle, &config).await.unwrap();
    let local = engine
        .actors()
        .iter()
        .map(|a| Target {
            id: TargetId { node: "n1".into(), actor: a.name.as_str().into() },
            hop: Arc::new(a.actor.clone()),
            load: LoadSource::Local(a.gauge.clone()),
            model: "m@1".into(),
            variant: "int8".into(),
        })
        .collect();
    let args = GatewayArgs { local, params: RoutingParams::from_config(&config), seed: 1 };
    let gateway = Gateway::start(args).await.unwrap();
    (engine, gateway)
}

fn texts() -> Vec<String> {
    ["这家酒店非常好，服务周到", "太差了，再也不会来了"].iter().map(|s| s.to_string()).collect()
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

#[tokio::test]
async fn a_dead_actor_is_failed_over() {
    let (engine, gateway) = node(2).await;
    engine.kill_actor(0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let encoded = engine.encode(&texts()).await.unwrap();
    let first = gateway.classify(encoded.clone(), later(), None, RequestId::generate()).await.unwrap();
    assert_eq!(first.served_by.to_string(), "n1/a1");
    assert_eq!(first.attempts, 2, "a0 was tried first (idle, lowest index) and failed over");
    for _ in 0..5 {
        let classified = gateway.classify(encoded.clone(), later(), None, RequestId::generate()).await.unwrap();
        assert_eq!(classified.served_by.to_string(), "n1/a1");
        assert_eq!(classified.attempts, 1, "a0's failure counts as load: a1 is now preferred");
        assert_eq!(classified.scores.len(), texts().len());
    }
}

/// Issue 15: admission used to compare the queue with the attempt timeout, so a queue longer than
/// that timeout was answered with 429s although the request's deadline left room for it. Here one
/// actor, a 100 ms attempt timeout and 30 requests of 16 long texts (several times that timeout
/// of queued work): every request must be answered, by the one actor, in one attempt.
#[tokio::test]
async fn a_queue_longer_than_the_attempt_timeout_is_served_within_the_deadline() {
    let mut config = Config { engine: EngineConfig { actors: 1, threads_per_actor: 1 }, ..Config::default() };
    config.routing.attempt_timeout_ms = 100;
    config.advanced.attempt_timeout_min_ms = 100;
    let attempt_timeout = Duration::from_millis(config.routing.attempt_timeout_ms);
    let (engine, gateway) = node_with(config).await;
    let gateway = Arc::new(gateway);
    let long = "这家酒店的位置很好，离地铁站只有五分钟，房间干净整洁，早餐种类丰富，前台服务热情周到，".repeat(4);
    let texts: Vec<String> = (0..16).map(|i| format!("{i}{long}")).collect();
    let encoded = engine.encode(&texts).await.unwrap();
    // Warm up: the actor measures its rate, the gateway its latency.
    gateway.classify(encoded.clone(), later(), None, RequestId::generate()).await.unwrap();
    let started = Instant::now();
    let requests: Vec<_> = (0..30)
        .map(|_| {
            let (gateway, encoded) = (gateway.clone(), encoded.clone());
            tokio::spawn(async move {
                let sent = Instant::now();
                let answer = gateway.classify(encoded, later(), None, RequestId::generate()).await;
                (answer, sent.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for request in requests {
        let (answer, took) = request.await.unwrap();
        let classified = answer.unwrap_or_else(|err| panic!("refused or cut off after {took:?}: {err}"));
        assert_eq!(classified.attempts, 1, "queued work is waited for, not timed out and retried");
        assert_eq!(classified.scores.len(), texts.len());
        slowest = slowest.max(took);
    }
    eprintln!(
        "30 requests of 16 long texts on one actor: all answered in {:?}, slowest {slowest:?}",
        started.elapsed()
    );
    assert!(
        slowest > attempt_timeout * 3,
        "the queue must outlast the attempt timeout several times for this test to mean anything ({slowest:?})"
    );
}
