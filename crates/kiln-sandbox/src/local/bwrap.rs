//! Starting a sandbox: bubblewrap around the guest agent.
//!
//! The child joins the sandbox's cgroups, drops to the unprivileged sandbox uid, starts its own
//! session and receives the guest's listening socket as fd 3, all between fork and exec, so that
//! no instant of the sandbox runs outside its limits or with root's identity. It also forks once
//! more and exits, so bubblewrap is never our child: init reaps it, a sandbox started by this
//! process is no different from one reattached after a restart, and no zombie of ours can hold a
//! cgroup. Bubblewrap then
//! makes fresh user, mount, pid, ipc, uts and network namespaces, binds the overlay root,
//! installs the seccomp programs (`seccomp.rs`) and execs the guest.
//!
//! Bubblewrap's and the guest's stderr is a pipe, never a host file: code in the sandbox that
//! got hold of it could only fill a pipe buffer. The host reads it while the sandbox starts (to
//! say why a start failed) and closes it once the guest answers; from then on a write to it
//! fails with `EPIPE`, which bubblewrap (SIGPIPE ignored) and the guest shrug off, so a sandbox
//! neither blocks nor dies on it, whether this process still runs or not. stdout is /dev/null.

use super::layer::{HOST_ETC, SANDBOX_USER_ID};
use super::seccomp::Programs;
use crate::{Error, Result, SandboxUser};
use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Where the guest binary appears inside every sandbox.
pub(crate) const GUEST_PATH: &str = "/.kiln/guest";
/// The fd on which the guest finds its listening socket.
const LISTEN_FD: i32 = 3;
/// The fds from which bubblewrap reads the two seccomp programs (`--add-seccomp-fd`).
const SECCOMP_FDS: [i32; 2] = [4, 5];
/// The fd from which bubblewrap reads its arguments (`--args`): its command line, which code in
/// the sandbox can read in `/proc/1/cmdline`, names no host path.
const ARGS_FD: i32 = 6;
/// Descriptors are parked at or above this number while they are moved to 3 to 6.
const PARK_FD: i32 = 10;

pub(crate) struct Launch<'a> {
    pub(crate) bwrap: &'a Path,
    pub(crate) root: &'a Path,
    pub(crate) guest: &'a Path,
    pub(crate) host_system: bool,
    /// Who the guest (and so every command) is inside.
    pub(crate) user: SandboxUser,
    pub(crate) hostname: &'a str,
    pub(crate) env: &'a BTreeMap<String, String>,
    /// The host directory holding the egress proxy's socket, for a proxied sandbox.
    pub(crate) egress: Option<&'a Path>,
    /// The host directory shown read-only at [`crate::DOCS_DIR`].
    pub(crate) docs: Option<&'a Path>,
    pub(crate) host_uid: u32,
    pub(crate) cgroup_procs: Vec<PathBuf>,
    pub(crate) listener: BorrowedFd<'a>,
    pub(crate) seccomp: &'a Programs,
    /// The write end of the start-up output pipe: bubblewrap's and the guest's stderr.
    pub(crate) output: OwnedFd,
}

