//! Resource limits with cgroups, v1 (this machine's hybrid layout) or v2 (the unified hierarchy).
//!
//! Each sandbox gets `kiln/<id>` under every controller it needs. Its first process joins them
//! itself before it execs bubblewrap (see `bwrap.rs`), so nothing the sandbox starts ever runs
//! outside its limits. The harness's own cgroup is never touched: ours sit at the hierarchy roots.
//!
//! The parent (`kiln/`) has limits of its own ([`Version::limit_parent`]): each sandbox is
//! capped, but together they must not starve the control plane, so all sandboxes share a memory
//! and a pids budget that leaves room for kiln itself.

use crate::{Error, Limits, ResourceEvents, Result, SandboxId};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// v1 controllers a sandbox joins. `freezer` pauses it for consistent snapshots.
const V1_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "freezer"];

/// Which cgroup layout this host has, found once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

impl Version {
    pub(crate) fn detect() -> Result<Version> {
        let root = Path::new(CGROUP_ROOT);
        if root.join("cgroup.controllers").exists() {
            Ok(Version::V2)
        } else if root.join("memory/cgroup.procs").exists()
            && root.join("pids/cgroup.procs").exists()
        {
            Ok(Version::V1)
        } else {
            Err(Error::Unsupported(format!(
                "no usable cgroup hierarchy under {CGROUP_ROOT}: kiln needs the memory and pids controllers"
            )))
        }
    }

    /// Directories that hold sandbox cgroups: `<controller>/<parent>` (v1) or `<parent>` (v2).
    pub(crate) fn parents(self, parent: &str) -> Vec<PathBuf> {
        let root = Path::new(CGROUP_ROOT);
        match self {
            Version::V1 => V1_CONTROLLERS
                .iter()
                .map(|c| root.join(c).join(parent))
                .collect(),
            Version::V2 => vec![root.join(parent)],
        }
    }

    /// Makes the parent directories and, on v2, delegates the controllers to them.
    pub(crate) fn prepare(self, parent: &str) -> Result<()> {
        for dir in self.parents(parent) {
            fs::create_dir_all(&dir).map_err(Error::io("creating the cgroup parent", &dir))?;
        }
        if self == Version::V2 {
            let root = Path::new(CGROUP_ROOT);
            for dir in [root.to_path_buf(), root.join(parent)] {
                let file = dir.join("cgroup.subtree_control");
                fs::write(&file, "+memory +pids +cpu")
                    .map_err(Error::io("enabling cgroup controllers", &file))?;
            }
        }
        Ok(())
    }
}

impl Version {
    /// Bounds all sandboxes together: `memory` bytes (swap included where it is accounted) and
    /// `pids` processes; `None` lifts the bound. Applied on every open, so a changed setting
    /// takes effect at the next start.
    pub(crate) fn limit_parent(
        self,
        parent: &str,
        memory: Option<u64>,
        pids: Option<u64>,
    ) -> Result<()> {
        let root = Path::new(CGROUP_ROOT);
        let pids_value = pids.map_or("max".to_string(), |n| n.to_string());
        match self {
            Version::V1 => {
                let memory_dir = root.join("memory").join(parent);
                // Without hierarchy, a child's usage is not charged to the parent's limit.
                let hierarchy = memory_dir.join("memory.use_hierarchy");
                if fs::read_to_string(&hierarchy).map_or(true, |v| v.trim() != "1") {
                    fs::write(&hierarchy, "1").map_err(Error::io(
                        "enabling hierarchical memory accounting",
                        &hierarchy,
                    ))?;
                }
                let bytes = memory.map_or("-1".to_string(), |b| b.to_string());
                let memsw = memory_dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    // The kernel keeps memory <= memory+swap at every step: lowering goes
                    // memory first, raising goes memory+swap first.
                    if write(&memory_dir, "memory.limit_in_bytes", &bytes).is_err() {
                        write(&memory_dir, "memory.memsw.limit_in_bytes", &bytes)?;
                    }
                    write(&memory_dir, "memory.memsw.limit_in_bytes", &bytes)?;
                }
                write(&memory_dir, "memory.limit_in_bytes", &bytes)
                    .map_err(|e| parent_memory_error(memory, e))?;
                write(&root.join("pids").join(parent), "pids.max", pids_value)
            }
            Version::V2 => {
                let dir = root.join(parent);
                let bytes = memory.map_or("max".to_string(), |b| b.to_string());
                write(&dir, "memory.max", bytes).map_err(|e| parent_memory_error(memory, e))?;
                write(&dir, "pids.max", pids_value)
            }
        }
    }
}

