//! Bases: the root filesystem under an image's layers when its environment does not use the
//! host's `/usr`. A base is a read-only bottom layer made by a builder from its inputs alone,
//! so it is built once and shared by every repo that asks for the same inputs.
//!
//! The one builder today makes Debian bases with mmdebstrap: the suite, the packages kiln needs
//! in every sandbox (git, CA certificates, procps) plus the repo's `packages`, and the host's
//! CA bundle. Its downloads go through an egress proxy under a policy of its own (the Debian
//! archive, read-only), audited into the build log like a build step's.
//!
//! ```text
//! bases/debian-bookworm-<hash>/rootfs       the layer
//!                             /description  what it was built from (it marks a base layer)
//! bases/.debian-bookworm-<hash>.lock        held while it is built (by any process)
//! bases/.debian-bookworm-<hash>.partial/    the build in progress, renamed into place when done
//! ```
//!
//! An OCI image (a tarball, or a registry's layers) would fit the same shape: a builder that
//! unpacks it into `rootfs`, keyed by the image's digest, and adopted like a Debian base.

use crate::egress::HostEgress;
use crate::host::{Ended, run_streamed};
use crate::images::BuildLog;
use crate::images::environment::DebianSuite;
use crate::{EgressSettings, Error, Result};
use kiln_egress::{EgressPolicy, HostPattern};
use kiln_sandbox::Provider;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bumped when what a base holds changes (the files kiln writes into it), so new builds use
/// new bases; images on the old ones keep them until nothing uses them.
const BASE_FORMAT: u32 = 1;
/// How long one base build may take, downloads included.
pub(crate) const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// The Debian archive, over plain http as apt uses it (the packages are signed).
const ARCHIVE_HOST: &str = "deb.debian.org";
/// What every sandbox needs whatever the repo asks for: git for the checkout and the sync, the
/// CA certificates, ps.
const ALWAYS: [&str; 3] = ["ca-certificates", "git", "procps"];
/// The file beside a base's `rootfs` saying what it is.
const DESCRIPTION: &str = "description";
/// The host's TLS roots, locally added CAs included (`update-ca-certificates` puts them there).
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Whether `layer` is a base's root filesystem: a stack that starts with one brings its own
/// system and runs without the host's `/usr`. Told by the layer itself, so an image, a pool
/// entry and a session's snapshot of it all run the same way.
pub(crate) fn is_base_layer(layer: &Path) -> bool {
    layer.file_name().is_some_and(|name| name == "rootfs")
        && layer
            .parent()
            .is_some_and(|dir| dir.join(DESCRIPTION).is_file())
}

/// Where bases are kept and how they are built.
#[derive(Debug, Clone)]
pub(crate) struct Bases {
    pub(crate) dir: PathBuf,
    /// Makes a built rootfs the sandboxes' own (its files owned by their root).
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) egress: EgressSettings,
}

impl Bases {
    /// The layer of a Debian `suite` base with `packages` (sorted, each once), built now when
    /// no base of these inputs exists yet; concurrent builds of one base (in this process or
    /// another) wait for the first. Progress and the downloads' summary go to `log`.
    pub(crate) async fn debian(
        &self,
        suite: DebianSuite,
        packages: &[String],
        log: &BuildLog,
    ) -> Result<PathBuf> {
        let name = self.name(suite, packages).await?;
        let dir = self.dir.join(&name);
        let describe = format!(
            "debian:{}{}",
            suite.codename(),
            if packages.is_empty() {
                String::new()
            } else {
                format!(" with {}", packages.join(", "))
            }
        );
        // Held while the base is built, or looked at and marked used: a build of it elsewhere
        // and the collector removing it both hold it too.
        let _lock = self.lock(&name, &describe, log).await?;
        if !dir.join(DESCRIPTION).is_file() {
            log.push_str(&format!("== base {describe}: building {name}\n"));
            self.build(suite, packages, &name, log).await?;
        }
        let rootfs = dir.join("rootfs");
        // Cheap once done; redoes the ownership if the sandbox uid changed since.
        self.provider.adopt_system_layer(&rootfs).await?;
        // Just used: the collector spares what changed within its grace time, so the build
        // about to stand on it keeps it until its sandbox (and then its image) names it.
        std::fs::File::open(&dir)
            .and_then(|file| file.set_modified(std::time::SystemTime::now()))
            .map_err(Error::io(format!("marking {} as used", dir.display())))?;
        log.push_str(&format!("== base {describe}: {name}\n"));
        Ok(rootfs)
    }

