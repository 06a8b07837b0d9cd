//! `GET /v1/cluster`: the membership as this node sees it, and its gateway's routing state.

use axum::extract::State;
use axum::Json;
use senti_cluster::ClusterReport;
use senti_routing::RoutingSnapshot;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::recent::ErrorRecord;
use crate::state::AppState;

/// `GET /v1/cluster` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterResponse {
    /// The node that answered.
    pub node_id: String,
    /// Gossip membership; `null` when `cluster.enabled` is false.
    pub membership: Option<ClusterReport>,
    /// This node's gateway: every target it can place work on, with the attempts it sent each.
    pub routing: RoutingSnapshot,
    /// The last errors this node answered (at most 20), newest first.
    pub recent_errors: Vec<ErrorRecord>,
}

/// Membership, loads with their ages, and ejections.
#[utoipa::path(get, path = "/v1/cluster", responses((status = 200, body = ClusterResponse), (status = 401), (status = 403)))]
pub async fn cluster(State(state): State<AppState>) -> Json<ClusterResponse> {
    let membership = match state.cluster.get() {
        Some(cluster) => Some(cluster.report().await),
        None => None,
    };
    Json(ClusterResponse {
        node_id: state.node_id.to_string(),
        membership,
        routing: state.gateway.snapshot().await,
        recent_errors: state.recent_errors.newest_first(),
    })
}