/// The kernel refuses a memory limit below what the sandboxes already use.
fn parent_memory_error(memory: Option<u64>, err: Error) -> Error {
    match memory {
        Some(bytes) => Error::Start(format!(
            "could not limit all sandboxes together to {} MiB ({err}); if they use more now, \
             stop some sandboxes or raise `sandbox_memory_mb`",
            bytes >> 20
        )),
        None => err,
    }
}

/// One sandbox's cgroups.
#[derive(Debug)]
pub(crate) struct Cgroup {
    version: Version,
    /// v1: one directory per controller in `V1_CONTROLLERS` order; v2: one directory.
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// The cgroup of sandbox `id`, whether or not it exists.
    pub(crate) fn of(version: Version, parent: &str, id: &str) -> Cgroup {
        let dirs = version
            .parents(parent)
            .into_iter()
            .map(|p| p.join(id))
            .collect();
        Cgroup { version, dirs }
    }

    /// The parent every sandbox's cgroup sits in: its counters are all sandboxes' together.
    pub(crate) fn parent(version: Version, parent: &str) -> Cgroup {
        Cgroup {
            version,
            dirs: version.parents(parent),
        }
    }

    pub(crate) fn create(
        version: Version,
        parent: &str,
        id: &SandboxId,
        limits: &Limits,
    ) -> Result<Cgroup> {
        let cgroup = Cgroup::of(version, parent, id.as_str());
        for dir in &cgroup.dirs {
            fs::create_dir(dir).map_err(Error::io("creating a cgroup", dir))?;
        }
        cgroup.apply(limits)?;
        Ok(cgroup)
    }

    fn apply(&self, limits: &Limits) -> Result<()> {
        match self.version {
            Version::V1 => {
                let [memory, pids, cpu, _] = self.v1_dirs();
                if let Some(bytes) = limits.memory_bytes {
                    write(memory, "memory.limit_in_bytes", bytes)?;
                    // With swap accounting the limit must cover swap too, or a hog just swaps.
                    if memory.join("memory.memsw.limit_in_bytes").exists() {
                        write(memory, "memory.memsw.limit_in_bytes", bytes)?;
                    }
                }
                if let Some(max) = limits.pids {
                    write(pids, "pids.max", max)?;
                }
                if let Some(weight) = limits.cpu_weight {
                    // v1 shares: 1024 is the default, like weight 100 on v2.
                    write(cpu, "cpu.shares", (u64::from(weight) * 1024 / 100).max(2))?;
                }
            }
            Version::V2 => {
                let dir = &self.dirs[0];
                if let Some(bytes) = limits.memory_bytes {
                    write(dir, "memory.max", bytes)?;
                    if dir.join("memory.swap.max").exists() {
                        write(dir, "memory.swap.max", 0)?;
                    }
                }
                if let Some(max) = limits.pids {
                    write(dir, "pids.max", max)?;
                }
                if let Some(weight) = limits.cpu_weight {
                    write(dir, "cpu.weight", weight)?;
                }
            }
        }
        Ok(())
    }

    fn v1_dirs(&self) -> [&Path; 4] {
        [&self.dirs[0], &self.dirs[1], &self.dirs[2], &self.dirs[3]]
    }

    /// The `cgroup.procs` files a process writes `0` into to join this sandbox's cgroups.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// The directory whose `cgroup.procs` lists every process of the sandbox.
    fn membership_dir(&self) -> &Path {
        match self.version {
            Version::V1 => self.v1_dirs()[1],
            Version::V2 => &self.dirs[0],
        }
    }

    pub(crate) fn exists(&self) -> bool {
        self.membership_dir().exists()
    }

