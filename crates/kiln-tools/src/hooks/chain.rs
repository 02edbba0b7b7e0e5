//! The ordered chain of hooks and how their decisions combine.
//!
//! Hooks run one after another in configuration order, so a later hook sees what earlier ones
//! did: the first `Block` ends the chain (later hooks do not run at all), `ModifyInput` rewrites
//! the tool input that later hooks and the tool get, the first `Substitute` stands (later hooks
//! still run and may block), and `AddContext` texts accumulate in order. Running sequentially
//! costs latency when several slow hooks match, but makes the outcome independent of timing.

use super::{Hook, HookContext, HookDecision, HookEvent, HookEventKind, HookOutcome};
use serde_json::Value;
use std::sync::Arc;

/// The hooks of a session, in order. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    hooks: Vec<Arc<dyn Hook>>,
}

/// The chain's verdict on one event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Combined {
    /// Set when a hook blocked; the hooks after it did not run.
    pub blocked: Option<Blocked>,
    /// The tool input after every `ModifyInput` (`PreToolUse` only); `None` when unchanged.
    pub input: Option<Value>,
    /// The first `Substitute`: for `PreToolUse` the tool is skipped and the model gets this
    /// result; for `PostToolUse` it replaces the tool's output.
    pub substitute: Option<String>,
    /// `AddContext` texts in order; see [`Combined::context_text`].
    pub context: Vec<String>,
    /// Non-blocking failures (a hook crashed, timed out, or decided something that does not
    /// apply to the event), for the session log. None of them stopped anything.
    pub errors: Vec<HookFailure>,
}

/// A block and the hook that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub hook: String,
    pub reason: String,
}

/// A hook that failed without blocking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFailure {
    pub hook: String,
    pub message: String,
}

impl Combined {
    /// The added context as one text, blocks separated by blank lines.
    pub fn context_text(&self) -> Option<String> {
        (!self.context.is_empty()).then(|| self.context.join("\n\n"))
    }
}

impl Hooks {
    pub fn new(hooks: Vec<Arc<dyn Hook>>) -> Self {
        Hooks { hooks }
    }

    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Runs every matching hook on `event` in order and combines what they decided.
    ///
    /// Never fails and never waits longer than the sum of the matching hooks' time limits.
    pub async fn run(&self, ctx: &HookContext, event: &HookEvent) -> Combined {
        let mut combined = Combined::default();
        let mut event = event.clone();
        for hook in &self.hooks {
            if !hook.matches(&event) {
                continue;
            }
            let name = hook.name().to_string();
            let limit = hook.time_limit();
            let outcome = match tokio::time::timeout(limit, hook.call(ctx, &event)).await {
                Ok(outcome) => outcome,
                Err(_) => HookOutcome::failed(format!(
                    "no answer within {} s; the hook was abandoned and its call allowed",
                    limit.as_secs_f32()
                )),
            };
            if let Some(message) = outcome.error {
                tracing::warn!(hook = %name, event = event.kind().as_str(), %message, "hook failed");
                combined.errors.push(HookFailure {
                    hook: name.clone(),
                    message,
                });
            }
            for decision in outcome.decisions {
                if let Some(misfit) = apply(&mut combined, &mut event, &name, decision) {
                    combined.errors.push(HookFailure {
                        hook: name.clone(),
                        message: misfit,
                    });
                }
                if combined.blocked.is_some() {
                    return combined;
                }
            }
        }
        combined
    }
}

/// Folds one decision into `combined` (and `event`, for later hooks). Returns a complaint when the
/// decision does not apply to this kind of event; it is then ignored.
fn apply(
    combined: &mut Combined,
    event: &mut HookEvent,
    hook: &str,
    decision: HookDecision,
) -> Option<String> {
    let kind = event.kind();
    match decision {
        HookDecision::Allow => {}
        HookDecision::Block { reason } => {
            combined.blocked = Some(Blocked {
                hook: hook.to_string(),
                reason,
            });
        }
        HookDecision::ModifyInput { input } => match event {
            HookEvent::PreToolUse { tool_input, .. } => {
                *tool_input = input.clone();
                combined.input = Some(input);
            }
            _ => {
                return Some(format!(
                    "cannot modify the input of a {} event",
                    kind.as_str()
                ));
            }
        },
        HookDecision::Substitute { result } => {
            if !matches!(kind, HookEventKind::PreToolUse | HookEventKind::PostToolUse) {
                return Some(format!(
                    "cannot substitute a result for a {} event",
                    kind.as_str()
                ));
            }
            combined.substitute.get_or_insert(result);
        }
        HookDecision::AddContext { text } => combined.context.push(text),
    }
    None
}
