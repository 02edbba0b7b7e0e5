//! The engine: owns every session actor, starts them on demand, and recovers after a crash.
//!
//! Callers (the server) have already authorized the request; the engine trusts them and only
//! validates input. This file is the façade — sessions, prompts, settings, shutdown — and
//! its submodules hold the rest by concern: `recovery` (start-up after a crash), `warm` (pools
//! and warm-up), `builds` (image builds), `housekeeping` (idle stop, GC, the image cadence),
//! `admission` (per-user limits).

use crate::config::EngineConfig;
use crate::hooks::{Hook, HookConfig};
use crate::session::SessionActor;
use crate::{Error, Result};
use kiln_core::{PromptId, Role, SessionId};
use kiln_fleet::{Fleet, FleetConfig};
use kiln_model::ModelClient;
use kiln_protocol::api::{
    CreateSession, DeliveryMode, Event, PromptAccepted, SessionCreated, SessionState,
    SessionSummary, UserRef,
};
use kiln_sandbox::{Provider, SandboxId};
use kiln_store::{SessionRow, Store};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod admission;
mod budget;
mod builds;
mod children;
mod forge;
mod forge_access;
mod forge_events;
mod health;
mod housekeeping;
mod manage;
mod mcp;
mod plan;
mod pr_tool;
mod push;
mod recovery;
mod remote_check;
mod retention;
mod secrets;
mod warm;

use admission::Admission;
pub use budget::Budgets;
pub(crate) use budget::{
    admit as admit_budget, record as record_budget, used_up as budget_used_up,
};
pub(crate) use children::{prompt_ended, session_tools};
pub use forge::{GitHubSignIn, REFRESH_BEFORE_MS, session_branch};
pub use forge_access::ACCESS_TTL;
pub use forge_events::PromptEnd;
pub use manage::Stopped;
pub(crate) use pr_tool::OpenPrTool;
pub use retention::{Retention, RetentionReport};

