//! The agent loop for one prompt: ask the model, stream its text, run the tools it calls in the
//! session's sandbox (through the hooks), give it the results, and repeat until it ends its turn,
//! a limit is hit, or someone stops it.
//!
//! Every step is an event in the session's log, appended before the next step starts, so a client
//! that watches sees exactly what the agent did, in order, and a crash loses nothing acknowledged.
//! The model conversation is stored beside the events so a follow-up prompt continues it.

use crate::engine::{Inner, NO_MODEL};
use crate::hooks::{HookConfig, HookContext, HookEvent, Hooks};
use crate::session::SessionActor;
use crate::tools::{self, SandboxGone, ToolCall, ToolContext, ToolRegistry, ToolUpdate};
use crate::workspace::WORKDIR;
use kiln_model::{
    ContentBlock, Message, MessageRole, ModelClient, ModelRequest, StopReason, StreamEvent,
};
use kiln_protocol::api::{
    ErrorKind, Event, PromptInfo, PromptOutcome, PromptStatus, ToolOutcome, Usage,
};
use kiln_sandbox::Sandbox;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub(crate) struct PromptRun<'a> {
    inner: &'a Arc<Inner>,
    actor: &'a Arc<SessionActor>,
    prompt: PromptInfo,
    cancel: CancellationToken,
    usage: Usage,
    /// The server's hooks, then the repo's (read when the prompt starts).
    hooks: Hooks,
    /// The tools the model is offered and its calls run through; the sync gate asks it which
    /// calls write.
    tools: Arc<ToolRegistry>,
}

/// How a prompt ended, before it is recorded.
enum End {
    Finished(PromptOutcome),
    Cancelled,
    /// The server is shutting down: record nothing; the next start marks the prompt interrupted.
    Shutdown,
}

/// Why the loop could not go on: what kind of failure, and the message for people.
struct Failure(ErrorKind, String);

