//! What every handler can reach. Cheap to clone: one shared pointer (every middleware layer and
//! handler of a request takes a clone).

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::PrometheusHandle;
use senti_cluster::Cluster;
use senti_config::{AuthConfig, CacheConfig, LimitsConfig};
use senti_engine::{Engine, Readiness};
use senti_routing::{Gateway, ResultCache};

use crate::recent::RecentErrors;

/// Shared state of the HTTP app: [`Shared`] behind one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    /// The node's inference actors and the model (tokenizer, labels).
    pub engine: Arc<Engine>,
    /// Where requests go: the gateway actor.
    pub gateway: Arc<Gateway>,
    /// The node's one readiness state (`/readyz`).
    pub readiness: Readiness,
    /// Request limits.
    pub limits: Arc<LimitsConfig>,
    /// Bearer tokens (empty: auth off).
    pub auth: Arc<AuthConfig>,
    /// This node's id, sent as `x-senti-node`.
    pub node_id: Arc<str>,
    /// Renders /metrics.
    pub metrics: PrometheusHandle,
    /// Cluster membership, set by the node once it has joined (never, when clustering is off).
    pub cluster: Arc<OnceLock<Arc<Cluster>>>,
    /// The last errors answered, for `/v1/cluster`.
    pub recent_errors: RecentErrors,
    /// This node's model as `name@version`.
    pub model_id: Arc<str>,
    /// Answers already computed, and identical texts in flight (`[cache]`).
    pub cache: Arc<ResultCache>,
}

impl AppState {
    /// State over a started engine and gateway.
    pub fn new(
        engine: Arc<Engine>,
        gateway: Arc<Gateway>,
        readiness: Readiness,
        limits: LimitsConfig,
        auth: AuthConfig,
        cache: &CacheConfig,
        node_id: String,
    ) -> Self {
        let bundle = engine.bundle();
        let manifest = bundle.manifest();
        let model_id = manifest.id().into();
        let cache_model = format!("{}@{}/{}", manifest.name, manifest.version, bundle.variant());
        let cache = ResultCache::new(cache_model, cache.max_bytes);
        Self(Arc::new(Shared {
            engine,
            gateway,
            readiness,
            limits: Arc::new(limits),
            auth: Arc::new(auth),
            node_id: node_id.into(),
            metrics: crate::metrics::handle(),
            cluster: Arc::new(OnceLock::new()),
            recent_errors: RecentErrors::default(),
            model_id,
            cache,
        }))
    }
}
