//! One session's actor: its queue, the prompt running now, and its sandbox.
//!
//! Prompts are durable before anyone hears of them: `enqueue` commits the prompt row and its
//! `prompt_queued` event in one transaction, then wakes the worker. The worker is a task that
//! exists only while there is work: it takes the oldest queued prompt, runs the agent on it, and
//! ends when the queue is empty. How the actor gets its sandbox (and syncs it) is in
//! `session/sandbox.rs`; its snapshots and idle stop in `session/snapshots.rs`.

use crate::engine::Inner;
use crate::sync_gate::{SyncGate, SyncState};
use crate::{Error, Result};
use futures_util::FutureExt;
use kiln_core::PromptId;
use kiln_fleet::pool::Checkout;
use kiln_protocol::api::{
    DeliveryMode, ErrorKind, Event, PromptAccepted, PromptInfo, PromptOutcome, PromptStatus,
    SandboxState, Usage, UserRef,
};
use kiln_sandbox::{Sandbox, SandboxId};
use kiln_store::SessionLog;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod autocommit;
mod mcp;
mod plan;
mod port;
mod push;
mod sandbox;
mod secrets;
mod snapshots;

pub(crate) use mcp::{entries as mcp_entries, server_config as mcp_server_config};
pub(crate) use sandbox::Need;
pub(crate) use secrets::SessionSecrets;

#[derive(Debug)]
pub(crate) struct SessionActor {
    pub(crate) log: SessionLog,
    pub(crate) repo: kiln_protocol::api::Repo,
    /// The session's creator; the checkout's git identity until commits carry each author.
    creator: UserRef,
    /// The creator's git email.
    email: String,
    /// Whether the checkout has caught up with the default branch (see [`SyncGate`]).
    sync: watch::Sender<SyncState>,
    /// Commit identities (name, email) of the authors of prompts run here, looked up from
    /// their profiles when their prompt starts.
    identities: Mutex<std::collections::HashMap<kiln_core::UserId, (String, String)>>,
    /// The running prompt's secrets (read when it starts): its commands' `agent = true`
    /// variables and the masker of its events.
    secrets: Mutex<Arc<SessionSecrets>>,
    /// Bumped by every scheduled snapshot; only the newest one runs.
    snapshot_generation: AtomicU64,
    state: Mutex<State>,
    /// What kiln tells the running prompt at its next turn: a sub-session's prompt ended
    /// (child, text). Bounded by [`NOTICES_MAX`].
    notices: Mutex<Vec<(kiln_core::SessionId, String)>>,
    /// The sandbox, created on first need. An async mutex: whoever creates it holds the slot
    /// while the sandbox starts, and everyone else waits for that sandbox instead of starting
    /// another.
    sandbox: tokio::sync::Mutex<Slot>,
    /// The MCP servers connected for the current sandbox (see `session/mcp.rs`).
    mcp: tokio::sync::Mutex<Option<mcp::McpSlot>>,
}

#[derive(Debug, Default)]
struct State {
    worker: bool,
    running: Option<(PromptId, CancellationToken)>,
    /// Who stopped the running prompt, for its `prompt_cancelled` event.
    stopped_by: Option<UserRef>,
    /// The last sandbox status recorded.
    sandbox: Option<SandboxState>,
    /// When the session last finished work (or got its sandbox).
    last_active: Option<std::time::Instant>,
}

#[derive(Debug, Default)]
struct Slot {
    sandbox: Option<Sandbox>,
    /// Where the checkout of a sandbox made from an image is, while it may need (re)syncing.
    checkout: Option<Checkout>,
    /// A sandbox found running at start-up, reattached on first need.
    recovered: Option<SandboxId>,
}

/// The session's `worker` flag, held by the worker task: dropping it (however the task ends)
/// clears the flag and the running prompt, so the next prompt starts a new worker.
struct WorkerFlag<'a> {
    actor: &'a SessionActor,
    /// Whether this task still owns the flag (it lets go while it checks for late prompts).
    held: bool,
}

impl WorkerFlag<'_> {
    /// Lets go of the flag: a prompt queued from now on starts its own worker.
    fn release(&mut self) {
        self.actor.state.lock().expect("state lock").worker = false;
        self.held = false;
    }

    /// Takes the flag back unless a new worker took it meanwhile.
    fn reclaim(&mut self) -> bool {
        let mut state = self.actor.state.lock().expect("state lock");
        if state.worker {
            return false;
        }
        state.worker = true;
        self.held = true;
        true
    }
}

