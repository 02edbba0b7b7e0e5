//! The engine: owns every session actor, starts them on demand, and recovers after a crash.
//!
//! Callers (the server) have already authorized the request; the engine trusts them and only
//! validates input.

use crate::config::EngineConfig;
use crate::hooks::{Hook, HookConfig};
use crate::pool::{PoolEntry, Reserved};
use crate::session::SessionActor;
use crate::workspace::{SESSION_LABEL, SyncTarget, Workspaces};
use crate::{Error, Result};
use kiln_core::{PromptId, Role, SessionId};
use kiln_model::ModelClient;
use kiln_protocol::api::{
    CreateSession, DeliveryMode, Event, PromptAccepted, PromptStatus, SessionCreated, SessionState,
    SessionSummary, UserRef,
};
use kiln_sandbox::{Provider, SandboxId};
use kiln_store::{SessionRow, Store};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Runs sessions. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) workspaces: Workspaces,
    /// `None`: no model configured; prompts fail with a message saying what to set.
    pub(crate) model: Option<ModelClient>,
    pub(crate) config: EngineConfig,
    /// Server-wide hooks, run for every tool call of every session, before the repo's own.
    pub(crate) hooks: Vec<Arc<dyn Hook>>,
    /// Live actors. An actor stays while its session has been used since start; idle actors
    /// hold one SQLite connection and no task.
    sessions: Mutex<HashMap<SessionId, Arc<SessionActor>>>,
    /// Warm sandboxes per repo, and warm-up reservations.
    pub(crate) pools: crate::pool::Pools,
    /// The image build running per repo (one at a time): its id and live log.
    building: Mutex<HashMap<String, RunningBuild>>,
    /// Sandboxes found running at start-up, by session, to reattach instead of recreate.
    recovered: Mutex<HashMap<SessionId, SandboxId>>,
    /// Sessions being created, per creator, not yet counted among the live actors: with them,
    /// concurrent creations cannot all slip under the per-user limit.
    admitting: Mutex<HashMap<kiln_core::UserId, usize>>,
    /// Held by a garbage collection, so two never overlap.
    gc: tokio::sync::Mutex<()>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

