//! First start: a local admin user and its token, written to `DATA/admin.token` (mode 0600) for
//! scripts on this machine. A person at the terminal gets a single-use sign-in link instead of
//! the token, which never goes to stderr (service logs keep stderr).
//!
//! Recovery (`kiln admin token`): whoever can read the data dir on the server's machine can mint
//! a new admin token, even while `kiln up` runs (SQLite in WAL mode takes a second writer), so a
//! revoked or lost last admin token is never the end.

use kiln_protocol::api::User;
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

/// A single-use sign-in link for the first admin at `base_url`, for `kiln up` to show on a
/// terminal. `None` when there is no admin.
pub async fn admin_login_link(
    store: &Store,
    base_url: &str,
) -> Result<Option<String>, crate::Error> {
    let Some(admin) = store.list_users().await?.into_iter().find(|u| u.admin) else {
        return Ok(None);
    };
    let code = store.create_login_code(&admin.id).await?;
    Ok(Some(format!(
        "{}/login?code={}",
        base_url.trim_end_matches('/'),
        code.code.expose()
    )))
}

/// Mints a new admin token and writes it to `DATA/admin.token`: for `user` (an admin, or a new
/// admin of that name), else for the first admin, else for a new admin user `admin`.
pub async fn recover_admin_token(
    store: &Store,
    data_dir: &Path,
    user: Option<&str>,
) -> Result<(User, String), crate::Error> {
    let wanted = user.unwrap_or("admin");
    let existing = match user {
        Some(name) => store.user_by_name(name).await?,
        None => match store.list_users().await?.into_iter().find(|u| u.admin) {
            Some(admin) => Some(admin),
            None => store.user_by_name(wanted).await?,
        },
    };
    let admin = match existing {
        Some(user) if user.admin => user,
        Some(user) => {
            return Err(crate::Error::Conflict(format!(
                "user {:?} exists and is not an admin; name another user with --user",
                user.name
            )));
        }
        None => store.create_user(wanted, true).await?,
    };
    let created = store
        .create_token(&admin.id, "recovery (kiln admin token)")
        .await?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    write_private(&path, &created.token)
        .map_err(|e| crate::Error::Internal(format!("writing {}: {e}", path.display())))?;
    Ok((admin, created.token))
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
