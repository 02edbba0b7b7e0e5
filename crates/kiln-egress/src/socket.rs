//! A proxy served on a Unix socket that a sandbox can be given: its directory traversable and
//! the socket connectable by any uid (the sandbox's is unprivileged; the gate decides what
//! passes), served until the value is dropped, when the socket file goes too.

use crate::{Gate, serve};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A running proxy on `dir/name`. Must be started inside a tokio runtime.
#[derive(Debug)]
pub struct SocketProxy {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl SocketProxy {
    /// Binds `dir/name` (a stale file of that name is replaced) and serves `gate` on it.
    pub fn start(dir: &Path, name: &str, gate: Arc<Gate>) -> std::io::Result<SocketProxy> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)?;
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = tokio::net::UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        let task = tokio::spawn(serve(listener, gate));
        Ok(SocketProxy { path, task })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory the socket is in: what a sandbox is given.
    pub fn dir(&self) -> &Path {
        self.path.parent().expect("the socket is in a directory")
    }

    /// Stops serving and removes the socket and, when nothing else is left in it, its
    /// directory. (Dropping keeps the directory: a sandbox that outlives this process has it
    /// bound, and a later proxy serves it on a new socket there.)
    pub fn close(self) {
        let dir = self.dir().to_path_buf();
        drop(self);
        let _ = std::fs::remove_dir(dir);
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}
