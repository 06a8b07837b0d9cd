//! How an [`InferenceMsg::Infer`] crosses the network to an inference actor on another node.
//!
//! ractor_cluster calls [`ractor::Message::serialize`] when the target actor is remote and
//! [`ractor::Message::deserialize`] on the receiving node. The payload is bincode 2 (standard
//! config):
//! ```text
//! request  variant "infer", args = WireRequest { texts: Vec<String>, remaining_ms: u64 }
//! reply    Result<Vec<WireScores { label: u32, probabilities: Vec<f32> }>, InferError>
//! ```
//! The deadline travels as the time that remains (`remaining_ms`), not as a wall-clock instant,
//! so the nodes' clocks need not agree; the time on the wire is counted against the receiver,
//! which only makes it drop work a little early. `BatchDone` is local to a node and never
//! serialized. On each side a small task bridges the typed reply port and the byte reply port
//! that ractor_cluster carries; it ends when either side answers, drops, or the caller's port
//! timeout passes.

use std::time::{Duration, Instant};

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::RpcReplyPort;
use senti_model::Scores;

use crate::inference::{InferResult, InferenceMsg};
use crate::InferError;

/// The variant tag of [`InferenceMsg::Infer`] on the wire.
const INFER: &str = "infer";

#[derive(bincode::Encode, bincode::Decode)]
struct WireRequest {
    texts: Vec<String>,
    remaining_ms: u64,
}

#[derive(bincode::Encode, bincode::Decode)]
struct WireScores {
    label: u32,
    probabilities: Vec<f32>,
}

fn encode<T: bincode::Encode>(value: &T) -> Result<Vec<u8>, BoxedDowncastErr> {
    bincode::encode_to_vec(value, bincode::config::standard()).map_err(|_| BoxedDowncastErr)
}

fn decode<T: bincode::Decode<()>>(bytes: &[u8]) -> Result<T, BoxedDowncastErr> {
    bincode::decode_from_slice(bytes, bincode::config::standard()).map(|(value, _)| value).map_err(|_| BoxedDowncastErr)
}

fn encode_result(result: InferResult) -> Vec<u8> {
    let wire: Result<Vec<WireScores>, InferError> = result.map(|scores| {
        scores.into_iter().map(|s| WireScores { label: s.label as u32, probabilities: s.probabilities }).collect()
    });
    encode(&wire).unwrap_or_default()
}

fn decode_result(bytes: &[u8]) -> InferResult {
    match decode::<Result<Vec<WireScores>, InferError>>(bytes) {
        Ok(wire) => wire.map(|scores| {
            scores.into_iter().map(|s| Scores { label: s.label as usize, probabilities: s.probabilities }).collect()
        }),
        Err(_) => Err(InferError::Model("undecodable reply from a remote inference actor".into())),
    }
}

impl ractor::Message for InferenceMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let InferenceMsg::Infer { texts, deadline, reply } = self else {
            return Err(BoxedDowncastErr); // BatchDone never leaves its node
        };
        let remaining_ms = deadline.saturating_duration_since(Instant::now()).as_millis() as u64;
        let args = encode(&WireRequest { texts, remaining_ms })?;
        let (tx, rx) = ractor::concurrency::oneshot::<Vec<u8>>();
        let timeout_opt = reply.get_timeout();
        ractor::concurrency::spawn(async move {
            let bytes = match timeout_opt {
                Some(timeout) => tokio::time::timeout(timeout, rx).await.ok().and_then(Result::ok),
                None => rx.await.ok(),
            };
            if let Some(bytes) = bytes {
                let _ = reply.send(decode_result(&bytes));
            }
        });
        let port = match timeout_opt {
            Some(timeout) => RpcReplyPort::from((tx, timeout)),
            None => RpcReplyPort::from(tx),
        };
        Ok(SerializedMessage::Call { variant: INFER.into(), args, reply: port, metadata: None })
    }

    fn deserialize(message: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        let SerializedMessage::Call { variant, args, reply, .. } = message else {
            return Err(BoxedDowncastErr);
        };
        if variant != INFER {
            return Err(BoxedDowncastErr);
        }
        let request: WireRequest = decode(&args)?;
        let remaining = Duration::from_millis(request.remaining_ms);
        let (tx, rx) = ractor::concurrency::oneshot::<InferResult>();
        ractor::concurrency::spawn(async move {
            // Waits no longer than the deadline (plus a margin for the answer of expired work).
            if let Ok(Ok(result)) = tokio::time::timeout(remaining + Duration::from_secs(1), rx).await {
                let _ = reply.send(encode_result(result));
            }
        });
        Ok(InferenceMsg::Infer { texts: request.texts, deadline: Instant::now() + remaining, reply: tx.into() })
    }
}

#[cfg(test)]
mod tests {
    use ractor::Message;

    use super::*;

    #[tokio::test]
    async fn a_request_and_its_reply_survive_the_round_trip() {
        let (tx, rx) = ractor::concurrency::oneshot::<InferResult>();
        let texts = vec!["好".to_string(), "差".to_string()];
        let deadline = Instant::now() + Duration::from_secs(5);
        let serialized =
            InferenceMsg::Infer { texts: texts.clone(), deadline, reply: RpcReplyPort::from(tx) }.serialize().unwrap();
        let InferenceMsg::Infer { texts: got, deadline: got_deadline, reply } =
            InferenceMsg::deserialize(serialized).unwrap()
        else {
            panic!("not an Infer");
        };
        assert_eq!(got, texts);
        assert!(
            got_deadline <= deadline + Duration::from_millis(5) && got_deadline + Duration::from_secs(1) > deadline
        );
        let scores = vec![Scores { label: 1, probabilities: vec![0.25, 0.75] }];
        reply.send(Ok(scores.clone())).unwrap();
        assert_eq!(rx.await.unwrap(), Ok(scores));
    }

    #[tokio::test]
    async fn errors_cross_the_wire_with_their_fields() {
        let (tx, rx) = ractor::concurrency::oneshot::<InferResult>();
        let message = InferenceMsg::Infer {
            texts: vec!["x".into()],
            deadline: Instant::now() + Duration::from_secs(1),
            reply: RpcReplyPort::from(tx),
        };
        let InferenceMsg::Infer { reply, .. } = InferenceMsg::deserialize(message.serialize().unwrap()).unwrap() else {
            panic!("not an Infer");
        };
        let err = InferError::QueueFull { retry_after: Duration::from_millis(1500) };
        reply.send(Err(err.clone())).unwrap();
        assert_eq!(rx.await.unwrap(), Err(err));
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        let (tx, _rx) = ractor::concurrency::oneshot::<Vec<u8>>();
        let message =
            SerializedMessage::Call { variant: INFER.into(), args: vec![0xff; 3], reply: tx.into(), metadata: None };
        assert!(InferenceMsg::deserialize(message).is_err());
        assert!(decode_result(&[0xff, 0xff]).is_err());
    }
}
