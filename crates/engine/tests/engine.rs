//! The engine with the real embedded model: batching does not change answers, deadlines are
//! honoured, the backlog is refused early, and ids another node could send are checked. Needs
//! ONNX Runtime (`make setup`). Requests go straight to one inference actor, as a gateway's
//! attempt would send them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use senti_config::{AdvancedConfig, Config, EngineConfig};
use senti_engine::{Answer, EncodedTexts, Engine, InferError, InferenceMsg, RequestId};
use senti_model::{ModelBundle, ModelSource, Scores};

/// An engine of one single-threaded actor with these advanced settings.
async fn engine_with(advanced: AdvancedConfig) -> Engine {
    senti_model::init_runtime(None).expect("ONNX Runtime: run `make setup`");
    let bundle = ModelBundle::load(&ModelSource::Embedded, None).unwrap();
    let config = Config { engine: EngineConfig { actors: 1, threads_per_actor: 1 }, advanced, ..Config::default() };
    Engine::start(bundle, &config).await.unwrap()
}

async fn engine() -> Engine {
    engine_with(AdvancedConfig::default()).await
}

/// Tokenizes `texts` and sends them to the engine's first actor.
async fn classify(engine: &Engine, texts: Vec<String>, deadline: Instant) -> Result<Vec<Scores>, InferError> {
    let encoded = engine.encode(&texts).await?;
    infer(engine, encoded, deadline).await
}

async fn infer(engine: &Engine, texts: Arc<EncodedTexts>, deadline: Instant) -> Result<Vec<Scores>, InferError> {
    answer(engine, texts, deadline).await.map(|answer| answer.scores)
}

