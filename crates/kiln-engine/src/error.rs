//! The engine's one error type. The server maps it to HTTP status codes in one place.

/// What can go wrong running sessions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] kiln_store::Error),
    #[error(transparent)]
    Sandbox(#[from] kiln_sandbox::Error),
    /// Host git (a fetch, a clone, a bundle) failed: usually the repo's upstream. The message
    /// says what git said (credentials cut out).
    #[error("{0}")]
    Git(String),
    /// Something of kiln's own failed (host files, its data dir): nothing the caller did. The
    /// message is for the server log; clients get a generic one.
    #[error("{0}")]
    Internal(String),
    /// A per-user limit is reached; the message names it and says what to do.
    #[error("{0}")]
    LimitReached(String),
    #[error("the engine is shutting down")]
    ShuttingDown,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
