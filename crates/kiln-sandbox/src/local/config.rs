//! Settings of the local provider, resolved once by the binary that embeds it.

use std::path::PathBuf;
use std::time::Duration;

/// How the local provider runs sandboxes.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Holds sandboxes, layers, snapshots and the guest binary. Its filesystem decides how fast
    /// snapshots are: xfs and btrfs reflink, tmpfs is all memory, ext4 copies.
    pub data_dir: PathBuf,
    /// The guest agent binary; see [`LocalConfig::locate_guest`].
    pub guest_bin: PathBuf,
    /// `bwrap`, looked up in `PATH` when relative.
    pub bwrap: PathBuf,
    /// The host uid (and gid) every sandbox runs as. It must not belong to a real user: whoever
    /// escapes a sandbox is this uid on the host.
    pub sandbox_uid: u32,
    /// Name of the cgroup directory (under each controller's root) holding sandbox cgroups.
    pub cgroup_parent: String,
    /// Memory all sandboxes may use together (the parent cgroup's limit, tmpfs writable layers
    /// included), so they cannot starve kiln itself; `None`: no bound. The default is
    /// [`LocalConfig::default_sandboxes_memory`].
    pub sandboxes_memory_bytes: Option<u64>,
    /// Processes (and threads) all sandboxes may have together; `None`: no bound. The default
    /// is [`LocalConfig::default_sandboxes_pids`].
    pub sandboxes_pids: Option<u64>,
    /// Bound on each request to a guest agent that has no timeout of its own.
    pub request_timeout: Duration,
    /// Bound on the time from spawning bubblewrap to the guest's first answer.
    pub start_timeout: Duration,
}

impl LocalConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        LocalConfig {
            data_dir: data_dir.into(),
            guest_bin: Self::locate_guest().unwrap_or_else(|| PathBuf::from("kiln-guest")),
            bwrap: PathBuf::from("bwrap"),
            sandbox_uid: 900_000,
            cgroup_parent: "kiln".into(),
            sandboxes_memory_bytes: Self::default_sandboxes_memory(),
            sandboxes_pids: Self::default_sandboxes_pids(),
            request_timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(10),
        }
    }

    /// The machine's memory less a reserve for kiln and the rest of the host: the larger of
    /// 1 GiB and a tenth. `None` when `/proc/meminfo` cannot be read.
    pub fn default_sandboxes_memory() -> Option<u64> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib: u64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        let total = kib * 1024;
        let reserve = (total / 10).max(1 << 30);
        Some(total.saturating_sub(reserve).max(256 << 20))
    }

    /// Three quarters of what the kernel allows (the smaller of `pid_max` and `threads-max`),
    /// leaving the rest to kiln and the host. `None` when neither can be read.
    pub fn default_sandboxes_pids() -> Option<u64> {
        let read =
            |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
        let max = [
            read("/proc/sys/kernel/pid_max"),
            read("/proc/sys/kernel/threads-max"),
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(max / 4 * 3)
    }

    /// `$KILN_GUEST_BIN`, else `kiln-guest` beside the running executable or one directory up
    /// (where cargo puts binaries relative to test executables in `deps/`).
    pub fn locate_guest() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("KILN_GUEST_BIN") {
            return Some(path.into());
        }
        let exe = std::env::current_exe().ok()?;
        let dir = exe.parent()?;
        [dir.join("kiln-guest"), dir.parent()?.join("kiln-guest")]
            .into_iter()
            .find(|p| p.is_file())
    }
}
