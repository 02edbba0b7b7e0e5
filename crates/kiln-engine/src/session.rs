//! One session's actor: its queue, the prompt running now, and its sandbox.
//!
//! Prompts are durable before anyone hears of them: `enqueue` commits the prompt row and its
//! `prompt_queued` event in one transaction, then wakes the worker. The worker is a task that
//! exists only while there is work: it takes the oldest queued prompt, runs the agent on it, and
//! ends when the queue is empty.

use crate::agent::PromptRun;
use crate::engine::Inner;
use crate::pool::Checkout;
use crate::sync_gate::{SyncGate, SyncState};
use crate::workspace::SyncTarget;
use crate::{Error, Result};
use futures_util::FutureExt;
use kiln_core::PromptId;
use kiln_protocol::api::{
    DeliveryMode, ErrorKind, Event, PromptAccepted, PromptInfo, PromptOutcome, PromptStatus,
    SandboxState, Usage, UserRef,
};
use kiln_sandbox::{Sandbox, SandboxId};
use kiln_store::SessionLog;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

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
    /// Bumped by every scheduled snapshot; only the newest one runs.
    snapshot_generation: AtomicU64,
    state: Mutex<State>,
    /// The sandbox, created on first need. An async mutex: whoever creates it holds the slot
    /// while the sandbox starts, and everyone else waits for that sandbox instead of starting
    /// another.
    sandbox: tokio::sync::Mutex<Slot>,
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

/// The git email of a kiln user (until users have their own).
fn commit_email(user: &kiln_core::UserId) -> String {
    format!("{user}@users.kiln.local")
}

