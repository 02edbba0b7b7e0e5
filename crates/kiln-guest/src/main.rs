//! `kiln-guest`: the agent inside every sandbox. It serves the guest protocol
//! (`kiln_protocol::guest`) on a Unix socket: run processes, move files, list listening ports.
//!
//! One guest runs per sandbox for the sandbox's whole life, so it is built to be small when idle:
//! a single-threaded tokio runtime, a handful of blocking threads that exit when unused, and no
//! buffers beyond what requests in flight need.
//!
//! The listening socket normally arrives as fd 3, bound by the host before the sandbox started
//! (the socket file lives outside the sandbox's view). `--listen PATH` binds one instead, for
//! tests and debugging.
//!
//! The guest runs as the same uid as the commands it starts, so it makes itself undumpable
//! before anything else: processes in the sandbox cannot ptrace it, read its memory, open its
//! `/proc` entries or take its descriptors (its listening socket). Its stderr is a pipe the host
//! reads only until the guest answers; after that nobody reads it, so every log line is best
//! effort and a failed write is never fatal (`eprintln!` would panic).

mod bridge;
mod conn;
mod exec;
mod files;
mod live;
mod outbox;
mod ports;
mod write;

use std::os::fd::{FromRawFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_util::task::TaskTracker;

/// Where the host puts the listening socket.
const INHERITED_FD: RawFd = 3;
/// Blocking-pool threads for filesystem work; more requests queue. Idle ones exit after a while.
const MAX_BLOCKING_THREADS: usize = 4;
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (out of fds): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const USAGE: &str = "usage: kiln-guest [--listen PATH]";

fn main() -> ExitCode {
    // SAFETY: PR_SET_DUMPABLE takes an integer argument and touches no memory of ours. It is
    // reset on exec, so the commands the guest starts are ordinary processes again.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        log(format_args!(
            "cannot make the guest undumpable: {}",
            std::io::Error::last_os_error()
        ));
        return ExitCode::FAILURE;
    }
    let listen = match parse_args(std::env::args().skip(1)) {
        Ok(listen) => listen,
        Err(message) => {
            log(format_args!("{message}\n{USAGE}"));
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            log(format_args!("cannot start the runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listener = listener(listen)?;
        bridge::start_from_env().await?;
        accept_forever(listener).await;
        Ok::<(), String>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            log(format_args!("{message}"));
            ExitCode::FAILURE
        }
    }
}

/// `None` means the inherited fd.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<PathBuf>, String> {
    let mut listen = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let path = args.next().ok_or("--listen needs a path")?;
                listen = Some(PathBuf::from(path));
            }
            "-h" | "--help" => return Err("help requested".into()),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    Ok(listen)
}

fn listener(listen: Option<PathBuf>) -> Result<UnixListener, String> {
    let std_listener = match listen {
        Some(path) => {
            // A socket file left by an earlier guest would make bind fail; nothing else is
            // removed, so a wrong path cannot destroy data.
            if std::fs::symlink_metadata(&path)
                .is_ok_and(|meta| std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()))
            {
                let _ = std::fs::remove_file(&path);
            }
            std::os::unix::net::UnixListener::bind(&path)
                .map_err(|err| format!("cannot listen on {}: {err}", path.display()))?
        }
        None => inherited_listener()?,
    };
    std_listener
        .set_nonblocking(true)
        .map_err(|err| format!("cannot make the listening socket non-blocking: {err}"))?;
    UnixListener::from_std(std_listener)
        .map_err(|err| format!("cannot register the listening socket: {err}"))
}

fn inherited_listener() -> Result<std::os::unix::net::UnixListener, String> {
    // SAFETY: fcntl and fstat only inspect the descriptor table; `stat` is a plain out-param.
    let is_socket = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        libc::fstat(INHERITED_FD, &mut stat) == 0 && (stat.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    };
    if !is_socket {
        return Err(format!(
            "no listening socket on fd {INHERITED_FD} (or pass --listen PATH)"
        ));
    }
    // The host cleared close-on-exec to hand the socket over. Set it again, or every process
    // the guest spawns would inherit the listener and could accept the host's connections.
    // SAFETY: as above; F_SETFD only changes the flags of a descriptor we checked exists.
    if unsafe { libc::fcntl(INHERITED_FD, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(format!("cannot set close-on-exec on fd {INHERITED_FD}"));
    }
    // SAFETY: fd 3 is an open socket (checked above) that nothing else in this process owns;
    // the listener takes ownership of it from here on.
    Ok(unsafe { std::os::unix::net::UnixListener::from_raw_fd(INHERITED_FD) })
}

/// Serves every connection in its own task. Connections are independent: one failing or closing
/// never touches another, nor the processes it started.
async fn accept_forever(listener: UnixListener) {
    let tasks = TaskTracker::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tasks.spawn(conn::serve(stream, tasks.clone()));
            }
            Err(err) => {
                log(format_args!("accept failed: {err}"));
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Writes one line to stderr, ignoring failure: once the host stopped reading (it does after
/// the first answer, or it restarted) the pipe is closed and a log line has nowhere to go.
fn log(message: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "kiln-guest: {message}");
}
