//! The gateway actor: places each request on an inference actor anywhere in the cluster, fails
//! over, hedges and ejects outliers.
//!
//! It never awaits an inference. `handle` makes a decision over its snapshot of the targets
//! (microseconds: power-of-two-choices on `senti_routing::estimate`) and spawns an attempt task;
//! the task waits for the actor's answer, the attempt timeout, the request's deadline, or the
//! client leaving, and reports back with [`GatewayMsg::AttemptEnded`].
//! ```text
//!  Classify ──place──> attempt task ──Hop::send──> inference actor (local or remote)
//!     ▲                  │ slower than the recent p95: Hedge ──place (other node)──> 2nd task
//!     │                  │ failed / timed out, none in flight: Retry ──place (not tried)──>
//!     └── AttemptEnded <─┘ outstanding -1, latency window, outlier detector
//! ```
//! Rules: never the same actor twice for one request; retries and hedges are drawn from budgets
//! (`routing.retry_budget_ratio`, `routing.hedge_budget_ratio`); at most one hedge per request,
//! and only to another node: the actors of one node share its cores, so a hedge to a sibling
//! computes the same text twice on the same cores and can only slow the node down (measured:
//! docs/benchmarks.md, "Hedges stay off the node"); a retry may go anywhere not tried;
//! the first answer wins and the caller dropping its future cancels every attempt. Local targets
//! come from the engine; remote ones are replaced wholesale by the cluster layer
//! ([`GatewayMsg::SetRemoteTargets`]), keeping the counters of targets that stay.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use senti_config::RoutingConfig;
use senti_model::Scores;
use senti_routing::{
    attempt_timeout, estimate, local_plus_two_remote, may_eject, Candidate, EstimateParams, HedgePolicy, LatencyWindow,
    LoadView, OutlierParams, RetryBudget, TargetHealth,
};
use tokio::sync::{oneshot, watch};

use crate::hop::Hop;
use crate::inference::InferResult;
use crate::load::LoadGauge;
use crate::InferError;

/// The clock of routing decisions: tokio's, so a paused test clock drives it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A classified request.
#[derive(Debug, Clone)]
pub struct Classified {
    /// One per text, in request order.
    pub scores: Vec<Scores>,
    /// The inference actor that answered (`node/actor`).
    pub served_by: String,
    /// Attempts made (1 when the first succeeded).
    pub attempts: u32,
}

/// Which inference actor: the node's id and the actor's name on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetId {
    /// The node (`server.node_id`).
    pub node: Arc<str>,
    /// The actor on that node (`a0`, ...).
    pub actor: Arc<str>,
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.actor)
    }
}

/// Where a target's load comes from.
#[derive(Clone)]
pub enum LoadSource {
    /// An actor of this node: its gauge, exact and current.
    Local(Arc<LoadGauge>),
    /// An actor of another node: the backlog it last gossiped and when it published it.
    Gossiped {
        /// Tokens queued and running.
        backlog_tokens: f64,
        /// When the value was true (this node's clock).
        as_of: Instant,
    },
}

/// One inference actor as the gateway sees it.
#[derive(Clone)]
pub struct Target {
    /// Its identity.
    pub id: TargetId,
    /// How to reach it.
    pub hop: Arc<dyn Hop>,
    /// Its load.
    pub load: LoadSource,
}

/// One request on its way through the gateway, shared by its attempts.
pub struct Job {
    texts: Arc<[String]>,
    deadline: Instant,
    /// Taken by the first attempt that answers; `None` afterwards.
    reply: Mutex<Option<oneshot::Sender<Result<Classified, InferError>>>>,
    /// Its sender lives in the caller; when the caller goes away every attempt is cancelled.
    cancelled: watch::Receiver<()>,
    /// Targets tried so far: never place twice on one.
    tried: Mutex<Vec<TargetId>>,
    /// Attempts running now (a hedge makes two).
    in_flight: AtomicU32,
    /// Why the latest attempt failed: the answer when no attempt is left.
    last_error: Mutex<Option<InferError>>,
}

impl Job {
    /// A new request; the answer arrives on `reply`. Dropping the sender of `cancelled` cancels
    /// it: every running attempt stops and its actor drops the queued texts. (A dropped `reply`
    /// receiver alone is only noticed at the next placement; callers drop both, as
    /// `Engine::classify` does.)
    pub fn new(
        texts: Vec<String>,
        deadline: Instant,
        reply: oneshot::Sender<Result<Classified, InferError>>,
        cancelled: watch::Receiver<()>,
    ) -> Arc<Self> {
        Arc::new(Self {
            texts: texts.into(),
            deadline,
            reply: Mutex::new(Some(reply)),
            cancelled,
            tried: Mutex::new(Vec::new()),
            in_flight: AtomicU32::new(0),
            last_error: Mutex::new(None),
        })
    }

