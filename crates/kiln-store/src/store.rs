//! The `Store` handle: the data directory, the control DB connection and the cache of open
//! session logs. Domain operations live in `accounts.rs`, `repos.rs` and `sessions.rs`; this file
//! holds only what they share: how blocking SQLite work leaves the async threads.

use crate::db;
use crate::error::{Error, Result};
use crate::log::SessionLog;
use crate::schema;
use kiln_core::SessionId;
use rusqlite::Connection;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

/// All durable state of a kiln. Cheap to clone; every clone shares the connections.
///
/// One process owns a data directory: session logs cache their head seq in memory, so a second
/// process appending to the same session would fail on the seq primary key rather than corrupt
/// the log, but it would fail. The server is expected to hold a lock on the data dir. For the
/// same reason a process opens one `Store` per data dir and clones it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// The control DB. Its own mutex: a slow session write never waits for it, and the other
    /// way round.
    control: Mutex<Connection>,
    /// Open session logs, by id. Weak, so a session nobody holds closes its DB; shared, so two
    /// `open_session` calls get one connection and one broadcast channel (and so one seq
    /// counter: two connections appending to one log would race for seqs).
    sessions: Mutex<HashMap<SessionId, Weak<crate::log::LogInner>>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex whose holder may have panicked. A panic inside a transaction rolls it back as
/// the `Transaction` unwinds, so the connection behind a poisoned mutex is still consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs blocking SQLite work on tokio's blocking pool, so callers on the runtime never stall a
/// worker thread on disk IO or a lock.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a blocking store task failed");
        Err(Error::Join)
    })
}

impl Store {
    /// Opens the data directory, creating it, `control.db` and `sessions/` when missing, and
    /// brings the control schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Store> {
        let dir = data_dir.to_path_buf();
        blocking(move || {
            std::fs::create_dir_all(dir.join("sessions"))?;
            let control = db::open(&dir.join("control.db"), true, schema::CONTROL)?;
            tracing::info!(dir = %dir.display(), "store opened");
            Ok(Store {
                inner: Arc::new(Inner {
                    dir,
                    control: Mutex::new(control),
                    sessions: Mutex::new(HashMap::new()),
                }),
            })
        })
        .await
    }

    /// The data directory this store was opened on.
    pub fn data_dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Runs `f` with the control DB connection, off the async threads.
    pub(crate) async fn control<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        blocking(move || f(&mut lock(&inner.control))).await
    }

    pub(crate) fn session_dir(&self, id: &SessionId) -> PathBuf {
        // Safe as a path component: a SessionId only parses as "s-" + 16 hex digits.
        self.inner.dir.join("sessions").join(id.as_str())
    }

    /// The cached log of a session, when some handle to it is still alive.
    fn cached(&self, id: &SessionId) -> Option<SessionLog> {
        let cache = lock(&self.inner.sessions);
        cache
            .get(id)
            .and_then(Weak::upgrade)
            .map(SessionLog::from_inner)
    }

    /// Opens the log of an existing session, or returns the handle already open.
    pub async fn open_session(&self, id: &SessionId) -> Result<SessionLog> {
        if let Some(log) = self.cached(id) {
            return Ok(log);
        }
        // The index is the authority on which sessions exist; a directory without an index row
        // is the leftover of a `create_session` that failed half-way.
        let exists = {
            let id = id.clone();
            self.control(move |conn| {
                let n: i64 = conn.query_row(
                    "SELECT count(*) FROM sessions WHERE id = ?1",
                    [id.as_str()],
                    |row| row.get(0),
                )?;
                Ok(n > 0)
            })
            .await?
        };
        if !exists {
            return Err(Error::NotFound(format!("session {id}")));
        }
        let store = self.clone();
        let id = id.clone();
        blocking(move || {
            // Checked again under the cache lock: another task may have opened it meanwhile.
            // The lock is held while the file opens so that only one connection is ever made.
            let mut cache = lock(&store.inner.sessions);
            if let Some(inner) = cache.get(&id).and_then(Weak::upgrade) {
                return Ok(SessionLog::from_inner(inner));
            }
            let path = store.session_dir(&id).join("session.db");
            if !path.exists() {
                return Err(Error::NotFound(format!(
                    "the database of session {id} is missing ({})",
                    path.display()
                )));
            }
            let log = SessionLog::open(&path, &id, false)?;
            remember(&mut cache, &log);
            Ok(log)
        })
        .await
    }

    /// Puts a freshly created log into the cache; see `create_session` for why this happens
    /// before the index row is committed.
    pub(crate) fn remember_log(&self, log: &SessionLog) {
        remember(&mut lock(&self.inner.sessions), log);
    }

    pub(crate) fn forget_log(&self, id: &SessionId) {
        lock(&self.inner.sessions).remove(id);
    }
}

fn remember(cache: &mut HashMap<SessionId, Weak<crate::log::LogInner>>, log: &SessionLog) {
    // Dropping dead entries here keeps the map as small as the set of open sessions without a
    // callback from `LogInner::drop` into the store.
    cache.retain(|_, weak| weak.strong_count() > 0);
    cache.insert(log.id().clone(), log.downgrade());
}
