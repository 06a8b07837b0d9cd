//! The hop from a gateway to an inference actor, local or on another node.
//!
//! In a node it is an [`ActorRef<InferenceMsg>`]: ractor delivers to a local actor directly and
//! to a remote one through ractor_cluster (serialized by `senti-engine`'s `wire.rs`). The
//! simulations replace it with an in-memory network that can drop, delay and partition, without
//! touching the gateway.

use std::sync::Arc;
use std::time::Instant;

use ractor::{ActorRef, RpcReplyPort};
use senti_engine::{EncodedTexts, InferError, InferResult, InferenceMsg, RequestId};

/// Sends one attempt's texts to one inference actor; the answer comes back on `reply`.
pub trait Hop: Send + Sync + 'static {
    /// Hands the work over; an error means it certainly did not arrive.
    fn send(
        &self,
        texts: Arc<EncodedTexts>,
        deadline: Instant,
        request: RequestId,
        reply: RpcReplyPort<InferResult>,
    ) -> Result<(), InferError>;
}

impl Hop for ActorRef<InferenceMsg> {
    fn send(
        &self,
        texts: Arc<EncodedTexts>,
        deadline: Instant,
        request: RequestId,
        reply: RpcReplyPort<InferResult>,
    ) -> Result<(), InferError> {
        self.cast(InferenceMsg::Infer { texts, deadline, request, reply }).map_err(|_| InferError::Unavailable)
    }
}
