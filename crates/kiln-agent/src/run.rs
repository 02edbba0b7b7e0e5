//! The agent loop for one prompt: ask the model, stream its text, run the tools it calls in the
//! session's sandbox (through the hooks), give it the results, and repeat until it ends its turn,
//! a limit is hit, or someone stops it.
//!
//! Every step is an event in the session's log, appended before the next step starts, so a client
//! that watches sees exactly what the agent did, in order, and a crash loses nothing acknowledged.
//! The model conversation is stored beside the events so a follow-up prompt continues it.
//!
//! This file is the loop and how a prompt ends; a model turn is `turn.rs`, a tool call
//! `calls.rs`, the stored conversation and the system prompt `conversation.rs`.

use crate::{Agent, Ending, LimitHit, NO_MODEL, Session};
use kiln_model::{ContentBlock, Message, MessageRole, StopReason};
use kiln_protocol::api::{ErrorKind, Event, PromptInfo, PromptOutcome, Usage};
use kiln_tools::hooks::{Hook, HookConfig, HookContext, HookEvent, Hooks};
use kiln_tools::tools::{ToolCall, ToolRegistry};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One prompt's run: the agent's configuration, the session it runs in, and what it counted.
pub(crate) struct PromptRun<'a> {
    pub(crate) agent: &'a Agent,
    pub(crate) session: &'a dyn Session,
    pub(crate) prompt: PromptInfo,
    pub(crate) cancel: CancellationToken,
    pub(crate) usage: Usage,
    /// The session's usage, this prompt's so far included.
    pub(crate) session_usage: Usage,
    /// A daily budget a response of this prompt used up (the session reports it).
    pub(crate) budget_hit: Option<LimitHit>,
    /// The request size the provider last reported, and the conversation's size in chars
    /// then: what compaction estimates from.
    pub(crate) reported: Option<(u64, usize)>,
    /// Input plus output tokens of the last model response.
    pub(crate) last_tokens: u64,
    /// The server's hooks, then the repo's (read when the prompt starts).
    pub(crate) hooks: Hooks,
    /// The tools the model is offered and its calls run through; the sync gate asks it which
    /// calls write.
    pub(crate) tools: Arc<ToolRegistry>,
    /// A plan-first prompt: where `propose_plan` leaves the plan (see `plan.rs`).
    pub(crate) plan: Option<crate::plan::ProposalSlot>,
}

/// How a prompt ended, before it is recorded.
pub(crate) enum End {
    Finished(PromptOutcome),
    Cancelled,
    /// The server is shutting down: record nothing; the next start marks the prompt interrupted.
    Shutdown,
}

/// Why the loop could not go on: what kind of failure, and the message for people.
pub(crate) struct Failure(pub(crate) ErrorKind, pub(crate) String);

impl<'a> PromptRun<'a> {
    pub(crate) fn new(
        agent: &'a Agent,
        session: &'a dyn Session,
        prompt: PromptInfo,
        cancel: CancellationToken,
    ) -> Self {
        let tools = session
            .tools(&prompt)
            .into_iter()
            .fold(ToolRegistry::builtin(), ToolRegistry::with);
        // Plan first: nothing that writes until people approved a plan.
        let plan = prompt.plan.then(crate::plan::ProposalSlot::default);
        let tools = match &plan {
            Some(slot) => crate::plan::plan_tools(tools, slot),
            None => tools,
        };
        PromptRun {
            agent,
            session,
            prompt,
            cancel,
            usage: Usage::default(),
            session_usage: Usage::default(),
            budget_hit: None,
            reported: None,
            last_tokens: 0,
            hooks: Hooks::new(Vec::new()),
            tools: Arc::new(tools),
            plan,
        }
    }

    pub(crate) async fn run(mut self) {
        let end = match self.agent_loop().await {
            Ok(end) => end,
            Err(Failure(kind, message)) => {
                self.emit(Event::Error {
                    prompt_id: Some(self.prompt.id.clone()),
                    kind,
                    message,
                })
                .await;
                End::Finished(PromptOutcome::Failed)
            }
        };
        let (prompt_id, usage) = (self.prompt.id.clone(), self.usage);
        let stopped_by = self.session.stopped_by();
        let ending = match end {
            End::Shutdown => return,
            End::Cancelled => Ending::Cancelled {
                by: stopped_by.unwrap_or_else(|| self.prompt.author.clone()),
            },
            End::Finished(outcome) => Ending::Finished { outcome, usage },
        };
        if let Err(e) = self.session.finish(&prompt_id, ending).await {
            tracing::error!(session = %self.session.id(), error = %e, "cannot record a prompt's end");
        }
    }

    pub(crate) fn hook_context(&self) -> HookContext {
        HookContext {
            session_id: self.session.id().clone(),
            prompt_id: self.prompt.id.clone(),
            author: self.prompt.author.clone(),
            repo: self.session.repo().name.clone(),
            cwd: kiln_core::WORKDIR.to_string(),
        }
    }

