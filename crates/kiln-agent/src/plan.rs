//! Plan mode in the loop: a plan-first prompt is offered only the tools that do not write plus
//! `propose_plan`, is told to explore and then propose, and ends once it has proposed. The
//! session records the plan (`Session::propose_plan`); people decide on it outside the loop,
//! and an approval comes back as an ordinary prompt with every tool.

use crate::run::{End, Failure, PromptRun};
use async_trait::async_trait;
use kiln_protocol::api::{ErrorKind, PromptOutcome};
use kiln_tools::tools::{
    Tool, ToolContext, ToolError, ToolRegistry, ToolResult, ToolSpec, ToolUpdate,
};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The tool's name, as the model calls it.
pub const PROPOSE_PLAN: &str = "propose_plan";

/// Characters of a proposed plan (as a prompt's text may hold).
const PLAN_CHARS: usize = 100_000;
/// Characters of a plan's title.
const TITLE_CHARS: usize = 200;

/// What the system prompt says in plan mode.
pub(crate) const PLAN_MODE_SYSTEM: &str = "PLAN MODE: this request asks for a plan first. You \
    have read-only tools: explore the repository as much as you need, change nothing, and then \
    call propose_plan once with a concrete plan in Markdown (what you will change, in which \
    files, how you will check it). Your turn ends there: participants approve, edit or reject \
    the plan, and an approved plan comes back to you to implement with every tool.";

/// A plan the model proposed during this prompt, recorded once its turn's results are stored.
#[derive(Debug, Clone)]
pub(crate) struct Proposal {
    pub(crate) title: Option<String>,
    pub(crate) plan: String,
}

/// Where `propose_plan` leaves the proposal for the loop.
pub(crate) type ProposalSlot = Arc<Mutex<Option<Proposal>>>;

/// `propose_plan(plan, title?)`: checks the proposal and hands it to the loop. It writes
/// nothing itself, so it passes the write gate at once.
struct ProposePlan {
    slot: ProposalSlot,
}

#[async_trait]
impl Tool for ProposePlan {
    fn spec(&self) -> ToolSpec<'_> {
        ToolSpec {
            name: PROPOSE_PLAN,
            description: "Proposes your plan for the request, in Markdown, to the people in \
                this session, and ends your turn. Call it once, after exploring: they approve, \
                edit or reject it, and an approved plan comes back to you to implement.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "plan": {"type": "string", "description": "The plan, in Markdown."},
                    "title": {"type": "string", "description": "A short title (optional)."}
                },
                "required": ["plan"]
            }),
        }
    }

    fn writes(&self) -> bool {
        false
    }

    async fn run(
        &self,
        _ctx: &ToolContext<'_>,
        input: &Value,
        _updates: &mpsc::Sender<ToolUpdate>,
    ) -> Result<ToolResult, ToolError> {
        let bad = |message: &str| ToolError::BadArguments {
            tool: PROPOSE_PLAN,
            message: message.to_string(),
        };
        let plan = input
            .get("plan")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|plan| !plan.is_empty())
            .ok_or_else(|| bad("`plan` must be a non-empty string (the plan, in Markdown)"))?;
        if plan.chars().count() > PLAN_CHARS {
            return Err(bad(&format!(
                "the plan is longer than {PLAN_CHARS} characters; shorten it"
            )));
        }
        let title = match input.get("title") {
            None | Some(Value::Null) => None,
            Some(Value::String(title)) => Some(title.trim().chars().take(TITLE_CHARS).collect())
                .filter(|t: &String| !t.is_empty()),
            Some(_) => return Err(bad("`title` must be a string")),
        };
        *self.slot.lock().expect("plan slot lock") = Some(Proposal {
            title,
            plan: plan.to_string(),
        });
        Ok(ToolResult::ok(
            "The plan was proposed. Stop here: the people in this session decide on it, and \
             an approved plan comes back to you as a new request.",
        ))
    }
}

/// The tools of a plan-first prompt: those of `all` that do not write, and `propose_plan`.
pub(crate) fn plan_tools(all: ToolRegistry, slot: &ProposalSlot) -> ToolRegistry {
    all.read_only()
        .with(Arc::new(ProposePlan { slot: slot.clone() }))
}

impl PromptRun<'_> {
    /// After a turn's results are stored: if the model proposed a plan, records it and ends the
    /// prompt (completed, the plan pending); otherwise `None`, and the loop goes on.
    pub(crate) async fn finish_with_plan(&self) -> Result<Option<End>, Failure> {
        let Some(slot) = &self.plan else {
            return Ok(None);
        };
        let Some(proposal) = slot.lock().expect("plan slot lock").take() else {
            return Ok(None);
        };
        self.session
            .propose_plan(&self.prompt.id, proposal.title, proposal.plan)
            .await
            .map_err(|e| {
                Failure(
                    ErrorKind::Storage,
                    format!("cannot record the proposed plan: {e}; send the prompt again"),
                )
            })?;
        Ok(Some(End::Finished(PromptOutcome::Completed)))
    }
}
