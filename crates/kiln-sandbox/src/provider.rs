//! The provider interface and the sandbox handle every other part of kiln uses.

use crate::guest_client::{ExecOutcome, ExecStream, GuestClient};
use crate::{
    ExecRequest, Result, SandboxId, SandboxInfo, SandboxSpec, Snapshot, SnapshotId, SnapshotInfo,
};
use std::fmt::Debug;
use std::sync::Arc;

/// Creates, finds, limits, snapshots and destroys sandboxes. Implemented by [`crate::LocalProvider`]
/// today and by a Kubernetes provider later; callers never know which.
///
/// Restoring a snapshot is creating a sandbox from [`Snapshot::image`].
#[async_trait::async_trait]
pub trait Provider: Send + Sync + Debug + 'static {
    /// Creates a sandbox and returns once its guest agent answers.
    async fn create(&self, spec: SandboxSpec) -> Result<Sandbox>;
    /// A new handle to a running sandbox, e.g. after the control plane restarted.
    async fn attach(&self, id: &SandboxId) -> Result<Sandbox>;
    async fn list(&self) -> Result<Vec<SandboxInfo>>;
    /// Kills every process of the sandbox and releases everything it held. Idempotent on
    /// sandboxes that are already gone only in that it reports [`crate::Error::NotFound`].
    async fn destroy(&self, id: &SandboxId) -> Result<()>;
    /// Replaces the sandbox's labels (what [`Provider::list`] shows from now on): a pooled
    /// sandbox claimed by a session stops being the pool's and becomes the session's.
    async fn relabel(
        &self,
        id: &SandboxId,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<()>;
    /// Captures the writable layer, deletions included, as an immutable snapshot. The sandbox
    /// keeps running; it is paused while the layer is copied so the copy is consistent.
    async fn snapshot(&self, id: &SandboxId) -> Result<Snapshot>;
    /// Merges snapshots (their layers, bottom first, as [`Snapshot::image`] names them) into
    /// one new snapshot that, on the same lower layers, shows the same files: restores of a
    /// long-lived session stay a shallow stack. The merged ones are left alone.
    async fn merge_snapshots(&self, layers: &[std::path::PathBuf]) -> Result<SnapshotInfo>;
    /// Every snapshot this provider holds, oldest first.
    async fn snapshots(&self) -> Result<Vec<SnapshotInfo>>;
    /// Makes `dir`, a root filesystem that root built on the host (a Debian base), usable as
    /// the bottom layer of sandboxes whose build steps run as [`crate::SandboxUser::Root`]:
    /// every entry becomes owned by the host identity uid 0 has inside a sandbox, so that user
    /// can install packages into it (through the writable layer; the layer itself stays
    /// read-only). Set-id bits and file capabilities do not survive: nothing in a sandbox may
    /// gain privileges anyway. Idempotent, and cheap on a layer already adopted.
    async fn adopt_system_layer(&self, dir: &std::path::Path) -> Result<()>;
    /// Deletes a snapshot for good. [`crate::Error::InUse`] while a sandbox runs on it;
    /// [`crate::Error::SnapshotNotFound`] when there is no such snapshot.
    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<()>;
    /// What all sandboxes use together now (the parent cgroup's memory and the OOM kills it
    /// counted), where the provider knows it; `None` by default. Reads a few small files.
    fn usage(&self) -> Result<Option<ResourceEvents>> {
        Ok(None)
    }
}

/// Counters of limit hits, read from wherever the provider enforces limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceEvents {
    /// Processes killed by the memory limit.
    pub oom_kills: u64,
    /// Forks refused by the process limit.
    pub pids_limit_hits: u64,
    /// Memory in use now.
    pub memory_bytes: u64,
}

/// Reads a sandbox's [`ResourceEvents`]; provider-specific.
pub(crate) trait ResourceProbe: Send + Sync + Debug {
    fn events(&self) -> Result<ResourceEvents>;
}

/// A running sandbox: run commands, touch files, list ports. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sandbox {
    info: Arc<SandboxInfo>,
    guest: GuestClient,
    probe: Arc<dyn ResourceProbe>,
}

impl Sandbox {
    pub(crate) fn new(
        info: SandboxInfo,
        guest: GuestClient,
        probe: Arc<dyn ResourceProbe>,
    ) -> Self {
        Sandbox {
            info: Arc::new(info),
            guest,
            probe,
        }
    }

    pub fn id(&self) -> &SandboxId {
        &self.info.id
    }

    pub fn info(&self) -> &SandboxInfo {
        &self.info
    }

    /// Files, ports and streaming exec: the guest agent's whole interface.
    pub fn guest(&self) -> &GuestClient {
        &self.guest
    }

    /// Starts a command and streams its events.
    pub async fn exec(&self, request: ExecRequest) -> Result<ExecStream> {
        self.guest.exec(request).await
    }

    /// Runs a command to the end and collects its output, noting whether the memory limit killed it.
    pub async fn run(&self, request: ExecRequest) -> Result<ExecOutcome> {
        let before = self.probe.events()?;
        let mut outcome = self.guest.exec(request).await?.collect().await?;
        // A shell reports its child's SIGKILL as exit code 137, so any failure may be an OOM kill.
        if !outcome.status.success() {
            outcome.oom_killed = self.probe.events()?.oom_kills > before.oom_kills;
        }
        Ok(outcome)
    }

    /// Limit hits so far.
    pub fn resource_events(&self) -> Result<ResourceEvents> {
        self.probe.events()
    }
}
