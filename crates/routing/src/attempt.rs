//! One attempt of one request on one target: a short-lived task the gateway spawns per placement.
//!
//! The task hands the texts over through the target's [`Hop`](crate::Hop) and waits for the first
//! of: the answer, the attempt timeout, the request's deadline, the caller leaving, or (first
//! attempts only) the hedge delay, which asks the gateway for a backup on another node and keeps
//! waiting. When it ends it reports to the gateway ([`GatewayMsg::AttemptEnded`]); a retryable
//! failure with no other attempt running asks for a retry ([`GatewayMsg::Retry`]).
//!
//! Big requests and busy targets get time in proportion: the gateway gives an attempt at least
//! twice what the work ahead of it on its target and its own tokens are expected to take
//! ([`queue_wait`], [`expected_time`], [`sized_timeout`]), within the request's deadline. The
//! target admits what it can finish before the attempt's deadline (senti-engine), so a request
//! that the request's deadline leaves room for is queued, not refused because the size-free
//! timeout (a few hundred milliseconds to 3 s) is shorter than the queue; and work once queued is
//! not cut off by the timeout while it waits its turn. Only when even the request's deadline is
//! too short for the queue does the target answer a fast 429. An attempt that timed out is
//! retried only if the request's deadline leaves room for its expected time ([`retry_fits`]);
//! otherwise redoing the whole work elsewhere could only end in a 504 later, after costing a
//! second node the same work.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};
use senti_engine::{InferError, InferResult};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::gateway::{now, GatewayMsg};
use crate::hedge::LatencyWindow;
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

/// Speed assumed before anything was measured: senti-engine's own assumption before its first
/// batch (load.rs).
pub(crate) const INITIAL_TOKENS_PER_SEC: f64 = 2_000.0;
/// The same, as the gateway's attempt speeds are kept (before it has timed any attempt of
/// [`SIZED_MIN_TOKENS`] or more).
const INITIAL_SECONDS_PER_KILOTOKEN: f64 = 1_000.0 / INITIAL_TOKENS_PER_SEC;
/// Attempts smaller than this say more about fixed costs (queue wait, a hop) than about speed:
/// they are not recorded in the speed window.
pub(crate) const SIZED_MIN_TOKENS: usize = 512;
/// Which quantile of recent speeds an attempt is expected to go at: a slow but normal one.
const SPEED_QUANTILE: f64 = 0.9;

/// The time per 1,000 tokens of one successful attempt, for the gateway's speed window; `None`
/// for attempts too small to say ([`SIZED_MIN_TOKENS`]).
pub(crate) fn per_kilotoken(latency: Duration, tokens: usize) -> Option<Duration> {
    (tokens >= SIZED_MIN_TOKENS).then(|| latency.mul_f64(1_000.0 / tokens as f64))
}

/// How long an attempt of `tokens` tokens is expected to take: at the recent p90 speed of this
/// gateway's attempts (`speeds`: time per 1,000 tokens), or at 2,000 tokens/s before any.
pub(crate) fn expected_time(speeds: &LatencyWindow, tokens: usize) -> Duration {
    let per_kilotoken =
        speeds.quantile(SPEED_QUANTILE).unwrap_or_else(|| Duration::from_secs_f64(INITIAL_SECONDS_PER_KILOTOKEN));
    per_kilotoken.mul_f64(tokens as f64 / 1_000.0)
}

/// How long the work ahead of an attempt (`tokens_ahead`, [`work_ahead`](crate::work_ahead)) is
/// expected to take on a target that does `tokens_per_sec` (a local actor's measured rate; for a
/// remote one, this node's actors' rate: the same model on like hardware).
pub(crate) fn queue_wait(tokens_ahead: f64, tokens_per_sec: f64) -> Duration {
    if tokens_ahead <= 0.0 || tokens_per_sec <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(tokens_ahead / tokens_per_sec).unwrap_or(Duration::MAX)
}

/// An attempt's timeout: the size-free one ([`attempt_timeout`](crate::attempt_timeout): p99-based,
/// at most `routing.attempt_timeout_ms`), or twice the expected wait in the target's queue plus
/// the attempt's own expected time, when that is longer. The request's deadline still bounds it.
pub(crate) fn sized_timeout(size_free: Duration, expected: Duration, wait: Duration) -> Duration {
    size_free.max(expected.saturating_add(wait).saturating_mul(2))
}

/// Whether another attempt, expected to take `expected`, fits in the `remaining` time.
pub(crate) fn retry_fits(remaining: Duration, expected: Duration) -> bool {
    remaining >= expected
}

/// Starts one attempt of `job` on `target`. `expected` is how long the gateway expects it to
/// take; a timed-out attempt is retried only if the deadline leaves that much.
pub(crate) fn spawn(
    job: Arc<Job>,
    target: Target,
    gateway: ActorRef<GatewayMsg>,
    attempt_timeout: Duration,
    expected: Duration,
    hedge_after_opt: Option<Duration>,
) {
    let span = tracing::info_span!("request", id = %job.request);
    tokio::spawn(run(job, target, gateway, attempt_timeout, expected, hedge_after_opt).instrument(span));
}

