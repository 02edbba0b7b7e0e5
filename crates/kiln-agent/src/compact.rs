//! Compaction: when a conversation nears the model's context window, its older turns are
//! replaced by a summary the model writes (one request), the tool outputs kept are cut to their
//! first and last lines, and the most recent turns stay verbatim. The stored conversation is
//! replaced (the event log keeps everything) and a `compacted` event says so.
//!
//! The cut is always just before an assistant message: its tool calls' results are in the user
//! message after it, so no `tool_use` is ever parted from its `tool_result`, and the summary
//! (a user message) followed by that assistant message keeps the roles alternating, as both
//! Anthropic and OpenAI require.

use crate::COMPACT_AT;
use crate::run::{Failure, PromptRun};
use kiln_model::{ContentBlock, Message, MessageRole, ModelClient, ModelRequest, StreamEvent};
use kiln_protocol::api::{ErrorKind, Event};

/// What the summary request is told to keep.
const SUMMARY_SYSTEM: &str = "You compact the history of a coding agent's session so that the \
    agent can go on working with less context. Write a concise summary of the conversation you \
    are given, in plain text, keeping: what the user asked for (their latest request word for \
    word), decisions made and why, files read, created or changed (with paths), commands run \
    and what they showed, errors met and how they were solved, and the tasks still open. Leave \
    out pleasantries and anything that no longer matters. Do not call tools.";

/// Share of the window the verbatim recent turns may take.
const KEEP_SHARE: f64 = 0.3;
/// Share of the window the summary request's transcript may take.
const TRANSCRIPT_SHARE: f64 = 0.5;
/// Lines kept at each end of a tool output that is cut.
const CUT_LINES: usize = 10;
/// Characters a cut tool output keeps at most.
const CUT_CHARS: usize = 2000;

/// Tokens estimated from characters: about four characters a token for English and code.
fn tokens_of(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

/// The characters of a message as the model sees them (with a little for the framing).
pub(crate) fn message_chars(message: &Message) -> usize {
    message
        .content
        .iter()
        .map(|block| {
            16 + match block {
                ContentBlock::Text { text } => text.len(),
                ContentBlock::ToolUse { name, input, .. } => name.len() + input.to_string().len(),
                ContentBlock::ToolResult { content, .. } => content.len(),
            }
        })
        .sum::<usize>()
        + 8
}

pub(crate) fn conversation_chars(messages: &[Message]) -> usize {
    messages.iter().map(message_chars).sum()
}

/// `text` cut to its first and last `lines` lines and at most `chars` characters, saying what
/// was left out; unchanged when it is short enough.
pub(crate) fn cut(text: &str, lines: usize, chars: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    if all.len() <= 2 * lines && text.len() <= chars {
        return text.to_string();
    }
    let half = chars / 2;
    let (head, tail, dropped) = if all.len() > 2 * lines {
        (
            all[..lines].join("\n"),
            all[all.len() - lines..].join("\n"),
            all.len() - 2 * lines,
        )
    } else {
        // Few but long lines: the first and last characters.
        let n = text.chars().count();
        (
            text.chars().take(half).collect(),
            text.chars().skip(n.saturating_sub(half)).collect(),
            0,
        )
    };
    let head: String = head.chars().take(half).collect();
    let tail: String = {
        let n = tail.chars().count();
        tail.chars().skip(n.saturating_sub(half)).collect()
    };
    format!(
        "{head}\n[… {dropped} lines and {} characters cut when the conversation was compacted …]\n{tail}",
        text.len().saturating_sub(head.len() + tail.len())
    )
}

/// `message` with its tool outputs cut to their essentials.
fn cut_outputs(message: &Message, lines: usize, chars: usize) -> Message {
    Message {
        role: message.role,
        content: message
            .content
            .iter()
            .map(|block| match block {
                ContentBlock::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                } => ContentBlock::ToolResult {
                    tool_use_id: tool_use_id.clone(),
                    content: cut(content, lines, chars),
                    is_error: *is_error,
                },
                other => other.clone(),
            })
            .collect(),
    }
}

/// The messages from the cut on, tool outputs cut in all but the last (its results are what the
/// model has not seen yet).
fn kept_from(messages: &[Message], k: usize) -> Vec<Message> {
    let last = messages.len() - 1;
    messages[k..]
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if k + i == last {
                m.clone()
            } else {
                cut_outputs(m, CUT_LINES, CUT_CHARS)
            }
        })
        .collect()
}

