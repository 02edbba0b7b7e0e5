//! `SessionLog`: one session's database, its append-only event log and the live broadcast of new
//! events. Every write to a session goes through [`SessionLog::write`], which is what makes the
//! ordering promise hold: seqs are handed out, committed and broadcast under one mutex, so
//! subscribers see events in seq order, and only events that are already durable.

use crate::db;
use crate::error::{Error, Result};
use crate::schema;
use crate::store::{blocking, lock};
use crate::subscription::Subscription;
use crate::writer::{self, MessagesChange, SessionWriter};
use kiln_core::{PromptId, SessionId};
use kiln_protocol::api::{DeliveryMode, Event, EventEnvelope, PromptInfo};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::broadcast;

/// Live events a subscriber may fall behind by before it has to catch up from SQLite. Catching
/// up is correct, just slower, so this only needs to cover ordinary bursts (a streamed reply).
pub(crate) const BROADCAST_CAPACITY: usize = 1024;

/// One event of the log, with its JSON serialized once for every subscriber that sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub envelope: EventEnvelope,
    /// `serde_json` of `envelope`, exactly as stored in the session DB.
    pub json: Arc<str>,
    /// The WebSocket `event` frame's text ([`kiln_protocol::api::event_frame_text`]), made once:
    /// a hundred sockets following the session share it instead of each copying the JSON.
    pub frame: bytes::Bytes,
}

impl StoredEvent {
    pub(crate) fn new(envelope: EventEnvelope, json: String) -> StoredEvent {
        let frame = bytes::Bytes::from(kiln_protocol::api::event_frame_text(&json));
        StoredEvent {
            envelope,
            json: Arc::from(json),
            frame,
        }
    }

    pub fn seq(&self) -> u64 {
        self.envelope.seq
    }
}

/// A handle to one open session DB. Cheap to clone; the store hands out one shared instance per
/// session while any handle is alive, and closes the DB when the last handle (and the last
/// subscription's pending read) is gone. Closing checkpoints the WAL, which takes a moment of
/// IO on whichever thread drops the last handle; sessions are closed rarely enough for that.
#[derive(Clone)]
pub struct SessionLog {
    inner: Arc<LogInner>,
}

pub(crate) struct LogInner {
    id: SessionId,
    /// The session's only connection. Writers and backlog readers take turns on it; each holds
    /// it for one short transaction.
    pub(crate) conn: Mutex<Connection>,
    /// The last committed seq. Written only under `conn`'s lock, after COMMIT and before the
    /// broadcast, which is what lets a new subscription know where the live stream begins.
    pub(crate) head: AtomicU64,
    pub(crate) live: broadcast::Sender<Arc<StoredEvent>>,
    /// The model conversation as stored, kept from its first read while the log is open and
    /// brought up to date by every write, under `conn`'s lock like the table itself: a prompt
    /// does not read a long conversation back from SQLite. `None`: read it when next asked.
    messages: Mutex<Option<Arc<Vec<serde_json::Value>>>>,
}

