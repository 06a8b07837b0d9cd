//! How an [`InferenceMsg::Infer`] crosses the network to an inference actor on another node.
//!
//! ractor_cluster calls [`ractor::Message::serialize`] when the target actor is remote and
//! [`ractor::Message::deserialize`] on the receiving node. The payload is bincode 2 (standard
//! config, decoding limited to [`MAX_DECODE_BYTES`]):
//! ```text
//! request  variant "infer", args = WireRequest { request: String, ids: Vec<u32>, ends: Vec<u32>,
//!                                                remaining_ms: u64 }
//! reply    Result<Vec<WireScores { label: u32, probabilities: Vec<f32> }>, InferError>
//!          then, after an Ok, WireLoad { backlog_tokens: u64, tokens_per_sec: f64 }
//! ```
//! The load after an answer is the actor's, as the answer left it ([`ActorLoad`]). It trails the
//! result, so a node that does not know it reads the result and ignores the rest, and a reply
//! without it (from such a node) is an answer without a load.
//! Texts travel as token ids ([`EncodedTexts`]: every text's ids back to back, and where each
//! ends), so the receiving node does not tokenize them again; both nodes serve the same model
//! (the cluster layer only connects gateways to actors of their own model). Nothing decoded here
//! is trusted: bincode refuses any length beyond the byte limit before allocating, the two
//! vectors must describe texts, and the inference actor checks ids, lengths, count and deadline
//! against its own limits as it does for every request. The deadline travels as the time that
//! remains (`remaining_ms`), not as a wall-clock instant, so the nodes' clocks need not agree; the
//! time on the wire is counted against the receiver, which only makes it drop work a little early. `BatchDone` is local to a node and never
//! serialized. On each side a small task bridges the typed reply port and the byte reply port
//! that ractor_cluster carries; it ends when either side answers, drops, or the caller's port
//! timeout passes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::RpcReplyPort;
use senti_model::Scores;

use crate::inference::{Answer, InferResult, InferenceMsg};
use crate::load::ActorLoad;
use crate::{EncodedTexts, InferError, RequestId};

/// The variant tag of [`InferenceMsg::Infer`] on the wire.
const INFER: &str = "infer";

/// Most bytes any length field decoded here may claim, in total. The largest real request, 256
/// texts of 256 ids at up to 5 bytes each, is about 330 KB; a message that claims more is refused
/// before anything is allocated for it.
pub const MAX_DECODE_BYTES: usize = 4 << 20;

/// Longest deadline a remote request may carry before the actor cuts it to its own limit; only a
/// bound for the arithmetic here.
const MAX_REMAINING: Duration = Duration::from_secs(3_600);

#[derive(bincode::Encode, bincode::Decode)]
struct WireRequest {
    request: String,
    ids: Vec<u32>,
    ends: Vec<u32>,
    remaining_ms: u64,
}

#[derive(bincode::Encode, bincode::Decode)]
struct WireScores {
    label: u32,
    probabilities: Vec<f32>,
}

#[derive(bincode::Encode, bincode::Decode)]
struct WireLoad {
    backlog_tokens: u64,
    tokens_per_sec: f64,
}

fn encode<T: bincode::Encode>(value: &T) -> Result<Vec<u8>, BoxedDowncastErr> {
    bincode::encode_to_vec(value, bincode::config::standard()).map_err(|_| BoxedDowncastErr)
}

fn decode<T: bincode::Decode<()>>(bytes: &[u8]) -> Result<T, BoxedDowncastErr> {
    decode_prefix(bytes).map(|(value, _)| value)
}

/// Decodes a `T` at the start of `bytes`; also returns how many bytes it took.
fn decode_prefix<T: bincode::Decode<()>>(bytes: &[u8]) -> Result<(T, usize), BoxedDowncastErr> {
    let config = bincode::config::standard().with_limit::<MAX_DECODE_BYTES>();
    bincode::decode_from_slice(bytes, config).map_err(|_| BoxedDowncastErr)
}

fn encode_result(result: InferResult) -> Vec<u8> {
    match result {
        Ok(Answer { scores, load_opt }) => {
            let wire: Result<Vec<WireScores>, InferError> = Ok(scores
                .into_iter()
                .map(|s| WireScores { label: s.label as u32, probabilities: s.probabilities })
                .collect());
            let mut bytes = encode(&wire).unwrap_or_default();
            if let Some(load) = load_opt {
                let load = WireLoad { backlog_tokens: load.backlog_tokens, tokens_per_sec: load.tokens_per_sec };
                bytes.extend(encode(&load).unwrap_or_default());
            }
            bytes
        }
        Err(err) => encode(&Err::<Vec<WireScores>, InferError>(err)).unwrap_or_default(),
    }
}

