//! Stats (issue 16): whether the agents pay off. The session logs are the truth: a pure fold
//! turns one session's events into a [`SessionSummary`] ([`SessionFold`], resumable at any
//! seq), [`report`] aggregates summaries into the API's [`StatsReport`], and [`StatsIndex`]
//! keeps the folds between queries so that only sessions whose logs changed are read again.

mod fold;
mod index;
mod report;

pub use fold::{SessionFold, SessionSummary};
pub use index::StatsIndex;
pub use kiln_protocol::api::{StatsReport, StatsRow};
pub use report::{Range, StatsQuery, day_of, report};

/// How long ago a prompt may have been queued for its author to count as prompting now.
pub const PROMPTING_WINDOW_MS: i64 = 5 * 60 * 1000;
