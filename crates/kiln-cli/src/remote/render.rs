//! How a session's events look in a terminal. Two shapes: `--json` writes each event's envelope
//! as one JSON line and nothing else (for scripts); the human shape streams model text inline,
//! shows running tool calls as spinners that turn into ✓/✗ lines, and one line per file change
//! and per prompt milestone. Colours and spinners only on a terminal, so piped output is plain.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_protocol::api::{
    Event, EventEnvelope, FileChangeKind, PromptOutcome, SandboxState, ToolOutcome,
};
use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

/// ANSI styling, or none. Decided once from whether the output is a terminal (and `NO_COLOR`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paint(pub(crate) bool);

impl Paint {
    fn wrap(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    pub(crate) fn red(self, text: &str) -> String {
        self.wrap("31", text)
    }
    fn green(self, text: &str) -> String {
        self.wrap("32", text)
    }
    fn bold(self, text: &str) -> String {
        self.wrap("1", text)
    }
    fn dim(self, text: &str) -> String {
        self.wrap("2", text)
    }
}

/// Writes events to `out` in one of the two shapes. `live` (a terminal) adds spinners.
pub(crate) struct Renderer<W: Write> {
    out: W,
    json: bool,
    paint: Paint,
    /// Spinners for running tool calls; only on a terminal.
    spinners: Option<MultiProgress>,
    /// Running tool calls by call id: their label, and their spinner when there is one.
    calls: HashMap<String, (String, Option<ProgressBar>)>,
    /// Prompt authors, to say whose prompt finished.
    authors: HashMap<String, String>,
    /// The last model text did not end a line: the next line must start one.
    mid_line: bool,
    /// Model text that arrived while spinners were drawn, held until a line is complete.
    held_text: String,
    /// Status lines (sandbox, participants, queue) that arrived in the middle of a line of
    /// model text, held until that line ends: they never split a word.
    held_lines: Vec<String>,
    /// A spinner with the time so far while the model has not answered yet; terminal only.
    waiting: Option<ProgressBar>,
    /// A spinner while the connection is being regained; terminal only.
    reconnecting: Option<ProgressBar>,
}

impl<W: Write> Renderer<W> {
    pub(crate) fn new(out: W, json: bool, live: bool, paint: Paint) -> Renderer<W> {
        let spinners =
            (live && !json).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()));
        Renderer {
            out,
            json,
            paint,
            spinners,
            calls: HashMap::new(),
            authors: HashMap::new(),
            mid_line: false,
            held_text: String::new(),
            held_lines: Vec::new(),
            waiting: None,
            reconnecting: None,
        }
    }

    pub(crate) fn event(&mut self, envelope: &EventEnvelope) -> io::Result<()> {
        if self.json {
            serde_json::to_writer(&mut self.out, envelope)?;
            self.out.write_all(b"\n")?;
            return self.out.flush();
        }
        let p = self.paint;
        if matches!(
            envelope.event,
            Event::TextDelta { .. }
                | Event::ToolCallStarted { .. }
                | Event::PromptFinished { .. }
                | Event::PromptCancelled { .. }
                | Event::PromptInterrupted { .. }
                | Event::Error { .. }
        ) && let Some(bar) = self.waiting.take()
        {
            bar.finish_and_clear();
        }
        match &envelope.event {
            Event::TextDelta { text, .. } => return self.text(text),
            Event::ToolCallStarted {
                call_id,
                tool,
                input,
                ..
            } => return self.tool_started(call_id, tool, input),
            Event::ToolOutput { call_id, chunk, .. } => {
                if let Some((label, Some(bar))) = self.calls.get(call_id)
                    && let Some(last) = chunk.lines().rev().find(|l| !l.trim().is_empty())
                {
                    bar.set_message(format!("{label}  {}", p.dim(&clip(last.trim(), 60))));
                }
            }
            Event::ToolCallFinished {
                call_id,
                outcome,
                duration_ms,
                ..
            } => {
                let (label, bar) = self.calls.remove(call_id).unwrap_or_default();
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                let took = p.dim(&human_duration(Duration::from_millis(*duration_ms)));
                let line = match outcome {
                    ToolOutcome::Ok => format!("{} {label}  {took}", p.green("✓")),
                    ToolOutcome::Error { message } => {
                        format!(
                            "{} {label}  {took}  {}",
                            p.red("✗"),
                            p.red(&clip(message, 200))
                        )
                    }
                    ToolOutcome::Blocked { reason } => {
                        format!("{} {label}  blocked: {}", p.red("✗"), clip(reason, 200))
                    }
                    ToolOutcome::Cancelled => format!("{} {label}  cancelled", p.red("✗")),
                };
                self.line(&line)?;
            }
            Event::FileChanged {
                path,
                kind,
                added,
                removed,
                ..
            } => {
                let letter = match kind {
                    FileChangeKind::Added => "A",
                    FileChangeKind::Modified => "M",
                    FileChangeKind::Deleted => "D",
                };
                let counts = format!(
                    "{} {}",
                    p.green(&format!("+{added}")),
                    p.red(&format!("-{removed}"))
                );
                self.line(&format!("  {letter} {path} {counts}"))?;
            }
            Event::PromptQueued {
                prompt_id,
                author,
                text,
                ..
            } => {
                self.authors
                    .insert(prompt_id.to_string(), author.name.clone());
                let first = clip(text.lines().next().unwrap_or(""), 72);
                self.note(p.dim(&format!("● {} queued a prompt: {first}", author.name)))?;
            }
            Event::PromptStarted { prompt_id, author } => {
                self.authors
                    .insert(prompt_id.to_string(), author.name.clone());
                self.line(&p.bold(&format!("▶ working on {}'s prompt", author.name)))?;
            }
            Event::PromptInserted { prompt_id, .. } => {
                let whose = self.whose(prompt_id.as_str());
                self.line(&p.dim(&format!("↳ {whose} joined the running prompt")))?;
            }
            Event::PromptFinished {
                prompt_id,
                outcome,
                usage,
            } => {
                let whose = self.whose(prompt_id.as_str());
                let mut tokens = format!(
                    "{} in / {} out tokens",
                    human_count(usage.input_tokens),
                    human_count(usage.output_tokens)
                );
                if let Some(cost) = usage.cost_usd {
                    tokens.push_str(&format!(" · {}", usd(cost)));
                }
                let (done, word) = match outcome {
                    PromptOutcome::Completed => (true, "completed"),
                    PromptOutcome::Failed => (false, "failed"),
                    PromptOutcome::TurnLimit => (false, "stopped at the turn limit"),
                    PromptOutcome::TokenLimit => (false, "stopped at the token limit"),
                    PromptOutcome::CostLimit => (false, "stopped at a cost limit"),
                };
                let text = format!("■ {whose} {word} · {tokens}");
                self.line(&if done { p.bold(&text) } else { p.red(&text) })?;
            }
            Event::ModelUsage {
                turn,
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cost_usd,
                ..
            } => {
                let cached = if *cache_read_tokens > 0 {
                    format!(" ({} cached)", human_count(*cache_read_tokens))
                } else {
                    String::new()
                };
                let cost = cost_usd
                    .map(|c| format!(" · {}", usd(c)))
                    .unwrap_or_default();
                self.note(p.dim(&format!(
                    "· turn {turn}: {} in{cached} / {} out tokens{cost}",
                    human_count(*input_tokens),
                    human_count(*output_tokens)
                )))?;
            }
            Event::LimitReached { limit, message, .. } => {
                self.line(&p.red(&format!("■ {limit} reached: {message}")))?;
            }
            Event::Compacted {
                before_tokens,
                after_tokens,
                messages_summarised,
                ..
            } => {
                self.note(p.dim(&format!(
                    "· conversation compacted: {messages_summarised} messages summarised, \
                     ~{} → ~{} tokens",
                    human_count(*before_tokens),
                    human_count(*after_tokens)
                )))?;
            }
            Event::PromptCancelled { prompt_id, by } => {
                let whose = self.whose(prompt_id.as_str());
                self.line(&p.red(&format!("■ {whose} cancelled by {}", by.name)))?;
            }
            Event::PromptInterrupted { prompt_id } => {
                let whose = self.whose(prompt_id.as_str());
                let text = format!(
                    "■ {whose} interrupted by a server restart; `kiln session retry` sends it again"
                );
                self.line(&p.red(&text))?;
            }
            Event::SessionCreated { repo, title, by } => {
                self.note(p.dim(&format!(
                    "· {} started a session on {repo}: {title}",
                    by.name
                )))?;
            }
            Event::SandboxStatus { state, detail, .. } => {
                let detail = detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                let line = match state {
                    SandboxState::Starting => p.dim(&format!("· sandbox starting{detail}")),
                    SandboxState::Syncing => p.dim(&format!("· sandbox syncing{detail}")),
                    SandboxState::Ready => p.dim(&format!("· sandbox ready{detail}")),
                    SandboxState::Stopped => p.dim(&format!("· sandbox stopped{detail}")),
                    SandboxState::Failed => p.red(&format!("· sandbox failed{detail}")),
                };
                self.note(line)?;
            }
            Event::ParticipantJoined { user, role } => {
                self.note(p.dim(&format!("· {} joined as {role}", user.name)))?;
            }
            Event::ParticipantLeft { user } => {
                self.note(p.dim(&format!("· {} left", user.name)))?;
            }
            Event::PullRequest {
                number,
                url,
                created,
                by,
                ..
            } => {
                let what = if *created { "opened" } else { "updated" };
                self.note(p.dim(&format!(
                    "· {} {what} pull request #{number}: {url}",
                    by.name
                )))?;
            }
            Event::PullRequestChanged {
                number,
                action,
                actor,
                url,
                ..
            } => {
                let line = format!("· pull request #{number} {action} by {actor}: {url}");
                self.note(if action == "merged" {
                    p.green(&line)
                } else {
                    p.dim(&line)
                })?;
            }
            Event::PullRequestReviewed {
                number,
                verdict,
                reviewer,
                ..
            } => {
                let verdict = verdict.replace('_', " ");
                self.note(p.dim(&format!(
                    "· {reviewer} reviewed pull request #{number}: {verdict}"
                )))?;
            }
            Event::PullRequestRevised {
                number, revision, ..
            } => {
                self.note(p.dim(&format!(
                    "· pull request #{number}: revision {revision} pushed after review"
                )))?;
            }
            Event::QueueCleared { by, cancelled } => {
                let n = cancelled.len();
                let text = format!("· {} cleared the queue ({n} prompt(s) cancelled)", by.name);
                self.note(p.dim(&text))?;
            }
            Event::SettingsChanged {
                delivery,
                plan_mode,
            } => {
                let plan = if *plan_mode { "; plan mode on" } else { "" };
                let text = format!(
                    "· prompts sent while working now {}{plan}",
                    delivery.as_str()
                );
                self.note(p.dim(&text))?;
            }
            Event::PlanProposed {
                plan_id,
                title,
                plan,
                ..
            } => {
                let title = title
                    .as_deref()
                    .map(|t| format!(": {t}"))
                    .unwrap_or_default();
                self.line(&p.bold(&format!("◆ plan {plan_id} proposed{title}")))?;
                for line in plan.lines() {
                    self.line(&format!("  {line}"))?;
                }
                self.note(p.dim(&format!(
                    "· approve or reject it: kiln session plan approve|reject SESSION {plan_id}"
                )))?;
            }
            Event::PlanApproved {
                plan_id,
                by,
                edited,
                ..
            } => {
                let edited = if *edited { " with edits" } else { "" };
                self.line(&p.green(&format!("✓ {} approved plan {plan_id}{edited}", by.name)))?;
            }
            Event::PlanRejected {
                plan_id,
                by,
                reason,
                superseded,
            } => {
                let text = if *superseded {
                    format!("✗ plan {plan_id} superseded by {}'s new prompt", by.name)
                } else {
                    let reason = reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default();
                    format!("✗ {} rejected plan {plan_id}{reason}", by.name)
                };
                self.line(&p.red(&text))?;
            }
            Event::Egress {
                host,
                port,
                allowed,
                reason,
                connections,
                bytes_up,
                bytes_down,
                ..
            } => {
                let text = format!(
                    "· egress {host}:{port} {} ({reason}): {connections} connection(s), {bytes_up} B up, {bytes_down} B down",
                    if *allowed { "allowed" } else { "refused" }
                );
                self.note(if *allowed { p.dim(&text) } else { p.red(&text) })?;
            }
            Event::Pushed {
                branch, commit, by, ..
            } => {
                let short = commit.get(..12).unwrap_or(commit);
                let text = format!("· pushed {branch} at {short} (for {})", by.name);
                self.note(p.dim(&text))?;
            }
            Event::Error { message, .. } => self.line(&p.red(&format!("error: {message}")))?,
            Event::SessionSpawned {
                child, repo, title, ..
            } => {
                let text = format!("· spawned sub-session {child} on {repo}: {title}");
                self.note(p.dim(&text))?;
            }
            Event::ChildFinished {
                child,
                status,
                pull_request,
                ..
            } => {
                let pr = pull_request
                    .as_ref()
                    .map(|pr| format!(", pull request #{} {}", pr.number, pr.url))
                    .unwrap_or_default();
                let text = format!("· sub-session {child}: prompt {}{pr}", status.as_str());
                self.note(p.dim(&text))?;
            }
            Event::ModelRequest { .. } => self.wait_for_model(),
        }
        Ok(())
    }

    /// Ends the view: spinners of calls still running are cleared and the line is finished, so
    /// whatever is printed next (a detach hint) starts on a clean line.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        for (_, (_, bar)) in self.calls.drain() {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        }
        for bar in [self.waiting.take(), self.reconnecting.take()]
            .into_iter()
            .flatten()
        {
            bar.finish_and_clear();
        }
        let held = std::mem::take(&mut self.held_text);
        self.write_text(&held)?;
        if self.mid_line {
            self.mid_line = false;
            self.out.write_all(b"\n")?;
        }
        self.flush_notes()?;
        self.out.flush()
    }

    /// A status line: now, or after the line of model text in progress ends.
    fn note(&mut self, line: String) -> io::Result<()> {
        if self.mid_line || !self.held_text.is_empty() {
            self.held_lines.push(line);
            return Ok(());
        }
        self.line(&line)
    }

    fn flush_notes(&mut self) -> io::Result<()> {
        for line in std::mem::take(&mut self.held_lines) {
            self.line(&line)?;
        }
        Ok(())
    }

    fn whose(&self, prompt_id: &str) -> String {
        match self.authors.get(prompt_id) {
            Some(name) => format!("{name}'s prompt"),
            None => "the prompt".to_string(),
        }
    }

    fn text(&mut self, text: &str) -> io::Result<()> {
        if self.calls.values().any(|(_, bar)| bar.is_some()) {
            // Text under live spinners would be overdrawn: hold it until a line is complete.
            self.held_text.push_str(text);
            if let Some(end) = self.held_text.rfind('\n') {
                let ready: String = self.held_text.drain(..=end).collect();
                self.write_text(&ready)?;
            }
            return Ok(());
        }
        let held = std::mem::take(&mut self.held_text);
        self.write_text(&(held + text))
    }

    fn write_text(&mut self, text: &str) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        // Status lines held for this line of text go out as soon as the line ends.
        if !self.held_lines.is_empty()
            && let Some(end) = text.rfind('\n')
            && end + 1 < text.len()
        {
            self.write_text(&text[..=end])?;
            return self.write_text(&text[end + 1..]);
        }
        let (out, spinners) = (&mut self.out, &self.spinners);
        suspended(spinners, || {
            out.write_all(text.as_bytes())?;
            out.flush()
        })?;
        self.mid_line = !text.ends_with('\n');
        if !self.mid_line {
            self.flush_notes()?;
        }
        Ok(())
    }

    /// One whole line, after ending a line of model text if one is open (and then the status
    /// lines that waited for it).
    fn line(&mut self, line: &str) -> io::Result<()> {
        let open = std::mem::replace(&mut self.mid_line, false);
        let (out, spinners) = (&mut self.out, &self.spinners);
        suspended(spinners, || {
            if open {
                out.write_all(b"\n")?;
            }
            writeln!(out, "{line}")?;
            out.flush()
        })?;
        if !self.held_lines.is_empty() {
            self.flush_notes()?;
        }
        Ok(())
    }

    fn tool_started(
        &mut self,
        call_id: &str,
        tool: &str,
        input: &serde_json::Value,
    ) -> io::Result<()> {
        let label = format!("{}  {}", self.paint.bold(tool), clip(&summarize(input), 80));
        let bar = match &self.spinners {
            Some(spinners) => {
                if std::mem::replace(&mut self.mid_line, false) {
                    suspended(&self.spinners, || writeln!(self.out))?;
                }
                let style = ProgressStyle::with_template("{spinner} {msg}")
                    .expect("a valid template")
                    .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏▸");
                let bar = spinners.add(ProgressBar::new_spinner().with_style(style));
                bar.set_message(label.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                Some(bar)
            }
            None => {
                self.line(&format!("▸ {label}"))?;
                None
            }
        };
        self.calls.insert(call_id.to_string(), (label, bar));
        Ok(())
    }
}

