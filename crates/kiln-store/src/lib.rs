//! SQLite state: the control database and one append-only event log per session.
//!
//! Layout of a data dir:
//! - `control.db`: users, tokens, repos (with their secrets, sealed by the engine's vault), the
//!   session index, session members, share links and a small key/value `meta` table:
//!   everything that decides who may do what.
//! - `sessions/<session-id>/session.db`: one per session: its event log, prompts, the model
//!   conversation and its settings. One file per session keeps sessions independent (no global
//!   write lock, a session can be copied or deleted as a directory).
//!
//! Every database runs in WAL mode with `synchronous=NORMAL`: committed data survives a process
//! crash or `kill -9`; a power cut can lose the last transactions. Schemas are versioned with
//! `PRAGMA user_version`; all migrations are in `schema.rs`.
//!
//! SQLite work is blocking, so the API is async and runs it on tokio's blocking pool. Each
//! session DB has its own connection behind its own mutex, and so does the control DB: there is
//! no lock shared by all sessions on the hot path.
//!
//! The event log's promises (see [`SessionLog`] and [`Subscription`]): seqs start at 1 and have
//! no gaps; an event is broadcast only after its transaction committed, and in seq order; a
//! subscriber from any `after_seq` gets every later event exactly once.

mod access;
mod accounts;
mod audit;
mod backup;
mod db;
mod error;
mod github;
mod images;
mod log;
mod logins;
mod manage;
mod plans;
mod repos;
mod schema;
mod secrets;
mod sessions;
mod slack;
mod spend;
mod store;
mod stored;
mod subscription;
mod writer;

pub use backup::{BackupReport, backup};
pub use error::{Error, Result};
pub use github::{DELIVERY_MEMORY, OAUTH_STATE_TTL, SealedGitHubLink};
pub use images::ImageRecord;
pub use log::{SessionLog, SessionSnapshot, StoredEvent};
pub use logins::{BROWSER_SESSION_TTL, BrowserSession, LOGIN_CODE_TTL, LoginCode};
pub use manage::{SessionFilter, ShareOptions};
pub use plans::{PlanRecord, PlanState};
pub use repos::{RepoRemote, check_repo_name, split_repo_url};
pub use secrets::SealedSecret;
pub use sessions::{Redeemed, SessionRow};
pub use spend::DailySpend;
pub use store::Store;
pub use subscription::Subscription;
pub use writer::SessionWriter;
