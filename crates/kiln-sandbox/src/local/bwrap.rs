//! Starting a sandbox: bubblewrap around the guest agent.
//!
//! The child joins the sandbox's cgroups, drops to the unprivileged sandbox uid, starts its own
//! session and receives the guest's listening socket as fd 3, all between fork and exec, so that
//! no instant of the sandbox runs outside its limits or with root's identity. It also forks once
//! more and exits, so bubblewrap is never our child: init reaps it, a sandbox started by this
//! process is no different from one reattached after a restart, and no zombie of ours can hold a
//! cgroup. Bubblewrap then
//! makes fresh user, mount, pid, ipc, uts and network namespaces, binds the overlay root, and
//! execs the guest.

use super::layer::{HOST_ETC, SANDBOX_USER_ID};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Where the guest binary appears inside every sandbox.
pub(crate) const GUEST_PATH: &str = "/.kiln/guest";
/// The fd on which the guest finds its listening socket.
const LISTEN_FD: i32 = 3;

pub(crate) struct Launch<'a> {
    pub(crate) bwrap: &'a Path,
    pub(crate) root: &'a Path,
    pub(crate) guest: &'a Path,
    pub(crate) host_system: bool,
    pub(crate) hostname: &'a str,
    pub(crate) env: &'a BTreeMap<String, String>,
    pub(crate) host_uid: u32,
    pub(crate) cgroup_procs: Vec<PathBuf>,
    pub(crate) listener: BorrowedFd<'a>,
    pub(crate) log: File,
}

/// The environment every sandbox starts with; the spec's `env` adds to it and wins.
fn base_env() -> BTreeMap<String, String> {
    [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/home/kiln"),
        ("USER", "kiln"),
        ("LOGNAME", "kiln"),
        ("LANG", "C.UTF-8"),
        ("TERM", "xterm-256color"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Launch<'_> {
    fn args(&self) -> Vec<OsString> {
        let uid = SANDBOX_USER_ID.to_string();
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
        let mut env = base_env();
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (key, value) in env {
            args.extend(["--setenv".into(), key.into(), value.into()]);
        }
        args.extend(["--", GUEST_PATH].map(OsString::from));
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
        let listener = self.listener.as_raw_fd();
        let mut command = std::process::Command::new(self.bwrap);
        command
            .args(self.args())
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(
                self.log
                    .try_clone()
                    .map_err(Error::io("cloning the sandbox log", "bwrap.log"))?,
            )
            .stderr(self.log);
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
                if listener == LISTEN_FD {
                    check(libc::fcntl(LISTEN_FD, libc::F_SETFD, 0))?;
                } else {
                    check(libc::dup2(listener, LISTEN_FD))?;
                }
                // Whatever else this process inherited must not reach the sandbox.
                let from = (LISTEN_FD + 1) as libc::c_uint;
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
