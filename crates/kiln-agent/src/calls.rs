//! One tool call: the pre-tool hooks (which may block, substitute or rewrite it), the tool in
//! the sandbox with its output and file changes streamed as events, the post-tool hooks, and
//! the result block the model sees.

use crate::run::PromptRun;
use kiln_model::ContentBlock;
use kiln_protocol::api::{Event, ToolOutcome};
use kiln_sandbox::Sandbox;
use kiln_tools::hooks::HookEvent;
use kiln_tools::tools::{self, SandboxGone, ToolCall, ToolContext, ToolUpdate};
use std::time::Instant;
use tracing::Instrument;

impl PromptRun<'_> {
    /// Runs one tool call through the hooks and returns its result block for the model, or
    /// [`SandboxGone`] when the prompt cannot go on (the call's end is recorded either way).
    pub(crate) async fn tool_call(
        &self,
        sandbox: &Sandbox,
        call: &ToolCall,
    ) -> Result<ContentBlock, SandboxGone> {
        let span = tracing::info_span!(
            "tool_call",
            session = %self.session.id(),
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
            // Masked before anything reads it: the event, the hooks, the model.
            let content = self.session.mask(result.content);
            let outcome = if result.cancelled {
                ToolOutcome::Cancelled
            } else if result.is_error {
                ToolOutcome::Error {
                    message: first_line(&content),
                }
            } else {
                ToolOutcome::Ok
            };
            (content, result.is_error, outcome)
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
        let env = self.session.prompt_env(&self.prompt.author);
        let ctx = ToolContext {
            sandbox,
            workdir: kiln_core::WORKDIR,
            cancel: &self.cancel,
            bash_timeout: self.agent.bash_timeout,
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
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}
