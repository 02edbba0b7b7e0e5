//! A prompt's view of its repo's secrets, read when the prompt starts: the `agent = true` ones
//! go into every command's environment (per call, like the git identity: they are never part
//! of a sandbox's spec, which the provider writes to disk and lists), and every secret is
//! masked in what the prompt's events carry — a setup secret may sit in a file the agent reads.
//!
//! Tool output arrives in chunks, so each (call, stream) gets a [`MaskStream`]: a chunk ending
//! in what may be the start of a value is held back until the next chunk or the call's end,
//! whose `tool_call_finished` first flushes what is left. Other events are masked field by
//! field: only free text (never an id or a tag), so a masked event still parses.

use kiln_core::Secret;
use kiln_protocol::api::{Event, ToolOutcome, ToolStream};
use kiln_vault::{MaskStream, Masker};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub(crate) struct SessionSecrets {
    /// The `agent = true` secrets, for the prompt's commands.
    env: Secret<BTreeMap<String, String>>,
    masker: Arc<Masker>,
    /// Tool output held back per call and stream; an entry goes when its call finishes.
    streams: Mutex<Vec<(String, ToolStream, MaskStream)>>,
}

impl SessionSecrets {
    pub(crate) fn new(env: BTreeMap<String, String>, masker: Masker) -> SessionSecrets {
        SessionSecrets {
            env: Secret::new(env),
            masker: Arc::new(masker),
            streams: Mutex::default(),
        }
    }

    /// What the prompt's commands get besides their identity.
    pub(crate) fn env(&self) -> &BTreeMap<String, String> {
        self.env.expose()
    }

    /// `text` with every secret masked.
    pub(crate) fn mask(&self, text: String) -> String {
        match self.masker.mask(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(masked) => masked,
        }
    }

    /// What to append for `event`: the event masked — none while a chunk of output is held
    /// back, and first the held-back output when a call finishes.
    pub(crate) fn mask_event(&self, event: Event) -> Vec<Event> {
        if self.masker.is_empty() {
            return vec![event];
        }
        let mut streams = self.streams.lock().expect("mask streams lock");
        match event {
            Event::ToolOutput {
                call_id,
                stream,
                chunk,
            } => {
                let index = match streams
                    .iter()
                    .position(|(c, s, _)| *c == call_id && *s == stream)
                {
                    Some(index) => index,
                    None => {
                        streams.push((call_id.clone(), stream, self.masker.stream()));
                        streams.len() - 1
                    }
                };
                let chunk = streams[index].2.push(&chunk);
                if chunk.is_empty() {
                    return Vec::new();
                }
                vec![Event::ToolOutput {
                    call_id,
                    stream,
                    chunk,
                }]
            }
            Event::ToolCallFinished {
                call_id,
                outcome,
                output,
                duration_ms,
            } => {
                let mut events = Vec::new();
                streams.retain_mut(|(c, stream, masked)| {
                    if *c != call_id {
                        return true;
                    }
                    let chunk = masked.finish();
                    if !chunk.is_empty() {
                        events.push(Event::ToolOutput {
                            call_id: call_id.clone(),
                            stream: *stream,
                            chunk,
                        });
                    }
                    false
                });
                events.push(Event::ToolCallFinished {
                    call_id,
                    outcome: match outcome {
                        ToolOutcome::Error { message } => ToolOutcome::Error {
                            message: self.mask(message),
                        },
                        ToolOutcome::Blocked { reason } => ToolOutcome::Blocked {
                            reason: self.mask(reason),
                        },
                        other @ (ToolOutcome::Ok | ToolOutcome::Cancelled) => other,
                    },
                    output: self.mask(output),
                    duration_ms,
                });
                events
            }
            other => vec![self.mask_fields(other)],
        }
    }

