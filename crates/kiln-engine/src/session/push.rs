//! Pushing the session's branch: on someone's request (`POST /api/sessions/{id}/push`) or by
//! the agent's `push` tool. The how (bundle out through the guest, push from the host mirror
//! with a credential the sandbox never sees) is `kiln_fleet::push`; here the session waits for
//! its checkout to be on its branch, records a `pushed` event and offers a compare page.

use super::SessionActor;
use crate::engine::Inner;
use crate::sync_gate::SyncState;
use crate::{Error, Result};
use kiln_fleet::push::PushCredential;
use kiln_protocol::api::{Event, Repo, SessionPushed, UserRef};
use kiln_sandbox::Sandbox;
use kiln_tools::tools::{Tool, ToolContext, ToolError, ToolResult, ToolSpec, ToolUpdate};
use std::sync::Arc;
use tokio::sync::mpsc;

impl SessionActor {
    /// Pushes `kiln/<session>` from `sandbox` to the repo's remote for `by`.
    pub(crate) async fn push(
        &self,
        inner: &Arc<Inner>,
        sandbox: &Sandbox,
        by: &UserRef,
    ) -> Result<SessionPushed> {
        crate::Engine::from_inner(inner.clone())
            .check_forge_write(&by.id, &self.repo)
            .await?;
        self.wait_for_branch(inner).await?;
        let pushed = inner
            .fleet
            .workspaces()
            .push_session_branch(sandbox, &self.repo, self.log.id(), PushCredential::Repo)
            .await?;
        self.log
            .append(Event::Pushed {
                branch: pushed.branch.clone(),
                commit: pushed.commit.clone(),
                remote_ref: pushed.remote_ref,
                by: by.clone(),
            })
            .await?;
        Ok(SessionPushed {
            compare_url: compare_url(&self.repo, &pushed.branch),
            branch: pushed.branch,
            commit: pushed.commit,
        })
    }

    /// Waits (bounded by the git timeout) until the checkout is on the session's branch.
    pub(crate) async fn wait_for_branch(&self, inner: &Arc<Inner>) -> Result<()> {
        let mut sync = self.sync.subscribe();
        let waited = tokio::time::timeout(inner.config.git_timeout, async {
            // Copied out: no read guard of the channel is kept across an await.
            sync.wait_for(|s| !matches!(s, SyncState::Pending))
                .await
                .map(|state| state.clone())
        })
        .await;
        let failed = |why: String| {
            Error::Fleet(kiln_fleet::Error::Push(format!(
                "the session's checkout is not on its branch yet ({why}); try again once it is"
            )))
        };
        match waited {
            Err(_) => Err(failed(format!(
                "it is still catching up with {} after {}",
                self.repo.default_branch,
                kiln_core::human_duration(inner.config.git_timeout)
            ))),
            Ok(Err(_)) => Err(failed("the session is closing".into())),
            Ok(Ok(SyncState::Failed(message))) => Err(failed(message)),
            Ok(Ok(_)) => Ok(()),
        }
    }
}

/// The forge's page comparing the session's branch with the default branch, for an https
/// remote named like `https://host/owner/name(.git)` (GitHub, Gitea, GitHub Enterprise);
/// none for other remotes.
pub(crate) fn compare_url(repo: &Repo, branch: &str) -> Option<String> {
    let rest = repo.url.strip_prefix("https://")?;
    let (authority, path) = rest.split_once('/')?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    if host.is_empty()
        || segments.len() != 2
        || segments
            .iter()
            .any(|s| s.is_empty() || s.contains(['?', '#']))
    {
        return None;
    }
    Some(format!(
        "https://{host}/{path}/compare/{}...{branch}",
        repo.default_branch
    ))
}

/// The agent's `push` tool: pushes the session's branch for the prompt's author.
pub(crate) struct PushTool {
    pub(crate) actor: Arc<SessionActor>,
    pub(crate) inner: Arc<Inner>,
    /// The prompt's author: the push is theirs.
    pub(crate) by: UserRef,
}

const DESCRIPTION: &str = "Push the session's branch (your commits on kiln/<session>) to the \
repository's remote, so people can review it. Commit first (git commit through bash); `git push` \
does not work inside the sandbox, this tool is the way. Only the session's own branch is pushed; \
it returns the remote branch and, where the forge has one, a compare URL.";

#[async_trait::async_trait]
impl Tool for PushTool {
    fn spec(&self) -> ToolSpec<'_> {
        ToolSpec {
            name: "push",
            description: DESCRIPTION,
            input_schema: serde_json::json!({"type": "object", "properties": {}}),
        }
    }

    /// It changes no file, but it needs the checkout on the session's branch: it waits for
    /// the sync like a write.
    fn writes(&self) -> bool {
        true
    }

    async fn run(
        &self,
        ctx: &ToolContext<'_>,
        _input: &serde_json::Value,
        _updates: &mpsc::Sender<ToolUpdate>,
    ) -> Result<ToolResult, ToolError> {
        let push = self.actor.push(&self.inner, ctx.sandbox, &self.by);
        let pushed = tokio::select! {
            pushed = push => pushed,
            _ = ctx.cancel.cancelled() => return Err(ToolError::Cancelled),
        };
        match pushed {
            Ok(pushed) => {
                let mut text = format!(
                    "Pushed {} (commit {}) to the repository's remote.",
                    pushed.branch, pushed.commit
                );
                if let Some(url) = pushed.compare_url {
                    text.push_str(&format!(" Compare: {url}"));
                }
                Ok(ToolResult::ok(text))
            }
            Err(Error::Sandbox(e)) => Err(ToolError::Sandbox(e)),
            Err(Error::Fleet(kiln_fleet::Error::Sandbox(e))) => Err(ToolError::Sandbox(e)),
            Err(e) => Err(ToolError::Failed(format!("the push failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::compare_url;
    use kiln_protocol::api::Repo;

    fn repo(url: &str) -> Repo {
        serde_json::from_value(serde_json::json!({
            "name": "r", "url": url, "default_branch": "main", "description": "",
            "created_at_ms": 0,
        }))
        .unwrap_or_else(|e| panic!("a Repo from JSON: {e}"))
    }

    #[test]
    fn compare_pages_only_for_owner_name_https_remotes() {
        assert_eq!(
            compare_url(&repo("https://****@github.com/acme/app.git"), "kiln/s1").as_deref(),
            Some("https://github.com/acme/app/compare/main...kiln/s1")
        );
        assert_eq!(
            compare_url(&repo("http://127.0.0.1:9/app.git"), "kiln/s1"),
            None
        );
        assert_eq!(
            compare_url(&repo("https://git.example.org/app.git"), "kiln/s1"),
            None
        );
        assert_eq!(
            compare_url(&repo("git@github.com:acme/app.git"), "kiln/s1"),
            None
        );
    }
}
