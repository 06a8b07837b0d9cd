//! What the gateway places work on: an inference actor anywhere in the cluster, how to reach it,
//! where its load comes from, and what `/v1/cluster` shows of it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use senti_engine::LoadGauge;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::estimate::Reported;
use crate::hop::Hop;

/// Which inference actor: the node's id and the actor's name on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetId {
    /// The node (`server.node_id`).
    pub node: Arc<str>,
    /// The actor on that node (`a0`, ...).
    pub actor: Arc<str>,
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.actor)
    }
}

/// Where a target's load comes from.
#[derive(Clone)]
pub enum LoadSource {
    /// An actor of this node: its gauge, exact and current.
    Local(Arc<LoadGauge>),
    /// An actor of another node: the backlog and throughput it last reported, in gossip or with
    /// an answer to this gateway (whichever is newer), and when they were true.
    Gossiped {
        /// Tokens queued and running.
        backlog_tokens: f64,
        /// Its measured throughput, tokens per second (0: not measured yet).
        tokens_per_sec: f64,
        /// When the value was true (this node's clock).
        as_of: Instant,
    },
    /// An actor of another node that has not published its load yet.
    NeverPublished,
}

impl LoadSource {
    /// What it says at `now`.
    pub fn reported(&self, now: Instant) -> Reported {
        match self {
            LoadSource::Local(gauge) => Reported::Local { backlog_tokens: gauge.snapshot().backlog_tokens() as f64 },
            LoadSource::Gossiped { backlog_tokens, as_of, .. } => {
                Reported::Gossiped { backlog_tokens: *backlog_tokens, age: now.saturating_duration_since(*as_of) }
            }
            LoadSource::NeverPublished => Reported::Never,
        }
    }

    /// The rate the actor has measured (tokens per second): a local gauge's now, a remote actor's
    /// as last gossiped; `None` before its first batch or its first publication.
    pub fn tokens_per_sec(&self) -> Option<f64> {
        let rate = match self {
            LoadSource::Local(gauge) => gauge.snapshot().tokens_per_sec,
            LoadSource::Gossiped { tokens_per_sec, .. } => *tokens_per_sec,
            LoadSource::NeverPublished => 0.0,
        };
        (rate.is_finite() && rate > 0.0).then_some(rate)
    }

    /// When a remote report was true; `None` for a local gauge or no report.
    pub fn as_of_opt(&self) -> Option<Instant> {
        match self {
            LoadSource::Gossiped { as_of, .. } => Some(*as_of),
            LoadSource::Local(_) | LoadSource::NeverPublished => None,
        }
    }

    /// Whether the target runs in this process.
    pub fn is_local(&self) -> bool {
        matches!(self, LoadSource::Local(_))
    }
}

/// One inference actor as the gateway sees it.
#[derive(Clone)]
pub struct Target {
    /// Its identity.
    pub id: TargetId,
    /// How to reach it.
    pub hop: Arc<dyn Hop>,
    /// Its load.
    pub load: LoadSource,
    /// The model its node serves, `name@version` ([`crate::models`]).
    pub model: Arc<str>,
    /// The ONNX variant it runs (`int8`, `fp32`), as its node announces it.
    pub variant: Arc<str>,
}

/// One target in `/v1/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TargetReport {
    /// `node/actor`.
    pub target: String,
    /// On this node.
    pub local: bool,
    /// Backlog in tokens as last known (`null`: never published).
    pub backlog_tokens: Option<f64>,
    /// Age of that value in milliseconds (0 for local actors).
    pub age_ms: u64,
    /// This gateway's attempts on it that have not ended.
    pub outstanding: u32,
    /// The load estimate placement compares (tokens; a remote target's includes the hop cost).
    pub estimate: f64,
    /// Milliseconds left in its ejection, if ejected.
    pub ejected_for_ms: Option<u64>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Attempts this gateway sent it since it became a target.
    pub attempts: u64,
    /// Of those, attempts that failed or timed out.
    pub failures: u64,
}

/// The gateway's routing state, as `/v1/cluster` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoutingSnapshot {
    /// Every target, local and remote.
    pub targets: Vec<TargetReport>,
    /// Retries placed since start.
    pub retries: u64,
    /// Hedges placed since start.
    pub hedges: u64,
    /// Ejections since start.
    pub ejections: u64,
}

impl RoutingSnapshot {
    /// The report of the target named `node/actor`, if it is one.
    pub fn target(&self, name: &str) -> Option<&TargetReport> {
        self.targets.iter().find(|t| t.target == name)
    }
}

/// Milliseconds, for reports.
pub(crate) fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}
