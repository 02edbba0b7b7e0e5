//! Taking sessions and repos apart, and who is in a session: stopping with a report of what
//! was stopped, archiving and deleting sessions (their work stopped, their sandbox destroyed,
//! their directory and newest snapshot removed; the GC follows for the rest), deleting repos
//! (their sessions, warm pool, mirror and image records), the events of participant changes,
//! and the git identity commits are made with.

use super::Engine;
use crate::{Error, Result};
use kiln_core::{PromptId, Role, SessionId, UserId};
use kiln_fleet::SESSION_LABEL;
use kiln_protocol::api::{Event, PromptStatus, User, UserRef};
use kiln_sandbox::{SandboxId, SnapshotId};
use std::time::Duration;

/// Longest a delete or archive waits for a stopped prompt to wind down.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// What a stop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stopped {
    /// The prompt that was running and was told to stop.
    pub prompt: Option<PromptId>,
    /// Queued prompts cancelled (with `clear_queue`).
    pub cancelled: usize,
}

/// How a user signs commits: their display name (else their name) and email (else one made
/// from their id, which no mail server knows).
pub(crate) fn git_identity(user: &User) -> (String, String) {
    let name = if user.display_name.is_empty() {
        user.name.clone()
    } else {
        user.display_name.clone()
    };
    let email = user
        .email
        .clone()
        .unwrap_or_else(|| format!("{}@users.kiln.local", user.id));
    (name, email)
}

impl Engine {
    /// Stops the running prompt (and with `clear_queue` the queued ones) and says what that
    /// stopped: nothing, when the session was idle.
    pub async fn stop_reporting(
        &self,
        session: &SessionId,
        by: &UserRef,
        clear_queue: bool,
    ) -> Result<Stopped> {
        let actor = self.actor(session).await?;
        let prompt = actor.running_prompt();
        let cancelled = if clear_queue {
            actor
                .log
                .prompts()
                .await?
                .iter()
                .filter(|p| p.status == PromptStatus::Queued)
                .count()
        } else {
            0
        };
        actor.stop(by, clear_queue).await?;
        self.stop_descendants(session, by).await?;
        Ok(Stopped { prompt, cancelled })
    }