    async fn agent_loop(&mut self) -> Result<End, Failure> {
        let Some(model) = self.agent.model.clone() else {
            return Err(Failure(ErrorKind::NoModel, NO_MODEL.to_string()));
        };
        self.hooks = self.load_hooks().await?;
        // The user's words, possibly with context from prompt-submit hooks.
        let submit = self
            .hooks
            .run(
                &self.hook_context(),
                &HookEvent::UserPromptSubmit {
                    prompt: self.prompt.text.clone(),
                },
            )
            .await;
        if let Some(blocked) = submit.blocked {
            return Err(Failure(
                ErrorKind::Hook,
                format!(
                    "the hook {} refused this prompt: {}",
                    blocked.hook, blocked.reason
                ),
            ));
        }
        let mut text = self.prompt.text.clone();
        if let Some(context) = submit.context_text() {
            text.push_str("\n\n");
            text.push_str(&context);
        }
        let mut conversation = self.load_conversation().await?;
        self.close_unanswered_calls(&mut conversation).await?;
        // A session at its cap, or a budget used up since the prompt was queued, stops it
        // before it asks the model anything.
        let storage = |e: crate::SessionError| {
            Failure(
                ErrorKind::Storage,
                format!("cannot read the session's usage: {e}"),
            )
        };
        self.session_usage = self.session.spent().await.map_err(storage)?;
        let hit = match self.session.budget_used_up().await.map_err(storage)? {
            Some(hit) => Some(hit),
            None => self.agent.limits.check(&self.usage, &self.session_usage),
        };
        if let Some(hit) = hit {
            return Ok(self.limit_end(hit).await);
        }
        let sandbox = tokio::select! {
            sandbox = self.session.sandbox() => sandbox.map_err(|e| Failure(ErrorKind::Sandbox, format!("this prompt cannot run: the sandbox is not available ({e}); the next prompt tries again")))?,
            _ = self.cancel.cancelled() => return Ok(self.cancelled_end()),
        };
        let more = tokio::select! {
            tools = self.session.sandbox_tools(&self.prompt, &sandbox) => tools,
            _ = self.cancel.cancelled() => return Ok(self.cancelled_end()),
        };
        // Planning, only those that do not write: nothing changes before a plan is approved.
        let more: Vec<_> = more
            .into_iter()
            .filter(|tool| self.plan.is_none() || !tool.writes())
            .collect();
        if !more.is_empty() {
            let tools = more
                .into_iter()
                .fold((*self.tools).clone(), ToolRegistry::with);
            self.tools = Arc::new(tools);
            // The write gate asks the registry which calls write: it gets the new one.
            self.hooks = self.load_hooks().await?;
        }
        let system = self.system_prompt(&sandbox).await;
        // A conversation whose last turn failed or hit a limit ends with the user's side; the
        // new prompt joins that message so user and assistant keep alternating.
        match conversation.last_mut() {
            Some(last) if last.role == MessageRole::User => {
                last.content.push(ContentBlock::Text { text });
                self.replace_last(last).await?;
            }
            _ => {
                self.push(
                    &mut conversation,
                    Message {
                        role: MessageRole::User,
                        content: vec![ContentBlock::Text { text }],
                    },
                )
                .await?
            }
        }
        let limits = self.agent.limits;
        // What every request carries beside the conversation, for the size estimate.
        let fixed_chars = system.len()
            + self
                .tools
                .specs()
                .iter()
                .map(|s| s.name.len() + s.description.len() + s.input_schema.to_string().len())
                .sum::<usize>();
        let mut stop_hook_active = false;
        for turn in 1..=limits.max_turns {
            self.deliver_inserted(&mut conversation).await?;
            if !self
                .compact_if_needed(&model, fixed_chars, &mut conversation, turn)
                .await?
            {
                return Ok(self.cancelled_end());
            }
            // The summary request of a compaction costs too.
            if let Some(hit) = self
                .budget_hit
                .take()
                .or_else(|| limits.check(&self.usage, &self.session_usage))
            {
                return Ok(self.limit_end(hit).await);
            }
            let (blocks, stop_reason) = match self
                .model_turn(&model, &system, &conversation, turn)
                .await?
            {
                Some(result) => result,
                None => return Ok(self.cancelled_end()),
            };
            let calls: Vec<ToolCall> = blocks
                .iter()
                .filter_map(|b| match b {
                    ContentBlock::ToolUse { id, name, input } => Some(ToolCall {
                        id: id.clone(),
                        name: name.clone(),
                        input: input.clone(),
                    }),
                    _ => None,
                })
                .collect();
            self.push(
                &mut conversation,
                Message {
                    role: MessageRole::Assistant,
                    content: blocks,
                },
            )
            .await?;
            self.reported = Some((
                self.last_tokens,
                crate::compact::conversation_chars(&conversation),
            ));
            // A cap or budget reached ends the run here; the calls the model made get results
            // saying they did not run, so the stored conversation stays one the API accepts.
            let hit = self
                .budget_hit
                .take()
                .or_else(|| limits.check(&self.usage, &self.session_usage));
            if let Some(hit) = hit {
                if !calls.is_empty() {
                    let results = calls
                        .iter()
                        .map(|c| ContentBlock::ToolResult {
                            tool_use_id: c.id.clone(),
                            content: format!("not run: {} was reached", hit.limit),
                            is_error: true,
                        })
                        .collect();
                    self.push(
                        &mut conversation,
                        Message {
                            role: MessageRole::User,
                            content: results,
                        },
                    )
                    .await?;
                }
                return Ok(self.limit_end(hit).await);
            }
            if calls.is_empty() {
                if stop_reason == StopReason::MaxTokens {
                    return Ok(End::Finished(PromptOutcome::TokenLimit));
                }
                // Stop hooks may send the agent back to work with a reason.
                let stop = self
                    .hooks
                    .run(&self.hook_context(), &HookEvent::Stop { stop_hook_active })
                    .await;
                match stop.blocked.map(|b| b.reason) {
                    Some(reason) if !stop_hook_active => {
                        stop_hook_active = true;
                        self.push(
                            &mut conversation,
                            Message {
                                role: MessageRole::User,
                                content: vec![ContentBlock::Text { text: reason }],
                            },
                        )
                        .await?;
                        continue;
                    }
                    _ => return Ok(End::Finished(PromptOutcome::Completed)),
                }
            }
            let mut results = Vec::with_capacity(calls.len());
            for call in &calls {
                if self.cancel.is_cancelled() {
                    results.push(ContentBlock::ToolResult {
                        tool_use_id: call.id.clone(),
                        content: "not run: the user stopped the agent".into(),
                        is_error: true,
                    });
                    continue;
                }
                match self.tool_call(&sandbox, call).await {
                    Ok(result) => results.push(result),
                    Err(gone) => {
                        // Every further call would fail the same way: the prompt ends here,
                        // with a result for each call so the stored conversation stays whole.
                        let message = gone.to_string();
                        results.extend(calls.iter().skip(results.len()).map(|c| {
                            ContentBlock::ToolResult {
                                tool_use_id: c.id.clone(),
                                content: if c.id == call.id {
                                    message.clone()
                                } else {
                                    "not run: the sandbox went away".into()
                                },
                                is_error: true,
                            }
                        }));
                        self.push(
                            &mut conversation,
                            Message {
                                role: MessageRole::User,
                                content: results,
                            },
                        )
                        .await?;
                        return Err(Failure(ErrorKind::Sandbox, message));
                    }
                }
            }
            self.push(
                &mut conversation,
                Message {
                    role: MessageRole::User,
                    content: results,
                },
            )
            .await?;
            if self.cancel.is_cancelled() {
                return Ok(self.cancelled_end());
            }
            if let Some(end) = self.finish_with_plan().await? {
                return Ok(end);
            }
        }
        Ok(End::Finished(PromptOutcome::TurnLimit))
    }

