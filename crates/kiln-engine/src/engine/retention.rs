//! Retention (`[retention]` in kiln.toml): sessions nobody has touched for a while are archived,
//! and later deleted; the garbage collector then removes the layers they held. Age is idleness —
//! the time since the newest event (but kiln's own sandbox status changes) of the session and of
//! every sub-session under it — so a
//! session someone still works in, or whose pull request is still reviewed, is never old.
//! A session with an open pull request is archived but not deleted: a review comment on it
//! must still find its session. Each archive and delete is audited with kiln as the actor.

use super::Engine;
use crate::Result;
use kiln_core::{SessionId, UserId, now_ms};
use kiln_protocol::api::{AuditAction, Event, UserRef};
use kiln_store::SessionRow;
use std::time::Duration;

/// How long sessions are kept (`kiln.toml` `[retention]`); `None`: forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// A session idle this long is archived: it leaves default listings, its sandbox is
    /// snapshotted and stopped, and the next prompt brings it back.
    pub archive_after: Option<Duration>,
    /// A session idle this long is deleted with its log, sandbox and snapshots.
    pub delete_after: Option<Duration>,
}

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub archived: Vec<SessionId>,
    pub deleted: Vec<SessionId>,
}

/// Whom events of retention's stops name: kiln itself, not a person.
fn kiln_itself() -> UserRef {
    UserRef {
        id: UserId::parse("u-0000000000000000").expect("a well-formed id"),
        name: "kiln".to_string(),
    }
}

impl Engine {
    /// Applies `[retention]` now: deletes sessions idle past `delete_after`, then archives
    /// those idle past `archive_after` (their sandboxes snapshotted and stopped). A session
    /// that is working is left for a later pass; one that cannot be handled is logged and
    /// skipped.
    pub async fn apply_retention(&self) -> Result<RetentionReport> {
        let policy = self.inner.config.retention;
        let mut report = RetentionReport::default();
        let by = kiln_itself();
        if let Some(after) = policy.delete_after {
            for (row, idle) in self.idle_sessions(after, true).await? {
                if row
                    .pull_request
                    .as_ref()
                    .is_some_and(|pr| pr.state == "open")
                {
                    continue;
                }
                match self.delete_session(&row.id, &by).await {
                    Ok(()) => {
                        self.audit_retention(AuditAction::SessionDeleted, &row, idle)
                            .await;
                        report.deleted.push(row.id);
                    }
                    Err(e) => {
                        tracing::warn!(session = %row.id, error = %e, "retention cannot delete a session")
                    }
                }
            }
        }
        if let Some(after) = policy.archive_after {
            for (row, idle) in self.idle_sessions(after, false).await? {
                match self.archive_session(&row.id, &by).await {
                    Ok(()) => {
                        self.audit_retention(AuditAction::SessionArchived, &row, idle)
                            .await;
                        report.archived.push(row.id);
                    }
                    Err(e) => {
                        tracing::warn!(session = %row.id, error = %e, "retention cannot archive a session")
                    }
                }
            }
        }
        if report != RetentionReport::default() {
            tracing::info!(
                archived = report.archived.len(),
                deleted = report.deleted.len(),
                "retention pass"
            );
        }
        Ok(report)
    }

    /// Top-level sessions (archived ones too with `archived`) whose tree has been idle for
    /// `after`, with how long, none of them working now.
    async fn idle_sessions(
        &self,
        after: Duration,
        archived: bool,
    ) -> Result<Vec<(SessionRow, Duration)>> {
        let now = now_ms();
        let cutoff = now.saturating_sub(i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
        let mut idle = Vec::new();
        for row in self
            .inner
            .store
            .retention_candidates(cutoff, archived)
            .await?
        {
            let mut tree = vec![row.id.clone()];
            tree.extend(self.descendants_deepest_first(&row.id).await?);
            if tree.iter().any(|id| self.working_now(id)) {
                continue;
            }
            let mut last = row.created_at_ms;
            for id in &tree {
                last = last.max(self.last_activity_at(id).await?);
            }
            if last < cutoff {
                idle.push((row, Duration::from_millis((now - last) as u64)));
            }
        }
        Ok(idle)
    }

    /// When someone (or something on their behalf) last did something in the session: its
    /// newest event other than sandbox status changes, which kiln makes on its own — archiving
    /// itself stops the sandbox, and that must not make the session young again.
    async fn last_activity_at(&self, session: &SessionId) -> Result<i64> {
        const PAGE: u64 = 64;
        let log = self.inner.store.open_session(session).await?;
        let mut end = log.head_seq().await;
        while end > 0 {
            let start = end.saturating_sub(PAGE);
            let page = log.read_after(start, (end - start) as usize).await?;
            if let Some(e) = page
                .iter()
                .rev()
                .find(|e| !matches!(e.event, Event::SandboxStatus { .. }))
            {
                return Ok(e.at_ms);
            }
            end = start;
        }
        Ok(0)
    }

    async fn audit_retention(&self, action: AuditAction, row: &SessionRow, idle: Duration) {
        let detail = serde_json::json!({
            "reason": "retention",
            "repo": row.repo,
            "idle_days": idle.as_secs_f64() / 86_400.0,
        });
        if let Err(e) = self
            .inner
            .store
            .audit(None, action, row.id.as_str(), detail)
            .await
        {
            tracing::warn!(session = %row.id, error = %e, "cannot audit a retention action");
        }
    }
}
