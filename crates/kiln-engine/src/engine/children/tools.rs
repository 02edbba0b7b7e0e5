//! The agent's sub-session tools: `spawn_session`, `session_status`, `send_to_session`,
//! `stop_session`, `wait_sessions`. They act for the author of the running prompt, and only on
//! sessions this session spawned: any other id is refused as unknown.

use crate::Engine;
use kiln_core::{PromptId, SessionId};
use kiln_protocol::api::{PromptStatus, UserRef};
use kiln_tools::tools::{Tool, ToolContext, ToolError, ToolResult, ToolSpec, ToolUpdate};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// `wait_sessions` waits this long when not told, and at most [`WAIT_MAX`].
const WAIT_DEFAULT: Duration = Duration::from_secs(600);
const WAIT_MAX: Duration = Duration::from_secs(1_800);
/// How often `wait_sessions` looks at its children.
const WAIT_POLL: Duration = Duration::from_millis(200);
/// The most ids one `wait_sessions` call may name.
const WAIT_IDS: usize = 64;

/// What every sub-session tool of one prompt shares.
struct Context {
    engine: Engine,
    /// The session whose agent calls the tools: the parent.
    session: SessionId,
    prompt: PromptId,
    /// The prompt's author: children's prompts are theirs.
    author: UserRef,
}

#[derive(Clone, Copy)]
enum Kind {
    Spawn,
    Status,
    Send,
    Stop,
    Wait,
}

struct ChildTool {
    kind: Kind,
    context: Arc<Context>,
}

