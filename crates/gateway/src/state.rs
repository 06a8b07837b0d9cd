//! What every handler can reach. Cheap to clone (all shared).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::PrometheusHandle;
use senti_cluster::Cluster;
use senti_config::{AuthConfig, LimitsConfig};
use senti_engine::Engine;

/// Shared state of the HTTP app.
#[derive(Clone)]
pub struct AppState {
    /// The node's actors.
    pub engine: Arc<Engine>,
    /// Request limits.
    pub limits: Arc<LimitsConfig>,
    /// Bearer tokens (empty: auth off).
    pub auth: Arc<AuthConfig>,
    /// This node's id, sent as `x-senti-node`.
    pub node_id: Arc<str>,
    /// Set once the known-answer check has passed; written by the node at start-up.
    pub ready: Arc<AtomicBool>,
    /// Renders /metrics.
    pub metrics: PrometheusHandle,
    /// Cluster membership, set by the node once it has joined (never, when clustering is off).
    pub cluster: Arc<OnceLock<Arc<Cluster>>>,
}

impl AppState {
    /// State for `engine` with the given limits and auth; not ready until [`AppState::set_ready`].
    pub fn new(engine: Arc<Engine>, limits: LimitsConfig, auth: AuthConfig, node_id: String) -> Self {
        Self {
            engine,
            limits: Arc::new(limits),
            auth: Arc::new(auth),
            node_id: node_id.into(),
            ready: Arc::new(AtomicBool::new(false)),
            metrics: crate::metrics::handle(),
            cluster: Arc::new(OnceLock::new()),
        }
    }

    /// Marks the node ready (or not) for /readyz.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether /readyz answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.engine.is_shutting_down()
    }
}