    /// Pids of every process in the sandbox.
    pub(crate) fn pids(&self) -> Vec<i32> {
        let file = self.membership_dir().join("cgroup.procs");
        fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// SIGKILLs every process until none is left in the cgroup (forks racing the kill are caught
    /// by repeating). A killed process leaves the cgroup when it exits; reaping the zombie is its
    /// parent's business (init's, as bubblewrap is never our child) and pins nothing of ours.
    pub(crate) fn kill_all(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            for pid in pids {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout(timeout, "the sandbox's processes to die"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Removes the cgroup directories, waiting briefly for dying processes to be reaped.
    pub(crate) fn remove(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        for dir in &self.dirs {
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if start.elapsed() > timeout => {
                        return Err(Error::io("removing a cgroup", dir)(e));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }
        Ok(())
    }

    /// Pauses (or resumes) every process, waiting until the kernel says it is done.
    pub(crate) fn set_frozen(&self, frozen: bool) -> Result<()> {
        const LIMIT: Duration = Duration::from_secs(5);
        let start = Instant::now();
        match self.version {
            Version::V1 => {
                let path = self.v1_dirs()[3].join("freezer.state");
                let write = |value: &str| {
                    fs::write(&path, value).map_err(Error::io("freezing a sandbox", &path))
                };
                let target = if frozen { "FROZEN" } else { "THAWED" };
                // The v1 freezer can stay in FREEZING while processes fork; like runc, keep
                // asking, and now and then thaw and start over.
                for attempt in 1u32.. {
                    write(target)?;
                    let state = fs::read_to_string(&path)
                        .map_err(Error::io("reading the freezer state", &path))?;
                    if state.trim() == target {
                        return Ok(());
                    }
                    if start.elapsed() > LIMIT {
                        let _ = write("THAWED");
                        return Err(Error::Timeout(LIMIT, "the sandbox to freeze"));
                    }
                    if attempt % 50 == 0 {
                        write("THAWED")?;
                    }
                    std::thread::sleep(Duration::from_micros(100 * u64::from(attempt.min(10))));
                }
                unreachable!("the loop returns")
            }
            Version::V2 => {
                let dir = &self.dirs[0];
                let path = dir.join("cgroup.freeze");
                fs::write(&path, if frozen { "1" } else { "0" })
                    .map_err(Error::io("freezing a sandbox", &path))?;
                // `cgroup.events` says `frozen 1` once every process stopped.
                let events = dir.join("cgroup.events");
                let want = if frozen { "frozen 1" } else { "frozen 0" };
                while !fs::read_to_string(&events)
                    .unwrap_or_default()
                    .contains(want)
                {
                    if start.elapsed() > LIMIT {
                        return Err(Error::Timeout(LIMIT, "the sandbox to freeze"));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                Ok(())
            }
        }
    }

    /// [`Cgroup::events`] of a parent, with every child's OOM kills on v1: there the kernel
    /// counts a kill only in the killed process's own cgroup (v2's `memory.events` is
    /// hierarchical already).
    pub(crate) fn total_events(&self) -> Result<ResourceEvents> {
        let mut events = self.events()?;
        if self.version == Version::V1 {
            let memory = self.v1_dirs()[0];
            let children = fs::read_dir(memory)
                .map_err(Error::io("listing sandbox cgroups", memory))?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()));
            for child in children {
                // A sandbox's cgroup may go away meanwhile: it then counts no more.
                if let Ok(text) = fs::read_to_string(child.path().join("memory.oom_control")) {
                    events.oom_kills += keyed(&text, "oom_kill");
                }
            }
        }
        Ok(events)
    }

    pub(crate) fn events(&self) -> Result<ResourceEvents> {
        let read = |dir: &Path, file: &str| -> Result<String> {
            let path = dir.join(file);
            fs::read_to_string(&path).map_err(Error::io("reading cgroup counters", &path))
        };
        Ok(match self.version {
            Version::V1 => {
                let [memory, pids, ..] = self.v1_dirs();
                ResourceEvents {
                    oom_kills: keyed(&read(memory, "memory.oom_control")?, "oom_kill"),
                    pids_limit_hits: keyed(&read(pids, "pids.events")?, "max"),
                    memory_bytes: read(memory, "memory.usage_in_bytes")?
                        .trim()
                        .parse()
                        .unwrap_or(0),
                }
            }
            Version::V2 => {
                let dir = &self.dirs[0];
                ResourceEvents {
                    oom_kills: keyed(&read(dir, "memory.events")?, "oom_kill"),
                    pids_limit_hits: keyed(&read(dir, "pids.events")?, "max"),
                    memory_bytes: read(dir, "memory.current")?.trim().parse().unwrap_or(0),
                }
            }
        })
    }
}

fn write(dir: &Path, file: &str, value: impl std::fmt::Display) -> Result<()> {
    let path = dir.join(file);
    fs::write(&path, value.to_string()).map_err(Error::io("setting a cgroup limit", &path))
}

/// The number after `key` in a `key value` per line file such as `memory.events`.
fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::keyed;

    #[test]
    fn reads_keyed_counters() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(text, "oom_kill"), 3);
        assert_eq!(keyed(text, "max"), 0);
    }
}
