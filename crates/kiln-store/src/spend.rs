//! What model requests cost, as the store keeps it: a session's running total (its `spend`
//! setting, added to in the transaction that appends the `model_usage` event, so reading it is
//! O(1) and never a scan of the log), the dollars spent per UTC day per user and per repo in
//! `control.db` (what daily budgets are checked against), and the rewrite of a compacted
//! conversation.

use crate::error::{Error, Result};
use crate::log::SessionLog;
use crate::store::Store;
use crate::writer::SessionWriter;
use kiln_core::{PromptId, UserId};
use kiln_protocol::api::Usage;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// A session's usage as its `spend` setting holds it (pinned here, apart from the wire type).
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredSpend {
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
    cost_usd: Option<f64>,
}

fn read_spend(conn: &Connection) -> Result<Usage> {
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = 'spend'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    let stored: StoredSpend = match value {
        Some(json) => serde_json::from_str(&json)?,
        None => StoredSpend::default(),
    };
    Ok(Usage {
        input_tokens: stored.input_tokens,
        output_tokens: stored.output_tokens,
        cache_read_tokens: stored.cache_read_tokens,
        cache_write_tokens: stored.cache_write_tokens,
        cost_usd: stored.cost_usd,
    })
}

impl SessionWriter<'_> {
    /// Adds `usage` to the session's running total and returns the new total.
    pub fn add_spend(&mut self, usage: &Usage) -> Result<Usage> {
        let mut total = read_spend(self.tx())?;
        total.add(usage);
        let stored = StoredSpend {
            input_tokens: total.input_tokens,
            output_tokens: total.output_tokens,
            cache_read_tokens: total.cache_read_tokens,
            cache_write_tokens: total.cache_write_tokens,
            cost_usd: total.cost_usd,
        };
        self.tx().execute(
            "INSERT INTO settings (key, value) VALUES ('spend', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [serde_json::to_string(&stored)?],
        )?;
        Ok(total)
    }

    /// Replaces the oldest `summarised` messages by `summary` (belonging to `prompt`) and the
    /// rest, in order, by `kept` (their prompts unchanged). A conversation that is not
    /// `summarised + kept.len()` messages long changed meanwhile: `Conflict`.
    pub fn compact_messages(
        &mut self,
        prompt: &PromptId,
        summarised: usize,
        summary: &serde_json::Value,
        kept: &[serde_json::Value],
    ) -> Result<()> {
        self.messages = crate::writer::MessagesChange::Rewritten;
        let positions: Vec<i64> = self
            .tx()
            .prepare("SELECT pos FROM messages ORDER BY pos")?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if summarised == 0 || positions.len() != summarised + kept.len() {
            return Err(Error::Conflict(format!(
                "the conversation has {} messages, not the {} being compacted",
                positions.len(),
                summarised + kept.len()
            )));
        }
        let last_summarised = positions[summarised - 1];
        self.tx().execute(
            "DELETE FROM messages WHERE pos <= ?1",
            params![last_summarised],
        )?;
        self.tx().execute(
            "INSERT INTO messages (pos, prompt_id, message, at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![
                last_summarised,
                prompt.as_str(),
                serde_json::to_string(summary)?,
                kiln_core::now_ms()
            ],
        )?;
        for (pos, message) in positions[summarised..].iter().zip(kept) {
            self.tx().execute(
                "UPDATE messages SET message = ?1 WHERE pos = ?2",
                params![serde_json::to_string(message)?, pos],
            )?;
        }
        Ok(())
    }
}

impl SessionLog {
    /// The session's usage so far: the sum of its `model_usage` events.
    pub async fn spend(&self) -> Result<Usage> {
        self.read(read_spend).await
    }
}

/// Dollars spent on one UTC day by a user and on a repo.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DailySpend {
    pub user_usd: f64,
    pub repo_usd: f64,
}

fn daily(conn: &Connection, day: &str, user: &UserId, repo: &str) -> Result<DailySpend> {
    let one = |kind: &str, key: &str| -> Result<f64> {
        Ok(conn
            .query_row(
                "SELECT cost_usd FROM daily_spend WHERE day = ?1 AND kind = ?2 AND key = ?3",
                params![day, kind, key],
                |row| row.get(0),
            )
            .optional()?
            .unwrap_or(0.0))
    };
    Ok(DailySpend {
        user_usd: one("user", user.as_str())?,
        repo_usd: one("repo", repo)?,
    })
}

impl Store {
    /// Adds `cost_usd` to what `user` and `repo` spent on `day` (`YYYY-MM-DD`, UTC; the caller
    /// says which day, so tests need no clock) and returns the new sums. Days before the
    /// previous week are dropped on the way.
    pub async fn add_daily_spend(
        &self,
        day: &str,
        user: &UserId,
        repo: &str,
        cost_usd: f64,
    ) -> Result<DailySpend> {
        let (day, user, repo) = (day.to_string(), user.clone(), repo.to_string());
        self.control(move |conn| {
            let tx = conn.transaction()?;
            for (kind, key) in [("user", user.as_str()), ("repo", repo.as_str())] {
                tx.execute(
                    "INSERT INTO daily_spend (day, kind, key, cost_usd) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (day, kind, key) DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd",
                    params![day, kind, key, cost_usd],
                )?;
            }
            // Days sort as text; anything a week older than `day` is no budget's business.
            tx.execute(
                "DELETE FROM daily_spend WHERE day < date(?1, '-7 days')",
                params![day],
            )?;
            let spent = daily(&tx, &day, &user, &repo)?;
            tx.commit()?;
            Ok(spent)
        })
        .await
    }

    /// What `user` and `repo` spent on `day` (`YYYY-MM-DD`, UTC).
    pub async fn daily_spend(&self, day: &str, user: &UserId, repo: &str) -> Result<DailySpend> {
        let (day, user, repo) = (day.to_string(), user.clone(), repo.to_string());
        self.control(move |conn| daily(conn, &day, &user, &repo))
            .await
    }
}