/// Runs sessions. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) store: Store,
    /// Mirrors, checkouts, images, warm pools and the collector.
    pub(crate) fleet: Fleet,
    /// The agent loop's model, limits and the server's hooks.
    pub(crate) agent: kiln_agent::Agent,
    pub(crate) config: EngineConfig,
    /// Live actors. An actor stays while its session has been used since start; idle actors
    /// hold one SQLite connection and no task.
    sessions: Mutex<HashMap<SessionId, Arc<SessionActor>>>,
    /// Sandboxes found running at start-up, by session, to reattach instead of recreate.
    recovered: Mutex<HashMap<SessionId, SandboxId>>,
    /// Sessions being created, per creator, not yet counted among the live actors: with them,
    /// concurrent creations cannot all slip under the per-user limit.
    admitting: Mutex<HashMap<kiln_core::UserId, usize>>,
    /// Seals and opens repo secrets (see `secrets.rs`).
    pub(crate) vault: kiln_vault::Vault,
    /// The forge sessions open pull requests on and users sign in with (`[github]`), if
    /// configured.
    pub(crate) forge: Option<Arc<dyn kiln_forge::Forge>>,
    /// The forge's recent answers about users' access to repos (`forge_access.rs`).
    pub(crate) access: forge_access::AccessCache,
    /// Repos whose secrets changed while a build of theirs ran: its end starts another.
    pub(crate) rebuilds_wanted: Mutex<std::collections::HashSet<String>>,
    /// The last check of the model's endpoint (see `health.rs`).
    model_check: health::ModelCheck,
    /// This engine's Prometheus metrics: what happens is recorded where it happens (model
    /// requests, sandbox starts, builds); the server encodes them on `GET /metrics`.
    pub(crate) metrics: kiln_telemetry::Metrics,
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
                    .map_err(|e| Error::Config(format!("model configuration: {e}")))?,
            ),
            None => None,
        };
        let hooks = config
            .hooks
            .iter()
            .map(|h| h.build())
            .collect::<Result<Vec<Arc<dyn Hook>>, _>>()
            .map_err(|e| Error::Config(format!("hook configuration: {e}")))?
            .into_iter()
            .chain(config.rust_hooks.iter().cloned())
            .collect();
        let vault = kiln_vault::Vault::open(&data_dir, config.secret_key.as_ref())?;
        let forge = match &config.github {
            Some(github) => Some(Arc::new(
                kiln_forge::GitHub::new(github.clone())
                    .map_err(|e| Error::Config(format!("[github] configuration: {e}")))?,
            ) as Arc<dyn kiln_forge::Forge>),
            None => None,
        };
        let fleet = Fleet::new(
            store.clone(),
            provider,
            data_dir,
            FleetConfig {
                git_timeout: config.git_timeout,
                image_step_timeout: config.image_step_timeout,
                image_max_layers: config.image_max_layers,
                images_kept: config.images_kept,
                gc_grace: config.gc_grace,
                pool_size: config.pool_size,
                pool_max: config.pool_max,
                egress: config.egress.clone(),
                bases_dir: config.bases_dir.clone(),
                credentials: forge.clone().map(|forge| {
                    Arc::new(forge::ForgeCredentials { forge })
                        as Arc<dyn kiln_fleet::CredentialSource>
                }),
            },
        );
        let shutdown = CancellationToken::new();
        let agent = kiln_agent::Agent {
            model,
            limits: config.limits,
            prices: config.prices.clone(),
            bash_timeout: config.bash_timeout,
            hooks,
            shutdown: shutdown.clone(),
        };
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                fleet,
                agent,
                config,
                sessions: Mutex::new(HashMap::new()),
                recovered: Mutex::new(HashMap::new()),
                admitting: Mutex::new(HashMap::new()),
                vault,
                forge,
                rebuilds_wanted: Mutex::default(),
                access: forge_access::AccessCache::default(),
                model_check: Default::default(),
                metrics: kiln_telemetry::Metrics::new(),
                tracker: TaskTracker::new(),
                shutdown,
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

    /// The metrics this engine records into (one registry per engine, so per server).
    pub fn metrics(&self) -> &kiln_telemetry::Metrics {
        &self.inner.metrics
    }

    /// What the egress proxies of agents and image builds passed and refused since start.
    pub fn egress_totals(&self) -> kiln_telemetry::Egress {
        let totals = self.inner.fleet.workspaces().egress.totals();
        kiln_telemetry::Egress {
            bytes_up: totals.bytes_up(),
            bytes_down: totals.bytes_down(),
            denied: totals.denied(),
        }
    }

    /// What all sandboxes use together now (memory, OOM kills), where the provider knows it;
    /// `None` (logged) when it cannot be read.
    pub async fn sandbox_usage(&self) -> Option<kiln_telemetry::SandboxMemory> {
        let provider = self.inner.fleet.workspaces().provider.clone();
        match tokio::task::spawn_blocking(move || provider.usage()).await {
            Ok(Ok(usage)) => usage.map(|u| kiln_telemetry::SandboxMemory {
                bytes: u.memory_bytes,
                oom_kills: u.oom_kills,
            }),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot read the sandboxes' cgroup");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the sandboxes' cgroup panicked");
                None
            }
        }
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
        // Before the session exists: a refused prompt leaves nothing behind.
        admit_budget(&self.inner, &creator.id, &request.repo).await?;
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
        let accepted = actor
            .enqueue(&self.inner, creator, prompt, request.plan)
            .await?;
        let row = self.inner.store.session_row(&id).await?;
        Ok(SessionCreated {
            session: self.summary(&row, kiln_core::Role::Owner),
            prompt_id: accepted.prompt_id,
            warnings: self.stale_image(&repo.name).await.into_iter().collect(),
        })
    }

    /// Says so when the repo's newest build failed: sessions start from an older image (or
    /// none), and the person starting one should know why before wondering.
    pub async fn stale_image(&self, repo: &str) -> Option<String> {
        let (failed, error, at_ms) = match self.inner.store.failed_since_ready(repo).await {
            Ok(failed) => failed?,
            Err(e) => {
                tracing::warn!(repo, error = %e, "cannot read the image registry");
                return None;
            }
        };
        let ago = kiln_core::human_duration(std::time::Duration::from_millis(
            (kiln_core::now_ms() - at_ms).max(0) as u64,
        ));
        let using = match self.inner.store.latest_image(repo).await.ok().flatten() {
            Some(image) => format!(
                "this session starts from the older image {} (commit {})",
                image.id,
                &image.commit[..image.commit.len().min(12)]
            ),
            None => "this session starts from a plain checkout, without setup".to_string(),
        };
        Some(format!(
            "the image of {repo} is stale: its newest build {failed} failed {ago} ago ({error}); \
             {using}. The log: kiln image logs {repo} {failed}"
        ))
    }

    /// Queues a prompt (or, in insert mode while the agent works, hands it to the next turn).
    pub async fn send_prompt(
        &self,
        session: &SessionId,
        author: &UserRef,
        text: &str,
    ) -> Result<PromptAccepted> {
        self.send_prompt_with(session, author, text, false).await
    }

    /// [`Engine::send_prompt`], plan-first when `plan` (a session in plan mode plans every
    /// prompt anyway).
    pub async fn send_prompt_with(
        &self,
        session: &SessionId,
        author: &UserRef,
        text: &str,
        plan: bool,
    ) -> Result<PromptAccepted> {
        let text = validate_prompt(text)?;
        let actor = self.actor(session).await?;
        let _admitted = self.admit_wake(&actor, session)?;
        actor.enqueue(&self.inner, author, text, plan).await
    }

    /// Sends an interrupted, failed or cancelled prompt again, as a new prompt by `by` with
    /// the same text. [`Error::NotRetryable`] for a prompt that is queued, running or done.
    pub async fn retry_prompt(
        &self,
        session: &SessionId,
        prompt: &PromptId,
        by: &UserRef,
    ) -> Result<PromptAccepted> {
        let actor = self.actor(session).await?;
        let original = actor.log.prompt(prompt).await.map_err(|e| match e {
            kiln_store::Error::NotFound(_) => Error::NotFound(format!("prompt {prompt}")),
            e => e.into(),
        })?;
        use kiln_protocol::api::PromptStatus as S;
        match original.status {
            S::Interrupted | S::Failed | S::Cancelled => {}
            S::Queued | S::Running | S::Inserted | S::Completed => {
                return Err(Error::NotRetryable {
                    prompt: prompt.clone(),
                    status: original.status,
                });
            }
        }
        // A plan-first prompt is retried plan-first.
        self.send_prompt_with(session, by, &original.text, original.plan)
            .await
    }

    /// Cancels the running prompt (model stream and tool) and, if asked, the queue.
    pub async fn stop(&self, session: &SessionId, by: &UserRef, clear_queue: bool) -> Result<()> {
        let actor = self.actor(session).await?;
        actor.stop(by, clear_queue).await?;
        // A stop reaches the sub-sessions this one spawned, and theirs.
        self.stop_descendants(session, by).await
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

    /// Sessions open in memory now: how many are working on a prompt, and how many are idle.
    pub fn open_session_states(&self) -> (usize, usize) {
        let sessions = self.inner.sessions.lock().expect("sessions lock");
        let working = sessions.values().filter(|a| a.is_working()).count();
        (working, sessions.len() - working)
    }

    /// How a session looks in lists, for a caller with `role`. Does not open idle sessions.
    /// `role` is `None` in an admin's view of a session they are not in.
    pub fn summary(&self, row: &SessionRow, role: impl Into<Option<Role>>) -> SessionSummary {
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
            role: role.into(),
            archived: row.archived,
            pull_request: row.pull_request.clone(),
            parent: row.parent.clone(),
        }
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
        kiln_fleet::images::environment::Environment::parse(text).map_err(Error::Invalid)?;
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

    /// Stops every running prompt without recording an outcome (the next start marks them
    /// interrupted) and waits for every task to end.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        // Warm sandboxes are cheap to make again and belong to no session: they go with us.
        // Sessions' sandboxes stay, to be reattached by the next start, which serves their
        // egress again; until then, nothing of ours answers them.
        self.inner.fleet.drain_pools().await;
        self.inner.fleet.workspaces().egress.stop_all();
    }
}

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
