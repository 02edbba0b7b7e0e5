//! Atomic file writes: the contents go to a temp file next to the target, which is renamed over
//! the target only once the host sent `eof`. Readers in the sandbox (a dev server watching files,
//! a compiler) therefore see the old file or the new one, never half of it, and a write cut short
//! by a dropped connection or a full disk leaves nothing behind.
//!
//! Chunks arrive as separate frames. The connection's reader hands them to this request's task
//! through a small bounded channel, so a slow disk slows the host down instead of filling memory,
//! and the reader itself only ever waits for a free slot.

use crate::conn::Ctx;
use crate::files::blocking;
use crate::live::{Input, Live, Ticket};
use crate::outbox::{Failure, Outbox};
use kiln_protocol::guest::{ErrorKind, GuestMessage, RequestId};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Chunks queued per write before the connection's reader waits for the disk.
const CHUNK_QUEUE: usize = 4;
/// Mode of a new file when the host names none.
const DEFAULT_MODE: u32 = 0o644;
/// Keeps temp names within `NAME_MAX` (255) even for the longest target names.
const MAX_NAME_IN_TEMP: usize = 200;

/// Makes temp names unique among the guest's concurrent writes; the pid separates guests.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Registers the write and starts its task with the first frame's data.
pub(crate) fn start(ctx: &Ctx, id: RequestId, path: String, mode: Option<u32>, first: Input) {
    let (tx, rx) = mpsc::channel(CHUNK_QUEUE);
    let chunks = if first.eof { None } else { Some(tx) };
    let ticket = ctx.live.insert(id, Live::Write { chunks });
    ctx.tasks
        .spawn(run(ctx.out.clone(), id, path, mode, first, rx, ticket));
}

async fn run(
    out: Outbox,
    id: RequestId,
    path: String,
    mode: Option<u32>,
    first: Input,
    mut rx: mpsc::Receiver<Input>,
    ticket: Ticket,
) {
    match write(&path, mode, first, &mut rx).await {
        Ok(()) => {
            drop(ticket);
            out.reply(id, GuestMessage::Done).await;
        }
        Err(failure) => {
            out.fail(id, failure).await;
            // The host may still be sending the rest. Take it and drop it up to its eof, so
            // those chunks are not each answered with an error for an id that already failed.
            while let Some(input) = rx.recv().await {
                if input.eof {
                    break;
                }
            }
            drop(ticket);
        }
    }
}

async fn write(
    path: &str,
    mode: Option<u32>,
    first: Input,
    rx: &mut mpsc::Receiver<Input>,
) -> Result<(), Failure> {
    let target = path.to_string();
    let mut temp = blocking(move || TempFile::create(target, mode)).await?;
    let mut input = first;
    loop {
        let Input { data, eof } = input;
        if !data.is_empty() {
            temp = blocking(move || {
                let mut temp = temp;
                temp.append(&data)?;
                Ok(temp)
            })
            .await?;
        }
        if eof {
            break;
        }
        input = match rx.recv().await {
            Some(next) => next,
            None => {
                // The connection ended first. Dropping `temp` removes the file; do it on the
                // blocking pool like every other filesystem call.
                let _ = blocking(move || {
                    drop(temp);
                    Ok(())
                })
                .await;
                let message = format!("write {path}: the connection closed before the end");
                return Err(Failure::new(ErrorKind::Io, message));
            }
        };
    }
    blocking(move || temp.commit()).await
}

/// A temp file that removes itself unless committed.
struct TempFile {
    file: File,
    path: PathBuf,
    /// The path the host asked for, as the host spelled it (for error messages).
    target: String,
    committed: bool,
}

impl TempFile {
    fn create(target: String, mode: Option<u32>) -> Result<TempFile, Failure> {
        let target_path = PathBuf::from(&target);
        // `Path` drops a trailing `/` or `/.`, which would turn `dir/` into a write to `dir`.
        let names_a_dir = target.ends_with('/') || target.ends_with("/.") || target == ".";
        let name = match target_path.file_name() {
            Some(name) if !names_a_dir => name,
            _ => return Err(Failure::invalid(format!("write {target}: not a file name"))),
        };
        let dir = match target_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // An existing file keeps its mode, as it would with an in-place write.
        let mode = match mode {
            Some(mode) => mode & 0o7777,
            None => fs::metadata(&target_path).map_or(DEFAULT_MODE, |meta| meta.mode() & 0o7777),
        };
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let name_bytes = name.as_bytes();
        let mut temp_name = OsString::from(".");
        temp_name.push(std::ffi::OsStr::from_bytes(
            &name_bytes[..name_bytes.len().min(MAX_NAME_IN_TEMP)],
        ));
        temp_name.push(format!(".kiln-tmp-{}-{n}", std::process::id()));
        let path = dir.join(temp_name);

        let failed = |err: std::io::Error| Failure::io("write", &target, &err);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(failed)?;
        let temp = TempFile {
            file,
            path,
            target,
            committed: false,
        };
        // The umask must not change the mode, least of all an existing file's.
        temp.file
            .set_permissions(Permissions::from_mode(mode))
            .map_err(|err| Failure::io("write", &temp.target, &err))?;
        Ok(temp)
    }

    fn append(&mut self, data: &[u8]) -> Result<(), Failure> {
        self.file
            .write_all(data)
            .map_err(|err| Failure::io("write", &self.target, &err))
    }

    fn commit(mut self) -> Result<(), Failure> {
        fs::rename(&self.path, &self.target)
            .map_err(|err| Failure::io("write", &self.target, &err))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: there is nobody left to tell if this fails.
            let _ = fs::remove_file(&self.path);
        }
    }
}