impl Engine {
    /// Starts the engine: marks prompts that were running when the last process died as
    /// interrupted, resumes queues, and destroys sandboxes no session owns.
    pub async fn start(
        store: Store,
        provider: Arc<dyn Provider>,
        data_dir: PathBuf,
        config: EngineConfig,
    ) -> Result<Engine> {
        let model = match &config.model {
            Some(model) => Some(
                ModelClient::new(model.clone())
                    .map_err(|e| Error::Invalid(format!("model configuration: {e}")))?,
            ),
            None => None,
        };
        let hooks = config
            .hooks
            .iter()
            .map(|h| h.build())
            .collect::<Result<Vec<Arc<dyn Hook>>, _>>()
            .map_err(|e| Error::Invalid(format!("hook configuration: {e}")))?
            .into_iter()
            .chain(config.rust_hooks.iter().cloned())
            .collect();
        let workspaces = Workspaces {
            data_dir,
            provider,
            git_timeout: config.git_timeout,
            store: store.clone(),
        };
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                workspaces,
                model,
                config,
                hooks,
                sessions: Mutex::new(HashMap::new()),
                recovered: Mutex::new(HashMap::new()),
                admitting: Mutex::new(HashMap::new()),
                building: Mutex::new(HashMap::new()),
                pools: crate::pool::Pools::default(),
                gc: tokio::sync::Mutex::new(()),
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        };
        engine.recover().await?;
        if let Some(every) = engine.inner.config.image_rebuild_every {
            engine.start_image_cadence(every);
        }
        for repo in engine.inner.store.list_repos().await? {
            engine.spawn_refill(&repo.name);
        }
        if let Some(after) = engine.inner.config.idle_stop_after {
            engine.start_idle_reaper(after);
        }
        if let Some(every) = engine.inner.config.gc_every {
            engine.start_gc(every);
        }
        Ok(engine)
    }

    async fn recover(&self) -> Result<()> {
        let inner = &self.inner;
        let ids = inner.store.all_session_ids().await?;
        let mut resume = Vec::new();
        // Sandboxes sessions took from a warm pool: their labels name the pool.
        let mut claimed = HashMap::new();
        for id in &ids {
            let log = inner.store.open_session(id).await?;
            if let Some(sandbox) = log.claimed_sandbox().await? {
                claimed.insert(sandbox, id.clone());
            }
            let interrupted = log
                .write(|w| {
                    let running = w.prompts_with_status(PromptStatus::Running)?;
                    for prompt in &running {
                        w.set_prompt_status(&prompt.id, PromptStatus::Interrupted)?;
                        w.event(Event::PromptInterrupted {
                            prompt_id: prompt.id.clone(),
                        })?;
                    }
                    Ok(running.len())
                })
                .await?
                .0;
            let queued = log
                .prompts()
                .await?
                .iter()
                .any(|p| p.status == PromptStatus::Queued);
            if interrupted > 0 {
                tracing::info!(session = %id, interrupted, "marked prompts interrupted after restart");
            }
            if queued {
                resume.push(id.clone());
            }
        }
        let provider = &inner.workspaces.provider;
        for info in provider.list().await? {
            let owner = info
                .spec
                .labels
                .get(SESSION_LABEL)
                .and_then(|s| SessionId::parse(s))
                .or_else(|| claimed.get(info.id.as_str()).cloned());
            match owner {
                Some(session) if ids.contains(&session) => {
                    inner
                        .recovered
                        .lock()
                        .expect("recovered lock")
                        .insert(session, info.id);
                }
                _ => {
                    tracing::info!(sandbox = %info.id, "destroying a sandbox no session owns");
                    let _ = provider.destroy(&info.id).await;
                }
            }
        }
        for id in resume {
            self.actor(&id).await?.kick(&self.inner);
        }
        Ok(())
    }

    /// The actor of a session, opened on first use.
    pub(crate) async fn actor(&self, id: &SessionId) -> Result<Arc<SessionActor>> {
        if let Some(actor) = self.inner.sessions.lock().expect("sessions lock").get(id) {
            return Ok(actor.clone());
        }
        let row = self.inner.store.session_row(id).await?;
        let repo = self.inner.store.repo(&row.repo).await?;
        let log = self.inner.store.open_session(id).await?;
        let recovered = self
            .inner
            .recovered
            .lock()
            .expect("recovered lock")
            .remove(id);
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        let actor = sessions
            .entry(id.clone())
            .or_insert_with(|| Arc::new(SessionActor::new(log, repo, row.created_by, recovered)));
        Ok(actor.clone())
    }

    /// Creates a session, queues its first prompt, and starts preparing its sandbox.
    pub async fn create_session(
        &self,
        creator: &UserRef,
        request: &CreateSession,
    ) -> Result<SessionCreated> {
        kiln_protocol::api::Validate::validate(request).map_err(|e| Error::Invalid(e.0))?;
        let prompt = validate_prompt(&request.prompt)?;
        let _admitted = Admission::take(&self.inner, &creator.id, None)?;
        let repo = self
            .inner
            .store
            .repo(&request.repo)
            .await
            .map_err(|e| match e {
                kiln_store::Error::NotFound(_) => {
                    Error::NotFound(format!("repo {:?}", request.repo))
                }
                e => e.into(),
            })?;
        let title = request
            .title
            .clone()
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| title_from(prompt));
        let id = SessionId::random();
        let log = self
            .inner
            .store
            .create_session(&id, &repo.name, &title, &creator.id)
            .await?;
        log.write({
            let (repo, title, creator) = (repo.name.clone(), title.clone(), creator.clone());
            move |w| {
                w.event(Event::SessionCreated {
                    repo,
                    title,
                    by: creator.clone(),
                })?;
                w.event(Event::ParticipantJoined {
                    user: creator,
                    role: kiln_core::Role::Owner,
                })?;
                Ok(())
            }
        })
        .await?;
        let actor = self.actor(&id).await?;
        actor.warm_sandbox(&self.inner);
        let accepted = actor.enqueue(&self.inner, creator, prompt).await?;
        let row = self.inner.store.session_row(&id).await?;
        Ok(SessionCreated {
            session: self.summary(&row, kiln_core::Role::Owner),
            prompt_id: accepted.prompt_id,
        })
    }

    /// Queues a prompt (or, in insert mode while the agent works, hands it to the next turn).
    pub async fn send_prompt(
        &self,
        session: &SessionId,
        author: &UserRef,
        text: &str,
    ) -> Result<PromptAccepted> {
        let text = validate_prompt(text)?;
        let actor = self.actor(session).await?;
        // A prompt to an inactive session brings its sandbox back: that counts against the
        // limit of the session's creator, whose sandbox it is.
        let _admitted = if actor.is_active() {
            None
        } else {
            Some(Admission::take(
                &self.inner,
                actor.creator(),
                Some(session),
            )?)
        };
        actor.enqueue(&self.inner, author, text).await
    }

    /// Cancels the running prompt (model stream and tool) and, if asked, the queue.
    pub async fn stop(&self, session: &SessionId, by: &UserRef, clear_queue: bool) -> Result<()> {
        let actor = self.actor(session).await?;
        actor.stop(by, clear_queue).await
    }

    pub async fn set_delivery(&self, session: &SessionId, delivery: DeliveryMode) -> Result<()> {
        let actor = self.actor(session).await?;
        actor.set_delivery(delivery).await
    }

    /// Whether a prompt is running in the session right now.
    pub async fn is_working(&self, session: &SessionId) -> Result<bool> {
        Ok(self.actor(session).await?.is_working())
    }

    /// The id of the prompt running now, if any.
    pub async fn running_prompt(&self, session: &SessionId) -> Result<Option<PromptId>> {
        Ok(self.actor(session).await?.running_prompt())
    }

    /// How a session looks in lists, for a caller with `role`. Does not open idle sessions.
    pub fn summary(&self, row: &SessionRow, role: Role) -> SessionSummary {
        let working = self
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .get(&row.id)
            .is_some_and(|actor| actor.is_working());
        SessionSummary {
            id: row.id.clone(),
            repo: row.repo.clone(),
            title: row.title.clone(),
            created_by: row.created_by.clone(),
            created_at_ms: row.created_at_ms,
            state: if row.closed {
                SessionState::Closed
            } else if working {
                SessionState::Working
            } else {
                SessionState::Idle
            },
            role,
        }
    }

    /// Builds an image of the repo's default branch now (incrementally on its newest image) and
    /// records it. A failed build is recorded too, with its error and log, and returned as such:
    /// the repo's last good image stays the one in use. `Conflict` while the repo is building.
    pub async fn build_image(&self, repo: &str) -> Result<kiln_store::ImageRecord> {
        let repo = self.repo(repo).await?;
        let build = BuildGuard::take(&self.inner, &repo.name)?;
        self.run_image_build(&repo, &build).await
    }

    /// Runs the build `build` stands for; a build that cannot run says why in its live log.
    async fn run_image_build(
        &self,
        repo: &kiln_protocol::api::Repo,
        build: &BuildGuard,
    ) -> Result<kiln_store::ImageRecord> {
        let builder = crate::images::ImageBuilder {
            workspaces: self.inner.workspaces.clone(),
            store: self.inner.store.clone(),
            step_timeout: self.inner.config.image_step_timeout,
            max_layers: self.inner.config.image_max_layers,
        };
        let span = tracing::info_span!("image_build", repo = %repo.name, image = %build.id);
        let image = builder
            .build(repo, &build.id, &build.log)
            .instrument(span)
            .await
            .inspect_err(|e| {
                build
                    .log
                    .push_str(&format!("\n== the build could not run: {e}\n"))
            })?;
        if image.is_ready() {
            self.spawn_refill(&repo.name);
        }
        Ok(image)
    }

    /// A repo by name; `NotFound` that names it.
    async fn repo(&self, name: &str) -> Result<kiln_protocol::api::Repo> {
        self.inner.store.repo(name).await.map_err(|e| match e {
            kiln_store::Error::NotFound(_) => Error::NotFound(format!("repo {name:?}")),
            e => e.into(),
        })
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Engine {
        Engine { inner }
    }

    /// Brings the repo's pool to its size with sandboxes from the newest image, replacing
    /// entries made from an older one. Returns how many it made.
    pub async fn refill_pool(&self, repo: &str) -> Result<usize> {
        let config = &self.inner.config;
        let size = self
            .inner
            .pools
            .target(repo, config.pool_size, config.pool_max);
        let Some(image) = self.inner.store.latest_image(repo).await? else {
            return Ok(0);
        };
        let stale = self.inner.pools.remove_stale(repo, &image.id);
        for stale in stale.into_iter().chain(self.inner.pools.trim(repo, size)) {
            let _ = self
                .inner
                .workspaces
                .provider
                .destroy(stale.sandbox.id())
                .await;
        }
        let mut made = 0;
        while self.inner.pools.size(repo) < size && !self.inner.shutdown.is_cancelled() {
            let sandbox = self.inner.workspaces.create_pooled(repo, &image).await?;
            self.inner.pools.add(
                repo,
                crate::pool::PoolEntry {
                    sandbox,
                    image_id: image.id.clone(),
                    checkout: Arc::new(tokio::sync::Mutex::new(image.commit.clone())),
                },
            );
            made += 1;
        }
        Ok(made)
    }

    /// Refills the repo's pool in the background (one refill per repo at a time).
    pub(crate) fn spawn_refill(&self, repo: &str) {
        self.spawn_refill_after(repo, std::time::Duration::ZERO);
    }

    /// [`Engine::spawn_refill`] after `delay`: a session that just claimed a sandbox is on
    /// its way to the model, and making the next sandbox (bubblewrap, mounts) would compete
    /// with it for the CPU.
    pub(crate) fn spawn_refill_after(&self, repo: &str, delay: std::time::Duration) {
        if self.inner.config.pool_size.max(self.inner.config.pool_max) == 0
            || !self
                .inner
                .pools
                .refilling
                .lock()
                .expect("pool lock")
                .insert(repo.to_string())
        {
            return;
        }
        let (engine, repo) = (self.clone(), repo.to_string());
        self.inner.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = engine.inner.shutdown.cancelled() => {}
            }
            if let Err(e) = engine.refill_pool(&repo).await {
                tracing::warn!(repo, error = %e, "cannot refill the warm pool");
            }
            engine
                .inner
                .pools
                .refilling
                .lock()
                .expect("pool lock")
                .remove(&repo);
        });
    }

    /// Warm-up while typing: holds a pooled sandbox of `repo` for `user`'s next session for
    /// the reservation time. `false` when none is ready (the pool is refilled).
    pub async fn reserve_sandbox(&self, user: &UserRef, repo: &str) -> Result<bool> {
        let repo = self.repo(repo).await?;
        let reserved =
            self.inner
                .pools
                .reserve(&repo.name, &user.id, self.inner.config.reservation_ttl);
        self.spawn_refill(&repo.name);
        Ok(match reserved {
            Reserved::New(entry) => {
                self.spawn_warm_sync(repo, entry);
                true
            }
            Reserved::Extended => true,
            Reserved::None => false,
        })
    }

    /// Brings a reserved sandbox's checkout to the head of the default branch while its user
    /// types, so the session's own sync only has to name its branch.
    fn spawn_warm_sync(&self, repo: kiln_protocol::api::Repo, entry: PoolEntry) {
        let inner = self.inner.clone();
        self.inner.tracker.spawn(async move {
            let mut checkout = entry.checkout.lock().await;
            let sync =
                inner
                    .workspaces
                    .sync(&entry.sandbox, &repo, &checkout, SyncTarget::Detached);
            let result = tokio::select! {
                result = sync => result,
                _ = inner.shutdown.cancelled() => return,
            };
            match result {
                Ok(head) => *checkout = head,
                // The session's own sync tries again from where the checkout is.
                Err(e) => tracing::info!(repo = %repo.name, error = %e, "warm-up sync failed"),
            }
        });
    }

    /// Warm-up while typing in a session: when its sandbox was stopped (or never made), it
    /// starts coming back now rather than when the prompt arrives. Best effort.
    pub async fn warm_session(&self, session: &SessionId) {
        match self.actor(session).await {
            Ok(actor) if actor.is_active() => {}
            Ok(actor) => match Admission::take(&self.inner, actor.creator(), Some(session)) {
                Ok(_admitted) => actor.warm_sandbox(&self.inner),
                Err(e) => tracing::debug!(%session, error = %e, "not warming a session"),
            },
            Err(e) => tracing::debug!(%session, error = %e, "cannot warm a session"),
        }
    }

    /// The repo's warm pool right now.
    pub async fn pool_status(&self, repo: &str) -> Result<kiln_protocol::api::PoolStatus> {
        self.repo(repo).await?;
        let image = self.inner.store.latest_image(repo).await?.map(|i| i.id);
        let pools = &self.inner.pools;
        pools.expire();
        let config = &self.inner.config;
        let ready = pools.ready(repo);
        Ok(kiln_protocol::api::PoolStatus {
            ready,
            reserved: pools.size(repo) - ready,
            target: pools.target(repo, config.pool_size, config.pool_max),
            image,
        })
    }

    /// The image of each ready sandbox in the repo's pool.
    pub fn pool_images(&self, repo: &str) -> Vec<String> {
        self.inner.pools.images(repo)
    }

    /// Ready (unreserved) sandboxes in the repo's pool.
    pub fn pool_ready(&self, repo: &str) -> usize {
        self.inner.pools.expire();
        self.inner.pools.ready(repo)
    }

    /// One pass of the image cadence: builds the image of every repo whose default branch moved
    /// since its last build (or that has none). A repo whose last build failed at the same
    /// commit is not retried until the branch moves or someone asks. Returns the builds made.
    pub async fn rebuild_moved_images(&self) -> Result<Vec<kiln_store::ImageRecord>> {
        let mut built = Vec::new();
        for repo in self.inner.store.list_repos().await? {
            let head = match self.inner.workspaces.branch_head(&repo).await {
                Ok((_, head)) => head,
                Err(e) => {
                    tracing::warn!(repo = %repo.name, error = %e, "cannot fetch the repo; no image build");
                    continue;
                }
            };
            let last = self
                .inner
                .store
                .images(&repo.name)
                .await?
                .into_iter()
                .next();
            if last.is_some_and(|image| image.commit == head) {
                continue;
            }
            match self.build_image(&repo.name).await {
                Ok(image) => built.push(image),
                Err(Error::Conflict(_)) => {}
                Err(e) => {
                    tracing::warn!(repo = %repo.name, error = %e, "image build could not run")
                }
            }
        }
        Ok(built)
    }

    /// Stops sandboxes of sessions idle for `after` (snapshot first), checking every quarter
    /// of that (at most every 30 s).
    fn start_idle_reaper(&self, after: std::time::Duration) {
        let inner = self.inner.clone();
        let every = (after / 4).min(std::time::Duration::from_secs(30));
        self.inner.tracker.spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = inner.shutdown.cancelled() => return,
                }
                let actors: Vec<Arc<SessionActor>> = inner
                    .sessions
                    .lock()
                    .expect("sessions lock")
                    .values()
                    .cloned()
                    .collect();
                for actor in actors {
                    if inner.shutdown.is_cancelled() {
                        return;
                    }
                    actor.stop_if_idle(&inner, after).await;
                }
            }
        });
    }

    /// Collects images and layers nothing uses any more (see [`crate::gc`]).
    pub async fn collect_garbage(&self) -> Result<kiln_protocol::api::GcReport> {
        let _one = self.inner.gc.lock().await;
        let report = crate::gc::collect(&self.inner).await?;
        if report != kiln_protocol::api::GcReport::default() {
            tracing::info!(?report, "garbage collected");
        }
        Ok(report)
    }

    /// Housekeeping every `every`, until shutdown: [`Engine::collect_garbage`], and pools
    /// resized to their repo's recent demand (a pool that grew shrinks when demand falls).
    fn start_gc(&self, every: std::time::Duration) {
        let engine = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                tokio::select! {
                    result = engine.collect_garbage() => if let Err(e) = result {
                        tracing::warn!(error = %e, "garbage collection failed");
                    },
                    _ = shutdown.cancelled() => return,
                }
                match engine.inner.store.list_repos().await {
                    Ok(repos) => repos.iter().for_each(|r| engine.spawn_refill(&r.name)),
                    Err(e) => tracing::warn!(error = %e, "cannot list repos to resize pools"),
                }
            }
        });
    }

    /// Runs [`Engine::rebuild_moved_images`] now and then every `every`, until shutdown.
    fn start_image_cadence(&self, every: std::time::Duration) {
        let engine = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                tokio::select! {
                    result = engine.rebuild_moved_images() => if let Err(e) = result {
                        tracing::warn!(error = %e, "the image cadence pass failed");
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }

    /// Starts [`Engine::build_image`] in the background and returns the new image's id; its
    /// log can be followed at once ([`Engine::build_log`]) and its record appears in the
    /// registry when it ends. `Conflict` while the repo is building.
    pub async fn start_image_build(&self, repo: &str) -> Result<String> {
        let repo = self.repo(repo).await?;
        let build = BuildGuard::take(&self.inner, &repo.name)?;
        let id = build.id.clone();
        let engine = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            let name = &repo.name;
            tokio::select! {
                result = engine.run_image_build(&repo, &build) => match result {
                    Ok(image) => tracing::info!(repo = name, image = %image.id, ok = image.is_ready(), "image build ended"),
                    Err(e) => tracing::warn!(repo = name, error = %e, "image build could not run"),
                },
                _ = shutdown.cancelled() => {}
            }
        });
        Ok(id)
    }

    /// The log of the repo's build `id` while it runs: what was written so far, then each new
    /// piece until the build ends. `None` when no such build is running (it may have ended:
    /// its record has the log).
    pub fn build_log(&self, repo: &str, id: &str) -> Option<crate::images::BuildLogFollower> {
        let building = self.inner.building.lock().expect("building lock");
        building
            .get(repo)
            .filter(|build| build.id == id)
            .map(|build| build.log.follow())
    }

    /// Checks a repo's hooks the way a prompt will build them, so a bad matcher or timeout is
    /// refused when it is set, not when a session runs.
    pub fn check_hooks(&self, hooks: &[kiln_protocol::api::HookSpec]) -> Result<()> {
        for spec in hooks {
            HookConfig::from(spec)
                .build()
                .map_err(|e| Error::Invalid(format!("hook {:?}: {e}", spec.command)))?;
        }
        Ok(())
    }

    /// The sandbox's last known state, for sessions used since this process started.
    pub fn sandbox_state(&self, session: &SessionId) -> Option<kiln_protocol::api::SandboxState> {
        let sessions = self.inner.sessions.lock().expect("sessions lock");
        sessions
            .get(session)
            .and_then(|actor| actor.sandbox_state())
    }

    /// Checks an environment definition set through the API the way a build will read it, so
    /// a mistake is refused when it is set.
    pub fn check_environment(&self, text: &str) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        crate::images::environment::Environment::parse(text).map_err(Error::Invalid)?;
        Ok(())
    }

    /// Records that someone gained a role (e.g. by a share link).
    pub async fn participant_joined(
        &self,
        session: &SessionId,
        user: &UserRef,
        role: Role,
    ) -> Result<()> {
        let actor = self.actor(session).await?;
        actor
            .log
            .append(Event::ParticipantJoined {
                user: user.clone(),
                role,
            })
            .await?;
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Whether prompts can reach a model; the reason to show when not.
    pub fn model_status(&self) -> std::result::Result<String, String> {
        match &self.inner.model {
            Some(model) => Ok(model.config().display_name()),
            None => Err(NO_MODEL.to_string()),
        }
    }

    /// Stops every running prompt without recording an outcome (the next start marks them
    /// interrupted) and waits for every task to end.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        // Warm sandboxes are cheap to make again and belong to no session: they go with us.
        // Sessions' sandboxes stay, to be reattached by the next start.
        for entry in self.inner.pools.drain() {
            if let Err(e) = self
                .inner
                .workspaces
                .provider
                .destroy(entry.sandbox.id())
                .await
            {
                tracing::warn!(sandbox = %entry.sandbox.id(), error = %e, "cannot destroy a warm sandbox");
            }
        }
    }
}

