//! What a forge says about sessions, as the webhook intake hands it over: a session's change
//! request opened, merged, reviewed or pushed to after review is recorded in its log (so stats
//! are computed from the log alone), and the lookups work from the forge needs — the session of
//! a change request, the kiln repos of a forge repository, the kiln user of a forge login — and
//! the end of a prompt someone on the forge is waiting for.

use super::Engine;
use crate::Result;
use kiln_core::Role;
use kiln_core::{SessionId, UserId};
use kiln_forge::{ChangeAction, ForgeEvent, RepoRef, ReviewVerdict};
use kiln_protocol::api::{Event, PromptStatus, Repo, User, UserRef};
use std::collections::BTreeMap;
use std::time::Duration;

/// Events read from a log at a time when scanning it.
const SCAN_BATCH: usize = 1_000;

/// How a prompt ended, for someone who waited for it.
#[derive(Debug, Clone)]
pub struct PromptEnd {
    /// `Running` or `Queued` when the wait timed out first.
    pub status: PromptStatus,
    /// What the model said in the prompt's last turn (masked, as every event).
    pub last_text: String,
    /// Files the prompt changed: path → (lines added, lines removed).
    pub files: BTreeMap<String, (u32, u32)>,
}

impl Engine {
    /// The kiln repos whose remote is `repo` on the configured forge.
    pub async fn repos_on_forge(&self, repo: &RepoRef) -> Result<Vec<Repo>> {
        let forge = self.forge()?;
        Ok(self
            .inner
            .store
            .list_repos()
            .await?
            .into_iter()
            .filter(|r| forge.repo_of_url(&r.url).as_ref() == Some(repo))
            .collect())
    }