/// The system's TLS roots in every image kiln makes: the host's (bound with `host_system`) or a
/// Debian base's, which holds the host's locally added CAs too.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The environment every sandbox starts with; the spec's `env` adds to it and wins.
fn base_env(user: SandboxUser, ca_bundle: bool) -> BTreeMap<String, String> {
    let (name, home) = match user {
        SandboxUser::Kiln => ("kiln", "/home/kiln"),
        SandboxUser::Root => ("root", "/root"),
    };
    let mut env: BTreeMap<String, String> = [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", home),
        ("USER", name),
        ("LOGNAME", name),
        ("LANG", "C.UTF-8"),
        ("TERM", "xterm-256color"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if ca_bundle {
        // Tools that bring roots of their own trust the system's instead (or as well): behind
        // a TLS-inspecting proxy, only the system's bundle holds its CA. OpenSSL users (Python,
        // curl, Go) read SSL_CERT_FILE, requests and pip REQUESTS_CA_BUNDLE, Node adds
        // NODE_EXTRA_CA_CERTS to its own.
        for key in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"] {
            env.insert(key.into(), CA_BUNDLE.into());
        }
    }
    env
}

impl Launch<'_> {
    /// Whether the sandbox will see a system CA bundle: the host's under `host_system`, else
    /// the layers' (read through the mounted root; a symlink anywhere on the way counts as
    /// none, since the host would resolve it against its own root).
    fn has_ca_bundle(&self) -> bool {
        if self.host_system {
            return Path::new(CA_BUNDLE).is_file();
        }
        let mut path = self.root.to_path_buf();
        let parts: Vec<&str> = CA_BUNDLE.trim_start_matches('/').split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            path.push(part);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                return false;
            };
            let last = i + 1 == parts.len();
            if (last && !meta.is_file()) || (!last && !meta.is_dir()) {
                return false;
            }
        }
        true
    }

    fn args(&self) -> Vec<OsString> {
        let uid = match self.user {
            SandboxUser::Kiln => SANDBOX_USER_ID,
            SandboxUser::Root => 0,
        }
        .to_string();
        let mut args: Vec<OsString> = [
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-net",
            "--unshare-cgroup-try",
            "--disable-userns",
            "--uid",
            &uid,
            "--gid",
            &uid,
            "--hostname",
            self.hostname,
            "--bind",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        args.extend([self.root.into(), "/".into()]);
        if self.host_system {
            for dir in ["/usr"]
                .iter()
                .chain(HOST_ETC.iter())
                .filter(|p| Path::new(p).exists())
            {
                args.extend(["--ro-bind", dir, dir].map(OsString::from));
            }
        }
        args.extend(["--ro-bind".into(), self.guest.into(), GUEST_PATH.into()]);
        if let Some(dir) = self.docs {
            args.extend(["--ro-bind".into(), dir.into(), crate::DOCS_DIR.into()]);
        }
        if let Some(dir) = self.egress {
            // Connecting needs no write access to the mount: a socket is not a file.
            args.extend(["--ro-bind".into(), dir.into(), crate::EGRESS_DIR.into()]);
        }
        for fd in SECCOMP_FDS {
            args.extend(["--add-seccomp-fd".into(), fd.to_string().into()]);
        }
        args.extend(
            [
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--chdir",
                "/workspace",
                "--clearenv",
            ]
            .map(OsString::from),
        );
        let mut env = base_env(self.user, self.has_ca_bundle());
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        if self.egress.is_some() {
            // After the spec's env: a proxied sandbox's traffic goes through the proxy.
            env.extend(crate::proxy_env());
            env.insert("KILN_EGRESS_SOCKET".into(), crate::EGRESS_SOCKET.into());
            env.insert(
                "KILN_EGRESS_LISTEN".into(),
                format!("127.0.0.1:{}", crate::EGRESS_PORT),
            );
        }
        for (key, value) in env {
            args.extend(["--setenv".into(), key.into(), value.into()]);
        }
        args
    }

    /// Starts bubblewrap detached from this process and returns once it is running.
    pub(crate) fn spawn(self) -> Result<()> {
        let procs: Vec<CString> = self
            .cgroup_procs
            .iter()
            .map(|p| CString::new(p.as_os_str().as_bytes()).expect("cgroup paths have no NUL"))
            .collect();
        let uid = self.host_uid;
        let deny = memfd("kiln-seccomp", &self.seccomp.deny)?;
        let no_clone3 = memfd("kiln-seccomp-clone3", &self.seccomp.no_clone3)?;
        let mut args = Vec::new();
        for arg in self.args() {
            args.extend_from_slice(arg.as_bytes());
            args.push(0);
        }
        let args = memfd("kiln-bwrap-args", &args)?;
        // In this order they become fds 3, 4, 5 and 6.
        let handed = [
            self.listener.as_raw_fd(),
            deny.as_raw_fd(),
            no_clone3.as_raw_fd(),
            args.as_raw_fd(),
        ];
        let mut command = std::process::Command::new(self.bwrap);
        command
            // Options come through the fd; the command must be on the command line.
            .args(["--args", &ARGS_FD.to_string(), "--", GUEST_PATH])
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(self.output));
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // syscalls on memory prepared before the fork (no allocation, no locks).
        unsafe {
            command.pre_exec(move || {
                for path in &procs {
                    join_cgroup(path)?;
                }
                // Detach: the intermediate child exits at once, the grandchild goes on to exec.
                match libc::fork() {
                    -1 => return Err(std::io::Error::last_os_error()),
                    0 => {}
                    _ => libc::_exit(0),
                }
                check(libc::setsid())?;
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setresgid(uid, uid, uid))?;
                check(libc::setresuid(uid, uid, uid))?;
                // A write to the output pipe after the host closed it must fail, not kill.
                if libc::signal(libc::SIGPIPE, libc::SIG_IGN) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
                // Park every handed fd above the targets first, so no dup2 overwrites a source.
                let mut parked = [0; 4];
                for (slot, fd) in parked.iter_mut().zip(handed) {
                    *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, PARK_FD);
                    check(*slot)?;
                }
                // dup2 clears close-on-exec on the target: these four reach bubblewrap.
                for (target, fd) in (LISTEN_FD..).zip(parked) {
                    check(libc::dup2(fd, target))?;
                }
                // Whatever else this process inherited must not reach the sandbox.
                let from = (ARGS_FD + 1) as libc::c_uint;
                check(libc::syscall(
                    libc::SYS_close_range,
                    from,
                    libc::c_uint::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                ) as i32)?;
                Ok(())
            });
        }
        let spawn_error = |e: std::io::Error| {
            Error::Start(format!("could not run {}: {e}", self.bwrap.display()))
        };
        // Returns once the grandchild exec'd (or failed to); the intermediate is reaped at once.
        let mut intermediate = command.spawn().map_err(spawn_error)?;
        intermediate.wait().map_err(spawn_error)?;
        Ok(())
    }
}

/// An anonymous in-memory file holding `bytes`, positioned at its start for the reader.
fn memfd(name: &str, bytes: &[u8]) -> Result<File> {
    let name = CString::new(name).expect("memfd names have no NUL");
    // SAFETY: a valid NUL-terminated name; the fd returned is ours alone.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    let io = |e| Error::io("passing data to bubblewrap", "memfd")(e);
    if fd < 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a freshly created descriptor nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes).map_err(io)?;
    file.rewind().map_err(io)?;
    Ok(file)
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Moves the calling process into a cgroup. Async-signal-safe.
fn join_cgroup(procs: &CString) -> std::io::Result<()> {
    // SAFETY: valid NUL-terminated path; the buffer is a static byte string.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(fd)?;
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        libc::close(fd);
        if written != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
