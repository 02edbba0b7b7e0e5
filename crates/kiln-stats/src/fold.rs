//! One session's events → its summary. Pure and resumable: apply events in order, from any
//! seq on, and read the summary at any time.

use kiln_core::PromptId;
use kiln_protocol::api::{Event, EventEnvelope, SandboxState, StartPhases};
use std::collections::{BTreeMap, HashMap};

/// Start events kept at most until the start phases are known.
const START_BUFFER: usize = 1_000;

/// A pull request of the session, as its events told it.
#[derive(Debug, Clone, Default)]
struct PrFold {
    /// When kiln opened it or the forge said it was opened; unknown when only its merge was
    /// heard.
    opened_at_ms: Option<i64>,
    merged_at_ms: Option<i64>,
    closed: bool,
    approved: bool,
    revisions: u32,
}

/// The running fold of one session's log.
#[derive(Debug, Clone, Default)]
pub struct SessionFold {
    /// The last seq applied.
    pub seq: u64,
    repo: String,
    user_id: String,
    user_name: String,
    created_at_ms: Option<i64>,
    /// Start-relevant events, until the start phases are complete.
    start_events: Vec<EventEnvelope>,
    start_prompt: Option<PromptId>,
    start_done: bool,
    /// Prompts started whose first text has not come yet: when they started.
    waiting_first_text: HashMap<PromptId, i64>,
    ttft_ms: Vec<u64>,
    prs: BTreeMap<u64, PrFold>,
    lines_added: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    /// Each prompt author's latest prompt: user id → ms.
    last_prompt: HashMap<String, i64>,
}

/// What the stats need of one session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionSummary {
    pub repo: String,
    pub user_id: String,
    pub user_name: String,
    pub created_at_ms: i64,
    pub prs_opened: u64,
    pub prs_merged: u64,
    pub prs_closed: u64,
    pub prs_approved: u64,
    pub revisions: u64,
    pub time_to_merge_ms: Vec<u64>,
    pub ttft_ms: Vec<u64>,
    pub start: StartPhases,
    pub lines_added: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    /// Each prompt author's latest prompt (user id, ms).
    pub last_prompt: Vec<(String, i64)>,
}

impl SessionSummary {
    /// Ended in a merged pull request.
    pub fn merged(&self) -> bool {
        self.prs_merged > 0
    }
}

impl SessionFold {
    /// Applies one event; events at or below the folded seq are skipped (a re-read overlap).
    pub fn apply(&mut self, envelope: &EventEnvelope) {
        if envelope.seq <= self.seq {
            return;
        }
        self.seq = envelope.seq;
        let at = envelope.at_ms;
        if !self.start_done && is_start_event(&envelope.event) {
            self.start_events.push(envelope.clone());
        }
        match &envelope.event {
            Event::SessionCreated { repo, by, .. } => {
                self.repo = repo.clone();
                self.user_id = by.id.to_string();
                self.user_name = by.name.clone();
                self.created_at_ms = Some(at);
            }
            Event::PromptQueued {
                prompt_id, author, ..
            } => {
                self.start_prompt.get_or_insert_with(|| prompt_id.clone());
                self.last_prompt.insert(author.id.to_string(), at);
            }
            Event::PromptStarted { prompt_id, .. } => {
                self.waiting_first_text.insert(prompt_id.clone(), at);
            }
            Event::TextDelta { prompt_id, .. } => {
                if let Some(started) = self.waiting_first_text.remove(prompt_id) {
                    self.ttft_ms.push((at - started).max(0) as u64);
                }
                if self.start_prompt.as_ref() == Some(prompt_id) {
                    self.start_done = true;
                }
            }
            Event::PromptFinished { prompt_id, .. }
            | Event::PromptCancelled { prompt_id, .. }
            | Event::PromptInterrupted { prompt_id } => {
                // A prompt that ended (or a crash cut) before any text has no time to first
                // token; the downtime after a crash is not the model's.
                self.waiting_first_text.remove(prompt_id);
            }
            Event::FileChanged { added, .. } => self.lines_added += u64::from(*added),
            Event::ModelUsage {
                input_tokens,
                output_tokens,
                cost_usd,
                ..
            } => {
                self.input_tokens += input_tokens;
                self.output_tokens += output_tokens;
                self.cost_usd += cost_usd.unwrap_or(0.0);
            }
            Event::PullRequest { number, .. } => {
                self.prs
                    .entry(*number)
                    .or_default()
                    .opened_at_ms
                    .get_or_insert(at);
            }
            Event::PullRequestChanged {
                number,
                action,
                state,
                merged,
                merged_at_ms,
                ..
            } => {
                let pr = self.prs.entry(*number).or_default();
                if action == "opened" {
                    pr.opened_at_ms.get_or_insert(at);
                }
                if *merged {
                    pr.merged_at_ms = Some(merged_at_ms.unwrap_or(at));
                    pr.closed = false;
                } else {
                    pr.closed = state == "closed";
                }
            }
            Event::PullRequestReviewed {
                number, verdict, ..
            } if verdict == "approved" => {
                self.prs.entry(*number).or_default().approved = true;
            }
            Event::PullRequestRevised {
                number, revision, ..
            } => {
                let pr = self.prs.entry(*number).or_default();
                pr.revisions = pr.revisions.max(*revision);
            }
            _ => {}
        }
        if self.start_events.len() >= START_BUFFER {
            self.start_done = true;
        }
    }

    /// The summary of what was applied so far.
    pub fn summary(&self) -> SessionSummary {
        let merged: Vec<&PrFold> = self
            .prs
            .values()
            .filter(|pr| pr.merged_at_ms.is_some())
            .collect();
        SessionSummary {
            repo: self.repo.clone(),
            user_id: self.user_id.clone(),
            user_name: self.user_name.clone(),
            created_at_ms: self.created_at_ms.unwrap_or(0),
            prs_opened: self.prs.len() as u64,
            prs_merged: merged.len() as u64,
            prs_closed: self.prs.values().filter(|pr| pr.closed).count() as u64,
            prs_approved: self.prs.values().filter(|pr| pr.approved).count() as u64,
            revisions: self.prs.values().map(|pr| u64::from(pr.revisions)).sum(),
            time_to_merge_ms: merged
                .iter()
                .filter_map(|pr| match (pr.opened_at_ms, pr.merged_at_ms) {
                    (Some(opened), Some(merged)) if merged >= opened => {
                        Some((merged - opened) as u64)
                    }
                    _ => None,
                })
                .collect(),
            ttft_ms: self.ttft_ms.clone(),
            start: StartPhases::from_events(&self.start_events),
            lines_added: if merged.is_empty() {
                0
            } else {
                self.lines_added
            },
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost_usd: self.cost_usd,
            last_prompt: self
                .last_prompt
                .iter()
                .map(|(user, at)| (user.clone(), *at))
                .collect(),
        }
    }
}

/// The events `StartPhases::from_events` reads.
fn is_start_event(event: &Event) -> bool {
    matches!(
        event,
        Event::SessionCreated { .. }
            | Event::PromptQueued { .. }
            | Event::ModelRequest { .. }
            | Event::TextDelta { .. }
            | Event::PromptInterrupted { .. }
            | Event::SandboxStatus {
                state: SandboxState::Syncing | SandboxState::Ready,
                ..
            }
    )
}
