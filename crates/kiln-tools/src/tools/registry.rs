//! One place that knows the tools: the [`Tool`] trait every tool implements (its spec for the
//! model, whether it writes, how it runs) and the [`ToolRegistry`] a prompt is given, built from
//! the built-ins (`builtin.rs`) plus, later, whatever a repo adds (MCP). The model request, the
//! call dispatch and the sync gate all ask the registry, so a tool is added in one place.
//!
//! A call ends in one of two ways: a [`ToolResult`] for the model (errors it can act on
//! included), or [`SandboxGone`] — the sandbox stopped answering, every further call would fail
//! the same way, and the prompt must end instead of burning its remaining turns.

use super::{ToolCall, ToolContext, ToolError, ToolResult, ToolSpec, ToolUpdate, builtin, output};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A tool the model can call.
#[async_trait::async_trait]
pub trait Tool: Send + Sync {
    /// What the model is shown: name, description, JSON Schema of the input.
    fn spec(&self) -> ToolSpec<'_>;

    /// Whether the tool may change the checkout; writing tools wait for the sync gate.
    fn writes(&self) -> bool;

    /// Runs one call. Updates go to `updates` as they happen (see [`super::send`]); an error
    /// the model can act on is a [`ToolError`] whose message says what to do instead.
    async fn run(
        &self,
        ctx: &ToolContext<'_>,
        input: &Value,
        updates: &mpsc::Sender<ToolUpdate>,
    ) -> Result<ToolResult, ToolError>;
}

/// A built-in is a `&'static` unit struct; the registry holds it like any other tool.
#[async_trait::async_trait]
impl<T: Tool + ?Sized> Tool for &'static T {
    fn spec(&self) -> ToolSpec<'_> {
        (**self).spec()
    }

    fn writes(&self) -> bool {
        (**self).writes()
    }

    async fn run(
        &self,
        ctx: &ToolContext<'_>,
        input: &Value,
        updates: &mpsc::Sender<ToolUpdate>,
    ) -> Result<ToolResult, ToolError> {
        (**self).run(ctx, input, updates).await
    }
}

/// The sandbox stopped answering during a call: the prompt cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the session's sandbox went away during the {tool} call ({reason}), so this prompt stopped; \
     send a prompt to continue in a new sandbox (restored from the session's latest snapshot \
     when it has one)"
)]
pub struct SandboxGone {
    pub tool: String,
    /// Why the guest connection ended, as the sandbox reported it.
    pub reason: String,
}

/// The tools of one prompt, in the order the model is shown them.
#[derive(Clone)]
pub struct ToolRegistry {
    tools: Vec<Arc<dyn Tool>>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tools.iter().map(|t| t.spec().name))
            .finish()
    }
}

impl ToolRegistry {
    /// The built-in tools.
    pub fn builtin() -> Self {
        ToolRegistry {
            tools: builtin::BUILTINS
                .iter()
                .map(|tool| Arc::new(*tool) as Arc<dyn Tool>)
                .collect(),
        }
    }

    /// Adds a tool, replacing one of the same name (a repo's tool may shadow a built-in).
    pub fn with(mut self, tool: Arc<dyn Tool>) -> Self {
        let name = tool.spec().name.to_string();
        match self.tools.iter().position(|t| t.spec().name == name) {
            Some(i) => self.tools[i] = tool,
            None => self.tools.push(tool),
        }
        self
    }

    /// Only the tools that do not write (plan mode: the agent explores before anyone approves
    /// a change).
    pub fn read_only(&self) -> Self {
        ToolRegistry {
            tools: self
                .tools
                .iter()
                .filter(|tool| !tool.writes())
                .cloned()
                .collect(),
        }
    }

    /// Every tool's spec, for the model request.
    pub fn specs(&self) -> Vec<ToolSpec<'_>> {
        self.tools.iter().map(|tool| tool.spec()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.iter().find(|tool| tool.spec().name == name)
    }

    /// Whether a call of `name` may write. An unknown name counts as writing: the gate holds
    /// it like any write (it then fails as unknown), as it did before tools were registered.
    pub fn writes(&self, name: &str) -> bool {
        self.get(name).is_none_or(|tool| tool.writes())
    }

    fn names(&self) -> String {
        self.tools
            .iter()
            .map(|tool| tool.spec().name.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Runs one call to the end (or to cancellation): what the model should see, or
    /// [`SandboxGone`] when the sandbox stopped answering. Never panics on any `call`.
    ///
    /// Updates go to `updates` as they happen; sending waits when the channel is full, so a
    /// slow consumer slows the tool rather than losing output.
    pub async fn run(
        &self,
        ctx: &ToolContext<'_>,
        call: &ToolCall,
        updates: &mpsc::Sender<ToolUpdate>,
    ) -> Result<ToolResult, SandboxGone> {
        if ctx.cancel.is_cancelled() {
            return Ok(super::cancelled("Cancelled before it started.".into()));
        }
        let result = match self.get(&call.name) {
            Some(tool) => tool.run(ctx, &call.input, updates).await,
            None => Err(ToolError::UnknownTool {
                name: call.name.clone(),
                available: self.names(),
            }),
        };
        let mut result = match result {
            Ok(result) => result,
            Err(ToolError::Cancelled) => super::cancelled("Cancelled.".into()),
            Err(err) => {
                if let Some(reason) = gone(ctx, &err) {
                    return Err(SandboxGone {
                        tool: call.name.clone(),
                        reason,
                    });
                }
                ToolResult::error(err.to_string())
            }
        };
        result.content = output::truncate(result.content, super::OUTPUT_LIMIT);
        Ok(result)
    }
}

/// Why the sandbox is unreachable, when the error says so or the guest connection has ended
/// (a tool may phrase a dead guest as something else, e.g. a command without an exit status).
fn gone(ctx: &ToolContext<'_>, err: &ToolError) -> Option<String> {
    match err {
        ToolError::Sandbox(kiln_sandbox::Error::GuestGone(reason)) => Some(reason.clone()),
        ToolError::Sandbox(_) | ToolError::Failed(_) => ctx.sandbox.guest().gone(),
        // The model's own mistakes: the sandbox was not asked.
        ToolError::UnknownTool { .. } | ToolError::BadArguments { .. } | ToolError::Cancelled => {
            None
        }
    }
}
