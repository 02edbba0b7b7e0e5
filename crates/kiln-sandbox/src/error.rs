//! The one error type of this crate.

use crate::SandboxId;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sandbox {0} not found")]
    NotFound(SandboxId),
    #[error("snapshot {0} not found")]
    SnapshotNotFound(crate::SnapshotId),
    #[error("{0} is in use by sandbox {1}")]
    InUse(crate::SnapshotId, SandboxId),
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{context} ({path}): {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox failed to start: {0}")]
    Start(String),
    #[error("guest agent unreachable: {0}")]
    GuestGone(String),
    #[error("guest agent error ({kind:?}): {message}")]
    Guest {
        kind: kiln_protocol::guest::ErrorKind,
        message: String,
    },
    #[error("guest protocol violation: {0}")]
    Protocol(String),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, &'static str),
}

impl Error {
    /// The guest reported that a file or directory does not exist.
    pub fn is_file_not_found(&self) -> bool {
        matches!(
            self,
            Error::Guest {
                kind: kiln_protocol::guest::ErrorKind::NotFound,
                ..
            }
        )
    }

    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }
}
