//! The write gate: a session that starts from an image runs at once, while its checkout catches
//! up with the default branch in the background. Reads (read, list, grep) go ahead against the
//! image's files; writes (write, edit, bash, git) wait here until the sync is done, then pass.
//! Which is which the prompt's [`ToolRegistry`] says: each tool declares whether it writes.
//! A failed sync blocks writes with the reason, so the agent and the user see what happened
//! instead of a hang.

use crate::hooks::{Hook, HookContext, HookEvent, HookOutcome};
use crate::tools::ToolRegistry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Where a session's checkout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyncState {
    /// At the image's commit; the sync is running.
    Pending,
    /// At the head of the default branch, on the session's branch.
    Done,
    /// The sync failed; the message says why.
    Failed(String),
}

#[derive(Debug)]
pub(crate) struct SyncGate {
    pub(crate) state: watch::Receiver<SyncState>,
    /// The prompt's: a stop must not wait for the sync.
    pub(crate) cancel: CancellationToken,
    /// Longest wait before a write is refused.
    pub(crate) wait: Duration,
    /// The prompt's tools: calls of those that do not write never wait.
    pub(crate) tools: Arc<ToolRegistry>,
}

#[async_trait::async_trait]
impl Hook for SyncGate {
    fn name(&self) -> &str {
        "sync-gate"
    }

    fn matches(&self, event: &HookEvent) -> bool {
        match event {
            HookEvent::PreToolUse { tool_name, .. } => self.tools.writes(tool_name),
            _ => false,
        }
    }

    async fn call(&self, _ctx: &HookContext, _event: &HookEvent) -> HookOutcome {
        let mut state = self.state.clone();
        let settled = tokio::select! {
            settled = tokio::time::timeout(
                self.wait,
                state.wait_for(|s| *s != SyncState::Pending),
            ) => settled,
            _ = self.cancel.cancelled() => return HookOutcome::block("stopped while waiting for the checkout to sync"),
        };
        match settled {
            Ok(Ok(guard)) => match &*guard {
                SyncState::Failed(reason) => HookOutcome::block(format!(
                    "the checkout could not be synced with the default branch ({reason}); \
                     files are at the image's commit. Reads still work; send the prompt \
                     again to retry the sync"
                )),
                _ => HookOutcome::allow(),
            },
            Ok(Err(_)) => HookOutcome::block("the session's sandbox went away during the sync"),
            Err(_) => HookOutcome::block(format!(
                "the checkout did not finish syncing within {:?}",
                self.wait
            )),
        }
    }

    fn time_limit(&self) -> Duration {
        self.wait + Duration::from_secs(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::HookDecision;
    use kiln_core::{PromptId, SessionId, UserId};
    use kiln_protocol::api::UserRef;

    fn ctx() -> HookContext {
        HookContext {
            session_id: SessionId::random(),
            prompt_id: PromptId::random(),
            author: UserRef {
                id: UserId::random(),
                name: "ada".into(),
            },
            repo: "r".into(),
            cwd: "/workspace".into(),
        }
    }

    fn tool(name: &str) -> HookEvent {
        HookEvent::PreToolUse {
            tool_name: name.into(),
            tool_input: serde_json::json!({}),
            tool_use_id: "t".into(),
        }
    }

    fn blocked(outcome: &HookOutcome) -> Option<&str> {
        outcome.decisions.iter().find_map(|d| match d {
            HookDecision::Block { reason } => Some(reason.as_str()),
            _ => None,
        })
    }

    /// A read-only tool a repo might add (MCP, later).
    struct Lookup;

    #[async_trait::async_trait]
    impl crate::tools::Tool for Lookup {
        fn spec(&self) -> crate::tools::ToolSpec<'_> {
            crate::tools::ToolSpec {
                name: "lookup",
                description: "Looks something up.",
                input_schema: serde_json::json!({"type": "object"}),
            }
        }

        fn writes(&self) -> bool {
            false
        }

        async fn run(
            &self,
            _ctx: &crate::tools::ToolContext<'_>,
            _input: &serde_json::Value,
            _updates: &tokio::sync::mpsc::Sender<crate::tools::ToolUpdate>,
        ) -> Result<crate::tools::ToolResult, crate::tools::ToolError> {
            Ok(crate::tools::ToolResult::ok("found"))
        }
    }

    #[tokio::test]
    async fn reads_pass_writes_wait_for_the_sync() {
        let (tx, rx) = watch::channel(SyncState::Pending);
        let gate = SyncGate {
            state: rx,
            cancel: CancellationToken::new(),
            wait: Duration::from_secs(10),
            tools: Arc::new(ToolRegistry::builtin()),
        };
        assert!(!gate.matches(&tool("read_file")));
        assert!(!gate.matches(&tool("grep")));
        assert!(gate.matches(&tool("write_file")));
        assert!(gate.matches(&tool("bash")));
        let ctx = ctx();
        // The gate asks the prompt's registry: a tool added to it that only reads goes ahead,
        // and a name it does not know waits like a write.
        let extended = SyncGate {
            state: gate.state.clone(),
            cancel: CancellationToken::new(),
            wait: Duration::from_secs(10),
            tools: Arc::new(ToolRegistry::builtin().with(Arc::new(Lookup))),
        };
        assert!(!extended.matches(&tool("lookup")));
        assert!(!extended.matches(&tool("list_files")));
        assert!(extended.matches(&tool("no_such_tool")));
        assert!(
            gate.matches(&tool("lookup")),
            "not in the built-in registry"
        );
        let write = tool("write_file");
        let call = gate.call(&ctx, &write);
        tokio::pin!(call);
        // Still pending: the write waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut call)
                .await
                .is_err()
        );
        tx.send(SyncState::Done).unwrap();
        let outcome = call.await;
        assert_eq!(blocked(&outcome), None);
    }

    #[tokio::test]
    async fn a_failed_sync_or_a_stop_blocks_with_a_reason() {
        let (tx, rx) = watch::channel(SyncState::Failed("fetch failed".into()));
        let cancel = CancellationToken::new();
        let gate = SyncGate {
            state: rx,
            cancel: cancel.clone(),
            wait: Duration::from_secs(10),
            tools: Arc::new(ToolRegistry::builtin()),
        };
        let outcome = gate.call(&ctx(), &tool("edit_file")).await;
        assert!(blocked(&outcome).unwrap().contains("fetch failed"));
        tx.send(SyncState::Pending).unwrap();
        cancel.cancel();
        let outcome = gate.call(&ctx(), &tool("bash")).await;
        assert!(blocked(&outcome).unwrap().contains("stopped"));
        let (_sender, pending) = watch::channel(SyncState::Pending);
        let slow = SyncGate {
            state: pending,
            cancel: CancellationToken::new(),
            wait: Duration::from_millis(50),
            tools: Arc::new(ToolRegistry::builtin()),
        };
        let outcome = slow.call(&ctx(), &tool("bash")).await;
        assert!(blocked(&outcome).unwrap().contains("did not finish"));
    }
}
