//! What can go wrong preparing what sessions start from. Each variant says whose problem it is:
//! the repo's upstream (`Git*`), the repo's own environment (`Environment`, `Step`, `Base`), a build
//! already running (`BuildRunning`), or kiln's own host files (`Io`, `Snapshots`). The engine
//! wraps it whole and the server maps every variant to a status.

use kiln_core::SessionId;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Host git against the repo's upstream failed; `message` is what git said, credentials cut
    /// out.
    #[error("git {command} failed: {message}")]
    Git { command: String, message: String },
    #[error("git {command} timed out after {} s", after.as_secs())]
    GitTimeout { command: String, after: Duration },
    /// git inside a sandbox (the checkout, a sync) failed.
    #[error("{action} in the sandbox failed: {message}")]
    Checkout { action: String, message: String },
    /// A session's branch could not be pushed: refused by kiln (a protected ref, a bundle too
    /// large) or by the remote (its message, credentials cut out).
    #[error("{0}")]
    Push(String),
    /// The repo's `.kiln/environment.toml` is not valid; the message says where.
    #[error("{0}")]
    Environment(String),
    /// A setup, build or warm step of an image build failed.
    #[error("step {step:?} {ended}")]
    Step { step: String, ended: String },
    /// A base (a Debian release with the repo's packages) could not be built; its output is in
    /// the build log.
    #[error("building the base {base} failed: {message}")]
    Base { base: String, message: String },
    #[error("an image of {repo:?} is being built")]
    BuildRunning { repo: String },
    /// A file of kiln's own (its data dir) could not be made, read or moved.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The collector could not tell which layers a session needs, so it collected nothing.
    #[error("cannot read the snapshots of session {session}: {source}; nothing collected")]
    Snapshots {
        session: SessionId,
        #[source]
        source: kiln_store::Error,
    },
    #[error(transparent)]
    Store(#[from] kiln_store::Error),
    #[error(transparent)]
    Sandbox(#[from] kiln_sandbox::Error),
}

impl Error {
    /// An [`Error::Io`] saying what was being done.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
