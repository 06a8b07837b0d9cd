//! The gateway actor: places each request on an inference actor anywhere in the cluster, fails
//! over, hedges and ejects outliers.
//!
//! It never awaits an inference. `handle` makes a decision over its snapshot of the targets
//! (microseconds: every local actor and two sampled remote ones, compared by [`estimate`], which
//! charges a remote one the hop) and
//! spawns an attempt task (`attempt.rs`); the task waits for the actor's answer, the attempt
//! timeout, the request's deadline, or the client leaving, and reports back with
//! [`GatewayMsg::AttemptEnded`]. [`Gateway`] is the handle callers hold.
//! ```text
//!  Classify ──place──> attempt task ──Hop::send──> inference actor (local or remote)
//!     ▲                  │ slower than the recent p95: Hedge ──place (other node)──> 2nd task
//!     │                  │ failed / timed out, none in flight: Retry ──place (not tried)──>
//!     └── AttemptEnded <─┘ outstanding -1, latency window, outlier detector, the actor's load
//! ```
//! Rules: never the same actor twice for one request; retries and hedges are drawn from budgets
//! (`advanced.retry_budget_ratio`, `advanced.hedge_budget_ratio`); at most one hedge per request,
//! and only to another node: the actors of one node share its cores, so a hedge to a sibling
//! computes the same text twice on the same cores and can only slow the node down (measured:
//! docs/routing.md); a retry may go anywhere not tried;
//! the first answer wins and the caller dropping its future cancels every attempt. Local targets
//! come from the engine; remote ones are replaced wholesale by the cluster layer
//! ([`GatewayMsg::SetRemoteTargets`]), keeping the counters of targets that stay.
//!
//! Idle notices (notices.rs): when a local actor runs out of work, the gateway tells
//! [`IDLE_NOTICE_FANOUT`] gateways of other nodes, drawn at random ([`GatewayMsg::LocalIdle`]);
//! a first placement whose chosen target has more than [`NOTICE_AFTER_ATTEMPTS`] attempts' worth of
//! work ahead goes to the actor of the newest fresh notice instead ([`GatewayMsg::IdleNotice`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::rngs::SmallRng;
use rand::seq::index;
use rand::SeedableRng;
use senti_engine::{ActorLoad, EncodedTexts, InferError, LoadGauge, RequestId};
use tokio::sync::{oneshot, watch};
use tracing::Instrument;

use crate::attempt::{self, AttemptOutcome};
use crate::budget::RetryBudget;
use crate::choose::{local_plus_sampled_remote, Candidate, RemoteSampling};
use crate::estimate::{estimate, mean_backlog, mean_rate, work_ahead, LoadView};
use crate::hedge::{attempt_timeout, has_room, LatencyWindow};
use crate::job::{Classified, Job};
use crate::models::{compare_versions, ServedModels, OLDER_MODEL_PENALTY_TOKENS};
use crate::notices::{use_notice, IdleNotices, IDLE_NOTICE_FANOUT, NOTICE_AFTER_ATTEMPTS};
use crate::outlier::{may_eject, TargetHealth};
use crate::params::RoutingParams;
use crate::target::{millis, LoadSource, RoutingSnapshot, Target, TargetId, TargetReport};

/// The clock of routing decisions: tokio's, so a paused test clock drives it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
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
        /// The request's size: with the latency, the speed that sizes later attempts' timeouts.
        tokens: usize,
        /// The actor's load as its answer left it (a remote target's freshest report).
        load_opt: Option<ActorLoad>,
    },
    /// The cluster's current remote targets (replaces the previous set).
    SetRemoteTargets(Vec<Target>),
    /// The gateways of other nodes that this node's idle notices go to (replaces the previous set).
    SetNoticeRecipients(Vec<ActorRef<GatewayMsg>>),
    /// A local actor ran out of work: tell other nodes' gateways.
    LocalIdle(TargetId),
    /// Another node's actor ran out of work: an idle notice, the one message that crosses
    /// between gateways (wire.rs).
    IdleNotice(TargetId),
    /// A report of every target's routing state (for `/v1/cluster`).
    Snapshot(RpcReplyPort<RoutingSnapshot>),
    /// A receiver of the models the targets serve, updated as they change.
    Models(RpcReplyPort<watch::Receiver<ServedModels>>),
}

// `ractor::Message` is implemented in `wire.rs`: `IdleNotice` can cross the network.

