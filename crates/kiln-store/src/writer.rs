//! `SessionWriter`: what a [`crate::SessionLog::write`] closure may do inside its transaction,
//! plus the read queries on a session DB that both the writer and the log's async readers use.
//!
//! The writer hands out seqs itself (head + 1, head + 2, ...) rather than asking SQLite, because
//! the head is known under the lock and a rolled-back transaction must not consume any.

use crate::db::{now_ms, parse_col};
use crate::error::{Error, Result};
use crate::log::StoredEvent;
use kiln_core::{PromptId, UserId};
use kiln_protocol::api::{DeliveryMode, Event, EventEnvelope, PromptInfo, PromptStatus, UserRef};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::fmt;
use std::sync::Arc;

/// Wraps the transaction of one [`crate::SessionLog::write`]. Nothing it does is visible to
/// others, or broadcast, until the closure returns `Ok` and the commit succeeds.
pub struct SessionWriter<'a> {
    pub(crate) tx: Transaction<'a>,
    /// The head when the transaction began; the events pushed so far follow it without gaps.
    head: u64,
    events: Vec<Arc<StoredEvent>>,
    /// What this write did to the conversation, for the log's copy in memory.
    pub(crate) messages: MessagesChange,
}

/// How a write changed the conversation: appended messages (the common case, applied to the
/// copy in memory) or anything else (the copy is dropped and read again when next needed).
#[derive(Debug, Default)]
pub(crate) enum MessagesChange {
    #[default]
    None,
    Pushed(Vec<serde_json::Value>),
    Rewritten,
}

impl MessagesChange {
    fn pushed(&mut self, message: &serde_json::Value) {
        match self {
            MessagesChange::None => *self = MessagesChange::Pushed(vec![message.clone()]),
            MessagesChange::Pushed(messages) => messages.push(message.clone()),
            MessagesChange::Rewritten => {}
        }
    }
}

impl fmt::Debug for SessionWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionWriter")
            .field("head", &self.head)
            .field("pending_events", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl<'a> SessionWriter<'a> {
    pub(crate) fn new(tx: Transaction<'a>, head: u64) -> SessionWriter<'a> {
        SessionWriter {
            tx,
            head,
            events: Vec::new(),
            messages: MessagesChange::None,
        }
    }

    /// The transaction, for the writer's methods kept in other files (`spend.rs`).
    pub(crate) fn tx(&self) -> &Transaction<'a> {
        &self.tx
    }

    /// Commits and returns the events pushed, in seq order, and what changed in the
    /// conversation.
    pub(crate) fn commit(self) -> Result<(Vec<Arc<StoredEvent>>, MessagesChange)> {
        self.tx.commit()?;
        Ok((self.events, self.messages))
    }

    /// Appends an event; it gets the next seq and `at_ms = now`. Returns the seq.
    pub fn event(&mut self, event: Event) -> Result<u64> {
        self.event_at(event, now_ms())
    }

    /// [`SessionWriter::event`] with a given time: for generated fixtures (tests and
    /// benchmarks) and imports of history; live events use `event`.
    pub fn event_at(&mut self, event: Event, at_ms: i64) -> Result<u64> {
        let seq = self.head + self.events.len() as u64 + 1;
        let envelope = EventEnvelope { seq, at_ms, event };
        let json = serde_json::to_string(&envelope)?;
        self.tx
            .prepare_cached("INSERT INTO events (seq, at_ms, envelope) VALUES (?1, ?2, ?3)")?
            .execute(params![
                i64::try_from(seq).unwrap_or(i64::MAX),
                envelope.at_ms,
                json
            ])?;
        self.events.push(Arc::new(StoredEvent::new(envelope, json)));
        Ok(seq)
    }

    /// The seq the next `event` call will get, minus one: the head as seen inside this write.
    pub fn head_seq(&self) -> u64 {
        self.head + self.events.len() as u64
    }

    /// Records a new prompt. A prompt id that exists already is a `Conflict`.
    pub fn insert_prompt(
        &mut self,
        id: &PromptId,
        author: &UserRef,
        text: &str,
        status: PromptStatus,
    ) -> Result<()> {
        self.insert_prompt_with(id, author, text, status, false)
    }

    /// Records a new prompt, plan-first (`plan`) or not.
    pub fn insert_prompt_with(
        &mut self,
        id: &PromptId,
        author: &UserRef,
        text: &str,
        status: PromptStatus,
        plan: bool,
    ) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO prompts (id, author_id, author_name, text, status, created_at_ms, plan)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id.as_str(),
                    author.id.as_str(),
                    author.name,
                    text,
                    status.as_str(),
                    now_ms(),
                    plan
                ],
            )
            .map_err(Error::from)
            .map_err(|e| match e {
                e if e.is_unique_violation() => Error::Conflict(format!("prompt {id} exists")),
                e => e,
            })?;
        Ok(())
    }

    pub fn set_prompt_status(&mut self, id: &PromptId, status: PromptStatus) -> Result<()> {
        let changed = self.tx.execute(
            "UPDATE prompts SET status = ?2 WHERE id = ?1",
            params![id.as_str(), status.as_str()],
        )?;
        if changed == 0 {
            return Err(Error::NotFound(format!("prompt {id}")));
        }
        Ok(())
    }

    /// Prompts with this status, oldest first (with `Queued`: the queue in order).
    pub fn prompts_with_status(&self, status: PromptStatus) -> Result<Vec<PromptInfo>> {
        prompts(&self.tx, Some(status))
    }

    pub fn prompt(&self, id: &PromptId) -> Result<PromptInfo> {
        prompt(&self.tx, id)
    }

    /// Appends a message of the model conversation, belonging to `prompt` (which must exist).
    pub fn push_message(&mut self, prompt: &PromptId, message: &serde_json::Value) -> Result<()> {
        self.tx.execute(
            "INSERT INTO messages (prompt_id, message, at_ms) VALUES (?1, ?2, ?3)",
            params![prompt.as_str(), serde_json::to_string(message)?, now_ms()],
        )?;
        self.messages.pushed(message);
        Ok(())
    }

    /// Forgets `prompt`'s request when the model never answered it (the prompt's only message
    /// is the newest one): the conversation goes back to how it was, so the next prompt does not
    /// carry it along and a retry sends it once. Returns whether it did.
    pub fn forget_unanswered(&mut self, prompt: &PromptId) -> Result<bool> {
        let removed = self.tx.execute(
            "DELETE FROM messages
             WHERE pos = (SELECT max(pos) FROM messages)
               AND prompt_id = ?1
               AND (SELECT count(*) FROM messages WHERE prompt_id = ?1) = 1",
            params![prompt.as_str()],
        )?;
        if removed == 1 {
            self.messages = MessagesChange::Rewritten;
        }
        Ok(removed == 1)
    }

    /// Replaces the newest message of the conversation (insert mode adds a late prompt to the
    /// user message the model has not seen yet, so user and assistant keep alternating).
    pub fn replace_last_message(&mut self, message: &serde_json::Value) -> Result<()> {
        let changed = self.tx.execute(
            "UPDATE messages SET message = ?1 WHERE rowid = (SELECT max(rowid) FROM messages)",
            params![serde_json::to_string(message)?],
        )?;
        if changed == 0 {
            return Err(Error::NotFound("a message to replace".into()));
        }
        self.messages = MessagesChange::Rewritten;
        Ok(())
    }

    pub fn set_delivery_mode(&mut self, mode: DeliveryMode) -> Result<()> {
        self.tx.execute(
            "INSERT INTO settings (key, value) VALUES ('delivery', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [mode.as_str()],
        )?;
        Ok(())
    }

    pub fn delivery_mode(&self) -> Result<DeliveryMode> {
        delivery_mode(&self.tx)
    }
}