    /// Answers the request unless it has been answered; true if this call answered it.
    fn answer(&self, result: Result<Classified, InferError>) -> bool {
        let sender_opt = self.reply.lock().expect("job lock poisoned. This is a bug.").take();
        match sender_opt {
            Some(sender) => {
                let _ = sender.send(result);
                true
            }
            None => false,
        }
    }

    /// Answered, or nobody waits any more.
    fn is_done(&self) -> bool {
        let reply = self.reply.lock().expect("job lock poisoned. This is a bug.");
        reply.as_ref().is_none_or(|sender| sender.is_closed())
    }

    fn tried(&self) -> Vec<TargetId> {
        self.tried.lock().expect("job lock poisoned. This is a bug.").clone()
    }

    fn fail_with_last_error(&self) {
        let err = self.last_error.lock().expect("job lock poisoned. This is a bug.").clone();
        self.answer(Err(err.unwrap_or(InferError::Unavailable)));
    }
}

/// How an attempt ended, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttemptOutcome {
    /// Answered after this long.
    Succeeded(Duration),
    /// The actor or the hop failed (counts against the target's health).
    Failed,
    /// No answer within the attempt timeout (counts against the target's health).
    TimedOut,
    /// The actor's queue was full: load, not sickness.
    Overloaded,
    /// The request's deadline passed or its caller left: says nothing about the target.
    Abandoned,
}

/// Messages of [`GatewayActor`].
pub enum GatewayMsg {
    /// A new request.
    Classify(Arc<Job>),
    /// Every attempt failed in a retryable way; place again on a target not tried.
    Retry(Arc<Job>),
    /// The first attempt is slower than the recent quantile; place a backup.
    Hedge(Arc<Job>),
    /// An attempt on `target` ended.
    AttemptEnded {
        /// Where it ran.
        target: TargetId,
        /// How it ended.
        outcome: AttemptOutcome,
    },
    /// The cluster's current remote targets (replaces the previous set).
    SetRemoteTargets(Vec<Target>),
    /// A report of every target's routing state (for `/v1/cluster`).
    Snapshot(RpcReplyPort<RoutingSnapshot>),
}

impl ractor::Message for GatewayMsg {}

/// What `/v1/cluster` shows of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetReport {
    /// Its identity.
    pub id: TargetId,
    /// On this node.
    pub local: bool,
    /// Backlog in tokens as last known.
    pub backlog_tokens: f64,
    /// Age of that value (zero for local actors).
    pub age: Duration,
    /// This gateway's attempts on it that have not ended.
    pub outstanding: u32,
    /// The load estimate placement compares.
    pub estimate: f64,
    /// Time left in its current ejection.
    pub ejected_for_opt: Option<Duration>,
    /// Failures in a row.
    pub consecutive_failures: u32,
}

/// The gateway's routing state, for observability.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutingSnapshot {
    /// Every target.
    pub targets: Vec<TargetReport>,
    /// Retries placed since start.
    pub retries: u64,
    /// Hedges placed since start.
    pub hedges: u64,
    /// Ejections since start.
    pub ejections: u64,
}

/// Everything the gateway starts with.
pub struct GatewayArgs {
    /// This node's targets.
    pub local: Vec<Target>,
    /// Placement, retry, hedging and ejection settings.
    pub routing: RoutingConfig,
    /// Seed of the placement's random choices (fixed in simulations).
    pub seed: u64,
}

/// Stateless actor; state in [`GatewayState`].
pub struct GatewayActor;

struct TargetState {
    target: Target,
    /// Attempts sent and not ended: counts work the target's own load may not show yet.
    outstanding: u32,
    health: TargetHealth,
}