/// How long a start lets its claim settle before the pool makes a replacement.
const REFILL_DELAY: Duration = Duration::from_millis(100);

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
            snapshot_generation: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            sandbox: tokio::sync::Mutex::new(Slot {
                sandbox: None,
                checkout: None,
                recovered,
            }),
        }
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

    pub(crate) async fn enqueue(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        author: &UserRef,
        text: &str,
    ) -> Result<PromptAccepted> {
        if inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let prompt_id = PromptId::random();
        let (seq, _) = self
            .log
            .write({
                let (prompt_id, author, text) =
                    (prompt_id.clone(), author.clone(), text.to_string());
                move |w| {
                    let delivery = w.delivery_mode()?;
                    w.insert_prompt(&prompt_id, &author, &text, PromptStatus::Queued)?;
                    w.event(Event::PromptQueued {
                        prompt_id,
                        author,
                        text,
                        delivery,
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
            let cancel = inner.shutdown.child_token();
            {
                let mut state = self.state.lock().expect("state lock");
                state.running = Some((prompt.id.clone(), cancel.clone()));
                state.stopped_by = None;
            }
            let prompt_id = prompt.id.clone();
            let span = tracing::info_span!("prompt", session = %self.log.id(), prompt = %prompt_id);
            let run = PromptRun::new(inner, &self, prompt, cancel)
                .run()
                .instrument(span);
            // A bug in one prompt's run must not take the session down with it: the prompt
            // fails with an event, and the queue goes on.
            if let Err(panic) = AssertUnwindSafe(run).catch_unwind().await {
                self.record_crashed_prompt(&prompt_id, panic_message(&*panic))
                    .await;
            }
            if !inner.shutdown.is_cancelled() {
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
                    kind: ErrorKind::Internal,
                    message: "the prompt stopped on an internal error in kiln (the server log \
                              has the details); the session goes on: send the prompt again"
                        .into(),
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
            tracing::error!(session = %self.log.id(), error = %e, "cannot record a crashed prompt");
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
                    w.event(Event::SettingsChanged { delivery })?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Starts creating the sandbox in the background, so it is ready when the agent needs it.
    pub(crate) fn warm_sandbox(self: &Arc<Self>, inner: &Arc<Inner>) {
        let (actor, inner2) = (self.clone(), inner.clone());
        let shutdown = inner.shutdown.clone();
        inner.tracker.spawn(async move {
            tokio::select! {
                _ = actor.sandbox(&inner2) => {}
                _ = shutdown.cancelled() => {}
            }
        });
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

    /// The session's sandbox: the live one, the one found at start-up, or a new one — from the
    /// repo's newest image when it has one (then synced in the background), else from a fresh
    /// clone. Sandbox status events tell every client what is happening.
    pub(crate) async fn sandbox(self: &Arc<Self>, inner: &Arc<Inner>) -> Result<Sandbox> {
        let workspaces = &inner.workspaces;
        let mut slot = self.sandbox.lock().await;
        if let Some(sandbox) = &slot.sandbox
            && sandbox.guest().gone().is_none()
        {
            // A failed sync is retried when the next prompt asks for the sandbox. The state is
            // copied out first: `start_sync` writes the channel, and a read guard held across
            // that write would block this thread for good.
            let failed = matches!(*self.sync.borrow(), SyncState::Failed(_));
            if let (Some(checkout), true) = (&slot.checkout, failed) {
                self.start_sync(inner, sandbox.clone(), checkout.clone());
            }
            return Ok(sandbox.clone());
        }
        // A sandbox whose guest is gone cannot serve again: remove what is left of it (mounts,
        // cgroups, directory) before it is replaced, instead of leaving it to the next start.
        if let Some(dead) = slot.sandbox.take() {
            tracing::info!(session = %self.log.id(), sandbox = %dead.id(), "replacing a sandbox whose guest is gone");
            if let Err(e) = workspaces.provider.destroy(dead.id()).await {
                tracing::debug!(sandbox = %dead.id(), error = %e, "removing a dead sandbox");
            }
        }
        if let Some(id) = slot.recovered.take() {
            match workspaces.attach(&id).await {
                Ok(sandbox) => {
                    self.state.lock().expect("state lock").sandbox = Some(SandboxState::Ready);
                    slot.sandbox = Some(sandbox.clone());
                    return Ok(sandbox);
                }
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "could not reattach; creating anew")
                }
            }
        }
        // A session that had a sandbox continues from its newest snapshot: no setup, no sync.
        match self.log.latest_snapshot().await {
            Ok(Some(snapshot)) => {
                self.status(SandboxState::Starting, None, None).await;
                // The files are the session's; the env and limits are the repo's as of now.
                let runtime = self.latest_image(inner).await.map(|i| i.runtime);
                return match workspaces
                    .create_from_layers(
                        self.log.id(),
                        &snapshot.layers,
                        &runtime.unwrap_or_default(),
                    )
                    .await
                {
                    Ok(sandbox) => {
                        let detail = format!("restored from snapshot {}", snapshot.id);
                        let id = Some(sandbox.id().to_string());
                        self.status(SandboxState::Ready, id, Some(detail)).await;
                        slot.sandbox = Some(sandbox.clone());
                        slot.checkout = None;
                        self.sync.send_replace(SyncState::Done);
                        Ok(sandbox)
                    }
                    Err(e) => {
                        let detail = format!(
                            "restoring snapshot {}: {e}; the next prompt tries again",
                            snapshot.id
                        );
                        self.status(SandboxState::Failed, None, Some(detail)).await;
                        Err(e)
                    }
                };
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(session = %self.log.id(), error = %e, "cannot read snapshots"),
        }
        // A warm sandbox from the pool (the user's reservation first): a hand-off.
        inner.pools.record_start(&self.repo.name);
        let (claimed, dead) = inner.pools.take(&self.repo.name, &self.creator.id);
        // Claimed or not, the pool refills: to its size, or to the demand it just saw; once
        // this session's first model request is on its way.
        crate::Engine::from_inner(inner.clone()).spawn_refill_after(&self.repo.name, REFILL_DELAY);
        for entry in dead {
            let _ = workspaces.provider.destroy(entry.sandbox.id()).await;
        }
        if let Some(entry) = claimed {
            let sandbox = entry.sandbox;
            let detail = format!(
                "claimed from the warm pool (image {}); syncing to {}",
                entry.image_id, self.repo.default_branch
            );
            if let Err(e) = self.log.set_claimed_sandbox(sandbox.id().as_str()).await {
                tracing::warn!(session = %self.log.id(), error = %e, "cannot record the claimed sandbox");
            }
            let id = Some(sandbox.id().to_string());
            self.status(SandboxState::Syncing, id, Some(detail)).await;
            slot.sandbox = Some(sandbox.clone());
            slot.checkout = Some(entry.checkout.clone());
            self.start_sync(inner, sandbox.clone(), entry.checkout);
            return Ok(sandbox);
        }
        self.status(SandboxState::Starting, None, None).await;
        let image = self.latest_image(inner).await;
        let created = match &image {
            Some(image) => {
                workspaces
                    .create_from_layers(self.log.id(), &image.layers, &image.runtime)
                    .await
            }
            None => {
                workspaces
                    .create(self.log.id(), &self.repo, self.git_identity())
                    .await
            }
        };
        match created {
            Ok(sandbox) => {
                let id = Some(sandbox.id().to_string());
                slot.sandbox = Some(sandbox.clone());
                match image {
                    Some(image) => {
                        let detail = format!(
                            "from image {} at {}; syncing to {}",
                            image.id,
                            &image.commit[..image.commit.len().min(12)],
                            self.repo.default_branch
                        );
                        self.status(SandboxState::Syncing, id, Some(detail)).await;
                        let checkout = Arc::new(tokio::sync::Mutex::new(image.commit));
                        slot.checkout = Some(checkout.clone());
                        self.start_sync(inner, sandbox.clone(), checkout);
                    }
                    None => self.status(SandboxState::Ready, id, None).await,
                }
                Ok(sandbox)
            }
            Err(e) => {
                let detail = format!("{e}; the next prompt tries again");
                self.status(SandboxState::Failed, None, Some(detail)).await;
                Err(e)
            }
        }
    }

    /// The repo's newest ready image; `None` (logged) when the registry cannot be read.
    async fn latest_image(&self, inner: &Inner) -> Option<kiln_store::ImageRecord> {
        inner
            .store
            .latest_image(&self.repo.name)
            .await
            .inspect_err(|e| {
                tracing::warn!(repo = %self.repo.name, error = %e, "cannot read the image registry")
            })
            .ok()
            .flatten()
    }

    /// What the commands of a prompt by `author` run with, set per call rather than in the
    /// sandbox (a pooled sandbox knows no session): commits are the author's, whoever created
    /// the session.
    pub(crate) fn prompt_env(
        &self,
        author: &UserRef,
    ) -> std::collections::BTreeMap<String, String> {
        let email = commit_email(&author.id);
        [
            ("GIT_AUTHOR_NAME", author.name.as_str()),
            ("GIT_AUTHOR_EMAIL", email.as_str()),
            ("GIT_COMMITTER_NAME", author.name.as_str()),
            ("GIT_COMMITTER_EMAIL", email.as_str()),
            ("KILN_SESSION", self.log.id().as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn git_identity(&self) -> (&str, &str) {
        (&self.creator.name, &self.email)
    }

    /// Syncs the checkout in the background; writes wait for it (the gate), reads do not.
    fn start_sync(self: &Arc<Self>, inner: &Arc<Inner>, sandbox: Sandbox, checkout: Checkout) {
        self.sync.send_replace(SyncState::Pending);
        let (actor, workspaces) = (self.clone(), inner.workspaces.clone());
        let shutdown = inner.shutdown.clone();
        let span = tracing::info_span!("sync", session = %self.log.id());
        inner.tracker.spawn(
            async move {
                // Waits for a warm-up's sync of the same checkout, if one is running.
                let mut at = checkout.lock().await;
                let target = SyncTarget::Branch {
                    session: actor.log.id(),
                    author: actor.git_identity(),
                };
                let sync = workspaces.sync(&sandbox, &actor.repo, &at, target);
                let result = tokio::select! {
                    result = sync => result,
                    _ = shutdown.cancelled() => return,
                };
                match result {
                    Ok(head) => {
                        *at = head;
                        actor.sync.send_replace(SyncState::Done);
                        actor
                            .status(SandboxState::Ready, Some(sandbox.id().to_string()), None)
                            .await;
                    }
                    Err(e) => {
                        let message = format!(
                            "syncing the checkout failed: {e}. Reads work at the image's commit; \
                         writes are refused until a sync succeeds (the next prompt retries)"
                        );
                        actor.sync.send_replace(SyncState::Failed(e.to_string()));
                        if let Err(e) = actor
                            .log
                            .append(Event::Error {
                                prompt_id: None,
                                kind: ErrorKind::Sync,
                                message,
                            })
                            .await
                        {
                            tracing::error!(error = %e, "cannot record a sync failure");
                        }
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Stops the sandbox when the session has been idle for `after`: a snapshot first (the
    /// files as they are now), then destroy. The next prompt restores it.
    pub(crate) async fn stop_if_idle(&self, inner: &Inner, after: Duration) {
        let idle = {
            let state = self.state.lock().expect("state lock");
            !state.worker && state.last_active.is_some_and(|t| t.elapsed() >= after)
        };
        if !idle {
            return;
        }
        let mut slot = self.sandbox.lock().await;
        // A prompt may have started while we waited for the slot.
        if self.state.lock().expect("state lock").worker {
            return;
        }
        let Some(sandbox) = slot.sandbox.take() else {
            return;
        };
        if sandbox.guest().gone().is_none()
            && let Err(e) = self.take_snapshot(inner, &sandbox, None).await
        {
            tracing::warn!(session = %self.log.id(), error = %e, "cannot snapshot an idle sandbox; keeping it");
            slot.sandbox = Some(sandbox);
            return;
        }
        if let Err(e) = inner.workspaces.provider.destroy(sandbox.id()).await {
            tracing::warn!(sandbox = %sandbox.id(), error = %e, "cannot stop an idle sandbox");
        }
        slot.checkout = None;
        self.state.lock().expect("state lock").last_active = None;
        let detail = format!("idle for {after:?}; the next prompt restores it");
        self.status(
            SandboxState::Stopped,
            Some(sandbox.id().to_string()),
            Some(detail),
        )
        .await;
    }

    /// Snapshots the sandbox once the session has been quiet for the snapshot delay after
    /// `prompt`: off the path of a follow-up that is already waiting. A later prompt's
    /// schedule supersedes this one.
    fn schedule_snapshot(self: &Arc<Self>, inner: &Arc<Inner>, prompt: PromptId) {
        let generation = self.snapshot_generation.fetch_add(1, Ordering::SeqCst) + 1;
        let (actor, inner2) = (self.clone(), inner.clone());
        inner.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(inner2.config.snapshot_delay) => {}
                _ = inner2.shutdown.cancelled() => return,
            }
            let current = actor.snapshot_generation.load(Ordering::SeqCst) == generation;
            if current && !actor.is_working() {
                actor.snapshot(&inner2, &prompt).await;
            }
        });
    }

    /// Snapshots the sandbox after a prompt, so the session can continue if it goes away.
    async fn snapshot(&self, inner: &Inner, prompt: &PromptId) {
        let sandbox = self.sandbox.lock().await.sandbox.clone();
        let Some(sandbox) = sandbox.filter(|s| s.guest().gone().is_none()) else {
            return;
        };
        if let Err(e) = self.take_snapshot(inner, &sandbox, Some(prompt)).await {
            tracing::warn!(session = %self.log.id(), error = %e, "cannot snapshot the sandbox");
        }
    }

    /// Snapshots the sandbox and records it. Every restore stacks one more layer on what the
    /// session started from; past [`MAX_OWN_LAYERS`], the session's own layers are merged into
    /// one, so a session restored a thousand times still mounts a shallow stack.
    async fn take_snapshot(
        &self,
        inner: &Inner,
        sandbox: &Sandbox,
        prompt: Option<&PromptId>,
    ) -> Result<()> {
        let provider = &inner.workspaces.provider;
        let snapshot = provider.snapshot(sandbox.id()).await?;
        let (mut id, mut layers) = (snapshot.id.to_string(), snapshot.image.layers);
        let base = self.base_layers(sandbox).await.min(layers.len() - 1);
        if layers.len() - base > MAX_OWN_LAYERS {
            match provider.merge_snapshots(&layers[base..]).await {
                Ok(merged) => {
                    layers.truncate(base);
                    layers.push(merged.layer);
                    id = merged.id.to_string();
                }
                Err(e) => {
                    tracing::warn!(session = %self.log.id(), error = %e, "cannot merge snapshots; keeping the stack")
                }
            }
        }
        let record = kiln_store::SessionSnapshot {
            id,
            parent: None,
            prompt_id: prompt.cloned(),
            layers,
            size_bytes: snapshot.size_bytes,
            base_layers: Some(base),
        };
        self.log.record_snapshot(&record).await?;
        Ok(())
    }

    /// How many of the sandbox's layers are what the session started from: the base recorded
    /// with the newest snapshot when the sandbox stands on it (it was restored), else all of
    /// them (it came from the image, the pool or a clone).
    async fn base_layers(&self, sandbox: &Sandbox) -> usize {
        let layers = &sandbox.info().spec.image.layers;
        match self.log.latest_snapshot().await {
            Ok(Some(snapshot)) => match snapshot.base_layers {
                Some(base)
                    if base <= snapshot.layers.len()
                        && layers.starts_with(&snapshot.layers[..base]) =>
                {
                    base
                }
                _ => layers.len(),
            },
            _ => layers.len(),
        }
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
