//! The domain vocabulary every kiln crate shares: ids, roles, secrets and how
//! durations read in messages. Pure data, no IO and no
//! runtime, so the protocol, the store, the engine and the clients can all agree on it.
//!
//! Ids and roles derive serde because they appear verbatim on the wire and on disk; keeping one
//! definition is worth more than keeping serde out of this crate.

mod duration;
mod id;
mod quote;
mod redact;
mod refname;
mod role;
mod secret;

pub use duration::{human_duration, now_ms};
pub use id::{PlanId, PromptId, SessionId, ShareId, TokenId, UserId, random_hex};
pub use quote::block_quote;
pub use redact::{redact_urls, url_host};
pub use refname::{BadRefName, check_branch_name};
pub use role::Role;
pub use secret::Secret;

/// Where the checkout lives inside every sandbox.
pub const WORKDIR: &str = "/workspace";
