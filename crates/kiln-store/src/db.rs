//! How every database of the store is opened, and the small helpers all modules share. One
//! place sets the pragmas, so a control DB and a session DB can never disagree about durability.
//!
//! Durability: WAL with `synchronous=NORMAL`. A commit is appended to the WAL before it returns,
//! so a process crash or `kill -9` loses nothing that was committed; what is not promised is a
//! power cut or kernel panic, which can lose the last transactions (the WAL is fsynced only at
//! checkpoints). That is the trade we make for commits that cost no fsync on the hot path.

use crate::error::{Error, Result};
use crate::schema::Migration;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

/// How long a statement waits for a lock held by another connection before failing. Within one
/// process each DB has one connection behind a mutex, so this only matters for outside readers
/// (a backup, `sqlite3` in a shell) and checkpoints.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache per connection, in KiB. Hundreds of session DBs can be open at once, and their
/// access pattern is append + read the tail, which a small cache serves well.
const CACHE_KIB: i64 = 512;

/// After a checkpoint, a WAL larger than this is truncated, so an idle session does not keep a
/// big WAL file around.
const WAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

/// Opens (or, with `create`, creates) a database, sets the pragmas and brings its schema up to
/// date with `migrations`.
pub(crate) fn open(path: &Path, create: bool, migrations: &[Migration]) -> Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let mut conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Invalid(format!(
            "{} cannot use WAL (journal_mode is {mode}); put the data dir on a local filesystem",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    migrate(&mut conn, path, migrations)?;
    Ok(conn)
}

/// Applies the migrations this database has not seen yet, all in one transaction with the
/// `user_version` bump, so a crash leaves the version it started from.
fn migrate(conn: &mut Connection, path: &Path, migrations: &[Migration]) -> Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > migrations.len() {
        return Err(Error::Invalid(format!(
            "{} has schema version {version} but this kiln knows only {}; run a newer kiln",
            path.display(),
            migrations.len()
        )));
    }
    if version == migrations.len() {
        return Ok(());
    }
    // One transaction for every pending step: a new session's database is made on the way to
    // its first model request, and a crash part-way leaves the version it started from.
    let tx = conn.transaction()?;
    for step in &migrations[version..] {
        tx.execute_batch(step.sql)?;
        tracing::debug!(db = %path.display(), step = step.name, "migrated");
    }
    tx.pragma_update(None, "user_version", migrations.len())?;
    tx.commit()?;
    Ok(())
}

pub(crate) use kiln_core::now_ms;

/// SHA-256 of a secret (API token, share code). Secrets are 128+ random bits, so a plain hash
/// (no salt, no slow KDF) is enough: nobody can brute-force them, and an equality lookup on the
/// hash is what makes authentication one index probe.
pub(crate) fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Whether `s` is exactly `len` lowercase hex digits (the shape of every secret we issue).
pub(crate) fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Reads a column that holds one of our own enum names; a value we did not write is corruption.
pub(crate) fn parse_col<T>(
    row: &rusqlite::Row<'_>,
    index: usize,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("unexpected value {text:?}").into(),
        )
    })
}

/// Reads a column that holds JSON we wrote (a list, a small struct), read and written whole.
pub(crate) fn json_col<T: serde::de::DeserializeOwned>(
    row: &rusqlite::Row<'_>,
    index: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{CONTROL, SESSION};

    #[test]
    fn pragmas_and_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        assert!(
            open(&path, false, CONTROL).is_err(),
            "opening without create must not create"
        );
        let conn = open(&path, true, CONTROL).unwrap();
        let get = |pragma: &str| -> i64 {
            conn.query_row(&format!("PRAGMA {pragma}"), [], |row| row.get(0))
                .unwrap()
        };
        assert_eq!(get("synchronous"), 1, "NORMAL");
        assert_eq!(get("foreign_keys"), 1);
        assert_eq!(get("cache_size"), -CACHE_KIB);
        assert_eq!(get("user_version"), CONTROL.len() as i64);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        // A database from a newer kiln is refused, not half-understood.
        conn.pragma_update(None, "user_version", CONTROL.len() + 1)
            .unwrap();
        drop(conn);
        assert!(matches!(
            open(&path, false, CONTROL),
            Err(Error::Invalid(_))
        ));
        // Reopening an up-to-date database applies nothing.
        let session = dir.path().join("s.db");
        drop(open(&session, true, SESSION).unwrap());
        open(&session, false, SESSION).unwrap();
    }

    #[test]
    fn secrets() {
        assert!(is_lower_hex("0123456789abcdef", 16));
        assert!(!is_lower_hex("0123456789ABCDEF", 16));
        assert!(!is_lower_hex("0123", 16));
        assert_eq!(secret_hash("a").len(), 32);
        assert_ne!(secret_hash("a"), secret_hash("b"));
    }
}
