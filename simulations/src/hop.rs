//! The inter-node hop over the simulated network: the same `Hop` trait the real ractor_cluster
//! transport implements (`ActorRef<InferenceMsg>`, `senti-routing`'s `hop.rs`).
//!
//! Delivered messages arrive after the hop delay and their answers come back after it too, each
//! checked against the network at that moment (a partition may start mid-flight). A refused
//! message (crashed peer) fails at once like a dropped TCP session; a swallowed one (partition,
//! hung peer) is never answered. Every send is written to the trace.

use std::sync::Arc;
use std::time::Instant;

use ractor::RpcReplyPort;
use senti_engine::{EncodedTexts, InferError, InferResult, RequestId};
use senti_routing::Hop;

use crate::actor::{SimActor, Work};
use crate::net::{Link, SimNet};
use crate::trace::{Event, Trace};

/// A hop from node `from`'s gateway to actor `actor` of node `to`.
pub struct SimHop {
    /// The sending node.
    pub from: usize,
    /// The node of the actor.
    pub to: usize,
    /// The actor's index on its node.
    pub actor: usize,
    /// The actor.
    pub target: SimActor,
    /// The network.
    pub net: SimNet,
    /// Where sends are recorded.
    pub trace: Trace,
}

impl Hop for SimHop {
    fn send(
        &self,
        texts: Arc<EncodedTexts>,
        deadline: Instant,
        request_id: RequestId,
        reply: RpcReplyPort<InferResult>,
    ) -> Result<(), InferError> {
        if self.net.link(self.from, self.from) == Link::Refused {
            // The sending node has crashed: a dead process sends nothing (its leftover attempt
            // tasks in this shared process must not either).
            return Err(InferError::Unavailable);
        }
        // The simulation names request n `rn`.
        let request = request_id.as_str().strip_prefix('r').and_then(|n| n.parse().ok()).unwrap_or(u64::MAX);
        self.trace.record(Event::Sent { request, from: self.from, to: self.to, actor: self.actor });
        match self.net.link(self.from, self.to) {
            Link::Refused => Err(InferError::Unavailable),
            Link::Swallowed => {
                self.net.swallow(Box::new(reply));
                Ok(())
            }
            Link::Deliver(delay) if delay.is_zero() => {
                self.target.tx.send(Work { texts, deadline, reply }).map_err(|_| InferError::Unavailable)
            }
            Link::Deliver(delay) => {
                let (net, target, from, to) = (self.net.clone(), self.target.clone(), self.from, self.to);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    match net.link(from, to) {
                        Link::Deliver(_) => {}
                        Link::Refused => return, // dropping `reply`: the caller sees the actor gone
                        Link::Swallowed => return net.swallow(Box::new(reply)),
                    }
                    let (tx, rx) = ractor::concurrency::oneshot::<InferResult>();
                    if target.tx.send(Work { texts, deadline, reply: tx.into() }).is_err() {
                        return;
                    }
                    let Ok(result) = rx.await else {
                        return; // the actor crashed with the work queued
                    };
                    tokio::time::sleep(delay).await;
                    match net.link(to, from) {
                        Link::Deliver(_) => {
                            let _ = reply.send(result);
                        }
                        Link::Refused => {}
                        Link::Swallowed => net.swallow(Box::new(reply)),
                    }
                });
                Ok(())
            }
        }
    }
}
