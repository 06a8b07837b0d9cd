//! The gateway actor's routing behaviour, end to end through its messages: failover after an
//! attempt timeout, hedging (only onto a target with room) and its budget, the retry budget,
//! never the same target twice, ejection and its fleet cap, failures as load, the local
//! tie-break, cancellation, the replacement of remote targets, and idle notices.
//!
//! No model and no inference actor: every target is a [`TestHop`], a test double of [`Hop`] that
//! answers at once, answers late, hangs (holding its reply port), fails, or refuses, as each test
//! sets it, and records the attempts it received. The gateway cannot tell it from a real actor.
//!
//! Every test runs on paused tokio time. The gateway's clock is tokio's (`gateway.rs`: `now()`),
//! so attempt timeouts, hedge delays, late answers and ejection lengths elapse instantly and
//! exactly, the tests are deterministic, and a gateway that never answers fails the test at once
//! (the guard timeout auto-advances) instead of hanging it.
//!
//! The last two tests pin bugs this file found and that are fixed: a retry or hedge with no
//! untried target left must not spend budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorRef, RpcReplyPort};
use senti_config::Config;
use senti_engine::testsuite::wait_until;
use senti_engine::{ActorLoad, Answer, EncodedTexts, InferError, InferResult, LoadGauge, ModelFailure, RequestId};
use senti_model::Scores;
use senti_routing::{
    Classified, GatewayActor, GatewayArgs, GatewayMsg, Hop, Job, LoadSource, RoutingParams, RoutingSnapshot, Target,
    TargetId, TargetReport,
};
use tokio::sync::{oneshot, watch};

/// How long a test waits for any answer before declaring the gateway hung (paused time: free).
const GUARD: Duration = Duration::from_secs(60);

/// What a [`TestHop`] does with each attempt it receives.
#[derive(Debug, Clone)]
enum Behaviour {
    /// Answers at once with fixed scores.
    Answer,
    /// Answers at once with fixed scores and this load, as an inference actor does.
    AnswerWithLoad(ActorLoad),
    /// Answers with fixed scores after this long (a tokio sleep).
    AnswerAfter(Duration),
    /// Never answers, but keeps the reply port so the gateway does not see it dropped.
    Hang,
    /// Answers at once with this error.
    Fail(InferError),
    /// `Hop::send` itself fails with [`InferError::Unavailable`]: the work never arrived.
    Unreachable,
    /// Holds the work until a millisecond before the deadline it was given, then answers
    /// [`InferError::DeadlineExceeded`]: a remote actor expiring queued work (the deadline crosses
    /// the wire as whole milliseconds left, so its clock can end it a little early).
    ExpireEarly,
}

/// Test double of an inference actor behind a [`Hop`]: does what its [`Behaviour`] says and
/// records every attempt. Shared with the test through an `Arc`, so the test can change the
/// behaviour mid-run and read the counters.
struct TestHop {
    name: &'static str,
    /// Set by the test, read on every attempt.
    behaviour: Mutex<Behaviour>,
    /// Attempts received, whatever their outcome.
    attempts: AtomicUsize,
    /// The request id of every attempt received, in order: which request each attempt served.
    received: Mutex<Vec<String>>,
    /// The reply ports of hanging attempts, kept open so the test can watch them being closed.
    held: Mutex<Vec<RpcReplyPort<InferResult>>>,
}

impl TestHop {
    fn new(name: &'static str, behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self {
            name,
            behaviour: Mutex::new(behaviour),
            attempts: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
        })
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Hop for TestHop {
    fn send(
        &self,
        texts: Arc<EncodedTexts>,
        deadline: Instant,
        request: RequestId,
        reply: RpcReplyPort<InferResult>,
    ) -> Result<(), InferError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        self.received.lock().unwrap().push(request.to_string());
        let behaviour = self.behaviour.lock().unwrap().clone();
        match behaviour {
            Behaviour::Answer => {
                let _ = reply.send(Ok(Answer::scores(scores(texts.len()))));
            }
            Behaviour::AnswerWithLoad(load) => {
                let _ = reply.send(Ok(Answer { scores: scores(texts.len()), load_opt: Some(load) }));
            }
            Behaviour::AnswerAfter(delay) => {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = reply.send(Ok(Answer::scores(scores(texts.len()))));
                });
            }
            Behaviour::Hang => self.held.lock().unwrap().push(reply),
            Behaviour::Fail(err) => {
                let _ = reply.send(Err(err));
            }
            Behaviour::Unreachable => return Err(InferError::Unavailable),
            Behaviour::ExpireEarly => {
                tokio::spawn(async move {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(deadline) - ms(1)).await;
                    let _ = reply.send(Err(InferError::DeadlineExceeded));
                });
            }
        }
        Ok(())
    }
}

fn scores(texts: usize) -> Vec<Scores> {
    vec![Scores { label: 1, probabilities: vec![0.25, 0.75] }; texts]
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Now on the gateway's clock (tokio's, paused in these tests).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A target on this node (`n1/<name>`) with an idle load gauge.
fn local(hop: &Arc<TestHop>) -> Target {
    Target {
        id: TargetId { node: "n1".into(), actor: hop.name.into() },
        hop: hop.clone(),
        load: LoadSource::Local(Arc::new(LoadGauge::default())),
        model: "m@1".into(),
        variant: "int8".into(),
    }
}

/// A target on another node (`n2/<name>`) that gossiped `backlog_tokens` just now.
fn remote(hop: &Arc<TestHop>, backlog_tokens: f64) -> Target {
    Target {
        id: TargetId { node: "n2".into(), actor: hop.name.into() },
        hop: hop.clone(),
        load: LoadSource::Gossiped { backlog_tokens, tokens_per_sec: 0.0, as_of: now() },
        model: "m@1".into(),
        variant: "int8".into(),
    }
}

/// `target` as if its node served model `m@<version>`.
fn serving(version: &str, target: Target) -> Target {
    Target { model: format!("m@{version}").into(), ..target }
}

