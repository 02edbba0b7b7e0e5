//! First start: a local admin user and its token, written to `DATA/admin.token` (mode 0600) for
//! scripts on this machine and printed as a login link (the Jupyter convention).

use kiln_store::Store;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Creates the admin on first start. Returns the admin token when it is known: just created,
/// or still in `admin.token`.
pub async fn bootstrap(store: &Store, data_dir: &Path) -> Result<Option<String>, crate::Error> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if store.list_users().await?.is_empty() {
        let admin = store.create_user("admin", true).await?;
        let created = store.create_token(&admin.id, "admin.token").await?;
        write_private(&path, &created.token)
            .map_err(|e| crate::Error::Internal(format!("writing {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), "created the admin user; its token is in this file");
        return Ok(Some(created.token));
    }
    match std::fs::read_to_string(&path) {
        Ok(token) if store.authenticate(token.trim()).await?.is_some() => {
            Ok(Some(token.trim().to_string()))
        }
        _ => Ok(None),
    }
}

/// Writes a file only its owner can read, replacing any old one atomically.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
