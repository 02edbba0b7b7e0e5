//! The public API: REST request and response bodies, WebSocket frames, and the events of a
//! session's log. Clients (CLI, web UI, Slack, the Chrome extension) and the server share these
//! definitions, and the OpenAPI document is generated from them.

mod access;
mod audit;
mod event;
mod forge;
mod limits;
mod mcp;
mod people;
mod plan;
mod rest;
mod secrets;
mod slack;
mod starts;
mod stats;
mod status;
mod subsessions;
mod ws;

pub use access::{AccessMode, RepoAccess, SetRepoAccess};
pub use audit::{AuditAction, AuditEntry, AuditPage};
pub use event::{
    DeliveryMode, EVENT_VERSION, Ephemeral, ErrorKind, Event, EventEnvelope, FileChangeKind,
    PromptOutcome, PromptStatus, SandboxState, ToolOutcome, ToolStream, Usage, UserRef,
};
pub use forge::{
    GitHubAccount, NoForgeAccount, OpenPullRequest, PR_TITLE_CHARS, PullRequest, WebhookReceipt,
};
pub use limits::*;
pub use mcp::{
    MCP_SERVER_NAME_CHARS, McpKind, McpServer, McpState, McpTool, check_mcp_server_name,
};
pub use people::*;
pub use plan::{PLAN_REASON_CHARS, PlanDecided, PlanDecision, PlanVerdict};
pub use rest::*;
pub use secrets::*;
pub use slack::{SlackEventReceipt, SlackLink};
pub use starts::{Percentiles, StartPhases, StartStats};
pub use stats::{StatsReport, StatsRow};
pub use status::{Health, ModelHealth, RepoStatus, SandboxCounts, ServerStatus};
pub use subsessions::{SessionTree, SessionTreeNode};
pub use ws::{
    ClientFrame, ServerFrame, UserClientFrame, UserServerFrame, WS_PROTOCOL_VERSION,
    event_frame_text,
};
