//! The session as the agent loop sees it ([`kiln_agent::Session`]): its log (events, the
//! stored conversation, the queue), its sandbox, its write gate, its commit identity and the
//! masking of its repo's secrets.

use super::SessionActor;
use crate::engine::Inner;
use async_trait::async_trait;
use kiln_agent::{Ending, Recorded, Session, SessionError};
use kiln_core::{PlanId, PromptId, SessionId};
use kiln_protocol::api::{
    DeliveryMode, Event, HookSpec, PromptInfo, PromptOutcome, PromptStatus, Repo, Usage, UserRef,
};
use kiln_sandbox::Sandbox;
use kiln_tools::hooks::Hook;
use kiln_tools::tools::ToolRegistry;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A session actor with the engine state its sandbox comes from.
pub(super) struct Port<'a> {
    pub(super) actor: &'a Arc<SessionActor>,
    pub(super) inner: &'a Arc<Inner>,
    /// The prompt being run: what it leaves uncommitted is committed for its author.
    pub(super) prompt: PromptInfo,
}

impl Port<'_> {
    /// The environment commands of a prompt by `author` run with (a local MCP server too).
    pub(super) fn prompt_env_for(&self, author: &UserRef) -> BTreeMap<String, String> {
        Session::prompt_env(self, author)
    }

    /// The sandbox's connections since the last call, one event per host and outcome. Skipped
    /// (they wait for the next call) while the sandbox slot is busy being filled.
    fn egress_events(&self, prompt_id: Option<PromptId>, call_id: Option<String>) -> Vec<Event> {
        let Ok(slot) = self.actor.sandbox.try_lock() else {
            return Vec::new();
        };
        let Some(sandbox) = &slot.sandbox else {
            return Vec::new();
        };
        let egress = &self.inner.fleet.workspaces().egress;
        egress
            .take(sandbox.info())
            .into_iter()
            .map(|((host, port, allowed, reason), tally)| Event::Egress {
                prompt_id: prompt_id.clone(),
                call_id: call_id.clone(),
                host,
                port,
                allowed,
                reason,
                connections: tally.connections,
                bytes_up: tally.bytes_up,
                bytes_down: tally.bytes_down,
            })
            .collect()
    }
}

