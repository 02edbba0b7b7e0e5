//! Sandboxes: isolated places where commands run and files change, created from an image in
//! milliseconds. The rest of kiln talks to them through [`Provider`] and [`Sandbox`] and never
//! learns whether they run on this box ([`LocalProvider`]: bubblewrap + overlayfs + cgroups) or,
//! later, in Kubernetes.
//!
//! Every sandbox runs the guest agent (`kiln-guest`); a [`Sandbox`] handle is a connection to it.
//! Exec, files and ports are therefore provider-independent; providers only create, destroy,
//! limit and snapshot.

mod error;
mod guest_client;
mod local;
mod provider;
mod spec;

pub use error::{Error, Result};
pub use guest_client::{ExecEvent, ExecOutcome, ExecStream, GuestClient};
pub use kiln_protocol::guest::{
    CommandLine, DirEntry, ExecRequest, ExitStatus, FileKind, FileStat, ListeningPort, OutputStream,
};
pub use local::{LocalConfig, LocalProvider};
pub use provider::{Provider, ResourceEvents, Sandbox};
pub use spec::{
    DOCS_DIR, EGRESS_DIR, EGRESS_PORT, EGRESS_SOCKET, EGRESS_SOCKET_NAME, ImageSpec, Limits,
    NetworkPolicy, SandboxId, SandboxInfo, SandboxSpec, SandboxUser, Snapshot, SnapshotId,
    SnapshotInfo, proxy_env,
};