/// Everything the gateway starts with.
pub struct GatewayArgs {
    /// This node's targets.
    pub local: Vec<Target>,
    /// Placement, retry, hedging and ejection settings.
    pub params: RoutingParams,
    /// Seed of the placement's random choices (fixed in simulations).
    pub seed: u64,
}

/// Stateless actor; state in [`GatewayState`].
pub struct GatewayActor;

struct TargetState {
    target: Target,
    /// Attempts sent and not ended: counts work the target's own load may not show yet.
    outstanding: u32,
    /// Tokens of those attempts: what they add to the target's queue (its timeout allows for it).
    outstanding_tokens: usize,
    /// Attempts sent since it became a target, and those that failed or timed out.
    traffic: Traffic,
    health: TargetHealth,
}

/// Attempts this gateway sent to one target, for `/v1/cluster` (traffic between nodes).
#[derive(Clone, Copy, Default)]
struct Traffic {
    attempts: u64,
    failures: u64,
}

/// The gateway's view of its targets and its budgets. Only its own handler touches it.
pub struct GatewayState {
    targets: Vec<TargetState>,
    params: RoutingParams,
    retry_budget: RetryBudget,
    hedge_budget: RetryBudget,
    latencies: LatencyWindow,
    /// Time per 1,000 tokens of recent successful attempts of some size (attempt.rs).
    speeds: LatencyWindow,
    rng: SmallRng,
    /// How many remote targets to compare, from where this gateway's first placements went.
    sampling: RemoteSampling,
    retries: u64,
    hedges: u64,
    ejections: u64,
    /// The models among the targets, kept current for the HTTP layer.
    models: watch::Sender<ServedModels>,
    /// Other nodes' actors that said they ran out of work, unused yet.
    notices: IdleNotices<TargetId>,
    /// Other nodes' gateways, where this node's notices go.
    recipients: Vec<ActorRef<GatewayMsg>>,
    /// While there are recipients, one task per local actor that turns its gauge's idle signal
    /// into [`GatewayMsg::LocalIdle`] (a lone node wakes nobody when an actor runs out of work).
    idle_watchers: Vec<tokio::task::JoinHandle<()>>,
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
        // Counters that move only on an event exist from the start: rates and alerts that read
        // them see 0, not no series.
        for counter in [
            "senti_ejections_total",
            "senti_retries_total",
            "senti_retries_refused_total",
            "senti_hedges_total",
            "senti_hedges_declined_total",
        ] {
            metrics::counter!(counter).increment(0);
        }
        for hop in ["local", "remote"] {
            metrics::counter!("senti_attempts_total", "hop" => hop).increment(0);
        }
        for event in ["sent", "received", "used"] {
            metrics::counter!("senti_idle_notices_total", "event" => event).increment(0);
        }
        let sampling = RemoteSampling::default();
        metrics::gauge!("senti_remote_samples").set(sampling.samples() as f64);
        let p = args.params;
        let now = now();
        let models = watch::Sender::new(ServedModels::of(args.local.iter().map(|t| &t.model)));
        Ok(GatewayState {
            models,
            targets: args
                .local
                .into_iter()
                .map(|target| TargetState {
                    target,
                    outstanding: 0,
                    outstanding_tokens: 0,
                    traffic: Traffic::default(),
                    health: TargetHealth::new(now),
                })
                .collect(),
            retry_budget: RetryBudget::new(
                p.retry_budget_ratio,
                p.retry_min_reserve,
                100.0_f64.max(p.retry_min_reserve),
            ),
            hedge_budget: RetryBudget::new(p.hedge_budget_ratio, 1.0, p.hedge_budget_cap),
            latencies: LatencyWindow::default(),
            speeds: LatencyWindow::default(),
            rng: SmallRng::seed_from_u64(args.seed),
            sampling,
            retries: 0,
            hedges: 0,
            ejections: 0,
            params: p,
            notices: IdleNotices::default(),
            recipients: Vec::new(),
            idle_watchers: Vec::new(),
        })
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        state.idle_watchers.iter().for_each(tokio::task::JoinHandle::abort);
        Ok(())
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
                    || !state.hedge_budget.can_withdraw()
                {
                    return Ok(());
                }
                state.place(job, Placement::Hedge, myself); // withdraws once a target has room
            }
            GatewayMsg::AttemptEnded { target, outcome, tokens, load_opt } => {
                state.attempt_ended(&target, outcome, tokens, load_opt);
            }
            GatewayMsg::SetRemoteTargets(remote) => state.set_remote(remote),
            GatewayMsg::SetNoticeRecipients(recipients) => state.set_recipients(recipients, &myself),
            GatewayMsg::LocalIdle(id) => state.send_notices(&id),
            GatewayMsg::IdleNotice(id) => state.receive_notice(id),
            GatewayMsg::Snapshot(reply) => {
                let _ = reply.send(state.snapshot());
            }
            GatewayMsg::Models(reply) => {
                let _ = reply.send(state.models.subscribe());
            }
        }
        Ok(())
    }
}

