//! The Claude Code hooks contract, so hook scripts written for Claude Code work with kiln: the
//! JSON a command hook reads on stdin, and what its exit code and stdout mean.
//!
//! - Exit 0: allowed. Stdout, if a JSON object, may decide more (see [`HookJson`]); other stdout
//!   is added as context for `UserPromptSubmit` and ignored otherwise.
//! - Exit 2: blocked; stderr is the reason (the model, or the prompt's author, reads it).
//! - Any other exit: a non-blocking error; the call goes ahead.
//!
//! Two deliberate choices: `"permissionDecision": "ask"` blocks, because a background session has
//! nobody to ask; and `"continue": false` blocks with `stopReason`, the closest kiln has to
//! stopping the agent from inside a hook.

use super::{HookContext, HookDecision, HookEvent, HookEventKind, HookOutcome};
use kiln_core::{PromptId, SessionId};
use kiln_protocol::api::UserRef;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a command hook reads on stdin.
#[derive(Serialize)]
struct HookInput<'a> {
    session_id: &'a SessionId,
    prompt_id: &'a PromptId,
    cwd: &'a str,
    hook_event_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_input: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_use_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_response: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_hook_active: Option<bool>,
    author: &'a UserRef,
    repo: &'a str,
}

/// The stdin document for `event`.
pub(crate) fn input_json(ctx: &HookContext, event: &HookEvent) -> Vec<u8> {
    let mut input = HookInput {
        session_id: &ctx.session_id,
        prompt_id: &ctx.prompt_id,
        cwd: &ctx.cwd,
        hook_event_name: event.kind().as_str(),
        tool_name: None,
        tool_input: None,
        tool_use_id: None,
        tool_response: None,
        prompt: None,
        stop_hook_active: None,
        author: &ctx.author,
        repo: &ctx.repo,
    };
    match event {
        HookEvent::PreToolUse {
            tool_name,
            tool_input,
            tool_use_id,
        } => {
            input.tool_name = Some(tool_name);
            input.tool_input = Some(tool_input);
            input.tool_use_id = Some(tool_use_id);
        }
        HookEvent::PostToolUse {
            tool_name,
            tool_input,
            tool_use_id,
            tool_response,
        } => {
            input.tool_name = Some(tool_name);
            input.tool_input = Some(tool_input);
            input.tool_use_id = Some(tool_use_id);
            input.tool_response = Some(tool_response);
        }
        HookEvent::UserPromptSubmit { prompt } => input.prompt = Some(prompt),
        HookEvent::Stop { stop_hook_active } => input.stop_hook_active = Some(*stop_hook_active),
    }
    // Serialising borrowed strings and JSON values into memory cannot fail.
    serde_json::to_vec(&input).unwrap_or_default()
}

/// The JSON a hook may print on stdout when it exits 0. Unknown keys (`suppressOutput`,
/// `systemMessage`, …) are ignored, as Claude Code's newer keys should be.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HookJson {
    #[serde(rename = "continue")]
    keep_going: Option<bool>,
    stop_reason: Option<String>,
    /// `"block"`; `"approve"` (older PreToolUse form) is the same as saying nothing.
    decision: Option<String>,
    reason: Option<String>,
    hook_specific_output: Option<SpecificJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecificJson {
    hook_event_name: Option<String>,
    permission_decision: Option<String>,
    permission_decision_reason: Option<String>,
    updated_input: Option<Value>,
    additional_context: Option<String>,
}

/// What a hook process's exit means. `code` is `None` when a signal ended it.
pub(crate) fn interpret(
    kind: HookEventKind,
    code: Option<i32>,
    stdout: &str,
    stderr: &str,
) -> HookOutcome {
    let stderr = stderr.trim();
    match code {
        Some(0) => interpret_stdout(kind, stdout.trim()),
        Some(2) if stderr.is_empty() => HookOutcome::block("blocked by a hook (it gave no reason)"),
        Some(2) => HookOutcome::block(stderr),
        Some(code) => HookOutcome::failed(format!("exited with status {code}: {stderr}")),
        None => HookOutcome::failed(format!("killed by a signal: {stderr}")),
    }
}

fn interpret_stdout(kind: HookEventKind, stdout: &str) -> HookOutcome {
    if stdout.is_empty() {
        return HookOutcome::allow();
    }
    if !stdout.starts_with('{') {
        return match kind {
            HookEventKind::UserPromptSubmit => HookOutcome::decide(HookDecision::AddContext {
                text: stdout.to_string(),
            }),
            _ => HookOutcome::allow(),
        };
    }
    let json: HookJson = match serde_json::from_str(stdout) {
        Ok(json) => json,
        Err(err) => return HookOutcome::failed(format!("printed JSON kiln cannot read: {err}")),
    };
    let mut outcome = HookOutcome::allow();
    let mut block = None;
    if let Some(specific) = json.hook_specific_output {
        match specific.hook_event_name.as_deref() {
            Some(name) if name != kind.as_str() => {
                outcome.error = Some(format!(
                    "hookSpecificOutput is for {name}, not {}; ignored",
                    kind.as_str()
                ));
            }
            _ => block = apply_specific(kind, specific, &mut outcome),
        }
    }
    if json.decision.as_deref() == Some("block") {
        block = block.or(Some(
            json.reason.unwrap_or_else(|| "blocked by a hook".into()),
        ));
    }
    if json.keep_going == Some(false) {
        block = Some(
            json.stop_reason
                .unwrap_or_else(|| "a hook stopped the agent".into()),
        );
    }
    if let Some(reason) = block {
        outcome.decisions.push(HookDecision::Block { reason });
    }
    outcome
}

/// Applies `hookSpecificOutput`; returns a block reason when it denies.
fn apply_specific(
    kind: HookEventKind,
    specific: SpecificJson,
    outcome: &mut HookOutcome,
) -> Option<String> {
    if let Some(text) = specific.additional_context.filter(|t| !t.trim().is_empty()) {
        outcome.decisions.push(HookDecision::AddContext { text });
    }
    match specific.updated_input {
        Some(input @ Value::Object(_)) if kind == HookEventKind::PreToolUse => {
            outcome.decisions.push(HookDecision::ModifyInput { input });
        }
        Some(_) => {
            outcome.error = Some("updatedInput must be an object, on PreToolUse; ignored".into())
        }
        None => {}
    }
    let reason = specific.permission_decision_reason;
    match specific.permission_decision.as_deref() {
        None | Some("allow") => None,
        Some("deny") => Some(reason.unwrap_or_else(|| "denied by a hook".into())),
        Some("ask") => Some(format!(
            "a hook asked for confirmation, which an unattended session cannot give{}",
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        )),
        Some(other) => {
            outcome.error = Some(format!("unknown permissionDecision `{other}`; ignored"));
            None
        }
    }
}
