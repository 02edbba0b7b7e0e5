//! `kiln backup DIR`: a consistent copy of the control DB and every session DB, taken while
//! kiln runs, with SQLite's online backup API. Each database is copied in one step under one
//! read transaction, so each copy is exactly that database at one moment, and writers (WAL)
//! never wait for it. The control DB is copied first and the session DBs it lists after, so
//! every session in the copy's index has its log (a session made meanwhile is simply not in the
//! backup; one deleted meanwhile is left out and counted).
//!
//! Sandboxes, image layers and snapshots are not copied: they are files a kiln rebuilds. The
//! copy says so itself — its images are marked collected and its sessions' snapshot records
//! are dropped — so a kiln started on it builds images anew and continues each session from a
//! fresh checkout instead of reaching for layers that are not there.

use crate::error::{Error, Result};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// What a backup copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupReport {
    /// Session logs copied.
    pub sessions: usize,
    /// Sessions in the index whose DB was gone by the time it was copied (deleted meanwhile).
    pub missing: usize,
    /// Bytes written, all databases together.
    pub bytes: u64,
    /// Whether the data dir's `secret.key` was copied (it opens the sealed secrets).
    pub secret_key: bool,
}

/// Copies the databases of the data dir `data_dir` into `dest`, which must not exist or be an
/// empty directory. Safe while a kiln serves `data_dir`.
pub fn backup(data_dir: &Path, dest: &Path) -> Result<BackupReport> {
    let control = data_dir.join("control.db");
    if !control.is_file() {
        return Err(Error::Invalid(format!(
            "{} holds no kiln data (no control.db)",
            data_dir.display()
        )));
    }
    if dest.exists()
        && std::fs::read_dir(dest)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Error::Invalid(format!(
            "{} exists and is not empty: back up into a new directory",
            dest.display()
        )));
    }
    std::fs::create_dir_all(dest.join("sessions"))?;
    set_private(dest)?;
    let mut report = BackupReport::default();
    let copy = dest.join("control.db");
    report.bytes += copy_db(&control, &copy)?;
    let index = Connection::open(&copy)?;
    // The layers are not in the backup: a kiln started on it builds images anew.
    index.execute(
        "UPDATE images SET collected_at_ms = ?1 WHERE collected_at_ms IS NULL",
        [kiln_core::now_ms()],
    )?;
    let ids: Vec<String> = index
        .prepare("SELECT id FROM sessions ORDER BY created_at_ms")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    drop(index);
    for id in ids {
        let source = data_dir.join("sessions").join(&id).join("session.db");
        if !source.is_file() {
            report.missing += 1;
            continue;
        }
        let dir = dest.join("sessions").join(&id);
        std::fs::create_dir_all(&dir)?;
        let copy = dir.join("session.db");
        report.bytes += copy_db(&source, &copy)?;
        // Nor are its snapshots' layers: the session continues from a fresh checkout.
        Connection::open(&copy)?.execute("DELETE FROM snapshots", [])?;
        report.sessions += 1;
    }
    let key = data_dir.join("secret.key");
    if key.is_file() {
        let copy = dest.join("secret.key");
        std::fs::copy(&key, &copy)?;
        set_private(&copy)?;
        report.secret_key = true;
    }
    Ok(report)
}

/// Copies one database with the online backup API, all pages in one step (one read
/// transaction: a consistent copy, never restarted by a concurrent write). Returns its size.
fn copy_db(source: &Path, dest: &Path) -> Result<u64> {
    let from = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    from.busy_timeout(Duration::from_secs(30))?;
    let mut to = Connection::open(dest)?;
    {
        let backup = Backup::new(&from, &mut to)?;
        // -1: every page in this step. Busy or locked (a checkpoint at that instant) is retried
        // for a while; anything else is an error.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                _ if std::time::Instant::now() > deadline => {
                    return Err(Error::Invalid(format!(
                        "{} stayed locked for 30 s; try again",
                        source.display()
                    )));
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    drop(to);
    Ok(std::fs::metadata(dest)?.len())
}

/// Only the owner may read a backup: it holds every session's log and the sealed secrets.
fn set_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o700 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}