fn suspended<R>(spinners: &Option<MultiProgress>, f: impl FnOnce() -> R) -> R {
    match spinners {
        Some(spinners) => spinners.suspend(f),
        None => f(),
    }
}

/// What a tool call is about, in a few words: its command or path, else its input as JSON.
fn summarize(input: &serde_json::Value) -> String {
    for key in ["command", "path", "file_path", "pattern", "url", "query"] {
        if let Some(value) = input.get(key).and_then(|v| v.as_str()) {
            return value.lines().next().unwrap_or("").to_string();
        }
    }
    match input {
        serde_json::Value::Object(map) if map.is_empty() => String::new(),
        other => other.to_string(),
    }
}

/// At most `max` characters, with `…` when cut.
pub(crate) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn human_duration(d: Duration) -> String {
    match d.as_millis() {
        ms if ms < 1000 => format!("{ms}ms"),
        ms if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        ms => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

fn human_count(n: u64) -> String {
    match n {
        n if n < 1000 => n.to_string(),
        n if n < 1_000_000 => format!("{:.1}k", n as f64 / 1000.0),
        n => format!("{:.1}M", n as f64 / 1_000_000.0),
    }
}

#[path = "render_progress.rs"]
mod progress;

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;

/// Dollars for people: cents when it is at least one, else four decimals.
fn usd(cost: f64) -> String {
    if cost >= 1.0 {
        format!("${cost:.2}")
    } else {
        format!("${cost:.4}")
    }
}
