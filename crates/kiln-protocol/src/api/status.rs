//! How the server is doing: `GET /api/health` (open to anyone: up, version, can it reach its
//! model) and `GET /api/status` (signed in: also sandboxes, pools and images).

use super::rest::{Image, PoolStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /api/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `true`: the server answered.
    pub ok: bool,
    /// The server's version.
    pub version: String,
    pub model: ModelHealth,
}

/// Whether prompts can reach a model. The check (`GET …/models` at the provider, no tokens
/// spent) is cached: `checked_at_ms` says how old it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModelHealth {
    pub configured: bool,
    /// `provider/model`, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What to set, when not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Whether the endpoint answered the last check and took the key; absent when not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    /// How long the last check's answer took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Why the last check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the last check ran (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at_ms: Option<i64>,
}

/// `GET /api/status`: what `kiln status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServerStatus {
    pub version: String,
    pub model: ModelHealth,
    /// The sandboxes the server runs; only admins see them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandboxes: Option<SandboxCounts>,
    /// The repos the caller can see.
    pub repos: Vec<RepoStatus>,
}

/// Running sandboxes by what they are for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxCounts {
    pub sessions: usize,
    /// Warm in a pool, not yet claimed.
    pub pooled: usize,
    /// Running an image build.
    pub builds: usize,
    /// Anything else (`kiln sandbox run`, debris of a crash).
    pub other: usize,
}

/// One repo's newest image and warm pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RepoStatus {
    pub name: String,
    /// The newest build (running, ready or failed), without its log.
    pub image: Option<Image>,
    pub pool: PoolStatus,
}