    /// `debian-<suite>-<hash of the inputs>`.
    async fn name(&self, suite: DebianSuite, packages: &[String]) -> Result<String> {
        let mut hasher = Sha256::new();
        hasher.update(format!(
            "format\0{BASE_FORMAT}\0suite\0{}\0archive\0{ARCHIVE_HOST}\0",
            suite.codename()
        ));
        for package in packages {
            hasher.update(format!("package\0{package}\0"));
        }
        // The host's roots are baked in: new ones (a proxy's CA added) make a new base.
        match tokio::fs::read(HOST_CA_BUNDLE).await {
            Ok(bundle) => hasher.update(&bundle),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => hasher.update(b"\xffnone"),
            Err(e) => return Err(Error::io(format!("reading {HOST_CA_BUNDLE}"))(e)),
        }
        let hash: String = hasher.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(format!("debian-{}-{hash}", suite.codename()))
    }

    /// Holds `.<name>.lock` (an exclusive `flock`) until dropped, waiting at most the build
    /// timeout for whoever holds it.
    async fn lock(&self, name: &str, describe: &str, log: &BuildLog) -> Result<std::fs::File> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(Error::io(format!("creating {}", self.dir.display())))?;
        let path = self.dir.join(format!(".{name}.lock"));
        let started = Instant::now();
        let mut said = false;
        loop {
            let locked =
                try_lock(&path).map_err(Error::io(format!("opening {}", path.display())))?;
            if let Some(file) = locked {
                return Ok(file);
            }
            if started.elapsed() > BUILD_TIMEOUT {
                return Err(Error::Base {
                    base: describe.to_string(),
                    message: format!(
                        "another build of it did not finish within {}",
                        kiln_core::human_duration(BUILD_TIMEOUT)
                    ),
                });
            }
            // Others hold it for a moment to look at the base; long, it is being built.
            if !said && started.elapsed() > Duration::from_secs(2) {
                log.push_str(&format!(
                    "== base {describe}: waiting for another build of it\n"
                ));
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Builds base `name` into `.<name>.partial` and renames it into place; on failure the
    /// partial directory goes and the error quotes mmdebstrap's last lines.
    async fn build(
        &self,
        suite: DebianSuite,
        packages: &[String],
        name: &str,
        log: &BuildLog,
    ) -> Result<()> {
        let started = Instant::now();
        let partial = self.dir.join(format!(".{name}.partial"));
        remove_partial(&partial).await?;
        tokio::fs::create_dir_all(&partial)
            .await
            .map_err(Error::io(format!("creating {}", partial.display())))?;
        let base = format!("debian:{}", suite.codename());
        let built = self.mmdebstrap(suite, packages, &partial, log).await;
        let built = match built {
            Ok(()) => self.finish(&partial, &base, packages).await,
            Err(e) => Err(e),
        };
        if let Err(e) = built {
            if let Err(removal) = remove_partial(&partial).await {
                tracing::warn!(error = %removal, "cannot remove a failed base build");
            }
            return Err(e);
        }
        let dir = self.dir.join(name);
        tokio::fs::rename(&partial, &dir)
            .await
            .map_err(Error::io(format!("installing the base {}", dir.display())))?;
        log.push_str(&format!(
            "== base {base}: built in {}\n",
            kiln_core::human_duration(started.elapsed())
        ));
        Ok(())
    }

    /// Runs mmdebstrap as root in mount and pid namespaces of its own (the mounts it makes in
    /// the chroot, and every process it starts, end with it), its apt behind the egress proxy.
    async fn mmdebstrap(
        &self,
        suite: DebianSuite,
        packages: &[String],
        partial: &Path,
        log: &BuildLog,
    ) -> Result<()> {
        let base = format!("debian:{}", suite.codename());
        let archive: HostPattern = ARCHIVE_HOST.parse().expect("a valid host");
        let policy = EgressPolicy::Allowlist {
            hosts: vec![archive],
            read_only: true,
        };
        let proxy = HostEgress::start(&self.egress, policy).await?;
        let codename = suite.codename();
        let mut include: Vec<&str> = ALWAYS.to_vec();
        include.extend(packages.iter().map(String::as_str));
        let rootfs = partial.join("rootfs");
        let mut args: Vec<String> = [
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
            "--",
            "mmdebstrap",
            "--mode=root",
            "--format=directory",
            "--variant=apt",
            // Root steps install with `apt-get install` at once, without an update first.
            "--skip=cleanup/apt/lists",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--include={}", include.join(",")));
        args.push(format!("--aptopt=Acquire::http::Proxy \"{}\"", proxy.url()));
        args.push("--aptopt=Acquire::Retries \"3\"".into());
        args.push(format!("--customize-hook={CUSTOMIZE}"));
        args.push(codename.into());
        args.push(rootfs.to_string_lossy().into_owned());
        for (path, suite) in [
            ("debian", codename.to_string()),
            ("debian", format!("{codename}-updates")),
            ("debian-security", format!("{codename}-security")),
        ] {
            args.push(format!("deb http://{ARCHIVE_HOST}/{path} {suite} main"));
        }
        let (mut first_error, mut last_line): (Option<String>, Option<String>) = (None, None);
        let ended = run_streamed(
            "unshare",
            &args,
            partial,
            &[("LANG", "C.UTF-8"), ("HOME", "/root")],
            BUILD_TIMEOUT,
            |line| {
                log.push_str(&format!("{line}\n"));
                if first_error.is_none() && line.starts_with("E: ") {
                    first_error = Some(line.chars().take(500).collect());
                }
                if !line.trim().is_empty() {
                    last_line = Some(line.chars().take(500).collect());
                }
            },
        )
        .await;
        log.push_str(&proxy.summary());
        let ended = match ended {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Base {
                    base,
                    message: "unshare (util-linux) is not installed on this host".into(),
                });
            }
            other => other?,
        };
        let how = match ended {
            Ended::Exited(status) if status.success() => return Ok(()),
            Ended::Exited(status) => match status.code() {
                // unshare's own "failed to execute mmdebstrap".
                Some(127) | Some(126) => {
                    return Err(Error::Base {
                        base,
                        message: "mmdebstrap is not installed on this host (scripts/install-deps \
                                  installs it)"
                            .into(),
                    });
                }
                Some(code) => format!("mmdebstrap exited with {code}"),
                None => "mmdebstrap was killed".to_string(),
            },
            Ended::TimedOut => format!(
                "mmdebstrap timed out after {}",
                kiln_core::human_duration(BUILD_TIMEOUT)
            ),
        };
        // apt's first error is the cause (a package that does not exist, a download that
        // failed); mmdebstrap's own that follow only say that it stopped.
        let reason = first_error
            .or(last_line)
            .unwrap_or_else(|| "it printed nothing".into());
        Err(Error::Base {
            base,
            message: format!("{how}: {reason}"),
        })
    }

    /// What kiln adds to what mmdebstrap made: the sandbox user, a sandbox's `/etc` files,
    /// apt as root in a user namespace, no service starts; then the sandboxes' ownership and the
    /// description.
    async fn finish(&self, partial: &Path, base: &str, packages: &[String]) -> Result<()> {
        let rootfs = partial.join("rootfs");
        let root = rootfs.clone();
        tokio::task::spawn_blocking(move || write_sandbox_files(&root))
            .await
            .expect("writing files does not panic")
            .map_err(Error::io(format!(
                "writing kiln's files into {}",
                rootfs.display()
            )))?;
        self.provider.adopt_system_layer(&rootfs).await?;
        let description = format!(
            "# A base kiln built (format {BASE_FORMAT}); an image layer, never changed.\n\
             base = \"{base}\"\npackages = [{}]\nalways = [{}]\n",
            quoted(packages.iter().map(String::as_str)),
            quoted(ALWAYS.iter().copied()),
        );
        let path = partial.join(DESCRIPTION);
        tokio::fs::write(&path, description)
            .await
            .map_err(Error::io(format!("writing {}", path.display())))
    }
}

fn quoted<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items
        .map(|item| format!("\"{item}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// mmdebstrap's customize hook (`$1` is the new root): the host's locally added CAs go in and
/// the bundle is made again with them, then the host's whole bundle is added too (what the
/// host trusts, the base trusts — a TLS-inspecting proxy's CA included); the proxy's address
/// given to apt goes (apt in a sandbox uses the sandbox's own `http_proxy`).
const CUSTOMIZE: &str = r#"set -e
if [ -d /usr/local/share/ca-certificates ]; then
  cp -RL /usr/local/share/ca-certificates/. "$1/usr/local/share/ca-certificates/"
fi
chroot "$1" update-ca-certificates
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cat /etc/ssl/certs/ca-certificates.crt >> "$1/etc/ssl/certs/ca-certificates.crt"
fi
rm -f "$1/etc/apt/apt.conf.d/99mmdebstrap""#;

/// The files of a sandbox's `/etc` that mmdebstrap copied from the host or lacks, the sandbox
/// user, and how apt and dpkg behave in a build step run as root.
fn write_sandbox_files(root: &Path) -> std::io::Result<()> {
    let write = |path: &str, contents: &str, mode: u32| -> std::io::Result<()> {
        let path = root.join(path);
        std::fs::write(&path, contents)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
    };
    let append = |path: &str, line: &str| -> std::io::Result<()> {
        let path = root.join(path);
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        let user = line.split(':').next().unwrap_or_default();
        if text.lines().any(|l| l.split(':').next() == Some(user)) {
            return Ok(());
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(line);
        text.push('\n');
        std::fs::write(&path, text)
    };
    // Every sandbox gets its own /dev; no device node belongs in a layer.
    let dev = root.join("dev");
    if dev.is_dir() {
        std::fs::remove_dir_all(&dev)?;
        std::fs::create_dir(&dev)?;
    }
    // The host's name and resolver say nothing a sandbox (no DNS, hostname `kiln`) can use.
    write("etc/hostname", "kiln\n", 0o644)?;
    write(
        "etc/hosts",
        "127.0.0.1\tlocalhost kiln\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        0o644,
    )?;
    write("etc/resolv.conf", "", 0o644)?;
    append("etc/passwd", "kiln:x:1000:1000:kiln:/home/kiln:/bin/bash")?;
    append("etc/group", "kiln:x:1000:")?;
    append("etc/shadow", "kiln:*:19000:0:99999:7:::")?;
    append("etc/gshadow", "kiln:!::")?;
    for dir in ["home/kiln", "workspace"] {
        std::fs::create_dir_all(root.join(dir))?;
        std::fs::set_permissions(root.join(dir), std::fs::Permissions::from_mode(0o755))?;
    }
    write(
        "etc/apt/apt.conf.d/90kiln",
        "// kiln: apt runs as root inside a sandbox's user namespace, where no other user (_apt)\n\
         // exists; downloads go through the sandbox's http_proxy.\n\
         APT::Sandbox::User \"root\";\n\
         Acquire::Retries \"3\";\n",
        0o644,
    )?;
    // Debian's convention: invoke-rc.d asks this before starting a service; a build starts none.
    write(
        "usr/sbin/policy-rc.d",
        "#!/bin/sh\n# kiln: no service starts while an image is built.\nexit 101\n",
        0o755,
    )?;
    Ok(())
}

/// An exclusive `flock` on `path` (made if missing), or `None` while another holder has it;
/// released when the file is dropped.
fn try_lock(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // SAFETY: flock on a valid descriptor has no memory-safety preconditions.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    Ok(locked.then_some(file))
}

/// Removes a build's partial directory, unless something is mounted below it (mmdebstrap's
/// mounts live in its own namespace and end with it; one here would be the host's).
async fn remove_partial(partial: &Path) -> Result<()> {
    if !partial.exists() {
        return Ok(());
    }
    let mountinfo = tokio::fs::read_to_string("/proc/self/mountinfo")
        .await
        .map_err(Error::io("reading /proc/self/mountinfo"))?;
    let prefix = partial.to_string_lossy().into_owned();
    let mounted = mountinfo.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|point| point == prefix || point.starts_with(&format!("{prefix}/")))
    });
    if mounted {
        return Err(Error::Io {
            what: format!("removing {}", partial.display()),
            source: std::io::Error::other("something is mounted below it; unmount it first"),
        });
    }
    let path = partial.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&path))
        .await
        .expect("removal does not panic")
        .map_err(Error::io(format!("removing {}", partial.display())))
}