/// Whether `t` may answer `job`: any target, unless the request named a model version.
fn serves(t: &TargetState, job: &Job) -> bool {
    job.model_opt.as_deref().is_none_or(|model| *t.target.model == *model)
}

/// What the gateway knows of a typical target: what an old report decays toward, and the speed
/// each target's is compared with.
#[derive(Debug, Clone, Copy)]
struct Priors {
    /// The mean backlog over every target ([`mean_backlog`]).
    backlog: f64,
    /// The mean measured throughput over every target that has one ([`mean_rate`]).
    rate_opt: Option<f64>,
}

impl GatewayState {
    fn view(&self, t: &TargetState, priors: Priors, now: Instant) -> LoadView {
        let failures = t.health.recent_failures(now, &self.params.outlier);
        LoadView::new(t.target.load.reported(now), priors.backlog, t.outstanding, failures)
            .at_rate(t.target.load.tokens_per_sec(), priors.rate_opt)
    }

    /// How long a new attempt is expected to wait behind the work ahead of it on target `index`:
    /// the reported backlog ([`work_ahead`]) and the tokens of this gateway's attempts in flight
    /// to it (counted exactly: a burst is placed before the actor has read its mailbox; for a
    /// local actor the larger of the two, as its gauge soon holds them), at the target's measured
    /// rate (local, or as gossiped), else at the mean rate of the targets, else at senti-engine's
    /// initial assumption.
    fn queue_wait(&self, index: usize, priors: Priors, now: Instant) -> Duration {
        let t = &self.targets[index];
        let view = LoadView { outstanding: 0, ..self.view(t, priors, now) };
        let reported = work_ahead(&view, &self.params.estimate);
        let own = t.outstanding_tokens as f64;
        let ahead = if view.is_local { reported.max(own) } else { reported + own };
        let rate = t.target.load.tokens_per_sec().or(priors.rate_opt).unwrap_or(attempt::INITIAL_TOKENS_PER_SEC);
        attempt::queue_wait(ahead, rate)
    }

    /// What the gateway knows of a typical target now.
    fn priors(&self, now: Instant) -> Priors {
        Priors {
            backlog: mean_backlog(self.targets.iter().map(|t| t.target.load.reported(now))),
            rate_opt: mean_rate(self.targets.iter().map(|t| t.target.load.tokens_per_sec())),
        }
    }

    /// Whether any target that may answer `job` has not been tried for it yet.
    fn has_untried(&self, job: &Job) -> bool {
        let tried = job.tried.lock().expect("job lock poisoned. This is a bug.");
        self.targets.iter().any(|t| serves(t, job) && !tried.contains(&t.target.id))
    }

    /// Whether any target that may answer `job` is on a node that no attempt of it has been on
    /// (where a hedge may go).
    fn has_untried_node(&self, job: &Job) -> bool {
        let tried = job.tried.lock().expect("job lock poisoned. This is a bug.");
        self.targets.iter().any(|t| serves(t, job) && !tried.iter().any(|id| id.node == t.target.id.node))
    }

    /// The newest model version among the targets: the one requests prefer.
    fn newest_model(&self) -> Option<Arc<str>> {
        self.models.borrow().newest.clone()
    }

