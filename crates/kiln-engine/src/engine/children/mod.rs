//! Sub-sessions: sessions an agent spawns from its own prompt (`spawn_session`), each with its
//! own sandbox and branch, started like any session. The child's index row names its parent;
//! the parent's log gets `session_spawned` and, each time a child's prompt ends,
//! `child_finished` (also handed to the parent's running prompt at its next turn).
//!
//! Crash safety: a child's index row, its members and its queued first prompt commit together
//! (`Store::create_child_session`), before the tool's result exists; recovery then resumes it
//! like any session, and its sandbox is labelled with its id, so none can outlive its row.
//!
//! Cascades: stopping a session stops its descendants' work; archiving or deleting it archives
//! or deletes them too (deepest first).

use super::Engine;
use super::admission::Admission;
use crate::session::SessionActor;
use crate::{Error, Result};
use kiln_core::{PromptId, SessionId};
use kiln_protocol::api::{Event, PromptStatus, SessionTree, SessionTreeNode, UserRef};
use std::sync::Arc;

mod status;
mod tools;

pub(crate) use tools::session_tools;

/// The most sessions a tree walk visits: far above what the limits allow, a bound all the same.
const TREE_MAX: usize = 1_000;

/// What is told of a child's ended prompt, in the event and to the parent's model.
const SUMMARY_CHARS: usize = 1_500;

impl Engine {
    /// Spawns a sub-session of `parent` on `repo` whose first prompt is `prompt`, authored by
    /// `author` (the author of the parent's prompt `by_prompt`). Refusals name the limit.
    pub(crate) async fn spawn_child(
        &self,
        parent: &SessionId,
        by_prompt: &PromptId,
        author: &UserRef,
        repo: &str,
        prompt: &str,
        title: Option<&str>,
    ) -> Result<SessionId> {
        let prompt = super::validate_prompt(prompt)?.to_string();
        let parent_row = self.inner.store.session_row(parent).await?;
        let limits = self.inner.config.subsessions.for_repo(&parent_row.repo);
        let depth = self.ancestors(parent).await?.len() as u32 + 1;
        if depth > limits.max_depth {
            return Err(Error::LimitReached(format!(
                "cannot spawn a sub-session: it would be {depth} levels below its root session, \
                 and sub-sessions nest at most {} deep (max_depth in [subsessions] of kiln.toml); \
                 do this work in this session instead",
                limits.max_depth
            )));
        }
        let children = self.inner.store.children(parent).await?;
        if children.len() >= limits.max_total_per_parent {
            return Err(Error::LimitReached(format!(
                "cannot spawn a sub-session: this session has spawned {} already, the most one \
                 session may (max_total_per_parent = {} in [subsessions] of kiln.toml); reuse one \
                 with send_to_session",
                children.len(),
                limits.max_total_per_parent
            )));
        }
        let mut busy = 0;
        for child in &children {
            if self.has_work(&child.id).await? {
                busy += 1;
            }
        }
        if busy >= limits.max_concurrent_per_parent {
            return Err(Error::LimitReached(format!(
                "cannot spawn a sub-session: {busy} of this session's sub-sessions are working, \
                 the most at once (max_concurrent_per_parent = {} in [subsessions] of kiln.toml); \
                 wait for one with wait_sessions, or stop one",
                limits.max_concurrent_per_parent
            )));
        }
        // The same checks as `POST /api/sessions` makes for the person asking.
        let repo = self.repo(repo).await?;
        let user = self.inner.store.user(&author.id).await?;
        let may = self.inner.store.may_use_repo(&repo.name, &user).await?
            && (user.admin || self.forge_allows_read(&user.id, &repo).await?);
        if !may {
            return Err(Error::NotFound(format!(
                "repo {:?} (or {} may not start sessions on it)",
                repo.name, author.name
            )));
        }
        // A daily budget used up refuses a child as it refuses any new session.
        super::admit_budget(&self.inner, &author.id, &repo.name).await?;
        let _admitted = Admission::take(&self.inner, &author.id, None)?;
        let title = title
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| t.chars().take(200).collect())
            .unwrap_or_else(|| super::title_from(&prompt));
        let members = self.inner.store.members(parent).await?;
        let id = SessionId::random();
        let prompt_id = PromptId::random();
        self.inner
            .store
            .create_child_session(&id, &repo.name, &title, &author.id, parent, {
                let (repo, title, author) = (repo.name.clone(), title.clone(), author.clone());
                let (prompt_id, prompt) = (prompt_id.clone(), prompt.clone());
                move |w| {
                    w.event(Event::SessionCreated {
                        repo,
                        title,
                        by: author.clone(),
                    })?;
                    for member in members {
                        w.event(Event::ParticipantJoined {
                            user: member.user,
                            role: member.role,
                        })?;
                    }
                    let delivery = w.delivery_mode()?;
                    w.insert_prompt(&prompt_id, &author, &prompt, PromptStatus::Queued)?;
                    w.event(Event::PromptQueued {
                        prompt_id,
                        author,
                        text: prompt,
                        delivery,
                        // A child works at once; its parent's plan was what was approved.
                        plan: false,
                    })?;
                    Ok(())
                }
            })
            .await?;
        let parent_actor = self.actor(parent).await?;
        parent_actor
            .log
            .append(Event::SessionSpawned {
                child: id.clone(),
                repo: repo.name.clone(),
                title,
                prompt_id: by_prompt.clone(),
            })
            .await?;
        let actor = self.actor(&id).await?;
        actor.warm_sandbox(&self.inner);
        actor.kick(&self.inner);
        tracing::info!(parent = %parent, child = %id, repo = %repo.name, "spawned a sub-session");
        Ok(id)
    }

    /// Whether a session has a prompt running or queued.
    pub(crate) async fn has_work(&self, session: &SessionId) -> Result<bool> {
        let actor = self.actor(session).await?;
        if actor.is_working() {
            return Ok(true);
        }
        Ok(actor
            .log
            .prompts()
            .await?
            .iter()
            .any(|p| p.status == PromptStatus::Queued))
    }

    /// The sessions above `session`: its parent first, up to its root.
    pub(crate) async fn ancestors(&self, session: &SessionId) -> Result<Vec<SessionId>> {
        let mut ancestors = Vec::new();
        let mut next = self.inner.store.session_row(session).await?.parent;
        while let Some(id) = next {
            if ancestors.len() >= TREE_MAX || ancestors.contains(&id) {
                break;
            }
            next = self.inner.store.session_row(&id).await?.parent;
            ancestors.push(id);
        }
        Ok(ancestors)
    }

    /// Every session below `session`, each after its parent (depth first), with its depth.
    async fn descendants(&self, session: &SessionId) -> Result<Vec<(kiln_store::SessionRow, u32)>> {
        let mut found = Vec::new();
        let mut stack: Vec<(kiln_store::SessionRow, u32)> = self
            .inner
            .store
            .children(session)
            .await?
            .into_iter()
            .rev()
            .map(|row| (row, 1))
            .collect();
        while let Some((row, depth)) = stack.pop() {
            if found.len() >= TREE_MAX {
                break;
            }
            let children = self.inner.store.children(&row.id).await?;
            stack.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
            found.push((row, depth));
        }
        Ok(found)
    }

    /// `session`'s place among the sessions that spawned each other.
    pub async fn session_tree(&self, session: &SessionId) -> Result<SessionTree> {
        let row = self.inner.store.session_row(session).await?;
        let ancestors = self.ancestors(session).await?;
        let node = |row: &kiln_store::SessionRow, depth: u32| {
            let summary = self.summary(row, None);
            SessionTreeNode {
                id: row.id.clone(),
                parent: row.parent.clone(),
                depth,
                repo: row.repo.clone(),
                title: row.title.clone(),
                state: summary.state,
                pull_request: row.pull_request.clone(),
            }
        };
        let mut nodes = vec![node(&row, 0)];
        for (child, depth) in self.descendants(session).await? {
            nodes.push(node(&child, depth));
        }
        Ok(SessionTree {
            id: session.clone(),
            ancestors,
            nodes,
        })
    }

    /// Stops the work of every session below `session` (their running prompts and queues).
    pub(crate) async fn stop_descendants(&self, session: &SessionId, by: &UserRef) -> Result<()> {
        for (row, _) in self.descendants(session).await? {
            if row.closed {
                continue;
            }
            // One that cannot be stopped (deleted meanwhile) does not keep the rest going.
            let stopped = match self.actor(&row.id).await {
                Ok(actor) => actor.stop(by, true).await,
                Err(e) => Err(e),
            };
            if let Err(e) = stopped {
                tracing::warn!(session = %row.id, error = %e, "cannot stop a sub-session");
            }
        }
        Ok(())
    }

    /// The sessions below `session`, deepest first: the order to archive or delete them in.
    pub(crate) async fn descendants_deepest_first(
        &self,
        session: &SessionId,
    ) -> Result<Vec<SessionId>> {
        let mut all = self.descendants(session).await?;
        all.sort_by_key(|(_, depth)| std::cmp::Reverse(*depth));
        Ok(all.into_iter().map(|(row, _)| row.id).collect())
    }
}