/// The gateway's view of its targets and its budgets. Only its own handler touches it.
pub struct GatewayState {
    targets: Vec<TargetState>,
    estimate_params: EstimateParams,
    outlier_params: OutlierParams,
    hedge_policy: HedgePolicy,
    attempt_timeout: Duration,
    attempt_timeout_factor: f64,
    attempt_timeout_floor: Duration,
    retry_budget: RetryBudget,
    hedge_budget: RetryBudget,
    latencies: LatencyWindow,
    rng: SmallRng,
    retries: u64,
    hedges: u64,
    ejections: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Placement {
    First,
    Retry,
    Hedge,
}

impl Actor for GatewayActor {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = GatewayArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: GatewayArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let r = &args.routing;
        let now = now();
        Ok(GatewayState {
            targets: args
                .local
                .into_iter()
                .map(|target| TargetState { target, outstanding: 0, health: TargetHealth::new(now) })
                .collect(),
            estimate_params: EstimateParams {
                trust_half_life: Duration::from_millis(r.trust_half_life_ms),
                ..EstimateParams::default()
            },
            outlier_params: OutlierParams {
                consecutive_failures: r.eject_consecutive_failures,
                base_ejection: Duration::from_millis(r.eject_base_ms),
                max_ejection: Duration::from_millis(r.eject_max_ms),
                ..OutlierParams::default()
            },
            hedge_policy: HedgePolicy {
                quantile: r.hedge_quantile,
                min_delay: Duration::from_millis(r.hedge_min_delay_ms),
                ..HedgePolicy::default()
            },
            attempt_timeout: Duration::from_millis(r.attempt_timeout_ms),
            attempt_timeout_factor: r.attempt_timeout_p99_factor,
            attempt_timeout_floor: Duration::from_millis(r.attempt_timeout_min_ms),
            retry_budget: RetryBudget::new(
                r.retry_budget_ratio,
                r.retry_min_reserve,
                100.0_f64.max(r.retry_min_reserve),
            ),
            hedge_budget: RetryBudget::new(r.hedge_budget_ratio, 1.0, 10.0),
            latencies: LatencyWindow::default(),
            rng: SmallRng::seed_from_u64(args.seed),
            retries: 0,
            hedges: 0,
            ejections: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GatewayMsg::Classify(job) => {
                state.retry_budget.deposit();
                state.hedge_budget.deposit();
                state.place(job, Placement::First, myself);
            }
            GatewayMsg::Retry(job) => {
                if job.is_done() {
                    return Ok(());
                }
                if !state.has_untried(&job) {
                    job.fail_with_last_error(); // nowhere to go: spend no budget
                    return Ok(());
                }
                if !state.retry_budget.try_withdraw() {
                    metrics::counter!("senti_retries_refused_total").increment(1);
                    job.fail_with_last_error();
                    return Ok(());
                }
                state.retries += 1;
                metrics::counter!("senti_retries_total").increment(1);
                state.place(job, Placement::Retry, myself);
            }
            GatewayMsg::Hedge(job) => {
                if job.is_done()
                    || job.in_flight.load(Ordering::Acquire) == 0
                    || !state.has_untried_node(&job)
                    || !state.hedge_budget.try_withdraw()
                {
                    return Ok(());
                }
                state.place(job, Placement::Hedge, myself);
            }
            GatewayMsg::AttemptEnded { target, outcome } => state.attempt_ended(&target, outcome),
            GatewayMsg::SetRemoteTargets(remote) => state.set_remote(remote),
            GatewayMsg::Snapshot(reply) => {
                let _ = reply.send(state.snapshot());
            }
        }
        Ok(())
    }
}

impl GatewayState {
    fn view(&self, t: &TargetState, now: Instant) -> LoadView {
        let (reported_backlog, reported_age, is_local) = match &t.target.load {
            LoadSource::Local(gauge) => (gauge.snapshot().backlog_tokens() as f64, Duration::ZERO, true),
            LoadSource::Gossiped { backlog_tokens, as_of } => {
                (*backlog_tokens, now.saturating_duration_since(*as_of), false)
            }
        };
        LoadView {
            reported_backlog,
            reported_age,
            outstanding: t.outstanding,
            recent_failures: t.health.recent_failures(now, &self.outlier_params),
            is_local,
        }
    }

    /// Whether any target has not been tried for `job` yet.
    fn has_untried(&self, job: &Job) -> bool {
        let tried = job.tried.lock().expect("job lock poisoned. This is a bug.");
        self.targets.iter().any(|t| !tried.contains(&t.target.id))
    }

    /// Whether any target is on a node that no attempt of `job` has been on (where a hedge may go).
    fn has_untried_node(&self, job: &Job) -> bool {
        let tried = job.tried.lock().expect("job lock poisoned. This is a bug.");
        self.targets.iter().any(|t| !tried.iter().any(|id| id.node == t.target.id.node))
    }

