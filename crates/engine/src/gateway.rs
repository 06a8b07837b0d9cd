//! The gateway actor: places each request on the least-loaded inference actor and fails over.
//!
//! It never awaits an inference itself. `handle` makes a placement decision (microseconds) and
//! spawns an attempt task; the task waits for the actor's answer, the deadline, or the client
//! leaving. An attempt that fails in a way another actor could fix (actor gone, model error,
//! queue full) comes back as [`GatewayMsg::Retry`] and is placed again with the failed actor
//! excluded, while the deadline allows. Never the same actor twice for one request.

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use senti_model::Scores;
use tokio::sync::oneshot;

use crate::inference::{InferResult, InferenceMsg};
use crate::load::LoadGauge;
use crate::placement::{least_loaded, Candidate};
use crate::InferError;

/// A classified request.
#[derive(Debug, Clone)]
pub struct Classified {
    /// One per text, in request order.
    pub scores: Vec<Scores>,
    /// The inference actor that answered.
    pub served_by: String,
    /// Attempts made (1 when the first succeeded).
    pub attempts: u32,
}

/// One request on its way through the gateway.
pub struct Job {
    texts: Arc<[String]>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Classified, InferError>>,
    tried: Vec<usize>,
    last_error_opt: Option<InferError>,
}

impl Job {
    /// A new request; the answer arrives on `reply`. Dropping the receiver cancels it.
    pub fn new(texts: Vec<String>, deadline: Instant, reply: oneshot::Sender<Result<Classified, InferError>>) -> Self {
        Self { texts: texts.into(), deadline, reply, tried: Vec::new(), last_error_opt: None }
    }
}

/// Messages of [`GatewayActor`].
pub enum GatewayMsg {
    /// A new request.
    Classify(Job),
    /// An attempt failed with a retryable error; place again excluding what was tried.
    Retry(Job),
    /// An attempt on `target` ended (any outcome).
    AttemptEnded {
        /// Index of the inference actor.
        target: usize,
    },
}

impl ractor::Message for GatewayMsg {}

/// One inference actor as the gateway sees it.
#[derive(Clone)]
pub struct Target {
    /// Its name (`a0`, ...).
    pub name: String,
    /// Where to send work.
    pub actor: ActorRef<InferenceMsg>,
    /// Its load, written by the actor.
    pub gauge: Arc<LoadGauge>,
}

/// Stateless actor; state in [`GatewayState`].
pub struct GatewayActor;

/// The gateway's view of its targets.
pub struct GatewayState {
    targets: Vec<Target>,
    /// Attempts this gateway has sent to each target that have not ended; counts work the
    /// target's own gauge may not show yet (still in its mailbox).
    outstanding: Vec<usize>,
}

impl Actor for GatewayActor {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = Vec<Target>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        targets: Vec<Target>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let outstanding = vec![0; targets.len()];
        Ok(GatewayState { targets, outstanding })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GatewayMsg::Classify(job) => state.place(job, myself),
            GatewayMsg::Retry(job) => {
                metrics::counter!("senti_retries_total").increment(1);
                state.place(job, myself)
            }
            GatewayMsg::AttemptEnded { target } => {
                if let Some(n) = state.outstanding.get_mut(target) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        Ok(())
    }
}

impl GatewayState {
    fn place(&mut self, job: Job, myself: ActorRef<GatewayMsg>) {
        if job.reply.is_closed() {
            return; // the client has gone
        }
        let candidates = self.targets.iter().enumerate().filter(|(i, _)| !job.tried.contains(i)).map(|(i, t)| {
            Candidate { index: i, load: t.gauge.snapshot().backlog_tokens() as u64 + self.outstanding[i] as u64 }
        });
        let Some(index) = least_loaded(candidates) else {
            let err = job.last_error_opt.clone().unwrap_or(InferError::Unavailable);
            let _ = job.reply.send(Err(err));
            return;
        };
        self.outstanding[index] += 1;
        let target = self.targets[index].clone();
        tokio::spawn(attempt(job, index, target, myself));
    }
}

/// One attempt on one actor; reports back to the gateway when it ends.
async fn attempt(mut job: Job, index: usize, target: Target, gateway: ActorRef<GatewayMsg>) {
    job.tried.push(index);
    let (tx, rx) = oneshot::channel::<InferResult>();
    let sent =
        target.actor.cast(InferenceMsg::Infer { texts: job.texts.to_vec(), deadline: job.deadline, reply: tx.into() });
    let outcome = if sent.is_err() {
        Err(InferError::Unavailable)
    } else {
        let deadline = tokio::time::Instant::from_std(job.deadline);
        tokio::select! {
            answer = rx => answer.unwrap_or(Err(InferError::Unavailable)),
            _ = tokio::time::sleep_until(deadline) => Err(InferError::DeadlineExceeded),
            _ = job.reply.closed() => {
                // Client gone: dropping `rx` closes the actor's reply port, so the actor drops
                // the queued texts before inference.
                let _ = gateway.cast(GatewayMsg::AttemptEnded { target: index });
                return;
            }
        }
    };
    let _ = gateway.cast(GatewayMsg::AttemptEnded { target: index });
    match outcome {
        Ok(scores) => {
            let attempts = job.tried.len() as u32;
            let _ = job.reply.send(Ok(Classified { scores, served_by: target.name, attempts }));
        }
        Err(err) if err.is_retryable() && Instant::now() < job.deadline => {
            tracing::warn!(actor = %target.name, error = %err, "attempt failed, placing again on another actor");
            job.last_error_opt = Some(err);
            if let Err(ractor::MessagingErr::SendErr(GatewayMsg::Retry(job))) = gateway.cast(GatewayMsg::Retry(job)) {
                let _ = job.reply.send(Err(InferError::ShuttingDown));
            }
        }
        Err(err) => {
            let _ = job.reply.send(Err(err));
        }
    }
}
