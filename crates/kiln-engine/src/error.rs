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
    #[error("{0}")]
    Git(String),
    /// A per-user limit is reached; the message names it and says what to do.
    #[error("{0}")]
    LimitReached(String),
    #[error("the engine is shutting down")]
    ShuttingDown,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
