//! Plan mode in a session DB: the `plan_mode` setting (every prompt plan-first) and the plans
//! the agent proposed, each decided once. The events (`plan_proposed`, `plan_approved`,
//! `plan_rejected`) are the history; this table is what a decision checks inside its
//! transaction, so two people deciding at once cannot both win, and a pending plan survives a
//! restart with everything needed to approve it.

use crate::db::{now_ms, parse_col};
use crate::error::{Error, Result};
use crate::log::SessionLog;
use crate::writer::SessionWriter;
use kiln_core::{PlanId, PromptId};
use rusqlite::{Connection, OptionalExtension, params};

/// Where a plan is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanState {
    /// Proposed, waiting for a participant's decision.
    Pending,
    Approved,
    Rejected,
}

impl PlanState {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanState::Pending => "pending",
            PlanState::Approved => "approved",
            PlanState::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> Option<PlanState> {
        [PlanState::Pending, PlanState::Approved, PlanState::Rejected]
            .into_iter()
            .find(|state| state.as_str() == s)
    }
}

/// One proposed plan as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRecord {
    pub id: PlanId,
    /// The plan-first prompt that proposed it.
    pub prompt_id: PromptId,
    pub title: Option<String>,
    /// The plan as the agent proposed it (Markdown).
    pub plan: String,
    pub state: PlanState,
    pub created_at_ms: i64,
}

const PLAN_COLUMNS: &str = "id, prompt_id, title, plan, status, created_at_ms";

fn plan_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PlanRecord> {
    Ok(PlanRecord {
        id: parse_col(row, 0, PlanId::parse)?,
        prompt_id: parse_col(row, 1, PromptId::parse)?,
        title: row.get(2)?,
        plan: row.get(3)?,
        state: parse_col(row, 4, PlanState::parse)?,
        created_at_ms: row.get(5)?,
    })
}

fn plan_mode(conn: &Connection) -> Result<bool> {
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = 'plan_mode'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    match value.as_deref() {
        None | Some("off") => Ok(false),
        Some("on") => Ok(true),
        Some(v) => Err(Error::Invalid(format!("stored plan mode {v:?} is unknown"))),
    }
}

fn plan(conn: &Connection, id: &PlanId) -> Result<PlanRecord> {
    let sql = format!("SELECT {PLAN_COLUMNS} FROM plans WHERE id = ?1");
    conn.query_row(&sql, [id.as_str()], plan_row)
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("plan {id}")))
}

fn plans(conn: &Connection, state: PlanState) -> Result<Vec<PlanRecord>> {
    let sql = format!("SELECT {PLAN_COLUMNS} FROM plans WHERE status = ?1 ORDER BY pos");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([state.as_str()], plan_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

impl SessionWriter<'_> {
    pub fn plan_mode(&self) -> Result<bool> {
        plan_mode(&self.tx)
    }

    pub fn set_plan_mode(&mut self, on: bool) -> Result<()> {
        self.tx.execute(
            "INSERT INTO settings (key, value) VALUES ('plan_mode', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [if on { "on" } else { "off" }],
        )?;
        Ok(())
    }

    /// Records a proposed plan, pending; `prompt` must exist.
    pub fn insert_plan(
        &mut self,
        id: &PlanId,
        prompt: &PromptId,
        title: Option<&str>,
        plan: &str,
    ) -> Result<()> {
        self.tx.execute(
            "INSERT INTO plans (id, prompt_id, title, plan, status, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
            params![id.as_str(), prompt.as_str(), title, plan, now_ms()],
        )?;
        Ok(())
    }

    /// The plan; `NotFound` when the session has none of that id.
    pub fn plan(&self, id: &PlanId) -> Result<PlanRecord> {
        plan(&self.tx, id)
    }

    /// Plans waiting for a decision, oldest first.
    pub fn pending_plans(&self) -> Result<Vec<PlanRecord>> {
        plans(&self.tx, PlanState::Pending)
    }

    /// Decides a pending plan: `Conflict` (saying how it was decided) when it is not pending.
    pub fn decide_plan(&mut self, id: &PlanId, state: PlanState) -> Result<PlanRecord> {
        let record = self.plan(id)?;
        if record.state != PlanState::Pending {
            return Err(Error::Conflict(format!(
                "plan {id} was already {}; a plan is decided once",
                record.state.as_str()
            )));
        }
        self.tx.execute(
            "UPDATE plans SET status = ?2 WHERE id = ?1",
            params![id.as_str(), state.as_str()],
        )?;
        Ok(PlanRecord { state, ..record })
    }
}

impl SessionLog {
    pub async fn plan_mode(&self) -> Result<bool> {
        self.read(plan_mode).await
    }

    pub async fn plan(&self, id: &PlanId) -> Result<PlanRecord> {
        let id = id.clone();
        self.read(move |conn| plan(conn, &id)).await
    }

    /// Plans waiting for a decision, oldest first.
    pub async fn pending_plans(&self) -> Result<Vec<PlanRecord>> {
        self.read(|conn| plans(conn, PlanState::Pending)).await
    }
}
