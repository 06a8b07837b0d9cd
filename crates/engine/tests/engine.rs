//! The engine with the real embedded model: batching does not change answers, deadlines are
//! honoured, and a dead actor is failed over. Needs ONNX Runtime (`make setup`).

use std::time::{Duration, Instant};

use senti_config::{Config, EngineConfig};
use senti_engine::{Engine, InferError};
use senti_model::{ModelBundle, ModelSource};

async fn engine(actors: usize) -> Engine {
    engine_with(EngineConfig { actors, threads_per_actor: 1, ..EngineConfig::default() }).await
}

async fn engine_with(engine: EngineConfig) -> Engine {
    senti_model::init_runtime(None).expect("ONNX Runtime: run `make setup`");
    let bundle = ModelBundle::load(&ModelSource::Embedded, None).unwrap();
    let mut config = Config { engine, ..Config::default() };
    config.server.node_id = Some("n1".into());
    Engine::start(bundle, &config).await.unwrap()
}

fn texts() -> Vec<String> {
    [
        "这家酒店非常好，服务周到",
        "太差了，再也不会来了",
        "物流很快，包装完好，东西也不错，下次还会再来买。",
        "等了两个小时才送到，饭菜都凉了",
        "一般般吧",
        "屏幕显示效果一般，但是性价比还可以，总体来说值得购买，推荐给预算有限的同学。",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batched_answers_equal_lone_answers() {
    // Batches of mixed lengths, one at a time on the model thread and staged behind each other:
    // every answer must still reach its own request.
    for (max_batch_size, batches_ahead) in [(8, 1), (1, 2), (8, 2), (4, 3)] {
        let config =
            EngineConfig { actors: 1, threads_per_actor: 1, max_batch_size, batches_ahead, ..Default::default() };
        concurrent_answers_equal_lone_answers(engine_with(config).await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_many_texts_handed_over_together_get_their_own_answers_in_order() {
    // engine.handoff_ms: a request's consecutive batches go to the model thread in one hand-off
    // (1 s of expected work: all of them), answered per batch; 0 hands over one batch at a time.
    for (handoff_ms, max_batch_size) in [(1_000, 1), (1_000, 4), (0, 1)] {
        let config = EngineConfig { actors: 1, threads_per_actor: 1, max_batch_size, handoff_ms, ..Default::default() };
        let engine = std::sync::Arc::new(engine_with(config).await);
        let mut alone = Vec::new();
        for text in texts() {
            alone.push(engine.classify(vec![text], later()).await.unwrap().scores.remove(0));
        }
        // Requests of 1 to 6 texts, rotated so every text sits at every position, all at once.
        let requests: Vec<Vec<usize>> =
            (0..12).map(|r| (0..1 + r % texts().len()).map(|i| (i + r) % texts().len()).collect()).collect();
        let handles: Vec<_> = requests
            .iter()
            .map(|indices| {
                let engine = engine.clone();
                let batch: Vec<String> = indices.iter().map(|&i| texts()[i].clone()).collect();
                tokio::spawn(async move { engine.classify(batch, later()).await })
            })
            .collect();
        for (indices, handle) in requests.iter().zip(handles) {
            let scores = handle.await.unwrap().unwrap().scores;
            assert_eq!(scores.len(), indices.len());
            for (got, &i) in scores.iter().zip(indices) {
                assert_eq!(got.label, alone[i].label, "handoff_ms {handoff_ms}, text {i}");
                for (a, b) in got.probabilities.iter().zip(&alone[i].probabilities) {
                    assert!((a - b).abs() < 5e-3, "handoff_ms {handoff_ms}, text {i}: {a} vs {b}");
                }
            }
        }
    }
}

async fn concurrent_answers_equal_lone_answers(engine: Engine) {
    let engine = std::sync::Arc::new(engine);
    let mut alone = Vec::new();
    for text in texts() {
        alone.push(engine.classify(vec![text], later()).await.unwrap().scores.remove(0));
    }
    // Fire everything at once, several times over, so the queue batches texts of mixed lengths.
    let handles: Vec<_> = (0..4)
        .flat_map(|_| texts())
        .map(|t| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.classify(vec![t], later()).await })
        })
        .collect();
    for (i, handle) in handles.into_iter().enumerate() {
        let scores = handle.await.unwrap().unwrap().scores.remove(0);
        let expected = &alone[i % alone.len()];
        assert_eq!(scores.label, expected.label);
        // The default variant is int8, whose dynamic activation scales span the whole batch:
        // batch-mates move a probability by about 1e-3 at most (fp32 would be exact).
        for (a, b) in scores.probabilities.iter().zip(&expected.probabilities) {
            assert!((a - b).abs() < 5e-3, "text {i}: {a} vs {b}");
        }
    }
}

#[tokio::test]
async fn an_expired_request_is_not_run() {
    let engine = engine(1).await;
    let result = engine.classify(texts(), Instant::now()).await;
    assert_eq!(result.unwrap_err(), InferError::DeadlineExceeded);
}

#[tokio::test]
async fn a_dead_actor_is_failed_over() {
    let engine = engine(2).await;
    engine.kill_actor(0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = engine.classify(texts(), later()).await.unwrap();
    assert_eq!(first.served_by, "n1/a1");
    assert_eq!(first.attempts, 2, "a0 was tried first (idle, lowest index) and failed over");
    for _ in 0..5 {
        let classified = engine.classify(texts(), later()).await.unwrap();
        assert_eq!(classified.served_by, "n1/a1");
        assert_eq!(classified.attempts, 1, "a0's failure counts as load: a1 is now preferred");
        assert_eq!(classified.scores.len(), texts().len());
    }
}

#[tokio::test]
async fn shutdown_refuses_new_work() {
    let engine = engine(1).await;
    engine.begin_shutdown();
    assert_eq!(engine.classify(texts(), later()).await.unwrap_err(), InferError::ShuttingDown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_backlog_would_make_late_is_refused_at_once() {
    let engine = std::sync::Arc::new(engine(1).await);
    // One answered request measures the actor's throughput; then eight hundred texts of backlog
    // (well under a second of work: each is admitted within engine.admission_headroom of the
    // attempt timeout, and within engine.queue_capacity) queue behind it.
    engine.classify(texts(), later()).await.unwrap();
    let backlog: Vec<_> = (0..2)
        .map(|_| {
            let engine = engine.clone();
            let many: Vec<String> = (0..170).flat_map(|_| texts()).take(400).collect();
            tokio::spawn(async move { engine.classify(many, later()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let short = engine.classify(texts(), Instant::now() + Duration::from_millis(50)).await;
    assert!(matches!(short, Err(InferError::QueueFull { .. })), "{short:?}");
    // A request with time enough is still taken, and everything accepted is answered.
    let patient = engine.classify(texts(), later()).await.unwrap();
    assert_eq!(patient.scores.len(), texts().len());
    for handle in backlog {
        assert_eq!(handle.await.unwrap().unwrap().scores.len(), 400);
    }
}
