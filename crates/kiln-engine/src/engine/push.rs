//! Pushing a session's branch on someone's request (the agent pushes with its `push` tool);
//! who may ask is the server's to check (those who may prompt).

use super::Engine;
use crate::Result;
use crate::session::Need;
use kiln_core::SessionId;
use kiln_protocol::api::{SessionPushed, UserRef};

impl Engine {
    /// Pushes `kiln/<session>` to the repo's remote for `by`, bringing the session's sandbox
    /// up (restored from its snapshot) if it is stopped.
    pub async fn push_session(&self, session: &SessionId, by: &UserRef) -> Result<SessionPushed> {
        let actor = self.actor(session).await?;
        let sandbox = actor.sandbox(&self.inner, Need::Prompt).await?;
        actor.push(&self.inner, &sandbox, by).await
    }
}

impl Engine {
    /// The session's branch against the default branch, as a unified diff or a `format-patch`
    /// mbox: the result where no forge shows one.
    pub async fn session_changes(
        &self,
        session: &SessionId,
        kind: crate::SessionChanges,
    ) -> Result<String> {
        let actor = self.actor(session).await?;
        let sandbox = actor.sandbox(&self.inner, Need::Prompt).await?;
        actor.wait_for_branch(&self.inner).await?;
        Ok(self
            .inner
            .fleet
            .workspaces()
            .session_changes(&sandbox, &actor.repo, session, kind)
            .await?)
    }
}
