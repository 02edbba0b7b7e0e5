//! The embedded provider: sandboxes on this machine, isolated by bubblewrap, rooted in an
//! overlay of read-only layers under a size-capped tmpfs writable layer, limited by cgroups.
//!
//! On disk, under the data directory:
//! ```text
//! bin/kiln-guest                 the guest binary, copied so the sandbox uid can read it
//! layers/skeleton-v5-u<uid>/     bottom layer of every sandbox
//! layers/snap-<id>/              snapshot layers (immutable)
//! sandboxes/sb-<id>/meta.json    the sandbox's info, for reattaching after a restart
//!                  /guest.sock   the guest's listening socket (the guest holds it, not a path inside)
//!                  /upper/       tmpfs: diff/ (the writable layer) and work/
//!                  /root/        the overlay, bound as the sandbox's /
//! ```
//! Everything a sandbox holds (mounts, cgroups, processes, this directory) is named by its id,
//! so cleanup needs nothing but the id and works after any crash.

mod bwrap;
mod cgroup;
mod config;
mod layer;
mod mount;
mod output;
mod seccomp;
mod setup;
mod snapshots;

pub use config::LocalConfig;

use crate::guest_client::GuestClient;
use crate::provider::ResourceProbe;
use crate::{
    Error, NetworkPolicy, Provider, ResourceEvents, Result, Sandbox, SandboxId, SandboxInfo,
    SandboxSpec, Snapshot, SnapshotId, SnapshotInfo,
};
use cgroup::Cgroup;
use output::StartOutput;
use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long destroy waits for a sandbox's processes to die and be reaped.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of bubblewrap's and the guest's start-up output is kept for the error message.
const START_OUTPUT_LIMIT: usize = 16 << 10;
/// How long a failed start waits for the rest of that output.
const START_OUTPUT_WAIT: Duration = Duration::from_secs(1);
/// Unix socket paths are limited to 108 bytes; ours add this much to the data directory.
const SOCKET_SUFFIX_LEN: usize = "/sandboxes/sb-0123456789abcdef/guest.sock".len();

/// Runs sandboxes on this machine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LocalConfig,
    cgroups: cgroup::Version,
    skeleton: PathBuf,
    guest_bin: PathBuf,
    /// Compiled once: the same for every sandbox.
    seccomp: seccomp::Programs,
    live: Mutex<HashMap<SandboxId, Live>>,
}

#[derive(Debug)]
struct Live {
    sandbox: Sandbox,
    /// An exclusive `flock` on `lock`: this process manages the sandbox. Another process opening
    /// the same data dir leaves it alone while the lock is held, and adopts it once it is not.
    _lock: fs::File,
}

/// Whether this process may manage a sandbox directory.
enum Ownership {
    Acquired(fs::File),
    /// Another live process holds the sandbox.
    Busy,
    /// No lock file: a sandbox still being created, or debris of a crash during creation.
    NoLock,
}

fn lock_sandbox(dir: &Path, create: bool) -> Result<Ownership> {
    let path = dir.join("lock");
    let file = match fs::File::options()
        .write(true)
        .create(create)
        .truncate(false)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ownership::NoLock),
        Err(e) => return Err(Error::io("opening the sandbox lock", &path)(e)),
    };
    // SAFETY: flock on a valid fd has no memory-safety preconditions.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } == 0
    {
        Ok(Ownership::Acquired(file))
    } else {
        Ok(Ownership::Busy)
    }
}

/// What `prepare_sandbox` hands to the launch.
struct Prepared {
    cgroup: Cgroup,
    listener: std::os::unix::net::UnixListener,
    /// The start-up output pipe: the host reads `.0`, bubblewrap and the guest write `.1`.
    output: (OwnedFd, OwnedFd),
    lock: fs::File,
}

/// A directory made in the last seconds may belong to a create in progress elsewhere.
fn young(dir: &Path) -> bool {
    fs::metadata(dir)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(30))
}

