//! How a [`GatewayMsg::IdleNotice`] crosses the network to another node's gateway.
//!
//! Every gateway joins the process group `senti.gateway` (senti-cluster), so ractor_cluster
//! serializes a message to another node's gateway with [`ractor::Message::serialize`]. Only idle
//! notices ever cross; every other message stays on its node. The payload is bincode 2 (standard
//! config, decoding limited to [`MAX_NOTICE_BYTES`]):
//! ```text
//! cast  variant "idle", args = WireNotice { node: String, actor: String }
//! ```
//! The receiving gateway uses a notice only for a target it already has (a live member's actor,
//! by chitchat): a notice naming anything else is dropped, and a peer can at most make a
//! gateway send one request to one of its actors that may not be idle after all. A node that
//! does not join the group (a version before notices) gets none and sends none.

use ractor::message::{BoxedDowncastErr, SerializedMessage};

use crate::gateway::GatewayMsg;
use crate::target::TargetId;

/// The variant tag of [`GatewayMsg::IdleNotice`] on the wire.
const IDLE: &str = "idle";

/// Most bytes a notice may take: a node id and an actor name, each far shorter.
pub const MAX_NOTICE_BYTES: usize = 1 << 10;

#[derive(bincode::Encode, bincode::Decode)]
struct WireNotice {
    node: String,
    actor: String,
}

fn decode_notice(bytes: &[u8]) -> Result<TargetId, BoxedDowncastErr> {
    let config = bincode::config::standard().with_limit::<MAX_NOTICE_BYTES>();
    let (wire, _): (WireNotice, usize) = bincode::decode_from_slice(bytes, config).map_err(|_| BoxedDowncastErr)?;
    Ok(TargetId { node: wire.node.into(), actor: wire.actor.into() })
}

impl ractor::Message for GatewayMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let GatewayMsg::IdleNotice(id) = self else {
            return Err(BoxedDowncastErr); // every other message stays on its node
        };
        let wire = WireNotice { node: id.node.to_string(), actor: id.actor.to_string() };
        let args = bincode::encode_to_vec(&wire, bincode::config::standard()).map_err(|_| BoxedDowncastErr)?;
        Ok(SerializedMessage::Cast { variant: IDLE.into(), args, metadata: None })
    }

    fn deserialize(message: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match message {
            SerializedMessage::Cast { variant, args, .. } if variant == IDLE => {
                decode_notice(&args).map(GatewayMsg::IdleNotice)
            }
            _ => Err(BoxedDowncastErr),
        }
    }
}

#[cfg(test)]
mod tests {
    use ractor::Message;

    use super::*;

    fn id(node: &str, actor: &str) -> TargetId {
        TargetId { node: node.into(), actor: actor.into() }
    }

    #[test]
    fn a_notice_survives_the_round_trip_and_nothing_else_leaves_the_node() {
        let message = GatewayMsg::IdleNotice(id("n2", "a1")).serialize().unwrap();
        let GatewayMsg::IdleNotice(got) = GatewayMsg::deserialize(message).unwrap() else {
            panic!("not a notice");
        };
        assert_eq!(got, id("n2", "a1"));
        assert!(GatewayMsg::SetNoticeRecipients(Vec::new()).serialize().is_err());
        assert!(GatewayMsg::LocalIdle(id("n1", "a0")).serialize().is_err());
    }

    #[test]
    fn other_variants_and_bad_bytes_are_refused() {
        let cast =
            |variant: &str, args: Vec<u8>| SerializedMessage::Cast { variant: variant.into(), args, metadata: None };
        let good =
            bincode::encode_to_vec(WireNotice { node: "n".into(), actor: "a0".into() }, bincode::config::standard())
                .unwrap();
        assert!(GatewayMsg::deserialize(cast("infer", good.clone())).is_err());
        assert!(GatewayMsg::deserialize(cast(IDLE, vec![0xff, 0xff])).is_err());
        assert!(GatewayMsg::deserialize(cast(IDLE, good[..good.len() - 1].to_vec())).is_err());
        // A node id of 2^50 bytes in 9 bytes: refused before anything is allocated for it.
        let mut bomb = vec![0xfd];
        bomb.extend_from_slice(&(1u64 << 50).to_le_bytes());
        assert!(GatewayMsg::deserialize(cast(IDLE, bomb)).is_err());
        let long = bincode::encode_to_vec(
            WireNotice { node: "n".repeat(MAX_NOTICE_BYTES), actor: "a0".into() },
            bincode::config::standard(),
        )
        .unwrap();
        assert!(GatewayMsg::deserialize(cast(IDLE, long)).is_err(), "beyond the limit");
    }

    /// Random and mutated bytes (20,000 in `make test`; `SENTI_FUZZ_CASES` for more): each is
    /// decoded or refused, never a panic.
    #[test]
    fn random_and_mutated_bytes_are_decoded_or_refused() {
        let cases = senti_engine::testsuite::fuzz_cases(20_000);
        let seed = bincode::encode_to_vec(
            WireNotice { node: "node-2".into(), actor: "a1".into() },
            bincode::config::standard(),
        )
        .unwrap();
        let (mut decoded, mut refused) = (0_u64, 0_u64);
        for bytes in senti_engine::testsuite::fuzz_inputs(&[seed], cases, 11, 48) {
            match decode_notice(&bytes) {
                Ok(_) => decoded += 1,
                Err(_) => refused += 1,
            }
        }
        eprintln!("notice fuzz: {cases} inputs, {decoded} decoded, {refused} refused");
        assert!(decoded > 0 && refused > 0, "the inputs must reach both outcomes: {decoded} / {refused}");
    }
}
