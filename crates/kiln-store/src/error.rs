//! The one error type of the store. Callers map it to HTTP in one place: `NotFound` → 404,
//! `Conflict` → 409, `Invalid` → 400, everything else → 500 (logged, not shown to clients).

/// Everything the store can fail with. Messages are lowercase and say what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist (or is not visible to the caller).
    #[error("not found: {0}")]
    NotFound(String),
    /// The thing already exists (a unique name or id is taken).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request is malformed (a bad repo name, an empty url).
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A blocking store task panicked or was cancelled; the panic itself is logged where it
    /// happens, so this carries nothing a client could use.
    #[error("a store task failed; see the server log")]
    Join,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether SQLite refused a write because of a UNIQUE or PRIMARY KEY constraint; turned into
    /// `Conflict` at the call sites that know what the duplicate means.
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )
    }
}