pub(crate) const NO_MODEL: &str = "no model is configured: set KILN_MODEL (e.g. anthropic/claude-sonnet-4-5 \
     or openai/gpt-4.1) and ANTHROPIC_API_KEY or OPENAI_API_KEY (and *_BASE_URL for a compatible \
     server), then restart kiln";

/// A prompt is 1 to [`kiln_protocol::api::PROMPT_CHARS`] characters (the API checks the same
/// limit; the engine has other callers).
fn validate_prompt(text: &str) -> Result<&str> {
    if text.trim().is_empty() {
        return Err(Error::Invalid("prompt text is empty".into()));
    }
    kiln_protocol::api::check_chars("prompt", text, kiln_protocol::api::PROMPT_CHARS)
        .map_err(|e| Error::Invalid(e.0))?;
    Ok(text)
}

/// A session's default title: the first line of its first prompt, shortened.
fn title_from(prompt: &str) -> String {
    let line = prompt.trim().lines().next().unwrap_or("").trim();
    match line.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// A place among a user's active sessions, held while a session is being created or brought
/// back; the limit counts it until the session's own actor counts as active.
struct Admission {
    inner: Arc<Inner>,
    user: kiln_core::UserId,
}

impl Admission {
    /// Admits one more active session of `user` (`session`, already counted if active, aside),
    /// or says which limit stands in the way.
    fn take(
        inner: &Arc<Inner>,
        user: &kiln_core::UserId,
        session: Option<&SessionId>,
    ) -> Result<Admission> {
        let limit = inner.config.max_active_sessions_per_user;
        let sessions = inner.sessions.lock().expect("sessions lock");
        let mut admitting = inner.admitting.lock().expect("admitting lock");
        let pending = admitting.get(user).copied().unwrap_or(0);
        if limit > 0 {
            let active = sessions
                .iter()
                .filter(|(id, actor)| {
                    Some(*id) != session && actor.creator() == user && actor.is_active()
                })
                .count();
            if active + pending >= limit {
                return Err(Error::LimitReached(format!(
                    "you have {limit} active sessions, the most one user may have at once \
                     (max_active_sessions_per_user); wait for one to finish and go idle — an \
                     idle session's sandbox stops after idle_stop_minutes — or ask an admin to \
                     raise the limit"
                )));
            }
        }
        *admitting.entry(user.clone()).or_default() += 1;
        Ok(Admission {
            inner: inner.clone(),
            user: user.clone(),
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut admitting = self
            .inner
            .admitting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = admitting.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                admitting.remove(&self.user);
            }
        }
    }
}

/// A repo's running image build, as others see it.
#[derive(Debug)]
struct RunningBuild {
    id: String,
    log: Arc<crate::images::BuildLog>,
}

/// One image build of a repo: marks the repo as building while alive, and ends the live log
/// (its followers) when dropped — also when the build is cancelled.
struct BuildGuard {
    inner: Arc<Inner>,
    repo: String,
    /// The image's id, chosen now so that callers can follow the build from its start.
    id: String,
    log: Arc<crate::images::BuildLog>,
}

impl BuildGuard {
    fn take(inner: &Arc<Inner>, repo: &str) -> Result<BuildGuard> {
        let mut building = inner.building.lock().expect("building lock");
        if building.contains_key(repo) {
            return Err(Error::Conflict(format!(
                "an image of {repo:?} is being built"
            )));
        }
        let id = format!("img-{}", kiln_core::random_hex(8));
        let log = Arc::new(crate::images::BuildLog::default());
        building.insert(
            repo.to_string(),
            RunningBuild {
                id: id.clone(),
                log: log.clone(),
            },
        );
        Ok(BuildGuard {
            inner: inner.clone(),
            repo: repo.to_string(),
            id,
            log,
        })
    }
}

impl Drop for BuildGuard {
    fn drop(&mut self) {
        self.inner
            .building
            .lock()
            .expect("building lock")
            .remove(&self.repo);
        self.log.finish();
    }
}