/// Removes bases no layer in `used` names and older than `grace`, and partial builds nobody
/// holds the lock of. Returns how many bases went.
pub(crate) async fn collect(
    dir: &Path,
    used: &std::collections::HashSet<PathBuf>,
    grace: Duration,
) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(key) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".partial"))
        {
            // A build in progress holds the lock; one that died left the partial behind. The
            // lock is held (by this collection) while the partial goes.
            let Ok(Some(_lock)) = try_lock(&dir.join(format!(".{key}.lock"))) else {
                continue;
            };
            if let Err(e) = remove_partial(&path).await {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove a partial base");
            }
            continue;
        }
        if name.starts_with('.') || !path.join(DESCRIPTION).is_file() {
            continue;
        }
        if used.contains(&path.join("rootfs")) || crate::gc::changed_within(&path, grace) {
            continue;
        }
        // Not while a build takes it: it holds the lock, and marks the base used under it.
        let Ok(Some(_lock)) = try_lock(&dir.join(format!(".{name}.lock"))) else {
            continue;
        };
        if crate::gc::changed_within(&path, grace) {
            continue;
        }
        let target = path.clone();
        let gone = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&target))
            .await
            .expect("removal does not panic");
        match gone {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!(dir = %path.display(), error = %e, "cannot remove a base"),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_files_name_the_user_and_keep_the_host_out() {
        let dir = tempfile_dir();
        let root = dir.join("rootfs");
        for d in ["etc/apt/apt.conf.d", "usr/sbin", "dev/pts"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash").unwrap();
        std::fs::write(root.join("etc/resolv.conf"), "nameserver 10.0.0.53\n").unwrap();
        write_sandbox_files(&root).unwrap();
        // Twice is the same as once.
        write_sandbox_files(&root).unwrap();
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert_eq!(
            passwd,
            "root:x:0:0:root:/root:/bin/bash\nkiln:x:1000:1000:kiln:/home/kiln:/bin/bash\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
            ""
        );
        assert!(root.join("home/kiln").is_dir() && root.join("workspace").is_dir());
        assert_eq!(std::fs::read_dir(root.join("dev")).unwrap().count(), 0);
        let apt = std::fs::read_to_string(root.join("etc/apt/apt.conf.d/90kiln")).unwrap();
        assert!(apt.contains("APT::Sandbox::User \"root\";"), "{apt}");
        assert!(!is_base_layer(&root));
        std::fs::write(dir.join(DESCRIPTION), "").unwrap();
        assert!(is_base_layer(&root));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-bases-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