async fn gateway(local: Vec<Target>, config: Config) -> ActorRef<GatewayMsg> {
    let args = GatewayArgs { local, params: RoutingParams::from_config(&config), seed: 7 };
    let (gateway, _handle) = Actor::spawn(None, GatewayActor, args).await.expect("the gateway starts");
    gateway
}

/// Routing settings that never eject, so tests of other rules are not disturbed by ejection.
/// No ejection, and every attempt waits the configured timeout (no p99-based shortening), so
/// each test sees only the mechanism it is about.
fn never_eject() -> Config {
    with(Config::default(), |c| {
        c.advanced.eject_consecutive_failures = 1_000;
        c.advanced.attempt_timeout_p99_factor = 0.0;
    })
}

/// `config` changed by `change`.
fn with(mut config: Config, change: impl FnOnce(&mut Config)) -> Config {
    change(&mut config);
    config
}

/// A request sent to the gateway and not yet answered. Dropping `cancel` cancels it, as dropping
/// `Engine::classify`'s future does.
struct Pending {
    answer: oneshot::Receiver<Result<Classified, InferError>>,
    cancel: watch::Sender<()>,
}

/// Sends one request of one text, due `timeout` from now.
fn submit(gateway: &ActorRef<GatewayMsg>, text: &str, timeout: Duration) -> Pending {
    submit_for(gateway, text, timeout, None)
}

/// Like [`submit`], asking for model `model_opt` (`name@version`).
fn submit_for(gateway: &ActorRef<GatewayMsg>, text: &str, timeout: Duration, model_opt: Option<&str>) -> Pending {
    let (reply, answer) = oneshot::channel();
    let (cancel, cancelled) = watch::channel(());
    // The text doubles as the request id, which the test hops record.
    let texts = Arc::new(EncodedTexts::from_texts([vec![101, 102]]));
    let request = RequestId::parse(text).expect("test texts are valid request ids");
    let job = Job::new(texts, now() + timeout, model_opt.map(Arc::from), request, reply, cancelled);
    gateway.cast(GatewayMsg::Classify(job)).expect("the gateway is running");
    Pending { answer, cancel }
}

impl Pending {
    /// Waits for the answer, then drops the cancel sender (stopping any losing attempt), as
    /// `Engine::classify` does. Panics if the gateway hangs or drops the request unanswered.
    async fn answer(self) -> Result<Classified, InferError> {
        let Pending { answer, cancel } = self;
        let result = tokio::time::timeout(GUARD, answer).await.expect("no answer: the gateway hung");
        drop(cancel);
        result.expect("the gateway dropped the request without answering")
    }
}

async fn classify(gateway: &ActorRef<GatewayMsg>, text: &str, timeout: Duration) -> Result<Classified, InferError> {
    submit(gateway, text, timeout).answer().await
}

async fn snapshot(gateway: &ActorRef<GatewayMsg>) -> RoutingSnapshot {
    ractor::call!(gateway, GatewayMsg::Snapshot).expect("the gateway answers snapshots")
}

fn report<'a>(snapshot: &'a RoutingSnapshot, actor: &str) -> &'a TargetReport {
    snapshot
        .targets
        .iter()
        .find(|t| t.target.rsplit_once('/').is_some_and(|(_, a)| a == actor))
        .unwrap_or_else(|| panic!("no target {actor}"))
}

