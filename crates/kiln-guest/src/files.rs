//! Filesystem requests other than writes: streaming reads, stat, listing, removing, creating
//! directories.
//!
//! Every filesystem call runs on tokio's blocking pool ([`blocking`]): the runtime has a single
//! thread, and one slow disk (or a hung network mount in a workspace) must not stall every other
//! request. Metadata is always `lstat`-based: the host sees a symlink as a symlink, never its
//! target, so a listing cannot be tricked into describing files outside a directory.

use crate::outbox::{Failure, Outbox};
use kiln_protocol::guest::{DirEntry, ErrorKind, FileKind, FileStat, GuestMessage, RequestId};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Largest `FileChunk`; also the only buffer a read holds.
const FILE_CHUNK: usize = 256 * 1024;

/// Runs blocking filesystem work off the runtime thread.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, Failure>
where
    F: FnOnce() -> Result<T, Failure> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        // Only a panic in `f` gets here; the request fails, the guest keeps serving.
        Err(err) => Err(Failure::new(
            ErrorKind::Io,
            format!("internal error: {err}"),
        )),
    }
}

/// Streams a file as `FileChunk` frames and a closing `FileEnd`, one chunk in memory at a time.
pub(crate) async fn read_file(out: Outbox, id: RequestId, path: String) {
    let opened = blocking({
        let path = path.clone();
        move || open_regular(&path)
    })
    .await;
    let mut file = match opened {
        Ok(file) => file,
        Err(failure) => {
            out.fail(id, failure).await;
            return;
        }
    };
    let mut size = 0u64;
    loop {
        let path = path.clone();
        let (returned, chunk) = match blocking(move || read_chunk(file, &path)).await {
            Ok(read) => read,
            Err(failure) => {
                out.fail(id, failure).await;
                return;
            }
        };
        if chunk.is_empty() {
            break;
        }
        file = returned;
        size += chunk.len() as u64;
        if !out
            .reply_data(id, GuestMessage::FileChunk, chunk.into())
            .await
        {
            return;
        }
    }
    out.reply(id, GuestMessage::FileEnd { size }).await;
}

/// Opens a regular file. Anything else is refused: a FIFO or a device could block one of the
/// few blocking threads forever or stream without end.
fn open_regular(path: &str) -> Result<File, Failure> {
    // Non-blocking so that opening a FIFO returns at once instead of waiting for a writer; it
    // changes nothing for the regular files that get past the check below.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| Failure::io("open", path, &err))?;
    let meta = file
        .metadata()
        .map_err(|err| Failure::io("stat", path, &err))?;
    if meta.is_dir() {
        // Opening a directory succeeds on Linux; reading it fails with a less helpful error.
        let message = format!("read {path}: is a directory");
        return Err(Failure::new(ErrorKind::IsADirectory, message));
    }
    if !meta.is_file() {
        return Err(Failure::invalid(format!("read {path}: not a regular file")));
    }
    Ok(file)
}

/// Reads up to [`FILE_CHUNK`] bytes; an empty chunk means end of file.
fn read_chunk(mut file: File, path: &str) -> Result<(File, Vec<u8>), Failure> {
    let mut chunk = vec![0; FILE_CHUNK];
    let mut filled = 0;
    while filled < chunk.len() {
        match file.read(&mut chunk[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Failure::io("read", path, &err)),
        }
    }
    chunk.truncate(filled);
    Ok((file, chunk))
}

pub(crate) fn stat(path: &str) -> Result<GuestMessage, Failure> {
    let meta = fs::symlink_metadata(path).map_err(|err| Failure::io("stat", path, &err))?;
    Ok(GuestMessage::Stat {
        stat: file_stat(&meta),
    })
}

pub(crate) fn list_dir(path: &str) -> Result<GuestMessage, Failure> {
    let failed = |err: std::io::Error| Failure::io("list", path, &err);
    let mut entries = Vec::new();
    for entry in fs::read_dir(path).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        // `DirEntry::metadata` does not follow symlinks.
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // Removed between reading the directory and looking at the entry: it is gone.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(Failure::io("stat", entry.path(), &err)),
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        entries.push(DirEntry {
            name,
            stat: file_stat(&meta),
        });
    }
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(GuestMessage::Entries { entries })
}

pub(crate) fn remove(path: &str, recursive: bool) -> Result<GuestMessage, Failure> {
    let meta = fs::symlink_metadata(path).map_err(|err| Failure::io("remove", path, &err))?;
    let removed = if !meta.is_dir() {
        fs::remove_file(path)
    } else if recursive {
        fs::remove_dir_all(path)
    } else {
        fs::remove_dir(path)
    };
    removed.map_err(|err| Failure::io("remove", path, &err))?;
    Ok(GuestMessage::Done)
}

/// Like `mkdir [-p] [-m mode]`: a requested mode applies exactly (not masked by the umask) to the
/// directory named, missing parents get the default mode, and with `parents` an existing
/// directory is success and keeps its mode.
pub(crate) fn mkdir(path: &str, parents: bool, mode: Option<u32>) -> Result<GuestMessage, Failure> {
    let failed = |err: std::io::Error| Failure::io("mkdir", path, &err);
    let missing_parents = Path::new(path)
        .parent()
        .filter(|parent| parents && !parent.as_os_str().is_empty());
    if let Some(parent) = missing_parents {
        fs::DirBuilder::new()
            .recursive(true)
            .create(parent)
            .map_err(failed)?;
    }
    let created = fs::DirBuilder::new()
        .mode(mode.unwrap_or(0o777) & 0o7777)
        .create(path);
    match created {
        Ok(()) => {
            if let Some(mode) = mode {
                fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(failed)?;
            }
        }
        Err(err) if parents && err.kind() == std::io::ErrorKind::AlreadyExists => {
            if !Path::new(path).is_dir() {
                return Err(failed(err));
            }
        }
        Err(err) => return Err(failed(err)),
    }
    Ok(GuestMessage::Done)
}

pub(crate) fn file_stat(meta: &Metadata) -> FileStat {
    let file_type = meta.file_type();
    let kind = if file_type.is_symlink() {
        FileKind::Symlink
    } else if file_type.is_dir() {
        FileKind::Dir
    } else if file_type.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    let mtime_ms = meta
        .mtime()
        .saturating_mul(1000)
        .saturating_add(meta.mtime_nsec() / 1_000_000);
    FileStat {
        kind,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        mtime_ms,
    }
}