    fn place(&mut self, job: Arc<Job>, placement: Placement, myself: ActorRef<GatewayMsg>) {
        if job.is_done() {
            return;
        }
        let now = now();
        let tried = job.tried();
        let priors = self.priors(now);
        let untried = |t: &&TargetState| {
            serves(t, &job)
                && match placement {
                    Placement::Hedge => !tried.iter().any(|id| id.node == t.target.id.node),
                    Placement::First | Placement::Retry => !tried.contains(&t.target.id),
                }
        };
        let newest = self.newest_model();
        let healthy: Vec<Candidate> = self
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| untried(t) && !t.health.is_ejected(now))
            .map(|(index, t)| self.candidate(index, t, priors, newest.as_deref(), now))
            .collect();
        // Every untried target ejected: route to them anyway rather than fail (Envoy's panic mode).
        let candidates = if healthy.is_empty() {
            self.targets
                .iter()
                .enumerate()
                .filter(|(_, t)| untried(t))
                .map(|(index, t)| self.candidate(index, t, priors, newest.as_deref(), now))
                .collect()
        } else {
            healthy
        };
        let Some(mut index) = local_plus_sampled_remote(&candidates, self.sampling.samples(), &mut self.rng) else {
            if placement != Placement::Hedge && job.in_flight.load(Ordering::Acquire) == 0 {
                job.fail_with_last_error();
            }
            return;
        };
        if placement == Placement::First {
            // The share counts where the estimates sent the work, before any idle notice: that
            // is what comparing more remote actors would change.
            let before = self.sampling.samples();
            self.sampling.record(!self.targets[index].target.load.is_local());
            if self.sampling.samples() != before {
                metrics::gauge!("senti_remote_samples").set(self.sampling.samples() as f64);
                tracing::info!(
                    remote_samples = self.sampling.samples(),
                    remote_share = self.sampling.remote_share(),
                    "remote actors compared per placement changed"
                );
            }
            index = self.idle_instead(index, &candidates, now).unwrap_or(index);
        }
        let wait = self.queue_wait(index, priors, now);
        let expected = attempt::expected_time(&self.speeds, job.texts.total_tokens());
        if placement == Placement::Hedge {
            if !has_room(wait, expected) {
                metrics::counter!("senti_hedges_declined_total").increment(1);
                return;
            }
            if !self.hedge_budget.try_withdraw() {
                return;
            }
        }
        let state = &mut self.targets[index];
        state.outstanding += 1;
        state.outstanding_tokens += job.texts.total_tokens();
        state.traffic.attempts += 1;
        let target = state.target.clone();
        let local = target.load.is_local();
        metrics::counter!("senti_attempts_total", "hop" => if local { "local" } else { "remote" }).increment(1);
        if placement == Placement::Hedge {
            self.hedges += 1;
            metrics::counter!("senti_hedges_total").increment(1);
        }
        job.tried.lock().expect("job lock poisoned. This is a bug.").push(target.id.clone());
        job.in_flight.fetch_add(1, Ordering::AcqRel);
        let p = &self.params;
        let size_free =
            attempt_timeout(&self.latencies, p.attempt_timeout, p.attempt_timeout_factor, p.attempt_timeout_floor);
        let timeout = attempt::sized_timeout(size_free, expected, wait);
        let hedge_after_opt = match placement {
            Placement::First => p.hedge.hedge_delay(&self.latencies, expected.saturating_add(wait)),
            Placement::Retry | Placement::Hedge => None,
        };
        attempt::spawn(job, target, myself, timeout, expected, hedge_after_opt);
    }

    /// A remote candidate that said it ran out of work, instead of `chosen` when more than
    /// [`NOTICE_AFTER_ATTEMPTS`] attempts' worth of work is ahead of that ([`use_notice`]); only
    /// one without an attempt of this gateway in flight.
    fn idle_instead(&mut self, chosen: usize, candidates: &[Candidate], now: Instant) -> Option<usize> {
        if self.notices.is_empty() {
            return None;
        }
        let estimate = candidates.iter().find(|c| c.index == chosen)?.estimate;
        if !use_notice(estimate, self.params.estimate.tokens_per_attempt, NOTICE_AFTER_ATTEMPTS) {
            return None;
        }
        let targets = &self.targets;
        let index = self.notices.take(now, |id| {
            candidates.iter().map(|c| c.index).find(|&i| targets[i].target.id == *id && targets[i].outstanding == 0)
        })?;
        metrics::counter!("senti_idle_notices_total", "event" => "used").increment(1);
        Some(index)
    }

    /// Tells [`IDLE_NOTICE_FANOUT`] other nodes' gateways, drawn at random, that local actor `id`
    /// ran out of work, unless it has work again.
    fn send_notices(&mut self, id: &TargetId) {
        let still_idle = self.targets.iter().any(|t| {
            &t.target.id == id
                && matches!(&t.target.load, LoadSource::Local(gauge) if gauge.snapshot().backlog_tokens() == 0)
        });
        if self.recipients.is_empty() || !still_idle {
            return;
        }
        let count = IDLE_NOTICE_FANOUT.min(self.recipients.len());
        for i in index::sample(&mut self.rng, self.recipients.len(), count) {
            if self.recipients[i].cast(GatewayMsg::IdleNotice(id.clone())).is_ok() {
                metrics::counter!("senti_idle_notices_total", "event" => "sent").increment(1);
            }
        }
    }

    /// Replaces the gateways notices go to; watches the local actors' idle signals while there
    /// are any.
    fn set_recipients(&mut self, recipients: Vec<ActorRef<GatewayMsg>>, myself: &ActorRef<GatewayMsg>) {
        self.recipients = recipients;
        if self.recipients.is_empty() {
            self.idle_watchers.drain(..).for_each(|watcher| watcher.abort());
        } else if self.idle_watchers.is_empty() {
            self.idle_watchers = self
                .targets
                .iter()
                .filter_map(|t| match &t.target.load {
                    LoadSource::Local(gauge) => Some(watch_idle(t.target.id.clone(), gauge.clone(), myself.clone())),
                    LoadSource::Gossiped { .. } | LoadSource::NeverPublished => None,
                })
                .collect();
        }
    }

    /// Keeps a notice of a remote target this gateway has; any other is dropped.
    fn receive_notice(&mut self, id: TargetId) {
        if self.targets.iter().any(|t| t.target.id == id && !t.target.load.is_local()) {
            metrics::counter!("senti_idle_notices_total", "event" => "received").increment(1);
            self.notices.push(id, now());
        }
    }

    /// `t` as a candidate: its estimate, plus [`OLDER_MODEL_PENALTY_TOKENS`] if it serves an older
    /// version than `newest_opt` (only requests that name no version reach such a target).
    fn candidate(
        &self,
        index: usize,
        t: &TargetState,
        priors: Priors,
        newest_opt: Option<&str>,
        now: Instant,
    ) -> Candidate {
        let view = self.view(t, priors, now);
        let older =
            newest_opt.is_some_and(|newest| compare_versions(&t.target.model, newest) == std::cmp::Ordering::Less);
        let penalty = if older { OLDER_MODEL_PENALTY_TOKENS } else { 0.0 };
        Candidate { index, estimate: estimate(&view, &self.params.estimate) + penalty, is_local: view.is_local }
    }

    fn attempt_ended(&mut self, id: &TargetId, outcome: AttemptOutcome, tokens: usize, load_opt: Option<ActorLoad>) {
        let now = now();
        let ejected_now = self.targets.iter().filter(|t| t.health.is_ejected(now)).count();
        let allow_eject = may_eject(ejected_now, self.targets.len(), &self.params.outlier);
        let Some(state) = self.targets.iter_mut().find(|t| &t.target.id == id) else {
            return; // the target left the cluster meanwhile
        };
        if let Some(load) = load_opt.filter(|_| !state.target.load.is_local()) {
            state.target.load = LoadSource::Gossiped {
                backlog_tokens: load.backlog_tokens as f64,
                tokens_per_sec: load.tokens_per_sec,
                as_of: now,
            };
        }
        state.outstanding = state.outstanding.saturating_sub(1);
        state.outstanding_tokens = state.outstanding_tokens.saturating_sub(tokens);
        match outcome {
            AttemptOutcome::Succeeded(latency) => {
                self.latencies.record(latency);
                if let Some(speed) = attempt::per_kilotoken(latency, tokens) {
                    self.speeds.record(speed);
                }
                state.health.record_success(now);
            }
            AttemptOutcome::Failed | AttemptOutcome::TimedOut => {
                state.traffic.failures += 1;
                if state.health.record_failure(now, &self.params.outlier, allow_eject) {
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
            std::mem::take(&mut self.targets).into_iter().partition(|t| t.target.load.is_local());
        self.targets = local;
        for mut target in remote {
            if let crate::estimate::Reported::Gossiped { age, .. } = target.load.reported(now) {
                metrics::histogram!("senti_gossip_load_age_seconds").record(age.as_secs_f64());
            }
            let (outstanding, outstanding_tokens, traffic, health) =
                match previous.iter().position(|p| p.target.id == target.id) {
                    Some(i) => {
                        let p = previous.swap_remove(i);
                        // A load an answer carried may be newer than the gossiped one.
                        if p.target.load.as_of_opt() > target.load.as_of_opt() {
                            target.load = p.target.load;
                        }
                        (p.outstanding, p.outstanding_tokens, p.traffic, p.health)
                    }
                    None => (0, 0, Traffic::default(), TargetHealth::new(now)),
                };
            self.targets.push(TargetState { target, outstanding, outstanding_tokens, traffic, health });
        }
        let models = ServedModels::of(self.targets.iter().map(|t| &t.target.model));
        self.models.send_if_modified(|current| {
            let changed = *current != models;
            *current = models;
            changed
        });
    }

    fn snapshot(&self) -> RoutingSnapshot {
        let now = now();
        let priors = self.priors(now);
        let targets = self
            .targets
            .iter()
            .map(|t| {
                let view = self.view(t, priors, now);
                let never = matches!(t.target.load, LoadSource::NeverPublished);
                TargetReport {
                    target: t.target.id.to_string(),
                    local: view.is_local,
                    backlog_tokens: (!never).then_some(view.reported_backlog),
                    age_ms: if never { 0 } else { millis(view.reported_age) },
                    outstanding: t.outstanding,
                    estimate: estimate(&view, &self.params.estimate),
                    ejected_for_ms: t.health.ejected_until(now).map(|until| millis(until - now)),
                    consecutive_failures: t.health.consecutive_failures(),
                    attempts: t.traffic.attempts,
                    failures: t.traffic.failures,
                }
            })
            .collect();
        RoutingSnapshot { targets, retries: self.retries, hedges: self.hedges, ejections: self.ejections }
    }
}

/// Sends `gateway` a [`GatewayMsg::LocalIdle`] each time local actor `id` runs out of work, until
/// the gateway stops or the task is aborted.
fn watch_idle(id: TargetId, gauge: Arc<LoadGauge>, gateway: ActorRef<GatewayMsg>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            gauge.went_idle().await;
            if gateway.cast(GatewayMsg::LocalIdle(id.clone())).is_err() {
                return;
            }
        }
    })
}