async fn run(
    job: Arc<Job>,
    target: Target,
    gateway: ActorRef<GatewayMsg>,
    attempt_timeout: Duration,
    expected: Duration,
    hedge_after_opt: Option<Duration>,
) {
    let started = tokio::time::Instant::now();
    let tokens = job.texts.total_tokens();
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
                        let outcome = AttemptOutcome::Abandoned;
                        let ended = GatewayMsg::AttemptEnded { target: target.id, outcome, tokens, load_opt: None };
                        let _ = gateway.cast(ended);
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
    // The target expires queued work at the attempt's deadline, and its answer can beat this
    // task's own timer (a remote clock ends it up to a millisecond early): while the request has
    // time left, that is this attempt timing out, to fail over, not the request's deadline (a 504).
    let result = match result {
        Err(InferError::DeadlineExceeded) if attempt_deadline < request_deadline => Err(InferError::AttemptTimedOut),
        other => other,
    };
    let in_flight = job.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
    let outcome = AttemptOutcome::of(&result, started.elapsed());
    let load_opt = result.as_ref().ok().and_then(|answer| answer.load_opt);
    let _ = gateway.cast(GatewayMsg::AttemptEnded { target: target.id.clone(), outcome, tokens, load_opt });
    match result {
        Ok(answer) => {
            let scores = answer.scores;
            let (served_by, model, variant, attempts) = (target.id, target.model, target.variant, job.attempts());
            job.answer(Ok(Classified { scores, served_by, model, variant, attempts }));
        }
        Err(err) => {
            if job.is_done() {
                return;
            }
            let remaining = job.deadline.saturating_duration_since(now());
            let time_for_another = match err {
                InferError::AttemptTimedOut => retry_fits(remaining, expected),
                _ => !remaining.is_zero(),
            };
            let retryable = err.is_retryable() && time_for_another;
            tracing::warn!(target = %target.id, error = %err, in_flight, retryable, ?remaining, ?expected, "attempt failed");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn small_requests_keep_the_size_free_timeout() {
        let cold = LatencyWindow::default();
        // 30 tokens at the assumed 2,000 tokens/s: 15 ms, far below a 3 s timeout.
        assert_eq!(expected_time(&cold, 30), ms(15));
        assert_eq!(sized_timeout(ms(3_000), expected_time(&cold, 30), Duration::ZERO), ms(3_000));
        assert_eq!(per_kilotoken(ms(5), 30), None, "too small to measure speed with");
    }

    #[test]
    fn big_requests_get_twice_their_expected_time() {
        // Issue 14's case: 256 long texts, about 64k tokens. Before any measurement, 2,000
        // tokens/s: 32 s expected, so the attempt gets the whole deadline instead of 3 s.
        let cold = LatencyWindow::default();
        assert_eq!(expected_time(&cold, 64_000), ms(32_000));
        assert_eq!(sized_timeout(ms(3_000), expected_time(&cold, 64_000), Duration::ZERO), ms(64_000));
        // Measured: 20 attempts of 2,048 tokens in 100 ms each = 48.8 ms per 1,000 tokens.
        let mut speeds = LatencyWindow::default();
        for _ in 0..20 {
            speeds.record(per_kilotoken(ms(100), 2_048).unwrap());
        }
        let expected = expected_time(&speeds, 64_000);
        assert!(expected > ms(3_100) && expected < ms(3_150), "{expected:?}");
        let timeout = sized_timeout(ms(3_000), expected, Duration::ZERO);
        assert_eq!(timeout, expected * 2, "6.25 s: one attempt can finish, where 3 s could not");
    }

    #[test]
    fn a_busy_target_gets_time_for_its_queue() {
        // Issue 15's case: twenty clients on a base-sized fp32 model, about 1,200 tokens/s, keep
        // some 4,400 tokens queued per actor: 3.7 s of wait, longer than the 3 s size-free timeout.
        let wait = queue_wait(4_400.0, 1_200.0);
        assert!(wait > ms(3_660) && wait < ms(3_670), "{wait:?}");
        let timeout = sized_timeout(ms(3_000), ms(50), wait);
        assert_eq!(timeout, (wait + ms(50)) * 2, "the queued work is waited for, not cut off");
        // An idle target keeps the size-free timeout: a hung node is still found as fast.
        assert_eq!(sized_timeout(ms(3_000), ms(50), queue_wait(0.0, 1_200.0)), ms(3_000));
        assert_eq!(queue_wait(1_000.0, 0.0), Duration::ZERO, "no rate known: nothing to scale by");
        assert_eq!(queue_wait(f64::MAX, 1e-300), Duration::MAX, "absurd inputs saturate, not panic");
    }

    #[test]
    fn a_retry_needs_the_expected_time_left() {
        assert!(retry_fits(ms(5_000), ms(3_200)));
        assert!(!retry_fits(ms(3_000), ms(3_200)), "it would only end in a 504, after costing another node the work");
        assert!(retry_fits(ms(1), Duration::ZERO));
    }
}