fn decode_result(bytes: &[u8]) -> InferResult {
    let Ok((wire, used)) = decode_prefix::<Result<Vec<WireScores>, InferError>>(bytes) else {
        tracing::warn!(bytes = bytes.len(), "undecodable reply from a remote inference actor");
        return Err(InferError::Unavailable);
    };
    let scores: Vec<Scores> =
        wire?.into_iter().map(|s| Scores { label: s.label as usize, probabilities: s.probabilities }).collect();
    // A load that does not decode, or says nothing sane, is dropped; the answer stands.
    let load_opt = bytes
        .get(used..)
        .filter(|rest| !rest.is_empty())
        .and_then(|rest| decode::<WireLoad>(rest).ok())
        .filter(|load| load.tokens_per_sec.is_finite() && load.tokens_per_sec >= 0.0)
        .map(|load| ActorLoad { backlog_tokens: load.backlog_tokens, tokens_per_sec: load.tokens_per_sec });
    Ok(Answer { scores, load_opt })
}

impl ractor::Message for InferenceMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let InferenceMsg::Infer { texts, deadline, request, reply } = self else {
            return Err(BoxedDowncastErr); // BatchDone never leaves its node
        };
        let remaining_ms = deadline.saturating_duration_since(Instant::now()).as_millis() as u64;
        let (ids, ends) = Arc::unwrap_or_clone(texts).into_parts();
        let args = encode(&WireRequest { request: request.as_str().to_owned(), ids, ends, remaining_ms })?;
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
        let wire: WireRequest = decode(&args)?;
        let texts = EncodedTexts::from_parts(wire.ids, wire.ends).map_err(|_| BoxedDowncastErr)?;
        let request = RequestId::parse(&wire.request).unwrap_or_else(RequestId::generate);
        let remaining = Duration::from_millis(wire.remaining_ms).min(MAX_REMAINING);
        let (tx, rx) = ractor::concurrency::oneshot::<InferResult>();
        ractor::concurrency::spawn(async move {
            // Waits no longer than the deadline (plus a margin for the answer of expired work).
            if let Ok(Ok(result)) = tokio::time::timeout(remaining + Duration::from_secs(1), rx).await {
                let _ = reply.send(encode_result(result));
            }
        });
        tracing::debug!(request = %request, texts = texts.len(), "request from another node");
        Ok(InferenceMsg::Infer {
            texts: Arc::new(texts),
            deadline: Instant::now() + remaining,
            request,
            reply: tx.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use ractor::Message;

    use super::*;

    #[tokio::test]
    async fn a_request_and_its_reply_survive_the_round_trip() {
        let (tx, rx) = ractor::concurrency::oneshot::<InferResult>();
        let texts = Arc::new(EncodedTexts::from_texts([vec![101, 1962, 102], vec![101, 2345, 102]]));
        let deadline = Instant::now() + Duration::from_secs(5);
        let request = RequestId::parse("req-1").unwrap();
        let message =
            InferenceMsg::Infer { texts: texts.clone(), deadline, request: request.clone(), reply: tx.into() };
        let InferenceMsg::Infer { texts: got, deadline: got_deadline, request: got_request, reply } =
            InferenceMsg::deserialize(message.serialize().unwrap()).unwrap()
        else {
            panic!("not an Infer");
        };
        assert_eq!(got, texts);
        assert_eq!(got_request, request);
        assert!(
            got_deadline <= deadline + Duration::from_millis(5) && got_deadline + Duration::from_secs(1) > deadline
        );
        let scores = vec![Scores { label: 1, probabilities: vec![0.25, 0.75] }];
        let load_opt = Some(ActorLoad { backlog_tokens: 384, tokens_per_sec: 15_250.5 });
        reply.send(Ok(Answer { scores: scores.clone(), load_opt })).unwrap();
        assert_eq!(rx.await.unwrap(), Ok(Answer { scores, load_opt }));
    }

    #[test]
    fn a_reply_without_a_load_or_with_a_broken_one_is_still_an_answer() {
        let scores = vec![Scores { label: 0, probabilities: vec![0.9, 0.1] }];
        // From a node that sends no load.
        let bare = encode_result(Ok(Answer::scores(scores.clone())));
        assert_eq!(decode_result(&bare), Ok(Answer::scores(scores.clone())));
        // A load cut short, or a rate that is not a rate: the scores stand, the load is dropped.
        let with_load = |tokens_per_sec: f64| {
            encode_result(Ok(Answer {
                scores: scores.clone(),
                load_opt: Some(ActorLoad { backlog_tokens: 7, tokens_per_sec }),
            }))
        };
        let full = with_load(100.0);
        assert_eq!(decode_result(&full[..full.len() - 1]), Ok(Answer::scores(scores.clone())));
        assert_eq!(decode_result(&with_load(f64::NAN)), Ok(Answer::scores(scores.clone())));
        assert_eq!(decode_result(&with_load(-1.0)), Ok(Answer::scores(scores)));
    }

    #[tokio::test]
    async fn errors_cross_the_wire_with_their_fields() {
        let (tx, rx) = ractor::concurrency::oneshot::<InferResult>();
        let message = InferenceMsg::Infer {
            texts: Arc::new(EncodedTexts::from_texts([vec![101, 102]])),
            deadline: Instant::now() + Duration::from_secs(1),
            request: RequestId::generate(),
            reply: RpcReplyPort::from(tx),
        };
        let InferenceMsg::Infer { reply, .. } = InferenceMsg::deserialize(message.serialize().unwrap()).unwrap() else {
            panic!("not an Infer");
        };
        let err = InferError::QueueFull { retry_after: Duration::from_millis(1500) };
        reply.send(Err(err.clone())).unwrap();
        assert_eq!(rx.await.unwrap(), Err(err));
    }

    fn call(args: Vec<u8>) -> SerializedMessage {
        let (tx, _rx) = ractor::concurrency::oneshot::<Vec<u8>>();
        SerializedMessage::Call { variant: INFER.into(), args, reply: tx.into(), metadata: None }
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        assert!(InferenceMsg::deserialize(call(vec![0xff; 3])).is_err());
        assert!(decode_result(&[0xff, 0xff]).is_err());
    }

    /// Random and mutated request and reply bytes (20,000 of each in `make test`; `make fuzz`: a
    /// million): each is decoded or refused, never a panic, and a decoded request's texts pass
    /// the same checks as a local one's.
    #[test]
    fn random_and_mutated_bytes_are_decoded_or_refused() {
        let cases = crate::testsuite::fuzz_cases(20_000);
        let request = |ids: Vec<u32>, ends: Vec<u32>| {
            encode(&WireRequest { request: "req-1".into(), ids, ends, remaining_ms: 500 }).unwrap()
        };
        let seeds = vec![
            request(vec![101, 2769, 102], vec![3]),
            request(vec![101, 1, 102, 101, 2, 3, 102], vec![3, 7]),
            encode_result(Ok(Answer {
                scores: vec![Scores { label: 1, probabilities: vec![0.1, 0.9] }],
                load_opt: Some(ActorLoad { backlog_tokens: 96, tokens_per_sec: 14_000.0 }),
            })),
            encode_result(Err(InferError::QueueFull { retry_after: Duration::from_millis(10) })),
        ];
        let (mut decoded, mut refused) = (0_u64, 0_u64);
        for bytes in crate::testsuite::fuzz_inputs(&seeds, cases, 7, 96) {
            match decode::<WireRequest>(&bytes) {
                Ok(wire) => match EncodedTexts::from_parts(wire.ids, wire.ends) {
                    Ok(texts) => {
                        // What was accepted is consistent: the text boundaries cover the ids.
                        let count = texts.len();
                        let (ids, ends) = texts.into_parts();
                        assert_eq!(ends.len(), count);
                        assert_eq!(ends.last().map_or(0, |&end| end as usize), ids.len());
                        decoded += 1;
                    }
                    Err(_) => refused += 1,
                },
                Err(_) => refused += 1,
            }
            let _ = decode_result(&bytes);
        }
        eprintln!("wire fuzz: {cases} inputs, {decoded} requests decoded, {refused} refused");
        assert!(decoded > 0 && refused > 0, "the inputs must reach both outcomes");
    }

    #[test]
    fn a_length_beyond_the_limit_is_refused_before_allocating() {
        // A request id of 2^50 bytes, in 9 bytes: bincode's varint 0xfd + u64. Without the limit
        // the allocator aborts the process.
        let mut bomb = vec![0xfd];
        bomb.extend_from_slice(&(1u64 << 50).to_le_bytes());
        assert!(InferenceMsg::deserialize(call(bomb.clone())).is_err());
        assert_eq!(decode_result(&[&[0u8][..], &bomb[..]].concat()), Err(InferError::Unavailable));
        // Ids whose boundaries do not match are refused too.
        let forged = encode(&WireRequest { request: "x".into(), ids: vec![1, 2], ends: vec![5], remaining_ms: 10 });
        assert!(InferenceMsg::deserialize(call(forged.unwrap())).is_err());
    }
}