/// Where to cut: the earliest assistant message (not the first message) from which the kept
/// turns fit in `keep_chars`, else the last assistant message. `None` when there is no
/// assistant message after the first message: nothing can be summarised.
fn split_point(messages: &[Message], keep_chars: usize) -> Option<usize> {
    let candidates: Vec<usize> = (1..messages.len())
        .filter(|&i| messages[i].role == MessageRole::Assistant)
        .collect();
    let last = *candidates.last()?;
    Some(
        candidates
            .into_iter()
            .find(|&k| conversation_chars(&kept_from(messages, k)) <= keep_chars)
            .unwrap_or(last),
    )
}

/// The summarised messages as a transcript for the summary request, at most `max_chars` long
/// (its middle dropped beyond that).
fn transcript(messages: &[Message], max_chars: usize) -> String {
    let mut out = String::new();
    for message in messages {
        let who = match message.role {
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
        };
        for block in &message.content {
            match block {
                ContentBlock::Text { text } if text.is_empty() => {}
                ContentBlock::Text { text } => out.push_str(&format!("[{who}] {text}\n")),
                ContentBlock::ToolUse { name, input, .. } => out.push_str(&format!(
                    "[{who} calls {name}] {}\n",
                    cut(&input.to_string(), 5, 600)
                )),
                ContentBlock::ToolResult {
                    content, is_error, ..
                } => out.push_str(&format!(
                    "[tool {}] {}\n",
                    if *is_error { "error" } else { "result" },
                    cut(content, 5, 800)
                )),
            }
        }
    }
    if out.len() <= max_chars {
        return out;
    }
    let chars: Vec<char> = out.chars().collect();
    let head = max_chars / 4;
    let tail = max_chars - head;
    let start: String = chars[..head.min(chars.len())].iter().collect();
    let end: String = chars[chars.len().saturating_sub(tail)..].iter().collect();
    format!("{start}\n[… the middle of the conversation is left out …]\n{end}")
}