#[derive(Debug)]
struct CgroupProbe(Cgroup);

impl ResourceProbe for CgroupProbe {
    fn events(&self) -> Result<ResourceEvents> {
        self.0.events()
    }
}

impl LocalProvider {
    /// Prepares the data directory and cgroups, then reattaches every sandbox that survived a
    /// restart and cleans up every one that did not (mounts, cgroups, processes, files).
    pub async fn open(config: LocalConfig) -> Result<LocalProvider> {
        let inner = tokio::task::spawn_blocking(move || Inner::prepare(config))
            .await
            .expect("prepare does not panic")?;
        let provider = LocalProvider {
            inner: Arc::new(inner),
        };
        provider.recover().await?;
        Ok(provider)
    }

    pub fn config(&self) -> &LocalConfig {
        &self.inner.config
    }

    /// Destroys every sandbox this provider lists; best effort, for shutting a data dir down
    /// (tests, benchmarks). Returns how many were destroyed.
    pub async fn destroy_all(&self) -> usize {
        let mut destroyed = 0;
        for info in self.list().await.unwrap_or_default() {
            if self.destroy(&info.id).await.is_ok() {
                destroyed += 1;
            }
        }
        destroyed
    }

    /// [`LocalProvider::destroy_all`] from synchronous code, e.g. a `Drop` inside an async
    /// test: it runs on its own thread with its own runtime.
    pub fn destroy_all_blocking(&self) -> usize {
        let provider = self.clone();
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_or(0, |rt| rt.block_on(provider.destroy_all()))
            })
            .join()
            .unwrap_or(0)
        })
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.inner.config.data_dir.join("sandboxes").join(id)
    }

    async fn recover(&self) -> Result<()> {
        let dir = self.inner.config.data_dir.join("sandboxes");
        // Only directories count: the cgroup parent may be shared with other data dirs, and a
        // sandbox's cgroup never outlives its directory (cleanup removes the cgroup first).
        let mut ids: Vec<String> = fs::read_dir(&dir)
            .map_err(Error::io("listing sandboxes", &dir))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        ids.sort();
        for name in ids {
            let Some(id) = SandboxId::parse(&name) else {
                tracing::warn!(entry = %name, "ignoring an unknown entry among sandboxes");
                continue;
            };
            let dir = self.sandbox_dir(id.as_str());
            let lock = match lock_sandbox(&dir, false)? {
                Ownership::Busy => continue,
                Ownership::NoLock if young(&dir) => continue,
                Ownership::NoLock => None,
                Ownership::Acquired(lock) => Some(lock),
            };
            let reattached = match lock {
                Some(lock) => self.reattach(&id).await.map(|sandbox| (sandbox, lock)),
                None => Err(Error::Start("no lock file".into())),
            };
            match reattached {
                Ok((sandbox, lock)) => {
                    tracing::info!(%id, "reattached sandbox");
                    let live = Live {
                        sandbox,
                        _lock: lock,
                    };
                    self.inner.live.lock().expect("live lock").insert(id, live);
                }
                Err(err) => {
                    tracing::info!(%id, %err, "cleaning up a sandbox that did not survive");
                    let this = self.clone();
                    tokio::task::spawn_blocking(move || this.cleanup(id.as_str()))
                        .await
                        .expect("cleanup does not panic")?;
                }
            }
        }
        Ok(())
    }

    async fn reattach(&self, id: &SandboxId) -> Result<Sandbox> {
        let dir = self.sandbox_dir(id.as_str());
        let meta = dir.join("meta.json");
        let text = fs::read(&meta).map_err(Error::io("reading sandbox metadata", &meta))?;
        let info: SandboxInfo = serde_json::from_slice(&text)
            .map_err(|e| Error::Start(format!("corrupt metadata {}: {e}", meta.display())))?;
        let cgroup = Cgroup::of(
            self.inner.cgroups,
            &self.inner.config.cgroup_parent,
            id.as_str(),
        );
        if !cgroup.exists() || cgroup.pids().is_empty() {
            return Err(Error::Start("no process left".into()));
        }
        let guest = GuestClient::connect(&dir.join("guest.sock"), Duration::from_secs(2)).await?;
        Ok(Sandbox::new(info, guest, Arc::new(CgroupProbe(cgroup))))
    }

    /// Releases everything sandbox `id` may hold. Idempotent; every step tolerates absence.
    fn cleanup(&self, id: &str) -> Result<()> {
        let cgroup = Cgroup::of(self.inner.cgroups, &self.inner.config.cgroup_parent, id);
        if cgroup.exists() {
            // A frozen process cannot die; a snapshot interrupted by a crash leaves one frozen.
            if let Err(err) = cgroup.set_frozen(false) {
                tracing::warn!(%id, %err, "could not thaw a sandbox before killing it");
            }
            cgroup.kill_all(KILL_TIMEOUT)?;
        }
        let dir = self.sandbox_dir(id);
        for mount_point in mount::mounts_under(&dir) {
            mount::unmount(&mount_point)?;
        }
        cgroup.remove(KILL_TIMEOUT)?;
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("removing the sandbox directory", &dir)(e))
            }
            _ => Ok(()),
        }
    }

    /// Everything before bubblewrap: directories, mounts, cgroups, the socket, the metadata.
    fn prepare_sandbox(&self, info: &SandboxInfo) -> Result<Prepared> {
        let spec = &info.spec;
        let dir = self.sandbox_dir(info.id.as_str());
        let io = |what| Error::io(what, &dir);
        fs::DirBuilder::new()
            .mode(0o711)
            .create(&dir)
            .map_err(io("creating the sandbox directory"))?;
        let Ownership::Acquired(lock) = lock_sandbox(&dir, true)? else {
            return Err(Error::Start(
                "could not lock a new sandbox directory".into(),
            ));
        };
        let (root, upper) = (dir.join("root"), dir.join("upper"));
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&root)
            .map_err(io("creating the sandbox root"))?;
        fs::create_dir(&upper).map_err(io("creating the writable layer"))?;
        mount::mount_tmpfs(&upper, spec.limits.disk_bytes)?;
        let (diff, work) = (upper.join("diff"), upper.join("work"));
        fs::create_dir(&diff).map_err(io("creating the writable layer"))?;
        fs::create_dir(&work).map_err(io("creating the writable layer"))?;
        let mut lower = vec![self.inner.skeleton.clone()];
        lower.extend(spec.image.layers.iter().cloned());
        mount::mount_overlay(&root, &lower, &diff, &work)?;
        let cgroup = Cgroup::create(
            self.inner.cgroups,
            &self.inner.config.cgroup_parent,
            &info.id,
            &spec.limits,
        )?;
        let socket = dir.join("guest.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket)
            .map_err(io("binding the guest socket"))?;
        let output = output_pipe().map_err(io("creating the start-up output pipe"))?;
        let meta = serde_json::to_vec(info).expect("sandbox info serializes");
        fs::write(dir.join("meta.json"), meta).map_err(io("writing sandbox metadata"))?;
        Ok(Prepared {
            cgroup,
            listener,
            output,
            lock,
        })
    }

    /// Prepares and launches bubblewrap (blocking work, off the runtime), then waits for the guest.
    async fn start(&self, info: SandboxInfo) -> Result<Live> {
        let this = self.clone();
        let launch_info = info.clone();
        let (cgroup, lock, output) = tokio::task::spawn_blocking(move || {
            let Prepared {
                cgroup,
                listener,
                output: (output, output_writer),
                lock,
            } = this.prepare_sandbox(&launch_info)?;
            let config = &this.inner.config;
            bwrap::Launch {
                bwrap: &config.bwrap,
                root: &this.sandbox_dir(launch_info.id.as_str()).join("root"),
                guest: &this.inner.guest_bin,
                host_system: launch_info.spec.image.host_system,
                user: launch_info.spec.user,
                hostname: "kiln",
                env: &launch_info.spec.env,
                egress: match &launch_info.spec.network {
                    NetworkPolicy::Isolated => None,
                    NetworkPolicy::Proxy { dir } => Some(dir.as_path()),
                },
                docs: launch_info.spec.docs.as_deref(),
                host_uid: config.sandbox_uid,
                cgroup_procs: cgroup.procs_files(),
                listener: listener.as_fd(),
                seccomp: &this.inner.seccomp,
                output: output_writer,
            }
            .spawn()?;
            Ok::<_, Error>((cgroup, lock, output))
        })
        .await
        .expect("launch does not panic")?;
        let dir = self.sandbox_dir(info.id.as_str());
        let config = &self.inner.config;
        // If bubblewrap fails, the listening socket dies with it and the connection fails at once.
        let socket = dir.join("guest.sock");
        let connect = GuestClient::connect(&socket, config.request_timeout);
        let mut output = StartOutput::new(output)?;
        let connected = output
            .drain_while(tokio::time::timeout(config.start_timeout, connect))
            .await;
        let guest = match connected {
            // Dropping the output closes the pipe: the guest's later writes fail harmlessly.
            Ok(Ok(guest)) => guest,
            failed => {
                let printed = output.finish(START_OUTPUT_WAIT).await;
                let why = match failed {
                    Ok(Err(err)) => err.to_string(),
                    _ => format!("no answer within {:?}", config.start_timeout),
                };
                return Err(Error::Start(format!(
                    "the guest agent did not come up ({why}): {}",
                    printed.trim()
                )));
            }
        };
        let sandbox = Sandbox::new(info, guest, Arc::new(CgroupProbe(cgroup)));
        Ok(Live {
            sandbox,
            _lock: lock,
        })
    }

    fn validate(spec: &SandboxSpec) -> Result<()> {
        if let NetworkPolicy::Proxy { dir } = &spec.network {
            use std::os::unix::fs::FileTypeExt;
            let socket = dir.join(crate::EGRESS_SOCKET_NAME);
            let is_socket = fs::metadata(&socket).is_ok_and(|m| m.file_type().is_socket());
            if !dir.is_absolute() || !is_socket {
                return Err(Error::InvalidSpec(format!(
                    "the egress proxy socket {} is not a listening Unix socket",
                    socket.display()
                )));
            }
        }
        if spec.limits.disk_bytes < 1 << 20 {
            return Err(Error::InvalidSpec(
                "disk_bytes must be at least 1 MiB".into(),
            ));
        }
        if spec
            .limits
            .cpu_weight
            .is_some_and(|w| !(1..=10_000).contains(&w))
        {
            return Err(Error::InvalidSpec(
                "cpu_weight must be within 1..=10000".into(),
            ));
        }
        if spec.limits.pids == Some(0) || spec.limits.memory_bytes.is_some_and(|m| m < 4 << 20) {
            return Err(Error::InvalidSpec(
                "pids must be positive and memory_bytes at least 4 MiB".into(),
            ));
        }
        for layer in &spec.image.layers {
            if !layer.is_absolute() || !layer.is_dir() {
                return Err(Error::InvalidSpec(format!(
                    "layer {} is not an existing absolute directory",
                    layer.display()
                )));
            }
        }
        for key in spec.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(Error::InvalidSpec(format!(
                    "invalid environment variable name {key:?}"
                )));
            }
        }
        Ok(())
    }

    fn live_sandbox(&self, id: &SandboxId) -> Result<Sandbox> {
        let live = self.inner.live.lock().expect("live lock");
        live.get(id)
            .map(|l| l.sandbox.clone())
            .ok_or_else(|| Error::NotFound(id.clone()))
    }
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    async fn create(&self, spec: SandboxSpec) -> Result<Sandbox> {
        Self::validate(&spec)?;
        let info = SandboxInfo {
            id: SandboxId::random(),
            spec,
            created_ms: now_ms(),
        };
        let id = info.id.clone();
        match self.start(info).await {
            Ok(live) => {
                let sandbox = live.sandbox.clone();
                self.inner.live.lock().expect("live lock").insert(id, live);
                Ok(sandbox)
            }
            Err(err) => {
                let this = self.clone();
                let cleanup = tokio::task::spawn_blocking(move || this.cleanup(id.as_str()));
                if let Err(cleanup_err) = cleanup.await.expect("cleanup does not panic") {
                    tracing::error!(%cleanup_err, "cleaning up a sandbox that failed to start");
                }
                Err(err)
            }
        }
    }

    async fn attach(&self, id: &SandboxId) -> Result<Sandbox> {
        self.live_sandbox(id)
    }

    /// Every sandbox in the data directory, including those another process manages.
    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        let dir = self.inner.config.data_dir.join("sandboxes");
        let mut infos: Vec<SandboxInfo> = fs::read_dir(&dir)
            .map_err(Error::io("listing sandboxes", &dir))?
            .filter_map(|entry| fs::read(entry.ok()?.path().join("meta.json")).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect();
        infos.sort_by_key(|i| (i.created_ms, i.id.clone()));
        Ok(infos)
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        let live = self.inner.live.lock().expect("live lock").remove(id);
        // Not ours (another process manages it, or it is half made): destroying is forceful all the same.
        if live.is_none() && !self.sandbox_dir(id.as_str()).exists() {
            return Err(Error::NotFound(id.clone()));
        }
        let this = self.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || this.cleanup(id.as_str()))
            .await
            .expect("cleanup does not panic")
    }

    async fn relabel(
        &self,
        id: &SandboxId,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let dir = self.sandbox_dir(id.as_str());
        let meta = dir.join("meta.json");
        let text = fs::read(&meta).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(id.clone()),
            _ => Error::io("reading sandbox metadata", &meta)(e),
        })?;
        let mut info: SandboxInfo = serde_json::from_slice(&text)
            .map_err(|e| Error::Start(format!("corrupt metadata {}: {e}", meta.display())))?;
        info.spec.labels = labels;
        // Written aside and renamed: a crash leaves the old labels or the new, never half.
        let partial = dir.join(".meta.json.partial");
        let bytes = serde_json::to_vec(&info).expect("sandbox info serializes");
        fs::write(&partial, bytes).map_err(Error::io("writing sandbox metadata", &partial))?;
        fs::rename(&partial, &meta).map_err(Error::io("writing sandbox metadata", &meta))?;
        Ok(())
    }

    async fn snapshot(&self, id: &SandboxId) -> Result<Snapshot> {
        self.snapshot_now(id).await
    }

    async fn merge_snapshots(&self, layers: &[PathBuf]) -> Result<SnapshotInfo> {
        self.merge_layers(layers).await
    }

    async fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        self.list_snapshot_layers().await
    }

    fn usage(&self) -> Result<Option<crate::ResourceEvents>> {
        cgroup::Cgroup::parent(self.inner.cgroups, &self.inner.config.cgroup_parent)
            .total_events()
            .map(Some)
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
        self.delete_snapshot_layer(id).await
    }

    async fn adopt_system_layer(&self, dir: &Path) -> Result<()> {
        let (dir, uid) = (dir.to_path_buf(), self.inner.config.sandbox_uid);
        tokio::task::spawn_blocking(move || layer::adopt_tree(&dir, uid))
            .await
            .expect("adopting a layer does not panic")
    }
}

/// A pipe, both ends close-on-exec (the launch hands the write end to bubblewrap alone).
fn output_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Randomness for ids, from the kernel.
pub(crate) fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: buf is valid for 8 bytes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    assert_eq!(n, 8, "getrandom failed");
    u64::from_ne_bytes(buf)
}
