//! One request on its way through the gateway, shared by its attempts, and its answer.

use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use senti_engine::{EncodedTexts, InferError, RequestId};
use senti_model::Scores;
use tokio::sync::{oneshot, watch};

use crate::target::TargetId;

/// A classified request.
#[derive(Debug, Clone)]
pub struct Classified {
    /// One per text, in request order.
    pub scores: Vec<Scores>,
    /// The inference actor that answered.
    pub served_by: TargetId,
    /// Its model, `name@version`.
    pub model: Arc<str>,
    /// Its model's ONNX variant.
    pub variant: Arc<str>,
    /// Attempts made (1 when the first succeeded).
    pub attempts: u32,
}

/// One request on its way through the gateway, shared by its attempts.
pub struct Job {
    /// The texts, tokenized once and shared by every attempt.
    pub(crate) texts: Arc<EncodedTexts>,
    pub(crate) deadline: Instant,
    /// The model version asked for (`name@version`): only its actors may answer. `None`: any
    /// target, the newest version preferred.
    pub(crate) model_opt: Option<Arc<str>>,
    /// For the log lines of every attempt, here and on the node that runs it.
    pub(crate) request: RequestId,
    /// Taken by the first attempt that answers; `None` afterwards.
    reply: Mutex<Option<oneshot::Sender<Result<Classified, InferError>>>>,
    /// Its sender lives in the caller; when the caller goes away every attempt is cancelled.
    pub(crate) cancelled: watch::Receiver<()>,
    /// Targets tried so far: never place twice on one.
    pub(crate) tried: Mutex<Vec<TargetId>>,
    /// Attempts running now (a hedge makes two).
    pub(crate) in_flight: AtomicU32,
    /// Why the latest attempt failed: the answer when no attempt is left.
    pub(crate) last_error: Mutex<Option<InferError>>,
}

impl Job {
    /// A new request; the answer arrives on `reply`. Dropping the sender of `cancelled` cancels
    /// it: every running attempt stops and its actor drops the queued texts. (A dropped `reply`
    /// receiver alone is only noticed at the next placement; callers drop both, as
    /// [`crate::Gateway::classify`] does.)
    pub fn new(
        texts: Arc<EncodedTexts>,
        deadline: Instant,
        model_opt: Option<Arc<str>>,
        request: RequestId,
        reply: oneshot::Sender<Result<Classified, InferError>>,
        cancelled: watch::Receiver<()>,
    ) -> Arc<Self> {
        Arc::new(Self {
            texts,
            deadline,
            model_opt,
            request,
            reply: Mutex::new(Some(reply)),
            cancelled,
            tried: Mutex::new(Vec::new()),
            in_flight: AtomicU32::new(0),
            last_error: Mutex::new(None),
        })
    }

    /// Answers the request unless it has been answered; true if this call answered it.
    pub(crate) fn answer(&self, result: Result<Classified, InferError>) -> bool {
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
    pub(crate) fn is_done(&self) -> bool {
        let reply = self.reply.lock().expect("job lock poisoned. This is a bug.");
        reply.as_ref().is_none_or(|sender| sender.is_closed())
    }

    pub(crate) fn tried(&self) -> Vec<TargetId> {
        self.tried.lock().expect("job lock poisoned. This is a bug.").clone()
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.tried.lock().expect("job lock poisoned. This is a bug.").len() as u32
    }

    pub(crate) fn fail_with_last_error(&self) {
        let err = self.last_error.lock().expect("job lock poisoned. This is a bug.").clone();
        self.answer(Err(err.unwrap_or(InferError::Unavailable)));
    }
}
