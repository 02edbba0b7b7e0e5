//! How the engine runs prompts: the model, the limits, the hooks. Resolved once by the binary
//! (file < env < flags) and handed over whole.

pub use crate::engine::{Budgets, Retention};
use crate::hooks::{Hook, HookConfig};
pub use kiln_agent::{Prices, PromptLimits};
use kiln_model::ModelConfig;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// `None` when no model is configured: kiln runs, and every prompt fails with an error event
    /// saying what to set.
    pub model: Option<ModelConfig>,
    pub limits: PromptLimits,
    /// What each model's tokens cost (`[[prices]]`): `model_usage` events, cost caps, budgets.
    pub prices: Prices,
    /// Daily budgets per user and per repo (`[limits] daily_budget_usd_per_*`).
    pub budgets: Budgets,
    /// Default timeout of one `bash` tool call.
    pub bash_timeout: Duration,
    /// Hooks of every session on this server, before the repo's own.
    pub hooks: Vec<HookConfig>,
    /// Hooks written in Rust by whoever embeds the engine, run after `hooks` for every session.
    pub rust_hooks: Vec<Arc<dyn Hook>>,
    /// Bound on host-side git (clone, fetch) for one session's checkout.
    pub git_timeout: Duration,
    /// Timeout of an image build step whose environment file names none.
    pub image_step_timeout: Duration,
    /// How often every repo's image is rebuilt when its default branch moved; `None`: never
    /// on a schedule (only on request).
    pub image_rebuild_every: Option<Duration>,
    /// The deepest layer stack an incremental image build may make; past it, the next build
    /// starts over (squashing the stack).
    pub image_max_layers: usize,
    /// Ready images kept per repo by the garbage collector, besides any still in use.
    pub images_kept: usize,
    /// How often the garbage collector runs (it also runs after every image build); `None`:
    /// only after builds.
    pub gc_every: Option<Duration>,
    /// Layers younger than this are never collected: they may belong to a build or snapshot
    /// that is not recorded yet.
    pub gc_grace: Duration,
    /// Ready sandboxes kept per repo that has an image (0: no pool).
    pub pool_size: usize,
    /// The most ready sandboxes kept per repo when demand is high: the pool grows to the
    /// number of sessions started on the repo in the last 10 minutes, within
    /// `pool_size..=pool_max`. At most `pool_size`: a fixed pool.
    pub pool_max: usize,
    /// How long a warm-up reservation holds a pooled sandbox for its user.
    pub reservation_ttl: Duration,
    /// A finished prompt's snapshot is taken once the session has been quiet this long, so
    /// back-to-back prompts do not wait for it.
    pub snapshot_delay: Duration,
    /// A session's sandbox idle this long is snapshotted and stopped (the next prompt restores
    /// it); `None`: sandboxes stay up.
    pub idle_stop_after: Option<Duration>,
    /// The most sessions one user may have active at once — working, or holding a sandbox —
    /// counting the sessions they created; 0: no limit. A session goes inactive when its
    /// sandbox is stopped for idleness. Bounds the sandboxes (memory, processes) one user can
    /// hold: each active session has at most one.
    pub max_active_sessions_per_user: usize,
    /// What every egress proxy enforces whatever the policy (the address rule, the deny list).
    pub egress: kiln_fleet::EgressSettings,
    /// The key repo secrets are sealed under, from `KILN_SECRET_KEY` (base64 of 32 bytes);
    /// `None`: the key file `DATA/secret.key`, made on first start.
    pub secret_key: Option<kiln_core::Secret<String>>,
    /// Where the Debian bases images are built on are kept; `None`: `DATA/bases`, collected
    /// with unused images. A directory named here may be shared by several data dirs and is
    /// never collected.
    pub bases_dir: Option<std::path::PathBuf>,
    /// The committer of every commit made in a session (`kiln.toml` `commit_name`,
    /// `commit_email`); the author is whoever sent the prompt.
    pub committer: (String, String),
    /// Whether a prompt that leaves uncommitted changes has them committed for its author
    /// (with a message the model writes). On in `kiln up` (`auto_commit` in kiln.toml); off
    /// in this default, so an embedder (and a test scripting its model's every request) gets
    /// no model request it did not ask for.
    pub auto_commit: bool,
    /// GitHub (`[github]`): pull requests in their requester's name, sign-in, the app's
    /// installation tokens; `None`: no forge.
    pub github: Option<kiln_forge::GitHubConfig>,
    /// How far agents may spawn sub-sessions (`[subsessions]`), with per-repo overrides.
    pub subsessions: SubsessionConfig,
    /// `[mcp]`: which otherwise refused hosts a repo's remote MCP servers may be at.
    pub mcp: kiln_mcp::McpSettings,
    /// `[retention]`: when idle sessions are archived and deleted, checked before each
    /// periodic garbage collection (`gc_every`).
    pub retention: Retention,
}

/// The bounds on the sub-sessions one session's agent may spawn (`kiln.toml` `[subsessions]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubsessionLimits {
    /// How deep sessions may nest: 1 lets a session spawn children that spawn nothing; 0
    /// offers no sub-session tools at all.
    pub max_depth: u32,
    /// Children of one session working (or with prompts queued) at once.
    pub max_concurrent_per_parent: usize,
    /// Children one session may spawn in its life.
    pub max_total_per_parent: usize,
}

impl Default for SubsessionLimits {
    fn default() -> Self {
        SubsessionLimits {
            max_depth: 2,
            max_concurrent_per_parent: 4,
            max_total_per_parent: 16,
        }
    }
}

/// [`SubsessionLimits`] for every repo, and whole replacements for some (`kiln.toml`
/// `[subsessions.repos.NAME]`, resolved against the defaults by the binary). The limits that
/// apply are those of the spawning session's repo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubsessionConfig {
    pub limits: SubsessionLimits,
    pub repos: std::collections::BTreeMap<String, SubsessionLimits>,
}

impl SubsessionConfig {
    /// The limits of sessions on `repo`.
    pub fn for_repo(&self, repo: &str) -> SubsessionLimits {
        self.repos.get(repo).copied().unwrap_or(self.limits)
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            model: None,
            limits: PromptLimits::default(),
            prices: Prices::default(),
            budgets: Budgets::default(),
            bash_timeout: Duration::from_secs(120),
            hooks: Vec::new(),
            rust_hooks: Vec::new(),
            git_timeout: Duration::from_secs(300),
            image_step_timeout: Duration::from_secs(1800),
            image_rebuild_every: None,
            image_max_layers: 24,
            images_kept: 3,
            gc_every: None,
            gc_grace: Duration::from_secs(600),
            pool_size: 0,
            pool_max: 0,
            reservation_ttl: Duration::from_secs(60),
            idle_stop_after: None,
            snapshot_delay: Duration::from_secs(2),
            max_active_sessions_per_user: 0,
            egress: kiln_fleet::EgressSettings::default(),
            secret_key: None,
            bases_dir: None,
            committer: ("kiln".to_string(), "kiln@localhost".to_string()),
            auto_commit: false,
            github: None,
            subsessions: SubsessionConfig::default(),
            mcp: kiln_mcp::McpSettings::default(),
            retention: Retention::default(),
        }
    }
}