#[async_trait]
impl Session for Port<'_> {
    fn id(&self) -> &SessionId {
        self.actor.log.id()
    }

    fn repo(&self) -> &Repo {
        &self.actor.repo
    }

    async fn sandbox(&self) -> Result<Sandbox, SessionError> {
        Ok(self
            .actor
            .sandbox(self.inner, super::sandbox::Need::Prompt)
            .await?)
    }

    async fn repo_hooks(&self) -> Result<Vec<HookSpec>, SessionError> {
        Ok(self.inner.store.repo(&self.actor.repo.name).await?.hooks)
    }

    fn write_gate(&self, cancel: CancellationToken, tools: Arc<ToolRegistry>) -> Arc<dyn Hook> {
        Arc::new(
            self.actor
                .sync_gate(cancel, self.inner.config.git_timeout, tools),
        )
    }

    /// The author's identity, kiln's as the committer (`commit_name`/`commit_email`): a
    /// commit says who asked for it and that kiln made it.
    fn prompt_env(&self, author: &UserRef) -> BTreeMap<String, String> {
        let mut env = self.actor.prompt_env(author);
        let (name, email) = &self.inner.config.committer;
        env.insert("GIT_COMMITTER_NAME".into(), name.clone());
        env.insert("GIT_COMMITTER_EMAIL".into(), email.clone());
        env
    }

    /// The tools that act on the session rather than its sandbox: `push`, and `open_pr` where
    /// a forge is configured; each acts for the prompt's author.
    fn tools(&self, prompt: &PromptInfo) -> Vec<Arc<dyn kiln_tools::tools::Tool>> {
        let mut tools: Vec<Arc<dyn kiln_tools::tools::Tool>> =
            vec![Arc::new(super::push::PushTool {
                actor: self.actor.clone(),
                inner: self.inner.clone(),
                by: prompt.author.clone(),
            })];
        if self.inner.forge.is_some() {
            tools.push(Arc::new(crate::engine::OpenPrTool {
                engine: crate::Engine::from_inner(self.inner.clone()),
                session: self.actor.log.id().clone(),
                author: prompt.author.clone(),
            }));
        }
        // Sub-sessions, unless the repo's limits allow none.
        let limits = self
            .inner
            .config
            .subsessions
            .for_repo(&self.actor.repo.name);
        if limits.max_depth > 0 {
            tools.extend(crate::engine::session_tools(
                crate::Engine::from_inner(self.inner.clone()),
                self.actor.log.id().clone(),
                prompt.id.clone(),
                prompt.author.clone(),
            ));
        }
        tools
    }

    fn take_notices(&self) -> Vec<String> {
        self.actor.take_notices()
    }

    /// The repo's MCP servers' allowed tools (`session/mcp.rs`).
    async fn sandbox_tools(
        &self,
        prompt: &PromptInfo,
        sandbox: &Sandbox,
    ) -> Vec<Arc<dyn kiln_tools::tools::Tool>> {
        super::mcp::tools(self, prompt, sandbox).await
    }

    fn stopped_by(&self) -> Option<UserRef> {
        self.actor.stopped_by()
    }

    fn observe_model(&self, observation: kiln_agent::ModelObservation) {
        use kiln_agent::ModelObservation::*;
        let metrics = &self.inner.metrics;
        match observation {
            Response { provider, took } => metrics.model_response(provider, took),
            FirstText { provider, took } => metrics.model_first_token(provider, took),
            Usage {
                provider,
                input_tokens,
                output_tokens,
            } => metrics.model_tokens(provider, input_tokens, output_tokens),
            Failed { provider, kind } => metrics.model_error(provider, kind),
        }
    }

    fn mask(&self, text: String) -> String {
        self.actor.secrets().mask(text)
    }

    /// Every event of the agent's passes here: secrets are masked before it is stored or
    /// streamed (tool output held back while a chunk may end in the start of a value).
    async fn append(&self, event: Event) -> Result<(), SessionError> {
        // What went through the egress proxy meanwhile: a tool call's connections when it ends,
        // the rest when the prompt does.
        let egress = match &event {
            Event::ToolCallFinished { call_id, .. } => Some((None, Some(call_id.clone()))),
            Event::PromptFinished { prompt_id, .. } | Event::PromptCancelled { prompt_id, .. } => {
                Some((Some(prompt_id.clone()), None))
            }
            _ => None,
        };
        for event in self.actor.secrets().mask_event(event) {
            self.actor.log.append(event).await?;
        }
        if let Some((prompt_id, call_id)) = egress {
            for event in self.egress_events(prompt_id, call_id) {
                for event in self.actor.secrets().mask_event(event) {
                    self.actor.log.append(event).await?;
                }
            }
        }
        Ok(())
    }

    async fn conversation(&self) -> Result<Arc<Vec<serde_json::Value>>, SessionError> {
        Ok(self.actor.log.messages().await?)
    }

    async fn push_message(
        &self,
        prompt: &PromptId,
        message: serde_json::Value,
    ) -> Result<(), SessionError> {
        let prompt = prompt.clone();
        self.actor
            .log
            .write(move |w| w.push_message(&prompt, &message))
            .await?;
        Ok(())
    }

    async fn replace_last_message(&self, message: serde_json::Value) -> Result<(), SessionError> {
        self.actor
            .log
            .write(move |w| w.replace_last_message(&message))
            .await?;
        Ok(())
    }

    /// Plan mode holds for inserted prompts: nothing joins a plan-first prompt (it would run
    /// read-only and end with a plan), and a plan-first prompt joins nothing (it waits for a
    /// run of its own); queue order is kept, so insertion stops at the first plan-first prompt.
    async fn take_inserted(&self, into: &PromptId) -> Result<Vec<PromptInfo>, SessionError> {
        let into = into.clone();
        let planning = self.prompt.plan;
        let (inserted, _) = self
            .actor
            .log
            .write(move |w| {
                if planning || w.delivery_mode()? != DeliveryMode::Insert {
                    return Ok(Vec::new());
                }
                let queued: Vec<PromptInfo> = w
                    .prompts_with_status(PromptStatus::Queued)?
                    .into_iter()
                    .take_while(|prompt| !prompt.plan)
                    .collect();
                for prompt in &queued {
                    w.set_prompt_status(&prompt.id, PromptStatus::Inserted)?;
                    w.event(Event::PromptInserted {
                        prompt_id: prompt.id.clone(),
                        into: into.clone(),
                    })?;
                }
                Ok(queued)
            })
            .await?;
        Ok(inserted)
    }

    /// The plan is masked like any event: the model may have read a secret while exploring.
    async fn propose_plan(
        &self,
        prompt: &PromptId,
        title: Option<String>,
        plan: String,
    ) -> Result<PlanId, SessionError> {
        let secrets = self.actor.secrets();
        let title = title.map(|t| secrets.mask(t));
        Ok(self
            .actor
            .propose_plan(prompt, title, secrets.mask(plan))
            .await?)
    }

    async fn finish(&self, prompt: &PromptId, ending: Ending) -> Result<(), SessionError> {
        // Before the prompt is said to be over: whoever reads its end finds its work committed.
        // A stopped prompt is committed without asking the model: a stop must end soon.
        if *prompt == self.prompt.id {
            let ask_model = !matches!(ending, Ending::Cancelled { .. });
            self.auto_commit(&self.prompt, ask_model).await;
        }
        let prompt_id = prompt.clone();
        self.actor
            .log
            .write(move |w| match ending {
                Ending::Cancelled { by } => {
                    w.set_prompt_status(&prompt_id, PromptStatus::Cancelled)?;
                    w.event(Event::PromptCancelled { prompt_id, by })
                }
                Ending::Finished { outcome, usage } => {
                    let status = match outcome {
                        PromptOutcome::Completed => PromptStatus::Completed,
                        _ => PromptStatus::Failed,
                    };
                    w.set_prompt_status(&prompt_id, status)?;
                    w.event(Event::PromptFinished {
                        prompt_id,
                        outcome,
                        usage,
                    })
                }
            })
            .await?;
        Ok(())
    }

    async fn spent(&self) -> Result<Usage, SessionError> {
        Ok(self.actor.log.spend().await?)
    }

    async fn budget_used_up(&self) -> Result<Option<kiln_agent::LimitHit>, SessionError> {
        Ok(
            crate::engine::budget_used_up(
                self.inner,
                &self.prompt.author.id,
                &self.actor.repo.name,
            )
            .await?,
        )
    }

    /// The event and the session's running total in one transaction; then today's spend of
    /// the prompt's author and of the repo (control.db).
    async fn record_usage(&self, event: Event, usage: &Usage) -> Result<Recorded, SessionError> {
        let add = *usage;
        let (session, _) = self
            .actor
            .log
            .write(move |w| {
                w.event(event)?;
                w.add_spend(&add)
            })
            .await?;
        let budget = crate::engine::record_budget(
            self.inner,
            &self.prompt.author.id,
            &self.actor.repo.name,
            usage.cost(),
        )
        .await?;
        Ok(Recorded { session, budget })
    }

    async fn compact(
        &self,
        prompt: &PromptId,
        summarised: usize,
        summary: serde_json::Value,
        kept: Vec<serde_json::Value>,
        event: Event,
    ) -> Result<(), SessionError> {
        let prompt = prompt.clone();
        self.actor
            .log
            .write(move |w| {
                w.compact_messages(&prompt, summarised, &summary, &kept)?;
                w.event(event)
            })
            .await?;
        Ok(())
    }
}
