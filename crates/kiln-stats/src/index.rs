//! The folds kept between queries: a session's log is read again only from where its fold
//! stopped, and only when its files changed since (a `stat`, not a database open).

use crate::fold::{SessionFold, SessionSummary};
use kiln_core::SessionId;
use kiln_store::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Events read from a log per round trip while catching up.
const READ_BATCH: usize = 5_000;
/// A file changed this recently may change again within the file system's clock tick: its
/// session is looked at again next time even when the time has not moved.
const MTIME_SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Entry {
    fold: SessionFold,
    summary: Arc<SessionSummary>,
    /// The log files' latest modification time when the fold last caught up; none when it
    /// has to be looked at again.
    mtime: Option<SystemTime>,
}

/// Folds of the sessions' logs, kept in memory between queries.
#[derive(Debug, Default)]
pub struct StatsIndex {
    entries: tokio::sync::Mutex<HashMap<SessionId, Entry>>,
}

impl StatsIndex {
    pub fn new() -> StatsIndex {
        StatsIndex::default()
    }

    /// The summaries of `ids`, each caught up with its log. Sessions not in the store any
    /// more (deleted) are skipped.
    pub async fn summaries(
        &self,
        store: &Store,
        ids: &[SessionId],
    ) -> kiln_store::Result<Vec<Arc<SessionSummary>>> {
        let mut entries = self.entries.lock().await;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let mtime = log_mtime(store, id);
            if let Some(entry) = entries.get(id)
                && entry.mtime.is_some()
                && entry.mtime == mtime
            {
                out.push(entry.summary.clone());
                continue;
            }
            let log = match store.open_session(id).await {
                Ok(log) => log,
                Err(kiln_store::Error::NotFound(_)) => {
                    entries.remove(id);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let entry = entries.entry(id.clone()).or_insert_with(|| Entry {
                fold: SessionFold::default(),
                summary: Arc::default(),
                mtime: None,
            });
            loop {
                let events = log.read_after(entry.fold.seq, READ_BATCH).await?;
                for event in &events {
                    entry.fold.apply(event);
                }
                if events.len() < READ_BATCH {
                    break;
                }
            }
            entry.summary = Arc::new(entry.fold.summary());
            let settled = mtime.is_some_and(|m| {
                SystemTime::now()
                    .duration_since(m)
                    .is_ok_and(|age| age >= MTIME_SETTLE)
            });
            entry.mtime = if settled { mtime } else { None };
            out.push(entry.summary.clone());
        }
        Ok(out)
    }

    /// Forgets sessions not in `ids` (every session that exists).
    pub async fn retain(&self, ids: &[SessionId]) {
        let keep: std::collections::HashSet<&SessionId> = ids.iter().collect();
        self.entries.lock().await.retain(|id, _| keep.contains(id));
    }
}

/// The latest modification time of a session's database files.
fn log_mtime(store: &Store, id: &SessionId) -> Option<SystemTime> {
    let dir = store.data_dir().join("sessions").join(id.as_str());
    ["session.db", "session.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(dir.join(name)).ok()?.modified().ok())
        .max()
}
