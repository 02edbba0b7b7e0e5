//! The audit log in `control.db`: appended to, read in pages, never changed (triggers refuse
//! updates and deletes).

use crate::Store;
use crate::error::{Error, Result};
use kiln_core::{UserId, now_ms};
use kiln_protocol::api::{AuditAction, AuditEntry, AuditPage, UserRef};
use rusqlite::params;

impl Store {
    /// Appends an entry: `actor` did `action` to `target`. `detail` must never hold a secret.
    pub async fn audit(
        &self,
        actor: Option<&UserRef>,
        action: AuditAction,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        let actor = actor.map(|a| (a.id.to_string(), a.name.clone()));
        let action = action_name(action)?;
        let target = target.to_string();
        let detail = detail.to_string();
        self.control(move |conn| {
            conn.execute(
                "INSERT INTO audit (at_ms, actor_id, actor_name, action, target, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    now_ms(),
                    actor.as_ref().map(|a| a.0.as_str()),
                    actor.as_ref().map(|a| a.1.as_str()),
                    action,
                    target,
                    detail
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Entries after `after`, oldest first, at most `limit`.
    pub async fn audit_page(&self, after: i64, limit: usize) -> Result<AuditPage> {
        self.control(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT seq, at_ms, actor_id, actor_name, action, target, detail FROM audit
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit as i64], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, String>(6)?,
                ))
            })?;
            let mut entries = Vec::new();
            for row in rows {
                let (seq, at_ms, actor_id, actor_name, action, target, detail) = row?;
                let actor = match (actor_id, actor_name) {
                    (Some(id), Some(name)) => Some(UserRef {
                        id: UserId::parse(&id)
                            .ok_or_else(|| Error::Invalid(format!("audit {seq}: bad actor")))?,
                        name,
                    }),
                    _ => None,
                };
                entries.push(AuditEntry {
                    seq,
                    at_ms,
                    actor,
                    action: serde_json::from_value(serde_json::Value::String(action))
                        .map_err(|e| Error::Invalid(format!("audit {seq}: {e}")))?,
                    target,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                });
            }
            let next_after = entries.last().map_or(after, |e| e.seq);
            Ok(AuditPage {
                entries,
                next_after,
            })
        })
        .await
    }
}

/// The action as stored: its API name.
fn action_name(action: AuditAction) -> Result<String> {
    match serde_json::to_value(action) {
        Ok(serde_json::Value::String(name)) => Ok(name),
        _ => Err(Error::Invalid("an audit action without a name".into())),
    }
}