    fn place(&mut self, job: Arc<Job>, placement: Placement, myself: ActorRef<GatewayMsg>) {
        if job.is_done() {
            return;
        }
        let now = now();
        let tried = job.tried();
        let untried = |t: &&TargetState| match placement {
            Placement::Hedge => !tried.iter().any(|id| id.node == t.target.id.node),
            Placement::First | Placement::Retry => !tried.contains(&t.target.id),
        };
        let healthy: Vec<Candidate> = self
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| untried(t) && !t.health.is_ejected(now))
            .map(|(index, t)| self.candidate(index, t, now))
            .collect();
        // Every untried target ejected: route to them anyway rather than fail (Envoy's panic mode).
        let candidates = if healthy.is_empty() {
            self.targets
                .iter()
                .enumerate()
                .filter(|(_, t)| untried(t))
                .map(|(index, t)| self.candidate(index, t, now))
                .collect()
        } else {
            healthy
        };
        let Some(index) = local_plus_two_remote(&candidates, &mut self.rng) else {
            if placement != Placement::Hedge && job.in_flight.load(Ordering::Acquire) == 0 {
                job.fail_with_last_error();
            }
            return;
        };
        let state = &mut self.targets[index];
        state.outstanding += 1;
        let target = state.target.clone();
        let local = matches!(target.load, LoadSource::Local(_));
        metrics::counter!("senti_attempts_total", "hop" => if local { "local" } else { "remote" }).increment(1);
        if placement == Placement::Hedge {
            self.hedges += 1;
            metrics::counter!("senti_hedges_total").increment(1);
        }
        let hedge_after_opt = match placement {
            Placement::First => self.hedge_policy.hedge_delay(&self.latencies),
            Placement::Retry | Placement::Hedge => None,
        };
        job.tried.lock().expect("job lock poisoned. This is a bug.").push(target.id.clone());
        job.in_flight.fetch_add(1, Ordering::AcqRel);
        let timeout = attempt_timeout(
            &self.latencies,
            self.attempt_timeout,
            self.attempt_timeout_factor,
            self.attempt_timeout_floor,
        );
        tokio::spawn(attempt(job, target, myself, timeout, hedge_after_opt));
    }

    fn candidate(&self, index: usize, t: &TargetState, now: Instant) -> Candidate {
        let view = self.view(t, now);
        Candidate { index, estimate: estimate(&view, &self.estimate_params), is_local: view.is_local }
    }

    fn attempt_ended(&mut self, id: &TargetId, outcome: AttemptOutcome) {
        let now = now();
        let ejected_now = self.targets.iter().filter(|t| t.health.is_ejected(now)).count();
        let allow_eject = may_eject(ejected_now, self.targets.len(), &self.outlier_params);
        let Some(state) = self.targets.iter_mut().find(|t| &t.target.id == id) else {
            return; // the target left the cluster meanwhile
        };
        state.outstanding = state.outstanding.saturating_sub(1);
        match outcome {
            AttemptOutcome::Succeeded(latency) => {
                self.latencies.record(latency);
                state.health.record_success(now);
            }
            AttemptOutcome::Failed | AttemptOutcome::TimedOut => {
                if state.health.record_failure(now, &self.outlier_params, allow_eject) {
                    self.ejections += 1;
                    metrics::counter!("senti_ejections_total").increment(1);
                    tracing::warn!(target = %id, failures = state.health.consecutive_failures(), "actor ejected from the rotation");
                }
            }
            AttemptOutcome::Overloaded | AttemptOutcome::Abandoned => {}
        }
    }

    fn set_remote(&mut self, remote: Vec<Target>) {
        let now = now();
        let (local, mut previous): (Vec<TargetState>, Vec<TargetState>) =
            std::mem::take(&mut self.targets).into_iter().partition(|t| matches!(t.target.load, LoadSource::Local(_)));
        self.targets = local;
        for target in remote {
            if let LoadSource::Gossiped { as_of, .. } = &target.load {
                metrics::histogram!("senti_gossip_load_age_seconds")
                    .record(now.saturating_duration_since(*as_of).as_secs_f64());
            }
            let (outstanding, health) = match previous.iter().position(|p| p.target.id == target.id) {
                Some(i) => {
                    let p = previous.swap_remove(i);
                    (p.outstanding, p.health)
                }
                None => (0, TargetHealth::new(now)),
            };
            self.targets.push(TargetState { target, outstanding, health });
        }
    }