impl fmt::Debug for SessionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLog")
            .field("id", &self.inner.id)
            .field("head", &self.inner.head.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl SessionLog {
    /// Opens (or creates) a session DB. Blocking; callers run it on the blocking pool.
    pub(crate) fn open(path: &Path, id: &SessionId, create: bool) -> Result<SessionLog> {
        let conn = db::open(path, create, schema::SESSION)?;
        let stored: Option<String> = conn
            .query_row(
                "SELECT value FROM settings WHERE key = 'session_id'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        match stored {
            Some(stored) if stored == id.as_str() => {}
            None if create => {
                conn.execute(
                    "INSERT INTO settings (key, value) VALUES ('session_id', ?1)",
                    [id.as_str()],
                )?;
            }
            other => {
                return Err(Error::Invalid(format!(
                    "{} belongs to session {other:?}, not {id}",
                    path.display()
                )));
            }
        }
        let head: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |row| {
            row.get(0)
        })?;
        let (live, _) = broadcast::channel(BROADCAST_CAPACITY);
        Ok(SessionLog {
            inner: Arc::new(LogInner {
                id: id.clone(),
                conn: Mutex::new(conn),
                head: AtomicU64::new(u64::try_from(head).unwrap_or(0)),
                live,
                messages: Mutex::new(None),
            }),
        })
    }

    pub(crate) fn from_inner(inner: Arc<LogInner>) -> SessionLog {
        SessionLog { inner }
    }

    pub(crate) fn downgrade(&self) -> Weak<LogInner> {
        Arc::downgrade(&self.inner)
    }

    pub fn id(&self) -> &SessionId {
        &self.inner.id
    }

    /// Runs `f` with the session's connection on the blocking pool.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        blocking(move || f(&lock(&inner.conn))).await
    }

    /// All writes go through here: runs `f` in one transaction; events pushed with `w.event(e)`
    /// get the next seqs and `at_ms = now`; after COMMIT (durable) they are broadcast to
    /// subscribers in seq order, and returned. If `f` or the commit fails, the transaction rolls
    /// back, nothing is broadcast and the seq does not advance.
    ///
    /// `f` runs on a blocking thread while it holds the session's connection: keep it to
    /// database work (no waiting on the network or on other sessions).
    pub async fn write<T, F>(&self, f: F) -> Result<(T, Vec<Arc<StoredEvent>>)>
    where
        T: Send + 'static,
        F: FnOnce(&mut SessionWriter<'_>) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        blocking(move || write_now(&inner, f)).await
    }

    /// [`SessionLog::write`] on this thread: for a caller already on the blocking pool (a
    /// session's first events, written before its index row commits).
    pub(crate) fn write_now<T, F>(&self, f: F) -> Result<(T, Vec<Arc<StoredEvent>>)>
    where
        F: FnOnce(&mut SessionWriter<'_>) -> Result<T>,
    {
        write_now(&self.inner, f)
    }

    /// Appends one event; shorthand for a `write` that does nothing else.
    pub async fn append(&self, event: Event) -> Result<Arc<StoredEvent>> {
        let ((), mut events) = self
            .write(move |w| {
                w.event(event)?;
                Ok(())
            })
            .await?;
        Ok(events
            .pop()
            .expect("a write that pushed one event returns one event"))
    }

    /// The seq of the last committed event (0 for an empty log), from memory.
    pub async fn head_seq(&self) -> u64 {
        self.inner.head.load(Ordering::SeqCst)
    }

    /// Up to `limit` events with seq > `after_seq`, in seq order.
    pub async fn read_after(&self, after_seq: u64, limit: usize) -> Result<Vec<EventEnvelope>> {
        let events = self
            .read(move |conn| read_stored(conn, after_seq, limit))
            .await?;
        Ok(events.into_iter().map(|e| e.envelope).collect())
    }

    /// Every event with seq > `after_seq`: the backlog from SQLite, then live ones. See
    /// [`Subscription::next`].
    pub fn subscribe(&self, after_seq: u64) -> Subscription {
        // Order matters: join the broadcast first, then read the head. Any event broadcast
        // before we joined had its seq stored in `head` before that, so it is ≤ the head we read
        // and the backlog read covers it; anything later arrives on the receiver.
        let live = self.inner.live.subscribe();
        let head = self.inner.head.load(Ordering::SeqCst);
        Subscription::new(self.downgrade(), live, after_seq, head)
    }

    /// Every prompt, oldest first.
    pub async fn prompts(&self) -> Result<Vec<PromptInfo>> {
        self.read(|conn| writer::prompts(conn, None)).await
    }

    /// The newest `limit` prompts, oldest first, texts cut at `max_chars` characters (marked
    /// `text_truncated`), and the number of prompts in all: what a session's detail shows,
    /// read in one bounded query however long the session runs.
    pub async fn recent_prompts(
        &self,
        limit: usize,
        max_chars: usize,
    ) -> Result<(Vec<PromptInfo>, usize)> {
        self.read(move |conn| writer::recent_prompts(conn, limit, max_chars))
            .await
    }

    pub async fn prompt(&self, id: &PromptId) -> Result<PromptInfo> {
        let id = id.clone();
        self.read(move |conn| writer::prompt(conn, &id)).await
    }

    /// The model conversation, oldest first, each message as it was pushed.
    /// The model conversation, oldest message first: from memory after the first read.
    pub async fn messages(&self) -> Result<Arc<Vec<serde_json::Value>>> {
        let inner = self.inner.clone();
        blocking(move || {
            let conn = lock(&inner.conn);
            let mut cached = lock(&inner.messages);
            if let Some(messages) = &*cached {
                return Ok(messages.clone());
            }
            let messages = Arc::new(writer::messages(&conn)?);
            *cached = Some(messages.clone());
            Ok(messages)
        })
        .await
    }

    pub async fn delivery_mode(&self) -> Result<DeliveryMode> {
        self.read(writer::delivery_mode).await
    }

    /// Remembers the sandbox the session took from a warm pool (its labels name the pool, not
    /// the session), so a restarted engine can give it back to the session.
    pub async fn set_claimed_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let sandbox_id = sandbox_id.to_string();
        let inner = self.inner.clone();
        blocking(move || {
            lock(&inner.conn).execute(
                "INSERT INTO settings (key, value) VALUES ('claimed_sandbox', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [sandbox_id],
            )?;
            Ok(())
        })
        .await
    }

    /// The sandbox recorded by [`SessionLog::set_claimed_sandbox`], if any.
    pub async fn claimed_sandbox(&self) -> Result<Option<String>> {
        self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT value FROM settings WHERE key = 'claimed_sandbox'",
                    [],
                    |row| row.get(0),
                )
                .optional()?)
        })
        .await
    }

    /// Records a snapshot of the session's sandbox; its parent is the newest one before it.
    pub async fn record_snapshot(&self, snapshot: &SessionSnapshot) -> Result<()> {
        let snapshot = snapshot.clone();
        let layers = serde_json::to_string(&snapshot.layers)?;
        let inner = self.inner.clone();
        blocking(move || {
            let conn = lock(&inner.conn);
            conn.execute(
                "INSERT INTO snapshots (id, parent, prompt_id, layers, size_bytes, at_ms,
                                        base_layers)
                 VALUES (?1, (SELECT id FROM snapshots ORDER BY pos DESC LIMIT 1), ?2, ?3, ?4, ?5,
                         ?6)",
                rusqlite::params![
                    snapshot.id,
                    snapshot.prompt_id.as_ref().map(|p| p.as_str().to_string()),
                    layers,
                    snapshot.size_bytes as i64,
                    crate::db::now_ms(),
                    snapshot.base_layers.map(|n| n as i64),
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// The newest snapshot, if the session has one.
    pub async fn latest_snapshot(&self) -> Result<Option<SessionSnapshot>> {
        self.read(|conn| {
            let row = conn
                .query_row(
                    "SELECT id, parent, prompt_id, layers, size_bytes, base_layers FROM snapshots
                     ORDER BY pos DESC LIMIT 1",
                    [],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, Option<String>>(1)?,
                            row.get::<_, Option<String>>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, i64>(4)?,
                            row.get::<_, Option<i64>>(5)?,
                        ))
                    },
                )
                .optional()?;
            let Some((id, parent, prompt_id, layers, size, base)) = row else {
                return Ok(None);
            };
            Ok(Some(SessionSnapshot {
                id,
                parent,
                prompt_id: prompt_id.as_deref().and_then(PromptId::parse),
                layers: serde_json::from_str(&layers)?,
                size_bytes: size as u64,
                base_layers: base.map(|n| n as usize),
            }))
        })
        .await
    }
}