    /// The event with its free-text fields masked. Every variant is named, so a new one must
    /// say what of it is text.
    fn mask_fields(&self, event: Event) -> Event {
        match event {
            Event::SessionCreated { repo, title, by } => Event::SessionCreated {
                repo,
                title: self.mask(title),
                by,
            },
            Event::SessionSpawned {
                child,
                repo,
                title,
                prompt_id,
            } => Event::SessionSpawned {
                child,
                repo,
                title: self.mask(title),
                prompt_id,
            },
            Event::ChildFinished {
                child,
                status,
                summary,
                pull_request,
            } => Event::ChildFinished {
                child,
                status,
                summary: self.mask(summary),
                pull_request,
            },
            Event::PromptQueued {
                prompt_id,
                author,
                text,
                delivery,
                plan,
            } => Event::PromptQueued {
                prompt_id,
                author,
                text: self.mask(text),
                delivery,
                plan,
            },
            Event::PlanProposed {
                prompt_id,
                plan_id,
                title,
                plan,
                by_agent,
            } => Event::PlanProposed {
                prompt_id,
                plan_id,
                title: title.map(|t| self.mask(t)),
                plan: self.mask(plan),
                by_agent,
            },
            Event::TextDelta { prompt_id, text } => Event::TextDelta {
                prompt_id,
                text: self.mask(text),
            },
            Event::ToolCallStarted {
                prompt_id,
                call_id,
                tool,
                mut input,
            } => {
                self.mask_json(&mut input);
                Event::ToolCallStarted {
                    prompt_id,
                    call_id,
                    tool,
                    input,
                }
            }
            Event::FileChanged {
                prompt_id,
                author,
                path,
                kind,
                added,
                removed,
            } => Event::FileChanged {
                prompt_id,
                author,
                path: self.mask(path),
                kind,
                added,
                removed,
            },
            Event::SandboxStatus {
                state,
                sandbox_id,
                detail,
            } => Event::SandboxStatus {
                state,
                sandbox_id,
                detail: detail.map(|d| self.mask(d)),
            },
            Event::Error {
                prompt_id,
                kind,
                message,
            } => Event::Error {
                prompt_id,
                kind,
                message: self.mask(message),
            },
            // A host name is whatever the sandbox asked for: `$TOKEN.example.com` included.
            Event::Egress {
                prompt_id,
                call_id,
                host,
                port,
                allowed,
                reason,
                connections,
                bytes_up,
                bytes_down,
            } => Event::Egress {
                prompt_id,
                call_id,
                host: self.mask(host),
                port,
                allowed,
                reason: self.mask(reason),
                connections,
                bytes_up,
                bytes_down,
            },
            // Handled by `mask_event`, with their streams.
            e @ (Event::ToolOutput { .. } | Event::ToolCallFinished { .. }) => e,
            // Ids, names of people, enums and numbers only.
            e @ (Event::PromptStarted { .. }
            | Event::PromptInserted { .. }
            | Event::PromptFinished { .. }
            | Event::PromptCancelled { .. }
            | Event::PromptInterrupted { .. }
            | Event::ModelRequest { .. }
            | Event::ParticipantJoined { .. }
            | Event::ParticipantLeft { .. }
            | Event::PullRequest { .. }
            | Event::PullRequestChanged { .. }
            | Event::PullRequestReviewed { .. }
            | Event::PullRequestRevised { .. }
            | Event::QueueCleared { .. }
            | Event::SettingsChanged { .. }
            | Event::Pushed { .. }
            // Numbers, and a message kiln wrote from numbers and config keys.
            | Event::ModelUsage { .. }
            | Event::LimitReached { .. }
            | Event::Compacted { .. }) => e,
            // People's words (an edited plan, a reason), recorded by the engine, not the agent.
            e @ (Event::PlanApproved { .. } | Event::PlanRejected { .. }) => e,
        }
    }

    /// Masks every string in a JSON value (a tool call's input: free-form, nothing parses it).
    fn mask_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => {
                if let std::borrow::Cow::Owned(masked) = self.masker.mask(text) {
                    *text = masked;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.mask_json(v)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| self.mask_json(v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::PromptId;

    fn secrets() -> SessionSecrets {
        SessionSecrets::new(BTreeMap::new(), Masker::new([("TOKEN", "tok-0123456789")]))
    }

    fn output(call: &str, chunk: &str) -> Event {
        Event::ToolOutput {
            call_id: call.into(),
            stream: ToolStream::Stdout,
            chunk: chunk.into(),
        }
    }

    #[test]
    fn output_split_across_chunks_is_masked_and_flushed_at_the_end() {
        let s = secrets();
        assert_eq!(
            s.mask_event(output("c1", "a tok-0123")),
            [output("c1", "a ")]
        );
        assert!(s.mask_event(output("c2", "tok-01")).is_empty());
        // (A chunk ending in a letter might be held back: it may start the value's base64.)
        assert_eq!(
            s.mask_event(output("c1", "456789 !")),
            [output("c1", "[secret TOKEN] !")]
        );
        let finished = s.mask_event(Event::ToolCallFinished {
            call_id: "c2".into(),
            outcome: ToolOutcome::Error {
                message: "tok-0123456789".into(),
            },
            output: "x tok-0123456789".into(),
            duration_ms: 1,
        });
        assert_eq!(
            finished,
            [
                output("c2", "tok-01"),
                Event::ToolCallFinished {
                    call_id: "c2".into(),
                    outcome: ToolOutcome::Error {
                        message: "[secret TOKEN]".into()
                    },
                    output: "x [secret TOKEN]".into(),
                    duration_ms: 1,
                }
            ]
        );
        let prompt_id = PromptId::random();
        let started = s.mask_event(Event::ToolCallStarted {
            prompt_id: prompt_id.clone(),
            call_id: "c3".into(),
            tool: "bash".into(),
            input: serde_json::json!({"command": ["echo tok-0123456789"]}),
        });
        assert_eq!(
            started,
            [Event::ToolCallStarted {
                prompt_id,
                call_id: "c3".into(),
                tool: "bash".into(),
                input: serde_json::json!({"command": ["echo [secret TOKEN]"]}),
            }]
        );
    }

    #[test]
    fn without_secrets_events_pass_through() {
        let s = SessionSecrets::default();
        assert_eq!(s.mask_event(output("c", "tok-01")), [output("c", "tok-01")]);
    }
}
