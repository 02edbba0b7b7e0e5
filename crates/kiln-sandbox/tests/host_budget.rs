//! What the host keeps for itself: all sandboxes together stay within the parent cgroup's
//! memory and pids budget (each sandbox's own limits are not enough: thirty of them could still
//! starve the control plane), and a sandbox that fails to start cannot flood the host with
//! its output — the error says why, in bounded words.

mod common;

use common::{host_spec, run};
use kiln_sandbox::{Error, LocalConfig, LocalProvider, Provider};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A provider on its own data dir and its own cgroup parent, so the small budget under test
/// touches no other test's sandboxes; both are removed at the end, pass or fail.
struct Budgeted {
    provider: LocalProvider,
    parent: String,
    _dir: tempfile::TempDir,
}

impl Budgeted {
    async fn open(memory: u64, pids: u64) -> Budgeted {
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-")
            .tempdir()
            .unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let parent = format!("kiln-test-{}-{nanos}", std::process::id());
        let config = LocalConfig {
            cgroup_parent: parent.clone(),
            sandboxes_memory_bytes: Some(memory),
            sandboxes_pids: Some(pids),
            ..LocalConfig::new(dir.path())
        };
        let provider = LocalProvider::open(config).await.expect("open provider");
        Budgeted {
            provider,
            parent,
            _dir: dir,
        }
    }

    /// The parent's directory for `controller` (v1) or the one directory (v2).
    fn dir(&self, controller: &str) -> PathBuf {
        let root = Path::new(CGROUP_ROOT);
        if root.join("cgroup.controllers").exists() {
            root.join(&self.parent)
        } else {
            root.join(controller).join(&self.parent)
        }
    }

    fn read(&self, controller: &str, file: &str) -> String {
        let path = self.dir(controller).join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    }
}

impl Drop for Budgeted {
    fn drop(&mut self) {
        self.provider.destroy_all_blocking();
        for controller in ["memory", "pids", "cpu", "freezer"] {
            let _ = std::fs::remove_dir(self.dir(controller));
        }
    }
}

#[tokio::test]
async fn all_sandboxes_together_stay_within_the_configured_budget() {
    let budget = Budgeted::open(96 << 20, 3000).await;
    let v2 = Path::new(CGROUP_ROOT).join("cgroup.controllers").exists();
    let memory_file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    assert_eq!(
        budget.read("memory", memory_file),
        (96u64 << 20).to_string()
    );
    assert_eq!(budget.read("pids", "pids.max"), "3000");
    if !v2 {
        assert_eq!(budget.read("memory", "memory.use_hierarchy"), "1");
    }

    // A sandbox allowed 4 GiB of its own is stopped at the parent's 96 MiB.
    let sandbox = budget.provider.create(host_spec()).await.unwrap();
    assert_eq!(sandbox.info().spec.limits.memory_bytes, Some(4 << 30));
    let outcome = run(
        &sandbox,
        "python3 -c 'x = bytearray(256 << 20); print(len(x))'",
    )
    .await;
    assert_eq!(
        outcome.status.shell_code(),
        128 + libc::SIGKILL,
        "{outcome:?}"
    );
    assert!(outcome.stdout.is_empty());

    // Reopening with no bound lifts it.
    let config = LocalConfig {
        sandboxes_memory_bytes: None,
        sandboxes_pids: None,
        ..budget.provider.config().clone()
    };
    drop(LocalProvider::open(config).await.unwrap());
    assert_eq!(budget.read("pids", "pids.max"), "max");
    let unlimited = budget.read("memory", memory_file);
    assert!(
        unlimited == "max" || unlimited.parse::<u64>().unwrap() > 1 << 50,
        "{unlimited}"
    );
}

#[test]
fn the_default_budget_leaves_room_for_the_host() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo.lines().next().unwrap()["MemTotal:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    let total = total_kib * 1024;
    let config = LocalConfig::new("/var/lib/kiln");
    let memory = config.sandboxes_memory_bytes.unwrap();
    assert!(
        memory <= total - (1 << 30) && memory <= total - total / 10,
        "{memory} of {total}"
    );
    assert!(memory >= total / 2, "{memory} of {total}");
    assert!(config.sandboxes_pids.unwrap() > 1000);
}

#[tokio::test]
async fn a_failed_start_reports_what_bubblewrap_printed_within_bounds() {
    let dir = tempfile::Builder::new()
        .prefix("kiln-test-")
        .tempdir()
        .unwrap();
    // A "bubblewrap" that fails loudly: a reason, then far more output than anyone should keep.
    let fake = dir.path().join("fake-bwrap");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'bwrap: Creating new namespace failed: the reason' >&2\n\
         head -c 4000000 /dev/zero | tr '\\0' x >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let config = LocalConfig {
        bwrap: fake,
        ..LocalConfig::new(dir.path().join("data"))
    };
    let provider = LocalProvider::open(config).await.unwrap();
    let start = Instant::now();
    let err = provider.create(host_spec()).await.unwrap_err();
    let message = err.to_string();
    let head: String = message.chars().take(300).collect();
    assert!(matches!(err, Error::Start(_)), "{head}");
    assert!(message.contains("the reason"), "{head}");
    assert!(message.len() < 32 << 10, "{} bytes: {head}", message.len());
    assert!(message.contains("more bytes not shown"), "{head}");
    assert!(start.elapsed() < Duration::from_secs(8));
}