/// A snapshot of a session's sandbox (its lineage lives in the session's DB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSnapshot {
    pub id: String,
    /// The snapshot recorded before this one.
    pub parent: Option<String>,
    /// The prompt after which it was taken.
    pub prompt_id: Option<PromptId>,
    /// The sandbox image to restore it: read-only layers, bottom first.
    pub layers: Vec<PathBuf>,
    pub size_bytes: u64,
    /// How many of `layers` (from the bottom) are what the session started from (its image,
    /// or its clone); the rest are its own snapshots. `None`: not known.
    pub base_layers: Option<usize>,
}

/// Up to `limit` stored events after `after_seq`. The stored text becomes `json` as it is, so a
/// replay serializes nothing.
pub(crate) fn read_stored(
    conn: &Connection,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>> {
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt =
        conn.prepare_cached("SELECT envelope FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
    let rows = stmt.query_map([after, limit], |row| row.get::<_, String>(0))?;
    let mut events = Vec::new();
    for text in rows {
        let text = text?;
        let envelope: EventEnvelope = serde_json::from_str(&text)?;
        events.push(StoredEvent::new(envelope, text));
    }
    Ok(events)
}

/// One write transaction on the session's connection (see [`SessionLog::write`]).
fn write_now<T, F>(inner: &LogInner, f: F) -> Result<(T, Vec<Arc<StoredEvent>>)>
where
    F: FnOnce(&mut SessionWriter<'_>) -> Result<T>,
{
    let mut conn = lock(&inner.conn);
    let head = inner.head.load(Ordering::SeqCst);
    // IMMEDIATE takes the write lock up front, so an outside reader (a backup) cannot
    // make the commit fail with a lock upgrade error half-way through `f`.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut w = SessionWriter::new(tx, head);
    let value = f(&mut w)?;
    let (events, messages) = w.commit()?;
    // Under the connection lock, as the read that filled it was.
    match messages {
        MessagesChange::None => {}
        MessagesChange::Pushed(pushed) => {
            if let Some(cached) = lock(&inner.messages).as_mut() {
                Arc::make_mut(cached).extend(pushed);
            }
        }
        MessagesChange::Rewritten => *lock(&inner.messages) = None,
    }
    if let Some(last) = events.last() {
        inner.head.store(last.seq(), Ordering::SeqCst);
    }
    // Still under the connection lock: the next write cannot broadcast before these.
    // A send error only means nobody listens right now.
    for event in &events {
        let _ = inner.live.send(event.clone());
    }
    Ok((value, events))
}