impl PromptRun<'_> {
    /// The request's size in tokens: the larger of a characters/4 estimate of all of it and
    /// what the provider last reported plus what was added since.
    pub(crate) fn estimate(&self, fixed_chars: usize, conversation: &[Message]) -> u64 {
        let chars = conversation_chars(conversation);
        let by_chars = tokens_of(fixed_chars + chars);
        let by_report = self
            .reported
            .map(|(tokens, then)| tokens + tokens_of(chars.saturating_sub(then)))
            .unwrap_or(0);
        by_chars.max(by_report)
    }

    /// Compacts `conversation` when the next request would pass [`COMPACT_AT`] of the context
    /// window. `Ok(false)` when the summary request was cancelled. A compaction that fails, or
    /// leaves a conversation that still does not fit, ends the prompt: an oversized request is
    /// never sent.
    pub(crate) async fn compact_if_needed(
        &mut self,
        model: &ModelClient,
        fixed_chars: usize,
        conversation: &mut Vec<Message>,
        turn: u32,
    ) -> Result<bool, Failure> {
        let window = self.agent.limits.context_tokens;
        let threshold = (window as f64 * COMPACT_AT) as u64;
        let before = self.estimate(fixed_chars, conversation);
        if before <= threshold {
            return Ok(true);
        }
        let fail = |why: String| {
            Failure(
                ErrorKind::Model,
                format!(
                    "the conversation (about {before} tokens) nears the model's context window \
                     ({window} tokens, context_tokens in kiln.toml [limits]) and could not be \
                     compacted: {why}; the prompt stopped before sending an oversized request"
                ),
            )
        };
        let keep_chars = (window as f64 * KEEP_SHARE * 4.0) as usize;
        let Some(k) = split_point(conversation, keep_chars) else {
            return Err(fail(
                "there are no earlier turns to summarise (the prompt alone is too long)".into(),
            ));
        };
        let transcript_chars = (window as f64 * TRANSCRIPT_SHARE * 4.0) as usize;
        let request = ModelRequest {
            system: SUMMARY_SYSTEM.to_string(),
            messages: vec![Message::user(format!(
                "Summarise this conversation:\n\n{}",
                transcript(&conversation[..k], transcript_chars)
            ))],
            tools: Vec::new(),
            max_tokens: Some((window / 8).clamp(256, 8192) as u32),
        };
        let summary = match self.summarise(model, &request, turn).await {
            Ok(Some(summary)) => summary,
            Ok(None) => return Ok(false),
            Err(why) => return Err(fail(why)),
        };
        let summary = Message::user(format!(
            "[A summary of the earlier conversation, written when it was compacted to fit the \
             model's context window]\n\n{summary}"
        ));
        let mut kept = kept_from(conversation, k);
        let mut compacted: Vec<Message> = std::iter::once(summary.clone())
            .chain(kept.iter().cloned())
            .collect();
        self.reported = None;
        if self.estimate(fixed_chars, &compacted) > threshold {
            // The latest tool outputs are what is left to shorten.
            kept = kept
                .iter()
                .map(|m| cut_outputs(m, CUT_LINES, CUT_CHARS))
                .collect();
            compacted = std::iter::once(summary.clone())
                .chain(kept.iter().cloned())
                .collect();
        }
        let after = self.estimate(fixed_chars, &compacted);
        if after > window {
            return Err(fail(format!(
                "even compacted it would be about {after} tokens"
            )));
        }
        let to_value = |m: &Message| serde_json::to_value(m).expect("messages serialize");
        let event = Event::Compacted {
            prompt_id: self.prompt.id.clone(),
            before_tokens: before,
            after_tokens: after,
            messages_summarised: k as u64,
        };
        self.session
            .compact(
                &self.prompt.id,
                k,
                to_value(&summary),
                kept.iter().map(to_value).collect(),
                event,
            )
            .await
            .map_err(|e| {
                Failure(
                    ErrorKind::Storage,
                    format!("cannot store the compacted conversation: {e}"),
                )
            })?;
        *conversation = compacted;
        Ok(true)
    }

    /// The summary request: its text, `None` when cancelled, the reason when it failed.
    async fn summarise(
        &mut self,
        model: &ModelClient,
        request: &ModelRequest,
        turn: u32,
    ) -> Result<Option<String>, String> {
        let mut stream = tokio::select! {
            stream = model.stream(request) => stream.map_err(|e| format!("the summary request failed: {e}"))?,
            _ = self.cancel.cancelled() => return Ok(None),
        };
        let mut text = String::new();
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = self.cancel.cancelled() => return Ok(None),
            };
            match next {
                Some(Ok(StreamEvent::TextDelta(delta))) => text.push_str(&delta),
                Some(Ok(StreamEvent::ToolUse { .. })) => {}
                Some(Ok(StreamEvent::Finished { usage, .. })) => {
                    self.record_usage(model, turn, &usage)
                        .await
                        .map_err(|Failure(_, message)| message)?;
                    let text = text.trim().to_string();
                    if text.is_empty() {
                        return Err("the model's summary was empty".into());
                    }
                    return Ok(Some(text));
                }
                Some(Err(e)) => return Err(format!("the summary stream failed: {e}")),
                None => return Err("the summary stream ended without finishing".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(text: &str) -> Message {
        Message::user(text)
    }

    fn call(id: &str) -> Message {
        Message {
            role: MessageRole::Assistant,
            content: vec![ContentBlock::ToolUse {
                id: id.into(),
                name: "bash".into(),
                input: json!({"command": "ls"}),
            }],
        }
    }

    fn result(id: &str, output: &str) -> Message {
        Message {
            role: MessageRole::User,
            content: vec![ContentBlock::ToolResult {
                tool_use_id: id.into(),
                content: output.into(),
                is_error: false,
            }],
        }
    }

    #[test]
    fn cut_keeps_first_and_last_lines() {
        let long: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let short = cut(&long, 3, 10_000);
        assert!(
            short.starts_with("line 0\nline 1\nline 2\n[… 94 lines"),
            "{short}"
        );
        assert!(short.ends_with("line 97\nline 98\nline 99"), "{short}");
        assert_eq!(cut("a\nb", 3, 100), "a\nb");
        let wide = cut(&format!("a{}z", "x".repeat(10_000)), 3, 100);
        assert!(
            wide.len() < 300 && wide.starts_with('a') && wide.ends_with('z'),
            "{wide}"
        );
    }

    #[test]
    fn the_cut_is_before_an_assistant_message_and_keeps_pairs() {
        let big = format!("{}\n", "y".repeat(99)).repeat(500);
        let messages = vec![
            user("do it"),
            call("a"),
            result("a", &big),
            call("b"),
            result("b", &big),
            call("c"),
            result("c", "small"),
        ];
        let k = split_point(&messages, 4000).unwrap();
        assert_eq!(messages[k].role, MessageRole::Assistant);
        // The kept part fits: b's output is cut, c's (not yet seen) is whole.
        assert_eq!(k, 3);
        let kept = kept_from(&messages, k);
        assert!(conversation_chars(&kept) <= 4000);
        assert!(
            matches!(&kept[1].content[0], ContentBlock::ToolResult { content, .. } if content.contains("cut when"))
        );
        assert_eq!(kept.last(), messages.last());
        // Nothing to summarise without an assistant turn.
        assert_eq!(split_point(&[user("x")], 10), None);
    }

    #[test]
    fn the_transcript_is_bounded() {
        let messages: Vec<Message> = (0..200)
            .flat_map(|i| {
                [
                    call(&i.to_string()),
                    result(&i.to_string(), &"z".repeat(500)),
                ]
            })
            .collect();
        let text = transcript(&messages, 5000);
        assert!(text.chars().count() < 5200, "{}", text.len());
        assert!(text.contains("left out"));
    }
}
