//! Watching a session: subscribe, render every event, and decide when to stop and with which
//! exit code. `session new` and `send --wait` stop when their prompt ends; `attach` stops when
//! the session has nothing left to do (or never, with `--follow`). Ctrl-C detaches: the session
//! goes on, and the hint printed says how to pick up exactly where this view stopped.

use super::config;
use super::render::{Paint, Renderer};
use anyhow::Result;
use kiln_client::Client;
use kiln_core::{PromptId, SessionId};
use kiln_protocol::api::{
    EVENT_VERSION, Event, PromptOutcome, PromptStatus, ServerFrame, SessionState,
};
use std::io::IsTerminal;
use std::process::ExitCode;

/// When a view of a session ends by itself.
#[derive(Debug, Clone)]
pub(crate) enum Until {
    /// When this prompt ends — or the prompt it was inserted into, if it was.
    Prompt(PromptId),
    /// When the session is idle (or closed) and every event up to then is shown.
    Idle,
    /// Only on Ctrl-C or a lost connection.
    Forever,
}

/// Exit code when the user detached with Ctrl-C (128 + SIGINT, as shells report it).
const DETACHED: u8 = 130;

pub(crate) async fn follow(
    client: &Client,
    id: &SessionId,
    after_seq: u64,
    until: Until,
    json: bool,
) -> Result<ExitCode> {
    let live = std::io::stdout().is_terminal();
    let paint = Paint(live && config::colour_allowed());
    let mut renderer = Renderer::new(std::io::stdout(), json, live, paint);
    let stream = client.subscribe(id, after_seq);
    let link = stream.link();
    let mut view = View {
        client,
        id,
        until,
        stream,
        link,
        after_seq,
        replay_head: None,
        idle_at: None,
        last_ok: None,
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let outcome = tokio::select! {
        outcome = view.run(&mut renderer) => outcome,
        _ = &mut ctrl_c => Ok(None),
    };
    renderer.finish()?;
    match outcome? {
        Some(ok) => Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        None => {
            let seq = view.stream.last_seq();
            eprintln!(
                "detached; the session goes on. Pick up where this stopped with:\n  \
                 kiln session attach {id} --after-seq {seq}"
            );
            Ok(ExitCode::from(DETACHED))
        }
    }
}

struct View<'a> {
    client: &'a Client,
    id: &'a SessionId,
    until: Until,
    stream: kiln_client::EventStream,
    /// Whether the stream is connected; shown while it reconnects.
    link: tokio::sync::watch::Receiver<kiln_client::Link>,
    /// Where the view started (`--after-seq`).
    after_seq: u64,
    /// Where the first connection's replay ends; events after it are live.
    replay_head: Option<u64>,
    /// For `Until::Idle`: the server said the session was idle at this seq.
    idle_at: Option<u64>,
    /// Whether the last prompt that ended here completed; `None` when none ended.
    last_ok: Option<bool>,
}

impl View<'_> {
    /// Renders until the view should end; `Ok(Some(success))` then. Never returns `Ok(None)`:
    /// that is the Ctrl-C branch of the caller's `select!`, kept in the same type.
    async fn run(&mut self, renderer: &mut Renderer<std::io::Stdout>) -> Result<Option<bool>> {
        loop {
            if let (Until::Idle, Some(at)) = (&self.until, self.idle_at)
                && self.stream.last_seq() >= at
            {
                return Ok(Some(self.last_ok.unwrap_or(true)));
            }
            let frame = tokio::select! {
                frame = self.stream.next() => frame,
                // `next` is cancel-safe: a change of the link interrupts it without loss.
                Ok(()) = self.link.changed() => {
                    let link = self.link.borrow_and_update().clone();
                    let reason = match &link {
                        kiln_client::Link::Up => None,
                        kiln_client::Link::Reconnecting(reason) => Some(reason.as_str()),
                    };
                    if !renderer.reconnecting(reason) {
                        match reason {
                            Some(reason) => eprintln!("reconnecting… ({reason})"),
                            None => eprintln!("reconnected"),
                        }
                    }
                    continue;
                }
            };
            let Some(frame) = frame else {
                anyhow::bail!("the session's event stream ended");
            };
            match frame? {
                ServerFrame::Hello {
                    head_seq,
                    event_version,
                    ..
                } => {
                    if event_version > EVENT_VERSION && self.replay_head.is_none() {
                        eprintln!(
                            "warning: the server's events are newer (v{event_version}) than this \
                             kiln's (v{EVENT_VERSION}); upgrade kiln if something looks wrong"
                        );
                    }
                    if self.replay_head.is_none() && self.after_seq > head_seq {
                        anyhow::bail!(
                            "session {}'s log ends at event {head_seq}; --after-seq {} is past \
                             it (use --after-seq {head_seq} to see only what comes next)",
                            self.id,
                            self.after_seq
                        );
                    }
                    self.replay_head.get_or_insert(head_seq);
                    if matches!(self.until, Until::Idle) {
                        self.check_idle().await?;
                    }
                }
                ServerFrame::Event(envelope) => {
                    renderer.event(&envelope)?;
                    if let Some(done) = self.ends(&envelope.event) {
                        return Ok(Some(done));
                    }
                    let live = self.replay_head.is_some_and(|head| envelope.seq >= head);
                    if live && matches!(self.until, Until::Idle) && ended(&envelope.event).is_some()
                    {
                        self.check_idle().await?;
                    }
                }
                ServerFrame::Error { message } => eprintln!("warning: the server said: {message}"),
                ServerFrame::Ephemeral { .. } | ServerFrame::Pong { .. } => {}
            }
        }
    }

    /// Notes how a prompt ended, and says whether the view ends with it.
    fn ends(&mut self, event: &Event) -> Option<bool> {
        if let Some(ok) = ended(event) {
            self.last_ok = Some(ok);
        }
        let Until::Prompt(waiting) = &self.until else {
            return None;
        };
        match event {
            Event::PromptInserted { prompt_id, into } if prompt_id == waiting => {
                self.until = Until::Prompt(into.clone());
                None
            }
            _ if event.prompt_id() == Some(waiting) => ended(event),
            _ => None,
        }
    }

    async fn check_idle(&mut self) -> Result<()> {
        let detail = self.client.session(self.id).await?;
        // A prompt's status changes in the transaction of the event that ends it, while the
        // session's worker lets go a moment later: no prompt queued or running is idle, or a
        // view that saw the last prompt end could wait for an event that never comes.
        let nothing_left = !detail
            .prompts
            .iter()
            .any(|p| matches!(p.status, PromptStatus::Queued | PromptStatus::Running));
        if detail.summary.state != SessionState::Working || nothing_left {
            self.idle_at = Some(detail.head_seq);
        }
        Ok(())
    }
}

/// For an event that ends a prompt: whether it completed.
fn ended(event: &Event) -> Option<bool> {
    match event {
        Event::PromptFinished { outcome, .. } => Some(*outcome == PromptOutcome::Completed),
        Event::PromptCancelled { .. } | Event::PromptInterrupted { .. } => Some(false),
        _ => None,
    }
}
