//! What a parent's agent reads about a child: a short account of its recent events (the last
//! thing its agent said, its tool calls, the files it changed), bounded however long the
//! child's log is.

use kiln_core::PromptId;
use kiln_protocol::api::{Event, EventEnvelope};
use kiln_store::SessionLog;

/// The most recent events read for an account.
const RECENT_EVENTS: u64 = 2_000;

/// Tool calls and files named in an account, the newest ones.
const LISTED: usize = 12;

/// The newest events of a log, oldest first.
async fn recent(log: &SessionLog) -> kiln_store::Result<Vec<EventEnvelope>> {
    let head = log.head_seq().await;
    log.read_after(head.saturating_sub(RECENT_EVENTS), RECENT_EVENTS as usize)
        .await
}

/// The end of what the agent said in `prompt` (at most `chars` characters), or a note that it
/// said nothing.
pub(super) async fn prompt_summary(
    log: &SessionLog,
    prompt: &PromptId,
    chars: usize,
) -> kiln_store::Result<String> {
    let text = last_text(&recent(log).await?, Some(prompt));
    Ok(if text.is_empty() {
        "(no text)".to_string()
    } else {
        tail(&text, chars)
    })
}

/// The text of the last model turn that said something (of `prompt`, if given): the deltas
/// after the last `model_request` with text.
fn last_text(events: &[EventEnvelope], prompt: Option<&PromptId>) -> String {
    let mut last = String::new();
    let mut current = String::new();
    for envelope in events {
        match &envelope.event {
            Event::ModelRequest { prompt_id, .. } if prompt.is_none_or(|p| p == prompt_id) => {
                if !current.trim().is_empty() {
                    last = std::mem::take(&mut current);
                }
                current.clear();
            }
            Event::TextDelta { prompt_id, text } if prompt.is_none_or(|p| p == prompt_id) => {
                current.push_str(text);
            }
            _ => {}
        }
    }
    if current.trim().is_empty() {
        last
    } else {
        current
    }
}

/// The last `chars` characters of `text`, marked when cut.
fn tail(text: &str, chars: usize) -> String {
    let text = text.trim();
    let count = text.chars().count();
    if count <= chars {
        return text.to_string();
    }
    let cut: String = text.chars().skip(count - chars).collect();
    format!("…{cut}")
}

/// The account of a session's recent events `session_status` gives.
pub(super) async fn recent_account(log: &SessionLog) -> kiln_store::Result<String> {
    let events = recent(log).await?;
    let mut calls: Vec<String> = Vec::new();
    let mut files: Vec<String> = Vec::new();
    for envelope in &events {
        match &envelope.event {
            Event::ToolCallStarted { tool, input, .. } => {
                let input = input.to_string();
                calls.push(format!("{tool} {}", tail_start(&input, 80)));
            }
            Event::FileChanged { path, .. } => {
                files.retain(|f| f != path);
                files.push(path.clone());
            }
            _ => {}
        }
    }
    let mut out = String::new();
    let said = last_text(&events, None);
    if !said.is_empty() {
        out.push_str(&format!("Last said: {}\n", tail(&said, 1_000)));
    }
    if !calls.is_empty() {
        let skip = calls.len().saturating_sub(LISTED);
        out.push_str(&format!(
            "Recent tool calls ({} in all): {}\n",
            calls.len(),
            calls[skip..].join("; ")
        ));
    }
    if !files.is_empty() {
        let skip = files.len().saturating_sub(LISTED);
        out.push_str(&format!("Files changed: {}\n", files[skip..].join(", ")));
    }
    Ok(out)
}

/// The first `chars` characters of `text`, marked when cut.
fn tail_start(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}