impl<'a> PromptRun<'a> {
    pub(crate) fn new(
        inner: &'a Arc<Inner>,
        actor: &'a Arc<SessionActor>,
        prompt: PromptInfo,
        cancel: CancellationToken,
    ) -> Self {
        PromptRun {
            inner,
            actor,
            prompt,
            cancel,
            usage: Usage::default(),
            hooks: Hooks::new(Vec::new()),
            tools: Arc::new(ToolRegistry::builtin()),
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
        let stopped_by = self.actor.stopped_by();
        let result = match end {
            End::Shutdown => return,
            End::Cancelled => {
                let by = stopped_by.unwrap_or_else(|| self.prompt.author.clone());
                self.actor
                    .log
                    .write(move |w| {
                        w.set_prompt_status(&prompt_id, PromptStatus::Cancelled)?;
                        w.event(Event::PromptCancelled { prompt_id, by })
                    })
                    .await
            }
            End::Finished(outcome) => {
                let status = match outcome {
                    PromptOutcome::Completed => PromptStatus::Completed,
                    _ => PromptStatus::Failed,
                };
                self.actor
                    .log
                    .write(move |w| {
                        w.set_prompt_status(&prompt_id, status)?;
                        w.event(Event::PromptFinished {
                            prompt_id,
                            outcome,
                            usage,
                        })
                    })
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(session = %self.actor.log.id(), error = %e, "cannot record a prompt's end");
        }
    }

    fn hook_context(&self) -> HookContext {
        HookContext {
            session_id: self.actor.log.id().clone(),
            prompt_id: self.prompt.id.clone(),
            author: self.prompt.author.clone(),
            repo: self.actor.repo.name.clone(),
            cwd: WORKDIR.to_string(),
        }
    }

    async fn agent_loop(&mut self) -> Result<End, Failure> {
        let Some(model) = self.inner.model.clone() else {
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
        let sandbox = tokio::select! {
            sandbox = self.actor.sandbox(self.inner) => sandbox.map_err(|e| Failure(ErrorKind::Sandbox, format!("the sandbox is not available: {e}")))?,
            _ = self.cancel.cancelled() => return Ok(self.cancelled_end()),
        };
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
        let limits = self.inner.config.limits;
        let mut stop_hook_active = false;
        for turn in 1..=limits.max_turns {
            self.deliver_inserted(&mut conversation).await?;
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
            let over_budget =
                self.usage.input_tokens + self.usage.output_tokens > limits.max_tokens;
            if calls.is_empty() {
                if over_budget || stop_reason == StopReason::MaxTokens {
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
            // Checked only now, so every tool call the model made has its result stored.
            if over_budget {
                return Ok(End::Finished(PromptOutcome::TokenLimit));
            }
        }
        Ok(End::Finished(PromptOutcome::TurnLimit))
    }

    /// The server's hooks followed by the repo's current ones.
    async fn load_hooks(&self) -> Result<Hooks, Failure> {
        let repo = self
            .inner
            .store
            .repo(&self.actor.repo.name)
            .await
            .map_err(|e| {
                Failure(
                    ErrorKind::Storage,
                    format!("cannot read the repo's settings: {e}"),
                )
            })?;
        // The write gate first: nothing writes to a checkout that is still syncing.
        let gate = self.actor.sync_gate(
            self.cancel.clone(),
            self.inner.config.git_timeout,
            self.tools.clone(),
        );
        let mut chain: Vec<Arc<dyn crate::hooks::Hook>> = vec![Arc::new(gate)];
        chain.extend(self.inner.hooks.iter().cloned());
        for spec in &repo.hooks {
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

    fn cancelled_end(&self) -> End {
        if self.inner.shutdown.is_cancelled() {
            End::Shutdown
        } else {
            End::Cancelled
        }
    }

    /// One model request, streamed into events. `None` when cancelled.
    async fn model_turn(
        &mut self,
        model: &ModelClient,
        system: &str,
        conversation: &[Message],
        turn: u32,
    ) -> Result<Option<(Vec<ContentBlock>, StopReason)>, Failure> {
        let request = ModelRequest {
            system: system.to_string(),
            messages: conversation.to_vec(),
            tools: self
                .tools
                .specs()
                .into_iter()
                .map(|spec| kiln_model::ToolSpec {
                    name: spec.name.to_string(),
                    description: spec.description.to_string(),
                    input_schema: spec.input_schema,
                })
                .collect(),
            max_tokens: None,
        };
        self.emit(Event::ModelRequest {
            prompt_id: self.prompt.id.clone(),
            turn,
            model: model.config().display_name(),
        })
        .await;
        let mut stream = tokio::select! {
            stream = model.stream(&request) => stream.map_err(|e| Failure(ErrorKind::Model, format!("the model request failed: {e}")))?,
            _ = self.cancel.cancelled() => return Ok(None),
        };
        let mut blocks: Vec<ContentBlock> = Vec::new();
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = self.cancel.cancelled() => {
                    // Keep what was said so the conversation stays whole.
                    let _ = self.keep_partial(blocks).await;
                    return Ok(None);
                }
            };
            match next {
                Some(Ok(StreamEvent::TextDelta(text))) => {
                    match blocks.last_mut() {
                        Some(ContentBlock::Text { text: all }) => all.push_str(&text),
                        _ => blocks.push(ContentBlock::Text { text: text.clone() }),
                    }
                    self.emit(Event::TextDelta {
                        prompt_id: self.prompt.id.clone(),
                        text,
                    })
                    .await;
                }
                Some(Ok(StreamEvent::ToolUse { id, name, input })) => {
                    blocks.push(ContentBlock::ToolUse { id, name, input });
                }
                Some(Ok(StreamEvent::Finished { stop_reason, usage })) => {
                    self.usage.input_tokens += usage.input_tokens;
                    self.usage.output_tokens += usage.output_tokens;
                    if blocks.is_empty() {
                        blocks.push(ContentBlock::Text {
                            text: String::new(),
                        });
                    }
                    return Ok(Some((blocks, stop_reason)));
                }
                Some(Err(e)) => {
                    let _ = self.keep_partial(blocks).await;
                    return Err(Failure(
                        ErrorKind::Model,
                        format!("the model stream failed: {e}"),
                    ));
                }
                None => {
                    let _ = self.keep_partial(blocks).await;
                    return Err(Failure(
                        ErrorKind::Model,
                        "the model stream ended without finishing".into(),
                    ));
                }
            }
        }
    }

    /// Records the text of an unfinished turn (tool calls dropped: they never ran), so the
    /// stored conversation still alternates user and assistant.
    async fn keep_partial(&self, blocks: Vec<ContentBlock>) -> Result<(), Failure> {
        let mut text: String = blocks
            .into_iter()
            .filter_map(|b| match b {
                ContentBlock::Text { text } => Some(text),
                _ => None,
            })
            .collect();
        text.push_str("\n[interrupted]");
        let message = Message {
            role: MessageRole::Assistant,
            content: vec![ContentBlock::Text { text }],
        };
        self.store_message(&message).await
    }

    /// Runs one tool call through the hooks and returns its result block for the model, or
    /// [`SandboxGone`] when the prompt cannot go on (the call's end is recorded either way).
    async fn tool_call(
        &self,
        sandbox: &Sandbox,
        call: &ToolCall,
    ) -> Result<ContentBlock, SandboxGone> {
        let span = tracing::info_span!(
            "tool_call",
            session = %self.actor.log.id(),
            prompt = %self.prompt.id,
            tool = %call.name,
            call_id = %call.id,
        );
        self.traced_tool_call(sandbox, call).instrument(span).await
    }

    async fn traced_tool_call(
        &self,
        sandbox: &Sandbox,
        call: &ToolCall,
    ) -> Result<ContentBlock, SandboxGone> {
        let started = Instant::now();
        let mut call = call.clone();
        self.emit(Event::ToolCallStarted {
            prompt_id: self.prompt.id.clone(),
            call_id: call.id.clone(),
            tool: call.name.clone(),
            input: call.input.clone(),
        })
        .await;
        let ctx = self.hook_context();
        let pre = self
            .hooks
            .run(
                &ctx,
                &HookEvent::PreToolUse {
                    tool_name: call.name.clone(),
                    tool_input: call.input.clone(),
                    tool_use_id: call.id.clone(),
                },
            )
            .await;
        let pre_context = pre.context_text();
        let (mut content, is_error, outcome) = if let Some(reason) = pre.blocked.map(|b| b.reason) {
            (
                format!("blocked by a hook: {reason}"),
                true,
                ToolOutcome::Blocked { reason },
            )
        } else if let Some(result) = pre.substitute {
            (result, false, ToolOutcome::Ok)
        } else {
            if let Some(input) = pre.input {
                call.input = input;
            }
            let result = match self.execute(sandbox, &call).await {
                Ok(result) => result,
                Err(gone) => {
                    tracing::warn!(reason = %gone.reason, "the sandbox went away during a tool call");
                    let output = gone.to_string();
                    self.emit(Event::ToolCallFinished {
                        call_id: call.id.clone(),
                        outcome: ToolOutcome::Error {
                            message: first_line(&output),
                        },
                        output,
                        duration_ms: started.elapsed().as_millis() as u64,
                    })
                    .await;
                    return Err(gone);
                }
            };
            let outcome = if result.cancelled {
                ToolOutcome::Cancelled
            } else if result.is_error {
                ToolOutcome::Error {
                    message: first_line(&result.content),
                }
            } else {
                ToolOutcome::Ok
            };
            (result.content, result.is_error, outcome)
        };
        if let Some(context) = pre_context {
            content.push_str("\n\n");
            content.push_str(&context);
        }
        if matches!(outcome, ToolOutcome::Ok | ToolOutcome::Error { .. }) {
            let post = self.hooks.run(
                    &ctx,
                    &HookEvent::PostToolUse {
                        tool_name: call.name.clone(),
                        tool_input: call.input.clone(),
                        tool_use_id: call.id.clone(),
                        tool_response: serde_json::json!({"content": content, "is_error": is_error}),
                    },
                )
                .await;
            for extra in [
                post.blocked.as_ref().map(|b| b.reason.clone()),
                post.context_text(),
            ]
            .into_iter()
            .flatten()
            {
                content.push_str("\n\n");
                content.push_str(&extra);
            }
        }
        self.emit(Event::ToolCallFinished {
            call_id: call.id.clone(),
            outcome,
            output: content.clone(),
            duration_ms: started.elapsed().as_millis() as u64,
        })
        .await;
        Ok(ContentBlock::ToolResult {
            tool_use_id: call.id.clone(),
            content,
            is_error,
        })
    }

    /// Runs the tool, turning its streamed output and file changes into events as they come.
    async fn execute(
        &self,
        sandbox: &Sandbox,
        call: &ToolCall,
    ) -> Result<tools::ToolResult, SandboxGone> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ToolUpdate>(64);
        let env = self.actor.prompt_env(&self.prompt.author);
        let ctx = ToolContext {
            sandbox,
            workdir: WORKDIR,
            cancel: &self.cancel,
            bash_timeout: self.inner.config.bash_timeout,
            env: &env,
        };
        let run = self.tools.run(&ctx, call, &tx);
        tokio::pin!(run);
        let result = loop {
            tokio::select! {
                result = &mut run => break result,
                Some(update) = rx.recv() => self.update(&call.id, update).await,
            }
        };
        while let Ok(update) = rx.try_recv() {
            self.update(&call.id, update).await;
        }
        result
    }

    async fn update(&self, call_id: &str, update: ToolUpdate) {
        let event = match update {
            ToolUpdate::Output { stream, chunk } => Event::ToolOutput {
                call_id: call_id.to_string(),
                stream,
                chunk,
            },
            ToolUpdate::FileChanged(change) => Event::FileChanged {
                prompt_id: self.prompt.id.clone(),
                author: self.prompt.author.clone(),
                path: change.path,
                kind: change.kind,
                added: change.added,
                removed: change.removed,
            },
        };
        self.emit(event).await;
    }

    /// Hands prompts queued in insert mode to the model as part of this prompt.
    async fn deliver_inserted(&self, conversation: &mut [Message]) -> Result<(), Failure> {
        let into = self.prompt.id.clone();
        let (inserted, _) = self
            .actor
            .log
            .write(move |w| {
                if w.delivery_mode()? != kiln_protocol::api::DeliveryMode::Insert {
                    return Ok(Vec::new());
                }
                let queued = w.prompts_with_status(PromptStatus::Queued)?;
                for prompt in &queued {
                    w.set_prompt_status(&prompt.id, PromptStatus::Inserted)?;
                    w.event(Event::PromptInserted {
                        prompt_id: prompt.id.clone(),
                        into: into.clone(),
                    })?;
                }
                Ok(queued)
            })
            .await
            .map_err(|e| Failure(ErrorKind::Storage, format!("cannot read the queue: {e}")))?;
        if inserted.is_empty() {
            return Ok(());
        }
        // The last message is the user's (the prompt or tool results): add to it, so the
        // conversation keeps alternating.
        let last = conversation
            .last_mut()
            .expect("the prompt's message is always there");
        for prompt in inserted {
            last.content.push(ContentBlock::Text {
                text: format!("[{} adds] {}", prompt.author.name, prompt.text),
            });
        }
        self.replace_last(last).await
    }

    async fn system_prompt(&self, sandbox: &Sandbox) -> String {
        let repo = &self.actor.repo;
        let mut system = format!(
            "You are a coding agent working in a sandbox on the repository {name} ({url}), \
             checked out at {WORKDIR} on a session branch made from {branch}. Use the tools to \
             read, search, edit and run code there. Work until the request is done, then say \
             briefly what you changed.",
            name = repo.name,
            url = crate::host::redact_urls(&repo.url),
            branch = repo.default_branch,
        );
        if !repo.description.is_empty() {
            system.push_str(&format!("\n\nAbout the repository: {}", repo.description));
        }
        let agents = format!("{WORKDIR}/AGENTS.md");
        if let Ok(bytes) = sandbox.guest().read_file(&agents).await {
            let text = String::from_utf8_lossy(&bytes);
            let text: String = text.chars().take(32 * 1024).collect();
            system.push_str(&format!(
                "\n\nThe repository's AGENTS.md says:\n<agents_md>\n{text}\n</agents_md>"
            ));
        }
        system
    }

    async fn load_conversation(&self) -> Result<Vec<Message>, Failure> {
        let stored = self.actor.log.messages().await.map_err(|e| {
            Failure(
                ErrorKind::Storage,
                format!("cannot read the conversation: {e}"),
            )
        })?;
        stored
            .into_iter()
            .map(|value| {
                serde_json::from_value(value).map_err(|e| {
                    Failure(
                        ErrorKind::Storage,
                        format!("the stored conversation is unreadable: {e}"),
                    )
                })
            })
            .collect()
    }

    /// A run that ended between the model's tool calls and their results — the process was
    /// killed, or the run panicked — left calls without results, which model APIs refuse:
    /// each gets a result saying it did not finish, so the conversation can go on.
    async fn close_unanswered_calls(&self, conversation: &mut Vec<Message>) -> Result<(), Failure> {
        let Some(last) = conversation.last() else {
            return Ok(());
        };
        if last.role != MessageRole::Assistant {
            return Ok(());
        }
        let results: Vec<ContentBlock> = last
            .content
            .iter()
            .filter_map(|block| match block {
                ContentBlock::ToolUse { id, .. } => Some(ContentBlock::ToolResult {
                    tool_use_id: id.clone(),
                    content: "interrupted: this call did not finish (kiln stopped or failed \
                              during it); check its effects before relying on them"
                        .into(),
                    is_error: true,
                }),
                _ => None,
            })
            .collect();
        if results.is_empty() {
            return Ok(());
        }
        let message = Message {
            role: MessageRole::User,
            content: results,
        };
        self.push(conversation, message).await
    }

    async fn push(&self, conversation: &mut Vec<Message>, message: Message) -> Result<(), Failure> {
        self.store_message(&message).await?;
        conversation.push(message);
        Ok(())
    }

    async fn store_message(&self, message: &Message) -> Result<(), Failure> {
        let value = serde_json::to_value(message).expect("messages serialize");
        let prompt = self.prompt.id.clone();
        self.actor
            .log
            .write(move |w| w.push_message(&prompt, &value))
            .await
            .map(|_| ())
            .map_err(|e| {
                Failure(
                    ErrorKind::Storage,
                    format!("cannot store the conversation: {e}"),
                )
            })
    }

    async fn replace_last(&self, message: &Message) -> Result<(), Failure> {
        let value = serde_json::to_value(message).expect("messages serialize");
        self.actor
            .log
            .write(move |w| w.replace_last_message(&value))
            .await
            .map(|_| ())
            .map_err(|e| {
                Failure(
                    ErrorKind::Storage,
                    format!("cannot store the conversation: {e}"),
                )
            })
    }

    async fn emit(&self, event: Event) {
        if let Err(e) = self.actor.log.append(event).await {
            tracing::error!(session = %self.actor.log.id(), error = %e, "cannot append an event");
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}
