//! The engine's one error type: its own failures by kind, and each subsystem's typed error
//! wrapped whole. The server maps every variant to a status in one place, without a catch-all.

/// What can go wrong running sessions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(String),
    /// The caller's input is not valid; the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// Only an interrupted, failed or cancelled prompt can be sent again.
    #[error(
        "prompt {prompt} is {}: only an interrupted, failed or cancelled prompt can be retried",
        status.as_str()
    )]
    NotRetryable {
        prompt: kiln_core::PromptId,
        status: kiln_protocol::api::PromptStatus,
    },
    /// A stopped session's work did not wind down in time; try again.
    #[error("session {session} did not stop within {} s; try again", waited.as_secs())]
    NotStopped {
        session: kiln_core::SessionId,
        waited: std::time::Duration,
    },
    /// A repo cannot be deleted while sessions on it are active, unless forced.
    #[error(
        "{active} session(s) on repo {repo:?} are working or hold a sandbox; stop them \
         (kiln session stop), or delete with force (`kiln repo rm {repo} --force`, `?force=true`)"
    )]
    RepoInUse { repo: String, active: usize },
    /// The server's configuration (model, hooks) is not valid; found at start-up.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] kiln_store::Error),
    #[error(transparent)]
    Sandbox(#[from] kiln_sandbox::Error),
    /// Mirrors, checkouts, image builds, pools, the collector.
    #[error(transparent)]
    Fleet(#[from] kiln_fleet::Error),
    /// The secret key or a sealed secret: the key file's mode, a key that changed.
    #[error(transparent)]
    Vault(#[from] kiln_vault::Error),
    /// A per-user limit is reached; the message names it and says what to do.
    #[error("{0}")]
    LimitReached(String),
    /// A forge call failed (GitHub refused, rate-limited, unreachable); the message says what
    /// to do.
    #[error(transparent)]
    Forge(#[from] kiln_forge::ForgeError),
    /// The user has no linked forge account to act with; `compare_url` opens the change by hand.
    #[error(
        "you have no linked {forge} account, so kiln cannot open the pull request in your name: \
         sign in with GitHub (/api/auth/github/start), or open it yourself at {compare_url}"
    )]
    NoForgeAccount {
        forge: &'static str,
        compare_url: String,
    },
    /// The forge does not let the user do this (access follows the forge); the message says
    /// what they lack.
    #[error("{0}")]
    Forbidden(String),
    #[error("the engine is shutting down")]
    ShuttingDown,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