/// The five tools for a prompt of `session` by `author`.
pub(crate) fn session_tools(
    engine: Engine,
    session: SessionId,
    prompt: PromptId,
    author: UserRef,
) -> Vec<Arc<dyn Tool>> {
    let context = Arc::new(Context {
        engine,
        session,
        prompt,
        author,
    });
    [
        Kind::Spawn,
        Kind::Status,
        Kind::Send,
        Kind::Stop,
        Kind::Wait,
    ]
    .into_iter()
    .map(|kind| {
        Arc::new(ChildTool {
            kind,
            context: context.clone(),
        }) as Arc<dyn Tool>
    })
    .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpawnInput {
    repo: String,
    prompt: String,
    #[serde(default)]
    title: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdInput {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendInput {
    id: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitInput {
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    timeout_s: Option<u64>,
}

impl ChildTool {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Spawn => "spawn_session",
            Kind::Status => "session_status",
            Kind::Send => "send_to_session",
            Kind::Stop => "stop_session",
            Kind::Wait => "wait_sessions",
        }
    }

    fn input<T: for<'de> Deserialize<'de>>(&self, input: &Value) -> Result<T, ToolError> {
        serde_json::from_value(input.clone()).map_err(|e| ToolError::BadArguments {
            tool: self.name(),
            message: e.to_string(),
        })
    }

    /// `id` as a child of this session, or an error the model reads.
    async fn child(&self, id: &str) -> Result<SessionId, ToolError> {
        let unknown = || {
            ToolError::Failed(format!(
                "{id:?} is not a sub-session this session spawned; use the ids spawn_session returned"
            ))
        };
        let id = SessionId::parse(id).ok_or_else(unknown)?;
        match self.context.engine.store().session_row(&id).await {
            Ok(row) if row.parent.as_ref() == Some(&self.context.session) => Ok(id),
            Ok(_) | Err(kiln_store::Error::NotFound(_)) => Err(unknown()),
            Err(e) => Err(ToolError::Failed(e.to_string())),
        }
    }

    /// One child's state, its last prompt and what it said, and its pull request.
    async fn describe(&self, id: &SessionId, account: bool) -> Result<String, ToolError> {
        let engine = &self.context.engine;
        let failed = |e: crate::Error| ToolError::Failed(e.to_string());
        let row = engine
            .store()
            .session_row(id)
            .await
            .map_err(|e| failed(e.into()))?;
        let working = engine.has_work(id).await.map_err(failed)?;
        let log = engine
            .store()
            .open_session(id)
            .await
            .map_err(|e| failed(e.into()))?;
        let prompts = log.prompts().await.map_err(|e| failed(e.into()))?;
        let mut out = format!(
            "{id} \"{}\" on {}: {}\n",
            row.title,
            row.repo,
            if row.closed {
                "closed"
            } else if working {
                "working"
            } else {
                "idle (its work is done)"
            }
        );
        let ended = prompts
            .iter()
            .rev()
            .find(|p| !matches!(p.status, PromptStatus::Queued | PromptStatus::Running));
        if let Some(prompt) = ended {
            let said = super::status::prompt_summary(&log, &prompt.id, 1_500)
                .await
                .map_err(|e| failed(e.into()))?;
            out.push_str(&format!(
                "Its last finished prompt: {}. It said: {said}\n",
                prompt.status.as_str()
            ));
        }
        if account {
            out.push_str(
                &super::status::recent_account(&log)
                    .await
                    .map_err(|e| failed(e.into()))?,
            );
        }
        match &row.pull_request {
            Some(pr) => out.push_str(&format!(
                "Pull request #{} ({}): {}\n",
                pr.number, pr.state, pr.url
            )),
            None => out.push_str("No pull request.\n"),
        }
        Ok(out)
    }

    async fn wait(&self, ctx: &ToolContext<'_>, input: WaitInput) -> Result<ToolResult, ToolError> {
        let engine = &self.context.engine;
        let ids = match input.ids {
            Some(ids) if !ids.is_empty() => {
                if ids.len() > WAIT_IDS {
                    return Err(ToolError::Failed(format!(
                        "at most {WAIT_IDS} ids per wait_sessions call"
                    )));
                }
                let mut children = Vec::new();
                for id in &ids {
                    children.push(self.child(id).await?);
                }
                children
            }
            _ => engine
                .store()
                .children(&self.context.session)
                .await
                .map_err(|e| ToolError::Failed(e.to_string()))?
                .into_iter()
                .map(|row| row.id)
                .collect(),
        };
        if ids.is_empty() {
            return Ok(ToolResult::ok(
                "this session has no sub-sessions to wait for",
            ));
        }
        let timeout = input
            .timeout_s
            .map(Duration::from_secs)
            .unwrap_or(WAIT_DEFAULT)
            .min(WAIT_MAX);
        let deadline = tokio::time::Instant::now() + timeout;
        let done = loop {
            let mut busy = 0;
            for id in &ids {
                if engine
                    .has_work(id)
                    .await
                    .map_err(|e| ToolError::Failed(e.to_string()))?
                {
                    busy += 1;
                }
            }
            if busy == 0 {
                break true;
            }
            if tokio::time::Instant::now() >= deadline {
                break false;
            }
            tokio::select! {
                _ = ctx.cancel.cancelled() => return Err(ToolError::Cancelled),
                _ = tokio::time::sleep(WAIT_POLL) => {}
            }
        };
        // What this result says, the next turn need not repeat.
        if let Ok(actor) = engine.actor(&self.context.session).await {
            actor.forget_notices(&ids);
        }
        let mut out = if done {
            "Every sub-session waited for has finished its work.\n".to_string()
        } else {
            format!(
                "The wait ended after {} s; some sub-sessions are still working.\n",
                timeout.as_secs()
            )
        };
        for id in &ids {
            out.push_str(&self.describe(id, false).await?);
        }
        Ok(ToolResult::ok(out))
    }
}

#[async_trait::async_trait]
impl Tool for ChildTool {
    fn spec(&self) -> ToolSpec<'_> {
        let id = json!({"type": "string", "description": "A sub-session's id, as spawn_session returned it"});
        let (description, input_schema) = match self.kind {
            Kind::Spawn => (
                "Start a sub-session: another agent with its own sandbox and branch on `repo` \
                 (this repository or another kiln knows), working on `prompt` in the name of \
                 the person who sent this prompt. Returns its id at once; it works in the \
                 background. Use wait_sessions or session_status to follow it.",
                json!({
                    "type": "object",
                    "properties": {
                        "repo": {"type": "string", "description": "The repo's name in kiln"},
                        "prompt": {"type": "string", "description": "Everything the sub-session needs to know: it does not see this conversation"},
                        "title": {"type": "string", "description": "A short title for people"}
                    },
                    "required": ["repo", "prompt"],
                    "additionalProperties": false
                }),
            ),
            Kind::Status => (
                "The state of a sub-session this session spawned: working or idle, what it \
                 said last, its recent tool calls and changed files, its pull request.",
                json!({"type": "object", "properties": {"id": id}, "required": ["id"], "additionalProperties": false}),
            ),
            Kind::Send => (
                "Send a follow-up prompt to a sub-session this session spawned (it runs after \
                 the sub-session's current work).",
                json!({
                    "type": "object",
                    "properties": {"id": id, "text": {"type": "string"}},
                    "required": ["id", "text"],
                    "additionalProperties": false
                }),
            ),
            Kind::Stop => (
                "Stop a sub-session this session spawned: its running prompt, its queue and \
                 its own sub-sessions' work.",
                json!({"type": "object", "properties": {"id": id}, "required": ["id"], "additionalProperties": false}),
            ),
            Kind::Wait => (
                "Wait until sub-sessions have finished their work (all of this session's when \
                 `ids` is left out), or `timeout_s` seconds pass (default 600, at most 1800). \
                 Returns each one's state, what it said and its pull request.",
                json!({
                    "type": "object",
                    "properties": {
                        "ids": {"type": "array", "items": id},
                        "timeout_s": {"type": "integer", "minimum": 1, "maximum": 1800}
                    },
                    "additionalProperties": false
                }),
            ),
        };
        ToolSpec {
            name: self.name(),
            description,
            input_schema,
        }
    }

    /// Spawning, sending and stopping change work (another session's): a plan-first prompt,
    /// which may change nothing, is offered only status and wait.
    fn writes(&self) -> bool {
        matches!(self.kind, Kind::Spawn | Kind::Send | Kind::Stop)
    }

    async fn run(
        &self,
        ctx: &ToolContext<'_>,
        input: &Value,
        _updates: &mpsc::Sender<ToolUpdate>,
    ) -> Result<ToolResult, ToolError> {
        let c = &self.context;
        let failed = |e: crate::Error| ToolError::Failed(e.to_string());
        match self.kind {
            Kind::Spawn => {
                let input: SpawnInput = self.input(input)?;
                let id = c
                    .engine
                    .spawn_child(
                        &c.session,
                        &c.prompt,
                        &c.author,
                        &input.repo,
                        &input.prompt,
                        input.title.as_deref(),
                    )
                    .await
                    .map_err(failed)?;
                Ok(ToolResult::ok(format!(
                    "spawned sub-session {id}; it is starting now"
                )))
            }
            Kind::Status => {
                let input: IdInput = self.input(input)?;
                let id = self.child(&input.id).await?;
                Ok(ToolResult::ok(self.describe(&id, true).await?))
            }
            Kind::Send => {
                let input: SendInput = self.input(input)?;
                let id = self.child(&input.id).await?;
                let accepted = c
                    .engine
                    .send_prompt(&id, &c.author, &input.text)
                    .await
                    .map_err(failed)?;
                Ok(ToolResult::ok(format!(
                    "sent to {id} as prompt {}",
                    accepted.prompt_id
                )))
            }
            Kind::Stop => {
                let input: IdInput = self.input(input)?;
                let id = self.child(&input.id).await?;
                c.engine.stop(&id, &c.author, true).await.map_err(failed)?;
                Ok(ToolResult::ok(format!(
                    "stopped {id} (its running prompt, its queue and its sub-sessions' work)"
                )))
            }
            Kind::Wait => {
                let input: WaitInput = self.input(input)?;
                self.wait(ctx, input).await
            }
        }
    }
}
