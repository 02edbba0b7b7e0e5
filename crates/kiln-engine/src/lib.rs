//! Session actors, the agent loop, tools and hooks: everything that makes a session work, and
//! nothing about HTTP (the server calls [`Engine`]; the engine never imports axum).
//!
//! A session is an actor ([`session`]) with a durable queue in its SQLite log; its worker runs
//! one prompt at a time through the agent loop ([`agent`]), whose tools ([`tools`]) run in the
//! session's sandbox and pass through the hooks ([`hooks`]) — both from `kiln-tools`.

mod agent;
mod config;
mod engine;
mod error;
mod gc;
mod host;
pub mod images;
mod pool;
mod session;
mod sync_gate;
mod workspace;

pub use config::{EngineConfig, PromptLimits};
pub use engine::{Engine, Stopped};
pub use error::{Error, Result};
/// The sandbox errors inside [`Error::Sandbox`], for callers that map them (the server).
pub use kiln_sandbox::Error as SandboxError;
/// The tools and hooks the agent loop drives, from their own crate.
pub use kiln_tools::{hooks, tools};
pub use workspace::WORKDIR;
