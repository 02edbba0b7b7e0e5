//! The domain vocabulary every kiln crate shares: ids, roles and secrets. Pure data, no IO and no
//! runtime, so the protocol, the store, the engine and the clients can all agree on it.
//!
//! Ids and roles derive serde because they appear verbatim on the wire and on disk; keeping one
//! definition is worth more than keeping serde out of this crate.

mod id;
mod refname;
mod role;
mod secret;

pub use id::{PromptId, SessionId, ShareId, TokenId, UserId, random_hex};
pub use refname::{BadRefName, check_branch_name};
pub use role::Role;
pub use secret::Secret;