const PROMPT_COLUMNS: &str = "id, author_id, author_name, text, status, created_at_ms, plan";

fn prompt_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PromptInfo> {
    Ok(PromptInfo {
        id: parse_col(row, 0, PromptId::parse)?,
        author: UserRef {
            id: parse_col(row, 1, UserId::parse)?,
            name: row.get(2)?,
        },
        text: row.get(3)?,
        text_truncated: false,
        status: parse_col(row, 4, PromptStatus::parse)?,
        created_at_ms: row.get(5)?,
        plan: row.get(6)?,
    })
}

/// Prompts oldest first, all of them or those with one status.
pub(crate) fn prompts(conn: &Connection, status: Option<PromptStatus>) -> Result<Vec<PromptInfo>> {
    let sql = format!(
        "SELECT {PROMPT_COLUMNS} FROM prompts WHERE ?1 IS NULL OR status = ?1 ORDER BY pos"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([status.map(PromptStatus::as_str)], prompt_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The newest `limit` prompts, oldest first, each text cut at `max_chars` characters (SQLite's
/// `substr` and `length` count characters), and how many prompts there are in all.
pub(crate) fn recent_prompts(
    conn: &Connection,
    limit: usize,
    max_chars: usize,
) -> Result<(Vec<PromptInfo>, usize)> {
    let sql = "SELECT id, author_id, author_name, substr(text, 1, ?2), status, created_at_ms,
                      plan, length(text) > ?2
               FROM (SELECT * FROM prompts ORDER BY pos DESC LIMIT ?1) ORDER BY pos";
    let mut stmt = conn.prepare_cached(sql)?;
    let (limit, max_chars) = (
        i64::try_from(limit).unwrap_or(i64::MAX),
        i64::try_from(max_chars).unwrap_or(i64::MAX),
    );
    let rows = stmt.query_map(params![limit, max_chars], |row| {
        let mut prompt = prompt_row(row)?;
        prompt.text_truncated = row.get(7)?;
        Ok(prompt)
    })?;
    let prompts = rows.collect::<rusqlite::Result<_>>()?;
    let total: i64 = conn.query_row("SELECT count(*) FROM prompts", [], |row| row.get(0))?;
    Ok((prompts, usize::try_from(total).unwrap_or(0)))
}

pub(crate) fn prompt(conn: &Connection, id: &PromptId) -> Result<PromptInfo> {
    let sql = format!("SELECT {PROMPT_COLUMNS} FROM prompts WHERE id = ?1");
    conn.query_row(&sql, [id.as_str()], prompt_row)
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("prompt {id}")))
}

pub(crate) fn messages(conn: &Connection) -> Result<Vec<serde_json::Value>> {
    let mut stmt = conn.prepare_cached("SELECT message FROM messages ORDER BY pos")?;
    let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
    rows.map(|text| Ok(serde_json::from_str(&text?)?)).collect()
}

pub(crate) fn delivery_mode(conn: &Connection) -> Result<DeliveryMode> {
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = 'delivery'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    match value {
        None => Ok(DeliveryMode::default()),
        Some(v) => DeliveryMode::parse(&v)
            .ok_or_else(|| Error::Invalid(format!("stored delivery mode {v:?} is unknown"))),
    }
}