    /// The write gate, the server's hooks, then the repo's current ones.
    async fn load_hooks(&self) -> Result<Hooks, Failure> {
        let repo_hooks = self.session.repo_hooks().await.map_err(|e| {
            Failure(
                ErrorKind::Storage,
                format!("cannot read the repo's settings: {e}"),
            )
        })?;
        // The write gate first: nothing writes to a checkout that is still syncing.
        let mut chain: Vec<Arc<dyn Hook>> = vec![
            self.session
                .write_gate(self.cancel.clone(), self.tools.clone()),
        ];
        chain.extend(self.agent.hooks.iter().cloned());
        for spec in &repo_hooks {
            let hook = HookConfig::from(spec).build().map_err(|e| {
                Failure(
                    ErrorKind::Hook,
                    format!("the repo's hook {:?} is invalid: {e}", spec.command),
                )
            })?;
            chain.push(hook);
        }
        Ok(Hooks::new(chain))
    }

    /// Says which cap or budget stopped the prompt, and how it ends.
    async fn limit_end(&self, hit: LimitHit) -> End {
        let outcome = if hit.is_tokens() {
            PromptOutcome::TokenLimit
        } else {
            PromptOutcome::CostLimit
        };
        self.emit(Event::LimitReached {
            prompt_id: self.prompt.id.clone(),
            limit: hit.limit.to_string(),
            value: hit.value,
            spent: hit.spent,
            message: hit.message,
        })
        .await;
        End::Finished(outcome)
    }

    pub(crate) fn cancelled_end(&self) -> End {
        if self.agent.shutdown.is_cancelled() {
            End::Shutdown
        } else {
            End::Cancelled
        }
    }

    pub(crate) async fn emit(&self, event: Event) {
        if let Err(e) = self.session.append(event).await {
            tracing::error!(session = %self.session.id(), error = %e, "cannot append an event");
        }
    }
}
