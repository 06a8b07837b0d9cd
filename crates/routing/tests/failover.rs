//! The gateway over a real engine (the embedded model, ONNX Runtime from `make setup`): a dead
//! inference actor is failed over, and a draining node refuses new requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use senti_config::{Config, EngineConfig};
use senti_engine::{Engine, RequestId};
use senti_model::{ModelBundle, ModelSource};
use senti_routing::{Gateway, GatewayArgs, LoadSource, RoutingParams, Target, TargetId};

async fn node(actors: usize) -> (Engine, Gateway) {
    senti_model::init_runtime(None).expect("ONNX Runtime: run `make setup`");
    let bundle = ModelBundle::load(&ModelSource::Embedded, None).unwrap();
    let config = Config { engine: EngineConfig { actors, threads_per_actor: 1 }, ..Config::default() };
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