async fn answer(engine: &Engine, texts: Arc<EncodedTexts>, deadline: Instant) -> Result<Answer, InferError> {
    let actor = &engine.actors()[0].actor;
    let request = RequestId::generate();
    ractor::call!(actor, |reply| InferenceMsg::Infer { texts, deadline, request, reply }).expect("actor answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_carries_the_actors_load_as_it_left() {
    let engine = engine().await;
    let encoded = engine.encode(&texts()[..1]).await.unwrap();
    // One batch per request, one at a time: the first is the cold one, not measured, and the
    // rate is reported from the fourth measured batch on.
    let mut rates = Vec::new();
    for _ in 0..6 {
        let answer = answer(&engine, encoded.clone(), later()).await.unwrap();
        assert_eq!(answer.scores.len(), 1);
        let load = answer.load_opt.expect("an inference actor's answer carries its load");
        assert_eq!(load.backlog_tokens, 0, "nothing else was queued");
        rates.push(load.tokens_per_sec);
    }
    assert!(rates[..4].iter().all(|&rate| rate == 0.0), "no rate before 4 measured batches: {rates:?}");
    assert!(rates[4..].iter().all(|&rate| rate > 0.0), "a rate once they are: {rates:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_signals_when_its_last_batch_ends() {
    let engine = engine().await;
    let gauge = engine.actors()[0].gauge.clone();
    let encoded = engine.encode(&texts()).await.unwrap();
    let idle = tokio::spawn(async move { gauge.went_idle().await });
    tokio::task::yield_now().await;
    assert!(!idle.is_finished(), "no signal while nothing ran");
    infer(&engine, encoded, later()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), idle).await.expect("idle after the request").unwrap();
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
        let config = AdvancedConfig { max_batch_size, batches_ahead, ..Default::default() };
        concurrent_answers_equal_lone_answers(engine_with(config).await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_many_texts_handed_over_together_get_their_own_answers_in_order() {
    // advanced.handoff_ms: a request's consecutive batches go to the model thread in one hand-off
    // (1 s of expected work: all of them), answered per batch; 0 hands over one batch at a time.
    for (handoff_ms, max_batch_size) in [(1_000, 1), (1_000, 4), (0, 1)] {
        let config = AdvancedConfig { max_batch_size, handoff_ms, ..Default::default() };
        let engine = Arc::new(engine_with(config).await);
        let mut alone = Vec::new();
        for text in texts() {
            alone.push(classify(&engine, vec![text], later()).await.unwrap().remove(0));
        }
        // Requests of 1 to 6 texts, rotated so every text sits at every position, all at once.
        let requests: Vec<Vec<usize>> =
            (0..12).map(|r| (0..1 + r % texts().len()).map(|i| (i + r) % texts().len()).collect()).collect();
        let handles: Vec<_> = requests
            .iter()
            .map(|indices| {
                let engine = engine.clone();
                let batch: Vec<String> = indices.iter().map(|&i| texts()[i].clone()).collect();
                tokio::spawn(async move { classify(&engine, batch, later()).await })
            })
            .collect();
        for (indices, handle) in requests.iter().zip(handles) {
            let scores = handle.await.unwrap().unwrap();
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
    let engine = Arc::new(engine);
    let mut alone = Vec::new();
    for text in texts() {
        alone.push(classify(&engine, vec![text], later()).await.unwrap().remove(0));
    }
    // Fire everything at once, several times over, so the queue batches texts of mixed lengths.
    let handles: Vec<_> = (0..4)
        .flat_map(|_| texts())
        .map(|t| {
            let engine = engine.clone();
            tokio::spawn(async move { classify(&engine, vec![t], later()).await })
        })
        .collect();
    for (i, handle) in handles.into_iter().enumerate() {
        let scores = handle.await.unwrap().unwrap().remove(0);
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
    let engine = engine().await;
    let result = classify(&engine, texts(), Instant::now()).await;
    assert_eq!(result.unwrap_err(), InferError::DeadlineExceeded);
}

#[tokio::test]
async fn ids_no_local_tokenizer_could_give_are_refused() {
    // What another node (or a forger holding the cluster's secrets) could send: the actor checks
    // every request against its model and limits before anything is queued.
    let engine = engine().await;
    let vocab = engine.bundle().encoder().vocab_size() as u32;
    let max_length = engine.bundle().manifest().max_length;
    for (what, texts) in [
        ("an id outside the vocabulary", EncodedTexts::from_texts([vec![101, vocab, 102]])),
        ("a text longer than the window", EncodedTexts::from_texts([vec![101; max_length + 1]])),
        ("more texts than limits.max_texts", EncodedTexts::from_texts(vec![vec![101, 102]; 257])),
        ("no texts", EncodedTexts::default()),
    ] {
        let result = infer(&engine, Arc::new(texts), later()).await;
        assert!(matches!(result, Err(InferError::Invalid(_))), "{what}: {result:?}");
    }
    assert_eq!(classify(&engine, texts(), later()).await.unwrap().len(), texts().len(), "the actor still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_backlog_would_make_late_is_refused_at_once() {
    let engine = Arc::new(engine().await);
    // One answered request measures the actor's throughput; then eight hundred texts of backlog
    // (well under a second of work: each is admitted within advanced.admission_headroom of its
    // deadline, and within advanced.queue_capacity) queue behind it.
    classify(&engine, texts(), later()).await.unwrap();
    let backlog: Vec<_> = (0..4)
        .map(|_| {
            let engine = engine.clone();
            let many: Vec<String> = (0..170).flat_map(|_| texts()).take(200).collect();
            tokio::spawn(async move { classify(&engine, many, later()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let short = classify(&engine, texts(), Instant::now() + Duration::from_millis(50)).await;
    assert!(matches!(short, Err(InferError::QueueFull { .. })), "{short:?}");
    // A request with time enough is still taken, and everything accepted is answered.
    let patient = classify(&engine, texts(), later()).await.unwrap();
    assert_eq!(patient.len(), texts().len());
    for handle in backlog {
        assert_eq!(handle.await.unwrap().unwrap().len(), 200);
    }
}
