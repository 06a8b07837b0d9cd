//! One attempt of one request on one target: a short-lived task the gateway spawns per placement.
//!
//! The task hands the texts over through the target's [`Hop`](crate::Hop) and waits for the first
//! of: the answer, the attempt timeout, the request's deadline, the caller leaving, or (first
//! attempts only) the hedge delay, which asks the gateway for a backup on another node and keeps
//! waiting. When it ends it reports to the gateway ([`GatewayMsg::AttemptEnded`]); a retryable
//! failure with no other attempt running asks for a retry ([`GatewayMsg::Retry`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};
use senti_engine::{InferError, InferResult};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::gateway::{now, GatewayMsg};
use crate::job::{Classified, Job};
use crate::target::Target;

/// How an attempt ended, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttemptOutcome {
    /// Answered after this long.
    Succeeded(Duration),
    /// The actor or the hop failed (counts against the target's health).
    Failed,
    /// No answer within the attempt timeout (counts against the target's health).
    TimedOut,
    /// The actor's queue was full, or its node is draining: load, not sickness.
    Overloaded,
    /// The request's deadline passed or its caller left: says nothing about the target.
    Abandoned,
}

impl AttemptOutcome {
    fn of(result: &InferResult, took: Duration) -> Self {
        match result {
            Ok(_) => AttemptOutcome::Succeeded(took),
            Err(InferError::QueueFull { .. } | InferError::ShuttingDown) => AttemptOutcome::Overloaded,
            Err(InferError::AttemptTimedOut) => AttemptOutcome::TimedOut,
            Err(InferError::DeadlineExceeded | InferError::Invalid(_)) => AttemptOutcome::Abandoned,
            Err(InferError::Unavailable | InferError::Model(_)) => AttemptOutcome::Failed,
        }
    }
}

/// Starts one attempt of `job` on `target`.
pub(crate) fn spawn(
    job: Arc<Job>,
    target: Target,
    gateway: ActorRef<GatewayMsg>,
    attempt_timeout: Duration,
    hedge_after_opt: Option<Duration>,
) {
    let span = tracing::info_span!("request", id = %job.request);
    tokio::spawn(run(job, target, gateway, attempt_timeout, hedge_after_opt).instrument(span));
}

async fn run(
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
    tracing::debug!(target = %target.id, "attempt");
    // The target gets the attempt's deadline, not the request's: work it cannot finish before
    // this attempt is abandoned is refused at once (429, so another target can be tried), and
    // queued texts expire when the attempt does.
    let sent = target.hop.send(job.texts.clone(), attempt_deadline.into_std(), job.request.clone(), port);
    let result = match sent {
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
    let outcome = AttemptOutcome::of(&result, started.elapsed());
    let _ = gateway.cast(GatewayMsg::AttemptEnded { target: target.id.clone(), outcome });
    match result {
        Ok(scores) => {
            job.answer(Ok(Classified { scores, served_by: target.id, attempts: job.attempts() }));
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
