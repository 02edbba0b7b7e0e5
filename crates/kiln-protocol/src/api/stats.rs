//! Whether the agents pay off (`GET /api/stats`): sessions and their pull requests, speed,
//! spend, per day, per repo and per user. Computed by `kiln-stats` from the session logs.

use super::starts::Percentiles;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The numbers for one group of sessions (all of them, one day, one repo or one user).
/// Sessions are counted on the day they were created; their PRs, spend and speed with them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatsRow {
    /// What the row is about: `YYYY-MM-DD` (UTC), a repo name or a user name; empty for totals.
    pub key: String,
    pub sessions_started: u64,
    /// Sessions with at least one pull request that was merged: the number that matters.
    pub sessions_merged: u64,
    /// `sessions_merged / sessions_started`; null without sessions.
    pub merge_rate: Option<f64>,
    pub prs_opened: u64,
    pub prs_merged: u64,
    /// Closed without merging.
    pub prs_closed: u64,
    /// PRs with at least one approving review, over PRs opened; null without PRs.
    pub approval_rate: Option<f64>,
    /// Revisions (pushes after a review) per PR opened; null without PRs.
    pub revisions_per_pr: Option<f64>,
    /// PR opened → merged.
    pub time_to_merge_ms: Percentiles,
    /// Each prompt: accepted → the model's first text.
    pub time_to_first_token_ms: Percentiles,
    /// Session created → sandbox usable (the first start phase).
    pub start_sandbox_ms: Percentiles,
    /// Sandbox usable → checkout synced.
    pub start_sync_ms: Percentiles,
    /// First prompt accepted → first model request.
    pub start_first_model_request_ms: Percentiles,
    /// First model request → its first text.
    pub start_model_ttft_ms: Percentiles,
    /// Sessions whose sandbox came from the warm pool, over sessions that got a sandbox.
    pub pool_hit_rate: Option<f64>,
    /// Lines the agent added in sessions that ended in a merged PR (from `file_changed`).
    pub agent_lines_merged: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    /// `cost_usd / prs_merged`; null without merged PRs.
    pub cost_per_merged_pr_usd: Option<f64>,
}

/// `GET /api/stats`: totals and the breakdowns, for the sessions the caller may see (admins:
/// all; others: the sessions they take part in).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatsReport {
    /// First day counted, `YYYY-MM-DD` (UTC), inclusive.
    pub from: String,
    /// Last day counted, inclusive.
    pub to: String,
    pub totals: StatsRow,
    /// One row per day from `from` to `to`, oldest first, days without sessions included.
    pub by_day: Vec<StatsRow>,
    /// Busiest repo first.
    pub by_repo: Vec<StatsRow>,
    /// Busiest user first (the session's creator).
    pub by_user: Vec<StatsRow>,
    /// Distinct people who queued a prompt in the last 5 minutes (in the visible sessions,
    /// whatever the date range).
    pub humans_prompting: u64,
}