    /// Stops the session's work and waits (bounded) for its worker to end.
    async fn quiesce(&self, session: &SessionId, by: &UserRef) -> Result<()> {
        let actor = self.actor(session).await?;
        actor.stop(by, true).await?;
        let waited = tokio::time::timeout(STOP_WAIT, async {
            while actor.is_working() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if waited.is_err() {
            return Err(Error::NotStopped {
                session: session.clone(),
                waited: STOP_WAIT,
            });
        }
        Ok(())
    }

    /// Archives a session: its work stops, its sandbox is snapshotted and stopped (the next
    /// prompt restores it), and it leaves the default listing.
    /// Its sub-sessions are archived with it, deepest first.
    pub async fn archive_session(&self, session: &SessionId, by: &UserRef) -> Result<()> {
        for child in self.descendants_deepest_first(session).await? {
            self.archive_one(&child, by).await?;
        }
        self.archive_one(session, by).await
    }

    async fn archive_one(&self, session: &SessionId, by: &UserRef) -> Result<()> {
        self.quiesce(session, by).await?;
        self.inner.store.set_session_archived(session, true).await?;
        let actor = self.actor(session).await?;
        actor.stop_if_idle(&self.inner, Duration::ZERO).await;
        Ok(())
    }

    /// Whether the session is working or holds a sandbox now.
    pub fn is_active(&self, session: &SessionId) -> bool {
        let sessions = self.inner.sessions.lock().expect("sessions lock");
        sessions.get(session).is_some_and(|actor| actor.is_active())
    }

    /// Whether the session is running a prompt now, without opening a session that is not
    /// in memory (it is not working).
    pub(crate) fn working_now(&self, session: &SessionId) -> bool {
        let sessions = self.inner.sessions.lock().expect("sessions lock");
        sessions
            .get(session)
            .is_some_and(|actor| actor.is_working())
    }

    /// Deletes a session: stops its work, destroys its sandbox, deletes its newest snapshot
    /// (older ones were already unused; the GC removes them) and its directory and index row.
    /// Its sub-sessions are deleted with it, deepest first.
    pub async fn delete_session(&self, session: &SessionId, by: &UserRef) -> Result<()> {
        for child in self.descendants_deepest_first(session).await? {
            self.delete_one(&child, by).await?;
        }
        self.delete_one(session, by).await
    }

    async fn delete_one(&self, session: &SessionId, by: &UserRef) -> Result<()> {
        self.quiesce(session, by).await?;
        let log = self.inner.store.open_session(session).await?;
        let claimed = log.claimed_sandbox().await?;
        let snapshot = log.latest_snapshot().await?;
        drop(log);
        self.inner
            .sessions
            .lock()
            .expect("sessions lock")
            .remove(session);
        let recovered = self
            .inner
            .recovered
            .lock()
            .expect("recovered lock")
            .remove(session);
        let provider = self.inner.fleet.provider();
        let mut doomed: Vec<SandboxId> = recovered.into_iter().collect();
        for info in provider.list().await? {
            let labelled =
                info.spec.labels.get(SESSION_LABEL).map(String::as_str) == Some(session.as_str());
            if labelled || claimed.as_deref() == Some(info.id.as_str()) {
                doomed.push(info.id);
            }
        }
        for id in doomed {
            if let Err(e) = provider.destroy(&id).await {
                tracing::warn!(sandbox = %id, error = %e, "cannot destroy a deleted session's sandbox");
            }
        }
        if let Some(id) = snapshot.and_then(|s| SnapshotId::parse(&s.id)) {
            match provider.delete_snapshot(&id).await {
                Ok(()) | Err(kiln_sandbox::Error::SnapshotNotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(snapshot = %id, error = %e, "cannot delete a deleted session's snapshot; the GC will")
                }
            }
        }
        self.inner.store.delete_session(session).await?;
        tracing::info!(session = %session, by = %by.name, "deleted a session");
        Ok(())
    }

    /// Deletes a repo with its sessions, warm pool, mirror and image records (the GC removes
    /// their layers). `Conflict` while one of its sessions is working or holds a sandbox,
    /// unless `force`, which stops them.
    pub async fn delete_repo(&self, name: &str, by: &UserRef, force: bool) -> Result<usize> {
        self.repo(name).await?;
        let sessions = self.inner.store.repo_sessions(name).await?;
        let active = sessions.iter().filter(|id| self.is_active(id)).count();
        if active > 0 && !force {
            return Err(Error::RepoInUse {
                repo: name.to_string(),
                active,
            });
        }
        for id in &sessions {
            match self.delete_session(id, by).await {
                // Gone already: a sub-session deleted with its parent.
                Ok(()) | Err(Error::Store(kiln_store::Error::NotFound(_))) => {}
                Err(e) => return Err(e),
            }
        }
        self.inner.fleet.drain_pool(name).await;
        self.inner.store.delete_repo(name).await?;
        self.inner.fleet.workspaces().remove_mirror(name).await;
        tracing::info!(repo = name, by = %by.name, sessions = sessions.len(), "deleted a repo");
        Ok(sessions.len())
    }

    /// Records that someone left a session (or was removed from it).
    pub async fn participant_left(&self, session: &SessionId, user: &UserRef) -> Result<()> {
        let actor = self.actor(session).await?;
        actor
            .log
            .append(Event::ParticipantLeft { user: user.clone() })
            .await?;
        Ok(())
    }

    /// Records a participant's new role (the `participant_joined` event carries it).
    pub async fn role_changed(
        &self,
        session: &SessionId,
        user: &UserRef,
        role: Role,
    ) -> Result<()> {
        self.participant_joined(session, user, role).await
    }

    /// The git identity of a user for commits, looked up now (a profile change applies to the
    /// next prompt).
    pub(crate) async fn identity_of(&self, user: &UserId) -> (String, String) {
        match self.inner.store.user(user).await {
            Ok(user) => git_identity(&user),
            Err(_) => (user.to_string(), format!("{user}@users.kiln.local")),
        }
    }
}
