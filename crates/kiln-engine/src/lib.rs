//! Session actors, the agent loop, tools and hooks: everything that makes a session work, and
//! nothing about HTTP (the server calls [`Engine`]; the engine never imports axum).
//!
//! A session is an actor ([`session`]) with a durable queue in its SQLite log; its worker runs
//! one prompt at a time through the agent loop (`kiln-agent`, which sees the session through
//! its `Session` trait), whose tools ([`tools`]) run in the session's sandbox and pass through
//! the hooks ([`hooks`]) — both from `kiln-tools`. What sandboxes start from (mirrors, images,
//! pools, the collector) is `kiln-fleet`.

mod config;
mod engine;
mod error;
mod session;
mod sync_gate;

pub use config::{
    Budgets, EngineConfig, Prices, PromptLimits, Retention, SubsessionConfig, SubsessionLimits,
};
pub use engine::{
    ACCESS_TTL, Engine, GitHubSignIn, PromptEnd, REFRESH_BEFORE_MS, RetentionReport, Stopped,
    session_branch,
};
pub use error::{Error, Result};
pub use kiln_agent::{CACHE_READ_FACTOR, CACHE_WRITE_FACTOR, Price};
/// What `Engine::session_changes` gives: a diff or a patch.
pub use kiln_fleet::push::Changes as SessionChanges;
/// What sessions start from — mirrors, images, pools, the collector — from their own crate.
pub use kiln_fleet::{
    EgressSettings, Error as FleetError, RunningBuildInfo as RunningBuild, WORKDIR, images,
};
/// Forges (GitHub) and their errors inside [`Error::Forge`], for callers that map them and
/// configure them.
pub use kiln_forge::{ForgeError, GitHubConfig};
pub use kiln_mcp::McpSettings;
/// The sandbox errors inside [`Error::Sandbox`], for callers that map them (the server).
pub use kiln_sandbox::Error as SandboxError;
/// The tools and hooks the agent loop drives, from their own crate.
pub use kiln_tools::{hooks, tools};
/// The vault's errors inside [`Error::Vault`], for callers that map them (the server).
pub use kiln_vault::Error as VaultError;