/// The handle of a node's gateway actor: what the HTTP layer, the command line and the cluster
/// layer call.
pub struct Gateway {
    actor: ActorRef<GatewayMsg>,
    handle: tokio::task::JoinHandle<()>,
    models: watch::Receiver<ServedModels>,
}

impl Gateway {
    /// Starts the gateway actor with this node's targets. It takes every request it is given:
    /// refusing new work while the node drains is the HTTP layer's job (it knows which requests
    /// were admitted before).
    pub async fn start(args: GatewayArgs) -> Result<Self, ractor::SpawnErr> {
        let (actor, handle) = Actor::spawn(None, GatewayActor, args).await?;
        let models = ractor::call!(actor, GatewayMsg::Models)
            .map_err(|err| ractor::SpawnErr::StartupFailed(format!("the gateway did not answer: {err}").into()))?;
        let handle = tokio::spawn(async move {
            let _ = handle.await;
        });
        Ok(Self { actor, handle, models })
    }

    /// Classifies `texts` before `deadline`, wherever in the cluster that is quickest: on actors
    /// of `model_opt` (`name@version`) only if given, else on any target, the newest model
    /// version preferred ([`crate::models`]). Dropping the future cancels the request: every
    /// attempt stops and its texts leave their queue.
    pub async fn classify(
        &self,
        texts: Arc<EncodedTexts>,
        deadline: Instant,
        model_opt: Option<Arc<str>>,
        request: RequestId,
    ) -> Result<Classified, InferError> {
        let (tx, rx) = oneshot::channel();
        // Held until this future ends: dropping it (answer or cancellation) stops every attempt.
        let (_cancel, cancelled) = watch::channel(());
        let span = tracing::debug_span!("request", id = %request);
        self.actor
            .cast(GatewayMsg::Classify(Job::new(texts, deadline, model_opt, request, tx, cancelled)))
            .map_err(|_| InferError::ShuttingDown)?;
        async { rx.await.unwrap_or(Err(InferError::ShuttingDown)) }.instrument(span).await
    }

    /// The models the targets serve now (a shared value the actor keeps current).
    pub fn models(&self) -> ServedModels {
        self.models.borrow().clone()
    }

    /// Whether `model` is the newest version among the targets (or there is none): what every
    /// request asks before it is placed, so it reads the shared value without copying it.
    pub fn is_newest(&self, model: &str) -> bool {
        self.models.borrow().newest.as_deref().is_none_or(|newest| newest == model)
    }

    /// Every target's routing state, retries, hedges and ejections.
    pub async fn snapshot(&self) -> RoutingSnapshot {
        ractor::call!(self.actor, GatewayMsg::Snapshot).unwrap_or_default()
    }

    /// The actor (the cluster layer sends it [`GatewayMsg::SetRemoteTargets`]).
    pub fn actor(&self) -> &ActorRef<GatewayMsg> {
        &self.actor
    }

    /// Stops the actor; attempts still running end with their tasks.
    pub async fn stop(self) {
        self.actor.stop(None);
        let _ = self.handle.await;
    }
}