/// Called when a prompt of `actor`'s session has ended (not when the server is shutting
/// down): if the session is a sub-session, its parent's log says so, and a running prompt of
/// the parent hears it at its next turn.
pub(crate) async fn prompt_ended(engine: &Engine, actor: &Arc<SessionActor>, prompt: &PromptId) {
    if let Err(e) = tell_parent(engine, actor, prompt).await {
        tracing::warn!(session = %actor.log.id(), error = %e, "cannot tell a sub-session's parent that its prompt ended");
    }
}

async fn tell_parent(engine: &Engine, actor: &Arc<SessionActor>, prompt: &PromptId) -> Result<()> {
    let child = actor.log.id().clone();
    let row = engine.inner.store.session_row(&child).await?;
    let Some(parent) = row.parent else {
        return Ok(());
    };
    let status = actor.log.prompt(prompt).await?.status;
    if matches!(status, PromptStatus::Queued | PromptStatus::Running) {
        return Ok(());
    }
    let summary = status::prompt_summary(&actor.log, prompt, SUMMARY_CHARS).await?;
    let parent_actor = engine.actor(&parent).await?;
    let event = Event::ChildFinished {
        child: child.clone(),
        status,
        summary: summary.clone(),
        pull_request: row.pull_request.clone(),
    };
    for event in parent_actor.secrets().mask_event(event) {
        parent_actor.log.append(event).await?;
    }
    if parent_actor.is_working() {
        let pr = row
            .pull_request
            .as_ref()
            .map(|pr| format!(" Its pull request: {}.", pr.url))
            .unwrap_or_default();
        parent_actor.notice(
            child.clone(),
            format!(
                "Sub-session {child} ({title}) finished a prompt: {status}.{pr} It said: {summary}",
                title = row.title,
                status = status.as_str(),
            ),
        );
    }
    Ok(())
}
