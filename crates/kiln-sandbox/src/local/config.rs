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
            request_timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(10),
        }
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
