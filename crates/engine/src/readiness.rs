//! The node's one answer to "may I send you work?".
//!
//! One value, written by the node's wiring (`senti-node`) and the supervisors of its parts, read
//! by everyone who used to keep a flag of their own: `/readyz` answers 200 only in
//! [`NodeState::Ready`], the gossip `ready` key follows it (the cluster layer watches it), and the
//! gateway refuses new requests once the node drains. A `watch` channel: readers see the latest
//! state, and the cluster layer wakes up when it changes.

use std::sync::Arc;

use tokio::sync::watch;

/// Where a node is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// Loading the model, joining the cluster, running the known-answer check.
    Starting,
    /// Serving.
    Ready,
    /// A part the node cannot serve without failed (the known-answer check, the gossip task):
    /// the reason. Still up for probes and diagnosis, not for traffic.
    Failed(String),
    /// Shutting down: no new work is accepted; work already accepted finishes.
    Draining,
}

/// Shared handle to the node's state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Readiness {
    state: Arc<watch::Sender<NodeState>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self { state: Arc::new(watch::Sender::new(NodeState::Starting)) }
    }
}

impl Readiness {
    /// The current state.
    pub fn get(&self) -> NodeState {
        self.state.borrow().clone()
    }

    /// Whether the node takes traffic (`/readyz` 200, gossip `ready=true`).
    pub fn is_ready(&self) -> bool {
        *self.state.borrow() == NodeState::Ready
    }

    /// Whether new requests are refused with [`crate::InferError::ShuttingDown`].
    pub fn is_draining(&self) -> bool {
        *self.state.borrow() == NodeState::Draining
    }

    /// Moves to `state`, except out of `Draining`: a node that began to drain never becomes ready
    /// again (a late known-answer check or a restarted gossip task must not undo a SIGTERM).
    pub fn set(&self, state: NodeState) {
        self.state.send_if_modified(|current| {
            if *current == NodeState::Draining || *current == state {
                return false;
            }
            match &state {
                NodeState::Failed(reason) => tracing::error!(%reason, "node not ready"),
                other => tracing::info!(state = ?other, "node state"),
            }
            *current = state;
            true
        });
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<NodeState> {
        self.state.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_is_final() {
        let readiness = Readiness::default();
        assert!(!readiness.is_ready());
        readiness.set(NodeState::Ready);
        assert!(readiness.is_ready());
        readiness.set(NodeState::Draining);
        readiness.set(NodeState::Ready);
        assert!(readiness.is_draining() && !readiness.is_ready());
    }

    #[test]
    fn failed_is_not_ready_and_can_recover() {
        let readiness = Readiness::default();
        readiness.set(NodeState::Failed("gossip task stopped".into()));
        assert!(!readiness.is_ready() && !readiness.is_draining());
        readiness.set(NodeState::Ready);
        assert!(readiness.is_ready());
    }
}