impl Drop for WorkerFlag<'_> {
    fn drop(&mut self) {
        if self.held {
            // Not `expect`: this may run while unwinding.
            let mut state = self
                .actor
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state.worker = false;
            state.running = None;
        }
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The git email of a kiln user without one of their own (see `engine::manage::git_identity`).
fn commit_email(user: &kiln_core::UserId) -> String {
    format!("{user}@users.kiln.local")
}

/// How long a start lets its claim settle before the pool makes a replacement.
const REFILL_DELAY: Duration = Duration::from_millis(100);

/// Notices kept for the running prompt; the oldest go first.
const NOTICES_MAX: usize = 32;

/// A session's own snapshot layers above what it started from, before they are merged.
const MAX_OWN_LAYERS: usize = 4;

impl SessionActor {
    pub(crate) fn new(
        log: SessionLog,
        repo: kiln_protocol::api::Repo,
        creator: UserRef,
        recovered: Option<SandboxId>,
    ) -> SessionActor {
        SessionActor {
            log,
            repo,
            email: commit_email(&creator.id),
            creator,
            sync: watch::channel(SyncState::Done).0,
            identities: Mutex::default(),
            secrets: Mutex::default(),
            snapshot_generation: AtomicU64::new(0),
            notices: Mutex::default(),
            state: Mutex::new(State::default()),
            sandbox: tokio::sync::Mutex::new(Slot {
                sandbox: None,
                checkout: None,
                recovered,
            }),
            mcp: tokio::sync::Mutex::new(None),
        }
    }

    /// Keeps a notice about `child` for the running prompt's next turn.
    pub(crate) fn notice(&self, child: kiln_core::SessionId, text: String) {
        let mut notices = self.notices.lock().expect("notices lock");
        if notices.len() >= NOTICES_MAX {
            notices.remove(0);
        }
        notices.push((child, text));
    }

    /// The notices kept so far, taken.
    pub(crate) fn take_notices(&self) -> Vec<String> {
        let taken = std::mem::take(&mut *self.notices.lock().expect("notices lock"));
        taken.into_iter().map(|(_, text)| text).collect()
    }

    /// Drops the notices about `children` (a `wait_sessions` result told them already).
    pub(crate) fn forget_notices(&self, children: &[kiln_core::SessionId]) {
        self.notices
            .lock()
            .expect("notices lock")
            .retain(|(child, _)| !children.contains(child));
    }

    /// Who created the session: its active time counts against their limit.
    pub(crate) fn creator(&self) -> &kiln_core::UserId {
        &self.creator.id
    }

    /// Whether the session holds resources now: a prompt at work, or a sandbox up (or coming).
    pub(crate) fn is_active(&self) -> bool {
        let state = self.state.lock().expect("state lock");
        state.worker
            || matches!(
                state.sandbox,
                Some(SandboxState::Starting | SandboxState::Syncing | SandboxState::Ready)
            )
    }

    pub(crate) fn is_working(&self) -> bool {
        self.state.lock().expect("state lock").worker
    }

    /// Who stopped the running prompt, if someone did.
    pub(crate) fn stopped_by(&self) -> Option<UserRef> {
        self.state.lock().expect("state lock").stopped_by.take()
    }

    pub(crate) fn running_prompt(&self) -> Option<PromptId> {
        let state = self.state.lock().expect("state lock");
        state.running.as_ref().map(|(id, _)| id.clone())
    }

    /// Queues a person's prompt, plan-first when `plan` asks or the session is in plan mode;
    /// a plan still pending is superseded by it (see `session/plan.rs`).
    pub(crate) async fn enqueue(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        author: &UserRef,
        text: &str,
        plan: bool,
    ) -> Result<PromptAccepted> {
        if inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        // Every way in (the API, follow-ups, retries, webhooks) passes here.
        crate::engine::admit_budget(inner, &author.id, &self.repo.name).await?;
        let prompt_id = PromptId::random();
        let (seq, _) = self
            .log
            .write({
                let (prompt_id, author, text) =
                    (prompt_id.clone(), author.clone(), text.to_string());
                move |w| {
                    let delivery = w.delivery_mode()?;
                    let plan = plan || w.plan_mode()?;
                    plan::supersede_pending(w, &author)?;
                    w.insert_prompt_with(&prompt_id, &author, &text, PromptStatus::Queued, plan)?;
                    w.event(Event::PromptQueued {
                        prompt_id,
                        author,
                        text,
                        delivery,
                        plan,
                    })
                }
            })
            .await?;
        self.kick(inner);
        Ok(PromptAccepted { prompt_id, seq })
    }

    /// Starts the worker unless it runs already.
    pub(crate) fn kick(self: &Arc<Self>, inner: &Arc<Inner>) {
        {
            let mut state = self.state.lock().expect("state lock");
            if state.worker {
                return;
            }
            state.worker = true;
        }
        let (actor, inner2) = (self.clone(), inner.clone());
        inner
            .tracker
            .spawn(async move { actor.work(&inner2).await });
    }

    async fn work(self: Arc<Self>, inner: &Arc<Inner>) {
        // Whatever way this task ends — an unreadable queue, a panic, the runtime dropping it —
        // the session must not be left believing a worker runs.
        let mut worker = WorkerFlag {
            actor: &self,
            held: true,
        };
        loop {
            if inner.shutdown.is_cancelled() {
                break;
            }
            let next = match self.start_next().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(session = %self.log.id(), error = %e, "cannot read the queue");
                    break;
                }
            };
            let Some(prompt) = next else {
                // Going idle. A prompt queued after `start_next` looked saw `worker == true` and
                // did not kick, so look once more after saying we are gone.
                worker.release();
                match self.has_queued().await {
                    Ok(true) if worker.reclaim() => continue,
                    _ => return,
                }
            };
            let engine = crate::Engine::from_inner(inner.clone());
            let identity = engine.identity_of(&prompt.author.id).await;
            self.identities
                .lock()
                .expect("identities lock")
                .insert(prompt.author.id.clone(), identity);
            // Secrets that cannot be opened (the key changed) cannot be masked either: the
            // prompt does not run, and says why.
            match engine.session_secrets(&self.repo.name).await {
                Ok(secrets) => *self.secrets.lock().expect("secrets lock") = Arc::new(secrets),
                Err(e) => {
                    tracing::error!(session = %self.log.id(), error = %e, "cannot read the repo's secrets");
                    self.fail_prompt(
                        &prompt.id,
                        ErrorKind::Storage,
                        format!("this prompt cannot run: the repo's secrets cannot be read ({e})"),
                    )
                    .await;
                    continue;
                }
            }
            let cancel = inner.shutdown.child_token();
            {
                let mut state = self.state.lock().expect("state lock");
                state.running = Some((prompt.id.clone(), cancel.clone()));
                state.stopped_by = None;
            }
            let prompt_id = prompt.id.clone();
            let span = tracing::info_span!("prompt", session = %self.log.id(), prompt = %prompt_id);
            let port = port::Port {
                actor: &self,
                inner,
                prompt: prompt.clone(),
            };
            let run = inner.agent.run(&port, prompt, cancel).instrument(span);
            // A bug in one prompt's run must not take the session down with it: the prompt
            // fails with an event, and the queue goes on.
            if let Err(panic) = AssertUnwindSafe(run).catch_unwind().await {
                self.record_crashed_prompt(&prompt_id, panic_message(&*panic))
                    .await;
            }
            if !inner.shutdown.is_cancelled() {
                crate::engine::prompt_ended(&engine, &self, &prompt_id).await;
                self.schedule_snapshot(inner, prompt_id);
            }
            let mut state = self.state.lock().expect("state lock");
            state.last_active = Some(std::time::Instant::now());
            state.running = None;
        }
    }

    /// Records that `prompt`'s run panicked: it failed, and an error event says so.
    async fn record_crashed_prompt(&self, prompt: &PromptId, panic: String) {
        tracing::error!(session = %self.log.id(), prompt = %prompt, panic, "a prompt's run panicked");
        self.fail_prompt(
            prompt,
            ErrorKind::Internal,
            "the prompt stopped on an internal error in kiln (the server log has the details); \
             the session goes on: send the prompt again"
                .into(),
        )
        .await;
    }

    /// Marks the running `prompt` failed with an error event saying why, in one step.
    async fn fail_prompt(&self, prompt: &PromptId, kind: ErrorKind, message: String) {
        let prompt_id = prompt.clone();
        let result = self
            .log
            .write(move |w| {
                let running = w.prompts_with_status(PromptStatus::Running)?;
                if !running.iter().any(|p| p.id == prompt_id) {
                    return Ok(());
                }
                w.set_prompt_status(&prompt_id, PromptStatus::Failed)?;
                w.event(Event::Error {
                    prompt_id: Some(prompt_id.clone()),
                    kind,
                    message,
                })?;
                w.event(Event::PromptFinished {
                    prompt_id,
                    outcome: PromptOutcome::Failed,
                    usage: Usage::default(),
                })?;
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::error!(session = %self.log.id(), error = %e, "cannot record a failed prompt");
        }
    }

    async fn has_queued(&self) -> Result<bool> {
        Ok(self
            .log
            .prompts()
            .await?
            .iter()
            .any(|p| p.status == PromptStatus::Queued))
    }

    /// Marks the oldest queued prompt running, in the same transaction as its `prompt_started`.
    async fn start_next(&self) -> Result<Option<PromptInfo>> {
        let (prompt, _) = self
            .log
            .write(|w| {
                let Some(prompt) = w
                    .prompts_with_status(PromptStatus::Queued)?
                    .into_iter()
                    .next()
                else {
                    return Ok(None);
                };
                w.set_prompt_status(&prompt.id, PromptStatus::Running)?;
                w.event(Event::PromptStarted {
                    prompt_id: prompt.id.clone(),
                    author: prompt.author.clone(),
                })?;
                Ok(Some(prompt))
            })
            .await?;
        Ok(prompt)
    }

    pub(crate) async fn stop(&self, by: &UserRef, clear_queue: bool) -> Result<()> {
        {
            let mut state = self.state.lock().expect("state lock");
            if let Some((_, cancel)) = &state.running {
                cancel.cancel();
                state.stopped_by = Some(by.clone());
            }
        }
        if clear_queue {
            let by = by.clone();
            self.log
                .write(move |w| {
                    let queued = w.prompts_with_status(PromptStatus::Queued)?;
                    if queued.is_empty() {
                        return Ok(());
                    }
                    for prompt in &queued {
                        w.set_prompt_status(&prompt.id, PromptStatus::Cancelled)?;
                    }
                    w.event(Event::QueueCleared {
                        by,
                        cancelled: queued.into_iter().map(|p| p.id).collect(),
                    })?;
                    Ok(())
                })
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn set_delivery(&self, delivery: DeliveryMode) -> Result<()> {
        self.log
            .write(move |w| {
                if w.delivery_mode()? != delivery {
                    w.set_delivery_mode(delivery)?;
                    let plan_mode = w.plan_mode()?;
                    w.event(Event::SettingsChanged {
                        delivery,
                        plan_mode,
                    })?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// The write gate for a prompt of this session (see [`SyncGate`]).
    pub(crate) fn sync_gate(
        &self,
        cancel: CancellationToken,
        wait: Duration,
        tools: Arc<crate::tools::ToolRegistry>,
    ) -> SyncGate {
        SyncGate {
            state: self.sync.subscribe(),
            cancel,
            wait,
            tools,
        }
    }

    /// What the commands of a prompt by `author` run with, set per call rather than in the
    /// sandbox (a pooled sandbox knows no session): commits are the author's, whoever created
    /// the session.
    pub(crate) fn prompt_env(
        &self,
        author: &UserRef,
    ) -> std::collections::BTreeMap<String, String> {
        let (name, email) = self
            .identities
            .lock()
            .expect("identities lock")
            .get(&author.id)
            .cloned()
            .unwrap_or_else(|| (author.name.clone(), commit_email(&author.id)));
        // The `agent = true` secrets first: their names never clash with these (kiln's own
        // names are refused as secret names), and kiln's would win anyway.
        let mut env = self.secrets().env().clone();
        env.extend(
            [
                ("GIT_AUTHOR_NAME", name.as_str()),
                ("GIT_AUTHOR_EMAIL", email.as_str()),
                ("GIT_COMMITTER_NAME", name.as_str()),
                ("GIT_COMMITTER_EMAIL", email.as_str()),
                ("KILN_SESSION", self.log.id().as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        env
    }

    /// The running prompt's secrets.
    pub(crate) fn secrets(&self) -> Arc<SessionSecrets> {
        self.secrets.lock().expect("secrets lock").clone()
    }

    fn git_identity(&self) -> (&str, &str) {
        (&self.creator.name, &self.email)
    }

    pub(crate) fn sandbox_state(&self) -> Option<SandboxState> {
        self.state.lock().expect("state lock").sandbox
    }

    async fn status(
        &self,
        state: SandboxState,
        sandbox_id: Option<String>,
        detail: Option<String>,
    ) {
        self.state.lock().expect("state lock").sandbox = Some(state);
        let event = Event::SandboxStatus {
            state,
            sandbox_id,
            detail,
        };
        if let Err(e) = self.log.append(event).await {
            tracing::error!(session = %self.log.id(), error = %e, "cannot record sandbox status");
        }
    }
}