    fn snapshot(&self) -> RoutingSnapshot {
        let now = now();
        let targets = self
            .targets
            .iter()
            .map(|t| {
                let view = self.view(t, now);
                TargetReport {
                    id: t.target.id.clone(),
                    local: view.is_local,
                    backlog_tokens: view.reported_backlog,
                    age: view.reported_age,
                    outstanding: t.outstanding,
                    estimate: estimate(&view, &self.estimate_params),
                    ejected_for_opt: t.health.ejected_until(now).map(|until| until - now),
                    consecutive_failures: t.health.consecutive_failures(),
                }
            })
            .collect();
        RoutingSnapshot { targets, retries: self.retries, hedges: self.hedges, ejections: self.ejections }
    }
}

/// One attempt on one target; reports back to the gateway when it ends.
async fn attempt(
    job: Arc<Job>,
    target: Target,
    gateway: ActorRef<GatewayMsg>,
    attempt_timeout: Duration,
    hedge_after_opt: Option<Duration>,
) {
    let started = tokio::time::Instant::now();
    let request_deadline = tokio::time::Instant::from_std(job.deadline);
    let attempt_deadline = request_deadline.min(started + attempt_timeout);
    let (tx, rx) = oneshot::channel::<InferResult>();
    // The port's timeout bounds the wire bridge's wait when the target is remote.
    let port = RpcReplyPort::from((tx, attempt_deadline.saturating_duration_since(started)));
    let mut cancelled = job.cancelled.clone();
    // The target gets the attempt's deadline, not the request's: work it cannot finish before
    // this attempt is abandoned is refused at once (429, so another target can be tried), and
    // queued texts expire when the attempt does.
    let result = match target.hop.send(job.texts.to_vec(), attempt_deadline.into_std(), port) {
        Err(err) => Err(err),
        Ok(()) => {
            let hedge = async {
                match hedge_after_opt {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(hedge, rx);
            let mut hedged = false;
            loop {
                tokio::select! {
                    answer = &mut rx => break answer.unwrap_or(Err(InferError::Unavailable)),
                    _ = tokio::time::sleep_until(attempt_deadline) => {
                        break Err(if attempt_deadline >= request_deadline {
                            InferError::DeadlineExceeded
                        } else {
                            InferError::AttemptTimedOut
                        });
                    }
                    _ = cancelled.changed() => {
                        // The caller left (or another attempt answered): dropping `rx` closes the
                        // actor's reply port, so a local actor drops the queued texts.
                        job.in_flight.fetch_sub(1, Ordering::AcqRel);
                        let _ = gateway.cast(GatewayMsg::AttemptEnded { target: target.id, outcome: AttemptOutcome::Abandoned });
                        return;
                    }
                    _ = &mut hedge, if !hedged => {
                        hedged = true;
                        if !job.is_done() {
                            let _ = gateway.cast(GatewayMsg::Hedge(job.clone()));
                        }
                    }
                }
            }
        }
    };
    let in_flight = job.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
    let outcome = match &result {
        Ok(_) => AttemptOutcome::Succeeded(started.elapsed()),
        Err(InferError::QueueFull { .. }) => AttemptOutcome::Overloaded,
        Err(InferError::AttemptTimedOut) => AttemptOutcome::TimedOut,
        Err(InferError::DeadlineExceeded | InferError::ShuttingDown) => AttemptOutcome::Abandoned,
        Err(InferError::Unavailable | InferError::Model(_)) => AttemptOutcome::Failed,
    };
    let _ = gateway.cast(GatewayMsg::AttemptEnded { target: target.id.clone(), outcome });
    match result {
        Ok(scores) => {
            let attempts = job.tried.lock().expect("job lock poisoned. This is a bug.").len() as u32;
            job.answer(Ok(Classified { scores, served_by: target.id.to_string(), attempts }));
        }
        Err(err) => {
            if job.is_done() {
                return;
            }
            let retryable = err.is_retryable() && now() < job.deadline;
            tracing::warn!(target = %target.id, error = %err, in_flight, retryable, "attempt failed");
            *job.last_error.lock().expect("job lock poisoned. This is a bug.") = Some(err);
            if in_flight > 0 {
                return; // a hedge still runs; it answers or retries
            }
            if !retryable {
                job.fail_with_last_error();
                return;
            }
            if let Err(ractor::MessagingErr::SendErr(GatewayMsg::Retry(job))) = gateway.cast(GatewayMsg::Retry(job)) {
                job.answer(Err(InferError::ShuttingDown));
            }
        }
    }
}
