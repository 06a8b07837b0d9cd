//! `GET /v1/cluster`: the membership as this node sees it, and its gateway's routing state.

use axum::extract::State;
use axum::Json;
use senti_cluster::ClusterReport;
use serde::Serialize;

use crate::state::AppState;

/// `GET /v1/cluster` response.
#[derive(Debug, Serialize)]
pub struct ClusterResponse {
    /// The node that answered.
    pub node_id: String,
    /// Gossip membership; `null` when `cluster.enabled` is false.
    pub membership: Option<ClusterReport>,
    /// This node's gateway: every target it can place work on.
    pub routing: RoutingReport,
}

/// The gateway's view.
#[derive(Debug, Serialize)]
pub struct RoutingReport {
    /// Every target, local and remote.
    pub targets: Vec<TargetJson>,
    /// Retries placed since start.
    pub retries: u64,
    /// Hedges placed since start.
    pub hedges: u64,
    /// Ejections since start.
    pub ejections: u64,
}

/// One target.
#[derive(Debug, Serialize)]
pub struct TargetJson {
    /// `node/actor`.
    pub target: String,
    /// On this node.
    pub local: bool,
    /// Backlog in tokens as last known.
    pub backlog_tokens: f64,
    /// Age of that value in milliseconds (0 for local actors).
    pub age_ms: u64,
    /// This gateway's attempts on it that have not ended.
    pub outstanding: u32,
    /// The load estimate placement compares (tokens).
    pub estimate: f64,
    /// Milliseconds left in its ejection, if ejected.
    pub ejected_for_ms: Option<u64>,
    /// Failures in a row.
    pub consecutive_failures: u32,
}

/// Membership, loads with their ages, and ejections.
pub async fn cluster(State(state): State<AppState>) -> Json<ClusterResponse> {
    let membership = match state.cluster.get() {
        Some(cluster) => Some(cluster.report().await),
        None => None,
    };
    let snapshot = state.engine.routing_snapshot().await.unwrap_or_default();
    let targets = snapshot
        .targets
        .into_iter()
        .map(|t| TargetJson {
            target: t.id.to_string(),
            local: t.local,
            backlog_tokens: t.backlog_tokens,
            age_ms: t.age.as_millis() as u64,
            outstanding: t.outstanding,
            estimate: t.estimate,
            ejected_for_ms: t.ejected_for_opt.map(|d| d.as_millis() as u64),
            consecutive_failures: t.consecutive_failures,
        })
        .collect();
    Json(ClusterResponse {
        node_id: state.node_id.to_string(),
        membership,
        routing: RoutingReport {
            targets,
            retries: snapshot.retries,
            hedges: snapshot.hedges,
            ejections: snapshot.ejections,
        },
    })
}