/// Waits until no attempt is outstanding on any target (losing attempts have been cancelled).
async fn wait_idle(gateway: &ActorRef<GatewayMsg>) {
    wait_until(ms(1_000), "no attempt is outstanding", async || {
        snapshot(gateway).await.targets.iter().all(|t| t.outstanding == 0)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_hanging_attempt_fails_over_after_the_attempt_timeout() {
    // Paused time: the 100 ms attempt timeout elapses exactly, so the failover time is checked.
    let hanging = TestHop::new("a", Behaviour::Hang);
    let healthy = TestHop::new("b", Behaviour::Answer);
    let routing = with(never_eject(), |c| {
        c.routing.attempt_timeout_ms = 100;
    });
    let gw = gateway(vec![local(&hanging), local(&healthy)], routing).await;

    // Both idle: the tie goes to the lower index, the hanging target.
    let start = tokio::time::Instant::now();
    let classified = classify(&gw, "t", ms(10_000)).await.expect("failed over");
    assert_eq!((classified.served_by.to_string().as_str(), classified.attempts), ("n1/b", 2));
    assert_eq!(classified.scores, scores(1));
    let elapsed = start.elapsed();
    assert!(elapsed >= ms(100) && elapsed < ms(110), "failover at the attempt timeout, got {elapsed:?}");
    let snap = snapshot(&gw).await;
    assert_eq!(report(&snap, "a").consecutive_failures, 1, "a timeout counts against the target");
    assert_eq!(snap.retries, 1);
    assert_eq!((hanging.attempts(), healthy.attempts()), (1, 1));
}

/// Issue 15's 504s below capacity: an actor expiring queued work at its attempt's deadline answered
/// `DeadlineExceeded`, which ended the request with a 504 although its own deadline was seconds
/// away (only the attempt's had passed). That is the attempt timing out: it fails over.
#[tokio::test(start_paused = true)]
async fn work_expired_at_the_attempt_deadline_fails_over() {
    let expiring = TestHop::new("a", Behaviour::ExpireEarly);
    let healthy = TestHop::new("b", Behaviour::Answer);
    let routing = with(never_eject(), |c| {
        c.routing.attempt_timeout_ms = 100;
    });
    let gw = gateway(vec![local(&expiring), local(&healthy)], routing).await;
    let classified = classify(&gw, "t", ms(10_000)).await.expect("failed over, not a 504");
    assert_eq!((classified.served_by.to_string().as_str(), classified.attempts), ("n1/b", 2));
    let snap = snapshot(&gw).await;
    assert_eq!(report(&snap, "a").consecutive_failures, 1, "counted as a timeout against the target");
    // When the request's own deadline is what passed, it stays a 504.
    healthy.set(Behaviour::ExpireEarly);
    let err = classify(&gw, "late", ms(50)).await.unwrap_err();
    assert_eq!(err, InferError::DeadlineExceeded);
}

#[tokio::test(start_paused = true)]
async fn once_latency_is_known_a_hanging_attempt_is_abandoned_at_ten_times_the_p99() {
    // Paused time: 30 answers of 4 ms set the p99; the attempt timeout becomes 40 ms, raised to
    // the 50 ms floor, instead of the configured 3 s.
    let first = TestHop::new("a", Behaviour::AnswerAfter(ms(4)));
    let second = TestHop::new("b", Behaviour::AnswerAfter(ms(4)));
    let routing = with(never_eject(), |c| {
        c.advanced.attempt_timeout_p99_factor = 10.0;
        c.advanced.attempt_timeout_min_ms = 50;
        c.advanced.hedge_budget_ratio = 0.0;
    });
    let gw = gateway(vec![local(&first)], routing).await;
    gw.cast(GatewayMsg::SetRemoteTargets(vec![remote(&second, 0.0)])).unwrap();
    for i in 0..30 {
        classify(&gw, &format!("warm-{i}"), ms(10_000)).await.unwrap();
    }
    first.set(Behaviour::Hang);
    second.set(Behaviour::Hang);
    let start = tokio::time::Instant::now();
    let err = classify(&gw, "stuck", ms(10_000)).await.unwrap_err();
    assert_eq!(err, InferError::AttemptTimedOut);
    let elapsed = start.elapsed();
    // The first attempt is hedged to the other node at 5 ms (the hedge reserve); both give up 50 ms
    // after they started.
    assert!(elapsed >= ms(50) && elapsed < ms(60), "attempts of 50 ms, not 3 s: got {elapsed:?}");
    assert_eq!((first.attempts(), second.attempts()), (31, 1), "sequential warm-up all on `a`; then `a` and its hedge");
}

#[tokio::test(start_paused = true)]
async fn only_hanging_targets_answer_an_error_by_the_deadline() {
    // Paused time: attempt timeouts and the deadline elapse exactly, so "by the deadline" is checked.
    let hops = ["a", "b", "c"].map(|name| TestHop::new(name, Behaviour::Hang));
    let routing = with(never_eject(), |c| {
        c.routing.attempt_timeout_ms = 300;
    });
    let gw = gateway(hops.iter().map(local).collect(), routing).await;

    // The first attempt times out at 300 ms; the second is cut by the request's deadline at 450 ms.
    let start = tokio::time::Instant::now();
    let result = classify(&gw, "t", ms(450)).await;
    let elapsed = start.elapsed();
    assert_eq!(result.unwrap_err(), InferError::DeadlineExceeded);
    assert!(elapsed >= ms(450) && elapsed < ms(460), "answered at the deadline, got {elapsed:?}");
    assert_eq!(hops.iter().map(|h| h.attempts()).sum::<usize>(), 2);
}

#[tokio::test(start_paused = true)]
async fn only_hanging_targets_and_a_far_deadline_time_out_once_per_target() {
    // Paused time: two 300 ms attempt timeouts elapse exactly, and instantly.
    let hops = ["a", "b"].map(|name| TestHop::new(name, Behaviour::Hang));
    let routing = with(never_eject(), |c| {
        c.routing.attempt_timeout_ms = 300;
    });
    let gw = gateway(hops.iter().map(local).collect(), routing).await;

    let start = tokio::time::Instant::now();
    let result = classify(&gw, "t", ms(10_000)).await;
    let elapsed = start.elapsed();
    assert_eq!(result.unwrap_err(), InferError::AttemptTimedOut);
    assert!(elapsed >= ms(600) && elapsed < ms(610), "two attempt timeouts, then no target left: {elapsed:?}");
    assert_eq!(hops.map(|h| h.attempts()), [1, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_attempt_is_hedged_and_the_fast_answer_wins() {
    // Paused time makes the race exact: the hedge fires at the 5 ms floor, the slow answer at 2 s.
    let first = TestHop::new("a", Behaviour::AnswerAfter(ms(50)));
    let backup = TestHop::new("b", Behaviour::Answer);
    let routing = with(never_eject(), |c| {
        c.advanced.hedge_min_delay_ms = 5;
    });
    let gw = gateway(vec![local(&first)], routing).await;
    gw.cast(GatewayMsg::SetRemoteTargets(vec![remote(&backup, 0.0)])).unwrap();

    // No latency samples yet: no hedging, the slow answer is awaited.
    let cold = classify(&gw, "cold", ms(10_000)).await.unwrap();
    assert_eq!((cold.served_by.to_string().as_str(), cold.attempts), ("n1/a", 1));
    // Fill the latency window (20 samples needed) with instant answers: p95 = 0, hedge after 5 ms.
    first.set(Behaviour::Answer);
    for i in 0..30 {
        let warm = classify(&gw, &format!("warm-{i}"), ms(10_000)).await.unwrap();
        assert_eq!(warm.served_by.to_string(), "n1/a");
    }
    assert_eq!(snapshot(&gw).await.hedges, 0);
    assert_eq!(backup.attempts(), 0);

    first.set(Behaviour::AnswerAfter(ms(2_000)));
    let start = tokio::time::Instant::now();
    let hedged = classify(&gw, "hedged", ms(10_000)).await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!((hedged.served_by.to_string().as_str(), hedged.attempts), ("n2/b", 2));
    assert!(elapsed >= ms(5) && elapsed < ms(10), "answered by the hedge, got {elapsed:?}");
    assert_eq!(snapshot(&gw).await.hedges, 1);
    assert_eq!(backup.received(), ["hedged"]);
    // The losing attempt is cancelled once the caller has its answer.
    wait_idle(&gw).await;
}

#[tokio::test(start_paused = true)]
async fn a_hedge_never_goes_to_another_actor_of_the_same_node() {
    // Two actors of this node share its cores: a hedge to the sibling would compute the text twice
    // on them. Paused time: the slow answer arrives at exactly 2 s.
    let first = TestHop::new("a", Behaviour::Answer);
    let sibling = TestHop::new("b", Behaviour::Answer);
    let routing = with(never_eject(), |c| {
        c.advanced.hedge_min_delay_ms = 5;
    });
    let gw = gateway(vec![local(&first), local(&sibling)], routing).await;
    for i in 0..30 {
        classify(&gw, &format!("warm-{i}"), ms(10_000)).await.unwrap();
        wait_idle(&gw).await;
    }
    first.set(Behaviour::AnswerAfter(ms(2_000)));
    sibling.set(Behaviour::AnswerAfter(ms(2_000)));
    let start = tokio::time::Instant::now();
    let answered = classify(&gw, "slow", ms(10_000)).await.unwrap();
    assert_eq!(answered.attempts, 1, "no hedge on this node");
    assert_eq!(start.elapsed(), ms(2_000));
    assert_eq!(snapshot(&gw).await.hedges, 0);
    assert_eq!(first.attempts() + sibling.attempts(), 31, "one attempt per request");

    // A target on another node appears: the next slow request is hedged there, and the budget
    // left untouched above pays for it.
    let other_node = TestHop::new("c", Behaviour::Answer);
    gw.cast(GatewayMsg::SetRemoteTargets(vec![remote(&other_node, 0.0)])).unwrap();
    wait_idle(&gw).await;
    let hedged = classify(&gw, "slow-again", ms(10_000)).await.unwrap();
    assert_eq!((hedged.served_by.to_string().as_str(), hedged.attempts), ("n2/c", 2));
    assert_eq!(snapshot(&gw).await.hedges, 1);
}

#[tokio::test(start_paused = true)]
async fn hedges_stay_within_the_hedge_budget() {
    // Paused time: 200 answers of 1.5 s each take no real time, and the hedge delay (at most 1 s)
    // always fires strictly before the slow answer, so no two timers tie.
    let first = TestHop::new("a", Behaviour::Answer);
    let backup = TestHop::new("b", Behaviour::Answer);
    let routing = with(never_eject(), |c| {
        c.advanced.hedge_budget_ratio = 0.05;
    });
    let gw = gateway(vec![local(&first)], routing).await;
    gw.cast(GatewayMsg::SetRemoteTargets(vec![remote(&backup, 0.0)])).unwrap();
    for i in 0..30 {
        classify(&gw, &format!("warm-{i}"), ms(10_000)).await.unwrap();
    }
    first.set(Behaviour::AnswerAfter(ms(1_500)));
    for i in 0..200 {
        classify(&gw, &format!("slow-{i}"), ms(10_000)).await.unwrap();
        wait_idle(&gw).await; // so that the next first attempt goes to `a` again
    }
    let hedges = snapshot(&gw).await.hedges;
    // The hedge budget: a reserve of 1, plus 0.05 per request.
    let bound = 1.0 + 0.05 * 230.0;
    assert!(hedges as f64 <= bound, "{hedges} hedges over 230 requests");
    assert!(hedges >= 10, "hedging stopped early: {hedges} hedges");
    assert_eq!(backup.attempts() as u64, hedges, "`b` only ever received hedges");
}

#[tokio::test(start_paused = true)]
async fn retries_stay_within_the_retry_budget() {
    let hops = [
        TestHop::new("model", Behaviour::Fail(InferError::Model(ModelFailure::Run("boom".into())))),
        TestHop::new("unavailable", Behaviour::Fail(InferError::Unavailable)),
        TestHop::new("unreachable", Behaviour::Unreachable),
        TestHop::new("full", Behaviour::Fail(InferError::QueueFull { retry_after: ms(100) })),
    ];
    let routing = with(never_eject(), |c| {
        c.advanced.retry_budget_ratio = 0.1;
        c.advanced.retry_min_reserve = 2.0;
    });
    let gw = gateway(hops.iter().map(local).collect(), routing).await;

    let requests = 30;
    let clients: Vec<_> = (0..requests)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move { classify(&gw, &format!("r{i}"), ms(10_000)).await })
        })
        .collect();
    for client in clients {
        let result = client.await.unwrap();
        assert!(result.is_err(), "every target fails, yet: {result:?}");
    }
    let attempts: usize = hops.iter().map(|h| h.attempts()).sum();
    let bound = requests as f64 + 2.0 + 0.1 * requests as f64;
    assert!(attempts as f64 <= bound, "{attempts} attempts for {requests} requests");
    assert!(attempts > requests, "the reserve allows some retries");
    assert!(snapshot(&gw).await.retries as f64 <= 2.0 + 0.1 * requests as f64);
}

#[tokio::test(start_paused = true)]
async fn a_request_never_tries_one_target_twice() {
    let hops = [
        TestHop::new("a", Behaviour::Fail(InferError::Model(ModelFailure::Run("boom".into())))),
        TestHop::new("b", Behaviour::Fail(InferError::Unavailable)),
        TestHop::new("c", Behaviour::Unreachable),
    ];
    // A budget large enough never to be the limit: only "not the same target twice" stops retries.
    let routing = with(never_eject(), |c| {
        c.advanced.retry_min_reserve = 100.0;
    });
    let gw = gateway(hops.iter().map(local).collect(), routing).await;

    for i in 0..10 {
        let text = format!("r{i}");
        let result = classify(&gw, &text, ms(10_000)).await;
        assert!(result.is_err(), "{result:?}");
        let tries: Vec<usize> = hops.iter().map(|h| h.received().iter().filter(|t| **t == text).count()).collect();
        assert_eq!(tries, [1, 1, 1], "request {text}: attempts per target");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_target_is_ejected_while_a_healthy_one_serves() {
    // Paused time: the ejection lasts 10 s of tokio time, ended below with `advance`.
    let sick = TestHop::new("sick", Behaviour::Fail(InferError::Model(ModelFailure::Run("boom".into()))));
    let healthy = TestHop::new("healthy", Behaviour::Answer);
    let routing = with(Config::default(), |c| {
        c.advanced.eject_consecutive_failures = 3;
        c.advanced.eject_base_ms = 10_000;
        c.advanced.eject_max_ms = 60_000;
        c.advanced.trust_half_life_ms = 60_000;
    });
    // The healthy target reports a large backlog, so the sick one stays the first choice despite
    // its failure penalty (512 tokens each): only ejection keeps attempts away from it.
    let gw = gateway(vec![local(&sick)], routing).await;
    gw.cast(GatewayMsg::SetRemoteTargets(vec![remote(&healthy, 100_000.0)])).unwrap();

    for i in 0..3 {
        let classified = classify(&gw, &format!("r{i}"), ms(10_000)).await.unwrap();
        assert_eq!((classified.served_by.to_string().as_str(), classified.attempts), ("n2/healthy", 2));
    }
    let snap = snapshot(&gw).await;
    assert_eq!(snap.ejections, 1);
    let ejected_for = report(&snap, "sick").ejected_for_ms.expect("ejected after 3 failures");
    assert!(ejected_for > 9_000 && ejected_for <= 10_000, "{ejected_for:?}");
    assert_eq!(report(&snap, "healthy").ejected_for_ms, None);

    for i in 3..10 {
        let classified = classify(&gw, &format!("r{i}"), ms(10_000)).await.unwrap();
        assert_eq!((classified.served_by.to_string().as_str(), classified.attempts), ("n2/healthy", 1));
    }
    assert_eq!(sick.attempts(), 3, "no attempt while ejected");

    // Once the ejection ends the target is tried again; still failing, it is ejected for longer.
    tokio::time::advance(ms(10_000)).await;
    let classified = classify(&gw, "probe", ms(10_000)).await.unwrap();
    assert_eq!((classified.served_by.to_string().as_str(), classified.attempts), ("n2/healthy", 2));
    assert_eq!(sick.attempts(), 4);
    let snap = snapshot(&gw).await;
    assert_eq!(snap.ejections, 2);
    assert!(report(&snap, "sick").ejected_for_ms.is_some_and(|d| d > 10_000), "doubled ejection");
}

#[tokio::test(start_paused = true)]
async fn ejection_never_takes_the_last_targets() {
    let routing = with(Config::default(), |c| {
        c.advanced.eject_consecutive_failures = 2;
        c.advanced.eject_base_ms = 10_000;
        c.advanced.retry_min_reserve = 100.0;
    });
    // Two failing targets: at most half of them (one) may be ejected.
    let pair = ["a", "b"].map(|name| TestHop::new(name, Behaviour::Fail(InferError::Unavailable)));
    let gw = gateway(pair.iter().map(local).collect(), routing.clone()).await;
    for i in 0..10 {
        assert_eq!(classify(&gw, &format!("r{i}"), ms(10_000)).await.unwrap_err(), InferError::Unavailable);
    }
    let snap = snapshot(&gw).await;
    assert_eq!(snap.ejections, 1);
    assert_eq!(snap.targets.iter().filter(|t| t.ejected_for_ms.is_some()).count(), 1);
    // The ejected target still serves as the last resort of a retry.
    assert_eq!(pair.iter().map(|h| h.attempts()).sum::<usize>(), 20);

    // A lone target is never ejected.
    let lone = TestHop::new("lone", Behaviour::Fail(InferError::Unavailable));
    let gw = gateway(vec![local(&lone)], routing).await;
    for i in 0..10 {
        assert!(classify(&gw, &format!("r{i}"), ms(10_000)).await.is_err());
    }
    let snap = snapshot(&gw).await;
    assert_eq!((snap.ejections, report(&snap, "lone").ejected_for_ms), (0, None));
    assert_eq!(lone.attempts(), 10);
}

#[tokio::test(start_paused = true)]
async fn failures_count_as_load() {
    // The failing target is first in line and both look idle; ejection is off, so only the
    // failure penalty in the load estimate can steer requests away from it.
    let failing = TestHop::new("failing", Behaviour::Fail(InferError::Model(ModelFailure::Run("boom".into()))));
    let healthy = TestHop::new("healthy", Behaviour::Answer);
    let gw = gateway(vec![local(&failing), local(&healthy)], never_eject()).await;
    for i in 0..20 {
        let classified = classify(&gw, &format!("r{i}"), ms(10_000)).await.unwrap();
        assert_eq!(classified.served_by.to_string(), "n1/healthy");
    }
    assert_eq!((failing.attempts(), healthy.attempts()), (1, 20));
    let snap = snapshot(&gw).await;
    assert!(report(&snap, "failing").estimate > report(&snap, "healthy").estimate);
}

#[tokio::test(start_paused = true)]
async fn equal_load_prefers_the_local_target() {
    let far = TestHop::new("far", Behaviour::Answer);
    let near = TestHop::new("near", Behaviour::Answer);
    // The remote target goes first (index 0), so "lower index wins a tie" would pick it: only the
    // local preference sends requests to `near`. (`GatewayArgs::local` takes any target; its
    // `LoadSource` is what makes it local or remote.)
    let config = never_eject();
    let (hop_cost, tokens_per_attempt) = (config.advanced.remote_hop_cost_tokens, config.advanced.tokens_per_attempt);
    let gw = gateway(vec![remote(&far, 0.0), local(&near)], config).await;
    let snap = snapshot(&gw).await;
    assert_eq!(report(&snap, "near").estimate + hop_cost, report(&snap, "far").estimate, "equal load, plus the hop");
    for i in 0..10 {
        assert_eq!(classify(&gw, &format!("r{i}"), ms(10_000)).await.unwrap().served_by.to_string(), "n1/near");
    }
    assert_eq!(far.attempts(), 0);

    // Load comes first, beyond the hop: while the attempts outstanding on the local target cost no
    // more than the hop, it still wins; one more and it is busier by more than the hop, and the
    // remote wins.
    let within_hop = (hop_cost / tokens_per_attempt).floor() as usize;
    assert!(within_hop >= 1, "the hop is worth at least one attempt");
    near.set(Behaviour::Hang);
    let mut held = Vec::new();
    for i in 1..=within_hop + 1 {
        held.push(submit(&gw, &format!("hangs-{i}"), ms(10_000)));
        wait_until(ms(1_000), "the local target holds every request", async || near.held() == i).await;
    }
    assert_eq!(classify(&gw, "next", ms(10_000)).await.unwrap().served_by.to_string(), "n2/far");
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn cancelling_ends_a_hanging_attempt() {
    // Paused time: the attempt timeout (3 s) would end the attempt too; the check that it ended
    // well before shows that cancellation, not the timeout, ended it.
    let hanging = TestHop::new("a", Behaviour::Hang);
    let spare = TestHop::new("b", Behaviour::Answer);
    let gw = gateway(vec![local(&hanging), local(&spare)], never_eject()).await;
    let start = tokio::time::Instant::now();
    let Pending { answer, cancel } = submit(&gw, "t", ms(10_000));
    wait_until(ms(1_000), "the attempt reached the target", async || hanging.held() == 1).await;
    assert_eq!(report(&snapshot(&gw).await, "a").outstanding, 1);
    assert!(!hanging.held.lock().unwrap()[0].is_closed());

    drop(cancel);
    wait_until(ms(1_000), "the attempt ended", async || report(&snapshot(&gw).await, "a").outstanding == 0).await;
    assert!(hanging.held.lock().unwrap()[0].is_closed(), "the target sees its reply port closed");
    assert!(start.elapsed() < ms(1_000), "ended by cancellation, not by the attempt timeout");
    let unanswered = tokio::time::timeout(GUARD, answer).await.expect("the job was dropped");
    assert!(unanswered.is_err(), "a cancelled request gets no answer");
    assert_eq!(spare.attempts(), 0, "a cancelled request is not retried elsewhere");
    let snap = snapshot(&gw).await;
    assert_eq!((report(&snap, "a").consecutive_failures, snap.retries), (0, 0), "not the target's fault");
}

#[tokio::test(start_paused = true)]
async fn set_remote_targets_replaces_remotes_and_keeps_locals() {
    let local_hop = TestHop::new("l0", Behaviour::Fail(InferError::Model(ModelFailure::Run("boom".into()))));
    let departing = TestHop::new("r1", Behaviour::Answer);
    let staying = TestHop::new("r2", Behaviour::Hang);
    let arriving = TestHop::new("r3", Behaviour::Answer);
    let gw = gateway(vec![local(&local_hop)], never_eject()).await;
    gw.cast(GatewayMsg::SetRemoteTargets(vec![remote(&departing, 1e6), remote(&staying, 0.0)])).unwrap();
    let ids = |snap: &RoutingSnapshot| snap.targets.iter().map(|t| t.target.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&snapshot(&gw).await), ["n1/l0", "n2/r1", "n2/r2"]);

    // The local target fails and `r1` looks busy, so the request ends up hanging on `r2`.
    let pending = submit(&gw, "t", ms(10_000));
    wait_until(ms(1_000), "the request hangs on r2", async || staying.held() == 1).await;

    gw.cast(GatewayMsg::SetRemoteTargets(vec![remote(&staying, 0.0), remote(&arriving, 0.0)])).unwrap();
    let snap = snapshot(&gw).await;
    assert_eq!(ids(&snap), ["n1/l0", "n2/r2", "n2/r3"]);
    assert_eq!(snap.targets.iter().map(|t| t.local).collect::<Vec<_>>(), [true, false, false]);
    assert_eq!(report(&snap, "r2").outstanding, 1, "a staying target keeps its counters");
    assert_eq!(report(&snap, "r3").outstanding, 0);

    drop(pending);
    wait_until(ms(1_000), "the cancelled attempt ended", async || report(&snapshot(&gw).await, "r2").outstanding == 0)
        .await;
    assert_eq!(departing.attempts(), 0);
}

/// A remote actor's answer carries its load, which replaces the gossiped value until gossip
/// brings a newer one; a local actor's is ignored (its gauge is exact).
#[tokio::test(start_paused = true)]
async fn an_answers_load_is_a_remote_targets_freshest_report() {
    let load = ActorLoad { backlog_tokens: 640, tokens_per_sec: 9_000.0 };
    let (local_hop, remote_hop) =
        (TestHop::new("l0", Behaviour::Hang), TestHop::new("r1", Behaviour::AnswerWithLoad(load)));
    let gw = gateway(vec![local(&local_hop)], never_eject()).await;
    let gossiped_at = now();
    gw.cast(GatewayMsg::SetRemoteTargets(vec![remote(&remote_hop, 0.0)])).unwrap();
    tokio::time::advance(ms(300)).await;
    // The local actor hangs the first attempt; after its timeout the request fails over to r1.
    let classified = classify(&gw, "t", ms(10_000)).await.expect("r1 answers");
    assert_eq!(classified.served_by.actor.as_ref(), "r1");
    let snap = snapshot(&gw).await;
    assert_eq!(report(&snap, "r1").backlog_tokens, Some(640.0), "the answer's load");
    assert_eq!(report(&snap, "l0").backlog_tokens, Some(0.0), "the local gauge, never an answer's load");

    // A gossip round carrying the value from before the answer does not bring it back...
    let stale = Target {
        load: LoadSource::Gossiped { backlog_tokens: 0.0, tokens_per_sec: 0.0, as_of: gossiped_at },
        ..remote(&remote_hop, 0.0)
    };
    gw.cast(GatewayMsg::SetRemoteTargets(vec![stale])).unwrap();
    assert_eq!(report(&snapshot(&gw).await, "r1").backlog_tokens, Some(640.0));
    // ...a newer one replaces it.
    tokio::time::advance(ms(10)).await;
    gw.cast(GatewayMsg::SetRemoteTargets(vec![remote(&remote_hop, 32.0)])).unwrap();
    assert_eq!(report(&snapshot(&gw).await, "r1").backlog_tokens, Some(32.0));
}

/// Regression (found by this file, fixed): a `Retry` with no untried target left withdrew a
/// retry token and counted as a retry, though nothing was placed.
#[tokio::test(start_paused = true)]
async fn a_retry_with_nowhere_to_go_spends_no_budget() {
    let pair = ["a", "b"].map(|name| TestHop::new(name, Behaviour::Fail(InferError::Unavailable)));
    // Exactly two retries for the gateway's lifetime.
    let routing = with(never_eject(), |c| {
        c.advanced.retry_budget_ratio = 0.0;
        c.advanced.retry_min_reserve = 2.0;
    });
    let gw = gateway(pair.iter().map(local).collect(), routing).await;
    assert!(classify(&gw, "r0", ms(10_000)).await.is_err());
    assert_eq!(pair.iter().map(|h| h.attempts()).sum::<usize>(), 2, "r0: one attempt per target");
    assert!(classify(&gw, "r1", ms(10_000)).await.is_err());
    assert_eq!(pair.iter().map(|h| h.attempts()).sum::<usize>(), 4, "r1 may use the second retry token");
    assert_eq!(snapshot(&gw).await.retries, 2, "one retry placed per request");
}

/// Regression (found by this file, fixed): a `Hedge` with no untried target left withdrew a
/// hedge token, so a gateway with one target drained its hedge budget and could not hedge once a
/// second target arrives.
#[tokio::test(start_paused = true)]
async fn a_hedge_with_nowhere_to_go_spends_no_budget() {
    let first = TestHop::new("a", Behaviour::Answer);
    let gw = gateway(vec![local(&first)], never_eject()).await;
    for i in 0..30 {
        classify(&gw, &format!("warm-{i}"), ms(10_000)).await.unwrap();
    }
    // Hedge budget: 1 + 0.05 * 30 = 2.5 tokens. Two slow requests fire their hedge timers, but
    // with a single target no hedge can be placed.
    first.set(Behaviour::AnswerAfter(ms(1_500)));
    for i in 0..2 {
        classify(&gw, &format!("slow-{i}"), ms(10_000)).await.unwrap();
        wait_idle(&gw).await;
    }
    assert_eq!(snapshot(&gw).await.hedges, 0);
    // 2.65 tokens should be left: the next slow request is hedged to the new target.
    let backup = TestHop::new("b", Behaviour::Answer);
    gw.cast(GatewayMsg::SetRemoteTargets(vec![remote(&backup, 0.0)])).unwrap();
    let classified = classify(&gw, "after", ms(10_000)).await.unwrap();
    assert_eq!((classified.served_by.to_string().as_str(), classified.attempts), ("n2/b", 2));
}

#[tokio::test(start_paused = true)]
async fn a_hedge_goes_only_to_a_target_with_room_and_a_declined_one_spends_nothing() {
    // Paused time. A hedge budget of exactly the reserve: one hedge, if the declined one spends nothing.
    let first = TestHop::new("a", Behaviour::Answer);
    let busy = TestHop::new("b", Behaviour::Answer);
    let routing = with(never_eject(), |c| {
        c.advanced.hedge_min_delay_ms = 5;
        c.advanced.hedge_budget_ratio = 0.0;
    });
    let gw = gateway(vec![local(&first)], routing).await;
    // Seconds of work ahead of the other node's actor: a hedge there would wait behind all of it.
    gw.cast(GatewayMsg::SetRemoteTargets(vec![remote(&busy, 10_000.0)])).unwrap();
    for i in 0..30 {
        assert_eq!(classify(&gw, &format!("warm-{i}"), ms(10_000)).await.unwrap().served_by.to_string(), "n1/a");
    }
    first.set(Behaviour::AnswerAfter(ms(2_000)));
    let start = tokio::time::Instant::now();
    let slow = classify(&gw, "slow", ms(10_000)).await.unwrap();
    assert_eq!((slow.served_by.to_string().as_str(), slow.attempts), ("n1/a", 1), "no hedge onto a full queue");
    assert_eq!(start.elapsed(), ms(2_000));
    assert_eq!((snapshot(&gw).await.hedges, busy.attempts()), (0, 0));

    // The same actor with nothing ahead: the next slow request is hedged there, on the unspent reserve.
    let idle = TestHop::new("b", Behaviour::Answer);
    gw.cast(GatewayMsg::SetRemoteTargets(vec![remote(&idle, 0.0)])).unwrap();
    let hedged = classify(&gw, "slow-again", ms(10_000)).await.unwrap();
    assert_eq!((hedged.served_by.to_string().as_str(), hedged.attempts), ("n2/b", 2));
    assert_eq!(snapshot(&gw).await.hedges, 1);
    wait_idle(&gw).await;
}

#[tokio::test(start_paused = true)]
async fn a_newer_model_version_is_preferred_until_it_is_much_busier() {
    // Paused time. This node serves m@1; another node's actor serves m@2 and gossips its load.
    let old = TestHop::new("old", Behaviour::Answer);
    let new = TestHop::new("new", Behaviour::Answer);
    let gw = gateway(vec![local(&old)], never_eject()).await;
    gw.cast(GatewayMsg::SetRemoteTargets(vec![serving("2", remote(&new, 0.0))])).unwrap();
    let answer = classify(&gw, "idle", ms(10_000)).await.unwrap();
    assert_eq!((answer.served_by.to_string().as_str(), &*answer.model), ("n2/new", "m@2"), "newest first, hop and all");

    // Busier than the idle old actor by less than the penalty: still the newest.
    let busy = senti_routing::OLDER_MODEL_PENALTY_TOKENS / 2.0;
    gw.cast(GatewayMsg::SetRemoteTargets(vec![serving("2", remote(&new, busy))])).unwrap();
    assert_eq!(&*classify(&gw, "busy", ms(10_000)).await.unwrap().model, "m@2");

    // Far busier: the old version takes the overflow, and says so.
    let swamped = senti_routing::OLDER_MODEL_PENALTY_TOKENS * 4.0;
    gw.cast(GatewayMsg::SetRemoteTargets(vec![serving("2", remote(&new, swamped))])).unwrap();
    let answer = classify(&gw, "swamped", ms(10_000)).await.unwrap();
    assert_eq!((answer.served_by.to_string().as_str(), &*answer.model), ("n1/old", "m@1"));
}

#[tokio::test(start_paused = true)]
async fn a_request_for_a_version_goes_only_to_its_actors() {
    let old = TestHop::new("old", Behaviour::Answer);
    let new = TestHop::new("new", Behaviour::Fail(InferError::Unavailable));
    let gw = gateway(vec![local(&old)], never_eject()).await;
    gw.cast(GatewayMsg::SetRemoteTargets(vec![serving("2", remote(&new, 0.0))])).unwrap();

    // m@1 asked for: the idle remote m@2 actor is never tried.
    let answer = submit_for(&gw, "v1", ms(10_000), Some("m@1")).answer().await.unwrap();
    assert_eq!((&*answer.model, new.attempts()), ("m@1", 0));

    // m@2 asked for and its only actor fails: the request fails rather than fall back to m@1.
    let before = old.attempts();
    let failed = submit_for(&gw, "v2", ms(10_000), Some("m@2")).answer().await;
    assert!(matches!(failed, Err(InferError::Unavailable)), "{failed:?}");
    assert_eq!((old.attempts(), new.attempts()), (before, 1));

    // No version asked for: the failing newest is retried on the old one.
    let answer = classify(&gw, "any", ms(10_000)).await.unwrap();
    assert_eq!((&*answer.model, new.attempts()), ("m@1", 2));

    // A version nobody serves fails at once.
    let none = submit_for(&gw, "v3", ms(10_000), Some("m@3")).answer().await;
    assert!(matches!(none, Err(InferError::Unavailable)), "{none:?}");
}

/// A target `node/<hop's name>` with the given load.
fn on(node: &str, hop: &Arc<TestHop>, load: LoadSource) -> Target {
    Target { id: TargetId { node: node.into(), actor: hop.name.into() }, load, ..local(hop) }
}

/// An idle notice sends a first placement to the remote actor that sent it, instead of the local
/// actor the estimates chose, once more than one attempt's worth of work is ahead of that; each
/// notice serves once and only while fresh, and one naming no target is ignored.
#[tokio::test(start_paused = true)]
async fn an_idle_notice_takes_work_the_local_actor_would_queue() {
    let near = TestHop::new("near", Behaviour::Hang);
    let far = TestHop::new("far", Behaviour::Answer);
    let gw = gateway(vec![local(&near)], never_eject()).await;
    // Gossip says `far` is swamped: the estimates alone never choose it.
    gw.cast(GatewayMsg::SetRemoteTargets(vec![remote(&far, 1e6)])).unwrap();
    let notice = |node: &str, actor: &str| GatewayMsg::IdleNotice(TargetId { node: node.into(), actor: actor.into() });
    gw.cast(notice("n3", "ghost")).unwrap();
    gw.cast(notice("n2", "far")).unwrap();
    let mut held = Vec::new();
    for i in 1..=2 {
        // Nothing, then one attempt's worth, ahead of `near`: the work stays local.
        held.push(submit(&gw, &format!("hangs-{i}"), ms(10_000)));
        wait_until(ms(1_000), "the local target holds the request", async || near.held() == i).await;
    }
    assert_eq!(far.attempts(), 0);
    assert_eq!(classify(&gw, "moved", ms(10_000)).await.unwrap().served_by.to_string(), "n2/far");
    assert_eq!(near.attempts(), 2, "placed on `far` first, not failed over to it");
    held.push(submit(&gw, "used-up", ms(10_000)));
    wait_until(ms(1_000), "the notice served once", async || near.held() == 3).await;

    gw.cast(notice("n2", "far")).unwrap();
    snapshot(&gw).await; // the notice is in before the clock moves
    tokio::time::advance(senti_routing::IDLE_NOTICE_TTL).await;
    held.push(submit(&gw, "expired", ms(10_000)));
    wait_until(ms(1_000), "an old notice is not used", async || near.held() == 4).await;
    assert_eq!(far.attempts(), 1);
    drop(held);
}

/// A local actor whose gauge signals that it ran out of work is announced to the notice
/// recipients, unless work reached it meanwhile; the recipient then sends it work its own busy
/// actor would queue.
#[tokio::test(start_paused = true)]
async fn a_local_actor_that_runs_out_of_work_is_announced_to_other_gateways() {
    let idle = TestHop::new("a0", Behaviour::Answer);
    let gauge = Arc::new(LoadGauge::default());
    let announcer = gateway(vec![on("n1", &idle, LoadSource::Local(gauge.clone()))], never_eject()).await;
    let busy = TestHop::new("busy", Behaviour::Hang);
    let hearer = gateway(vec![on("n2", &busy, LoadSource::Local(Arc::new(LoadGauge::default())))], never_eject()).await;
    let swamped = LoadSource::Gossiped { backlog_tokens: 1e6, tokens_per_sec: 0.0, as_of: now() };
    hearer.cast(GatewayMsg::SetRemoteTargets(vec![on("n1", &idle, swamped)])).unwrap();
    announcer.cast(GatewayMsg::SetNoticeRecipients(vec![hearer.clone()])).unwrap();
    let mut held = Vec::new();
    for i in 1..=2 {
        held.push(submit(&hearer, &format!("hangs-{i}"), ms(10_000)));
        wait_until(ms(1_000), "the busy actor holds the request", async || busy.held() == i).await;
    }

    // Work arrived before the gateway read the signal: no notice.
    gauge.set_queue(1, 40);
    gauge.mark_idle();
    tokio::time::sleep(ms(1)).await;
    held.push(submit(&hearer, "stays", ms(10_000)));
    wait_until(ms(1_000), "no notice: the work queues locally", async || busy.held() == 3).await;

    gauge.set_queue(0, 0);
    gauge.mark_idle();
    tokio::time::sleep(ms(1)).await;
    assert_eq!(classify(&hearer, "moved", ms(10_000)).await.unwrap().served_by.to_string(), "n1/a0");
    assert_eq!(busy.attempts(), 3, "placed on `a0` first, not failed over to it");
    drop(held);
}