    /// The session a change request of `repo` belongs to: the one its head branch names
    /// (`kiln/<session>`), else the one kiln recorded for its number — only if that session's
    /// repo is `repo` on the forge.
    pub async fn session_of_change(
        &self,
        repo: &RepoRef,
        number: u64,
        head: Option<&str>,
    ) -> Result<Option<SessionId>> {
        let by_branch = head
            .and_then(|h| h.strip_prefix("kiln/"))
            .and_then(SessionId::parse);
        let candidate = match by_branch {
            Some(id) => Some(id),
            None => {
                self.inner
                    .store
                    .forge_change_session(&repo.full_name(), number)
                    .await?
            }
        };
        let Some(session) = candidate else {
            return Ok(None);
        };
        let row = match self.inner.store.session_row(&session).await {
            Ok(row) => row,
            Err(kiln_store::Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let on_repo = self
            .repos_on_forge(repo)
            .await?
            .iter()
            .any(|r| r.name == row.repo);
        Ok(on_repo.then_some(session))
    }

    /// The active kiln user linked to a forge login.
    pub async fn user_of_forge_login(&self, login: &str) -> Result<Option<User>> {
        let Some(id) = self.inner.store.user_by_github_login(login).await? else {
            return Ok(None);
        };
        let user = self.inner.store.user(&id).await?;
        Ok((!user.deactivated).then_some(user))
    }

    /// Makes `user` a collaborator of `session` unless they have a role in it already.
    pub async fn ensure_collaborator(&self, session: &SessionId, user: &UserRef) -> Result<Role> {
        if let Some(role) = self.inner.store.role_of(session, &user.id).await? {
            return Ok(role);
        }
        self.inner
            .store
            .set_role(session, &user.id, Role::Collaborator)
            .await?;
        self.participant_joined(session, user, Role::Collaborator)
            .await?;
        Ok(Role::Collaborator)
    }

    /// Records what the forge said about `session`'s change request: its changes, reviews and
    /// the revisions after the first review. Other events are not a session's.
    pub async fn record_change_event(&self, session: &SessionId, event: &ForgeEvent) -> Result<()> {
        let forge = self.forge()?.kind().to_string();
        let actor = self.actor(session).await?;
        match event {
            ForgeEvent::Change {
                repo,
                change,
                action,
                head_sha,
                merged_at_ms,
                actor: who,
            } => {
                let closed = matches!(action, ChangeAction::Closed | ChangeAction::Merged);
                let state = match action {
                    ChangeAction::Merged => "merged",
                    ChangeAction::Closed => "closed",
                    _ => "open",
                };
                self.inner
                    .store
                    .set_forge_change(
                        &repo.full_name(),
                        change.number,
                        session,
                        &change.url,
                        state,
                    )
                    .await?;
                actor
                    .log
                    .append(Event::PullRequestChanged {
                        forge: forge.clone(),
                        number: change.number,
                        url: change.url.clone(),
                        action: action_name(*action).into(),
                        state: if closed { "closed" } else { "open" }.into(),
                        merged: *action == ChangeAction::Merged,
                        merged_at_ms: *merged_at_ms,
                        head_sha: head_sha.clone(),
                        actor: who.clone(),
                    })
                    .await?;
                if *action == ChangeAction::Synchronized {
                    let (reviewed, revisions) =
                        self.review_state(&actor.log, change.number).await?;
                    if reviewed {
                        actor
                            .log
                            .append(Event::PullRequestRevised {
                                forge,
                                number: change.number,
                                revision: revisions + 1,
                                head_sha: head_sha.clone(),
                            })
                            .await?;
                    }
                }
            }
            ForgeEvent::Review {
                change,
                verdict,
                reviewer,
                ..
            } => {
                actor
                    .log
                    .append(Event::PullRequestReviewed {
                        forge,
                        number: change.number,
                        verdict: verdict_name(*verdict).into(),
                        reviewer: reviewer.clone(),
                    })
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether change request `number` has been reviewed, and how many revisions followed.
    async fn review_state(&self, log: &kiln_store::SessionLog, number: u64) -> Result<(bool, u32)> {
        let (mut reviewed, mut revisions, mut after) = (false, 0, 0);
        loop {
            let batch = log.read_after(after, SCAN_BATCH).await?;
            for e in &batch {
                match &e.event {
                    Event::PullRequestReviewed { number: n, .. } if *n == number => reviewed = true,
                    Event::PullRequestRevised { number: n, .. } if *n == number => revisions += 1,
                    _ => {}
                }
            }
            match batch.last() {
                Some(last) if batch.len() == SCAN_BATCH => after = last.seq,
                _ => return Ok((reviewed, revisions)),
            }
        }
    }

    /// Waits (at most `timeout`) for `prompt` of `session` to end, then tells how: its status,
    /// the model's last words and the files it changed.
    pub async fn wait_for_prompt(
        &self,
        session: &SessionId,
        prompt: &kiln_core::PromptId,
        timeout: Duration,
    ) -> Result<PromptEnd> {
        let actor = self.actor(session).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = actor.log.subscribe(actor.log.head_seq().await);
        let status = loop {
            let status = actor.log.prompt(prompt).await?.status;
            let ended = match status {
                PromptStatus::Queued | PromptStatus::Running => false,
                // Delivered into the running prompt: it ends with that one.
                PromptStatus::Inserted => !actor.is_working(),
                _ => true,
            };
            if ended {
                break status;
            }
            // Wake at the next prompt's end (any prompt's: an inserted one ends with its host).
            let next_end = async {
                loop {
                    match events.next().await {
                        Ok(Some(e)) if ends_a_prompt(&e.envelope.event) => return Ok(()),
                        Ok(Some(_)) => continue,
                        Ok(None) => return Ok(()),
                        Err(e) => return Err(e),
                    }
                }
            };
            match tokio::time::timeout_at(deadline, next_end).await {
                Err(_) => break status,
                Ok(r) => r?,
            }
        };
        let mut end = PromptEnd {
            status,
            last_text: String::new(),
            files: BTreeMap::new(),
        };
        let mut after = 0;
        loop {
            let batch = actor.log.read_after(after, SCAN_BATCH).await?;
            for e in &batch {
                match &e.event {
                    Event::ModelRequest { prompt_id, .. } if prompt_id == prompt => {
                        end.last_text.clear()
                    }
                    Event::TextDelta { prompt_id, text } if prompt_id == prompt => {
                        end.last_text.push_str(text)
                    }
                    Event::FileChanged {
                        prompt_id,
                        path,
                        added,
                        removed,
                        ..
                    } if prompt_id == prompt => {
                        let f = end.files.entry(path.clone()).or_default();
                        f.0 += added;
                        f.1 += removed;
                    }
                    _ => {}
                }
            }
            match batch.last() {
                Some(last) if batch.len() == SCAN_BATCH => after = last.seq,
                _ => break,
            }
        }
        Ok(end)
    }

    /// The user ids of a session's members who may prompt.
    pub async fn may_prompt(&self, session: &SessionId, user: &UserId) -> Result<bool> {
        Ok(self
            .inner
            .store
            .role_of(session, user)
            .await?
            .is_some_and(|r| r.can_prompt()))
    }
}

fn ends_a_prompt(event: &Event) -> bool {
    matches!(
        event,
        Event::PromptFinished { .. }
            | Event::PromptCancelled { .. }
            | Event::PromptInterrupted { .. }
    )
}

fn action_name(action: ChangeAction) -> &'static str {
    match action {
        ChangeAction::Opened => "opened",
        ChangeAction::Reopened => "reopened",
        ChangeAction::Closed => "closed",
        ChangeAction::Merged => "merged",
        ChangeAction::Synchronized => "synchronized",
    }
}

fn verdict_name(verdict: ReviewVerdict) -> &'static str {
    match verdict {
        ReviewVerdict::Approved => "approved",
        ReviewVerdict::ChangesRequested => "changes_requested",
        ReviewVerdict::Commented => "commented",
    }
}
