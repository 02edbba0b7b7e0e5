//! How a browser signs in without a long-lived token in a URL: a single-use login code, valid
//! for minutes, is exchanged once for a browser session whose secret lives only in an HttpOnly
//! cookie. Both are random and stored as their SHA-256, like API tokens, so a copy of the data
//! dir holds no usable credential; expired rows are deleted whenever new ones are made.

use crate::accounts::{USER_COLUMNS, user_by_id, user_row};
use crate::db::{is_lower_hex, now_ms, secret_hash};
use crate::error::Result;
use crate::store::Store;
use kiln_core::{Secret, UserId, random_hex};
use kiln_protocol::api::User;
use rusqlite::{Connection, OptionalExtension, params};
use std::time::Duration;

/// How long a login code can be exchanged: long enough to paste a link into a browser.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(10 * 60);

/// How long a browser session lasts; then the browser needs a new sign-in link.
pub const BROWSER_SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Prefix of a browser session secret, so it is recognisable (and never taken for an API token).
const SESSION_PREFIX: &str = "kiln_s_";

/// A freshly minted login code: shown once, exchanged once.
#[derive(Debug, Clone)]
pub struct LoginCode {
    pub code: Secret<String>,
    pub expires_at_ms: i64,
}

/// A browser session made from a login code; `secret` goes into the cookie and nowhere else.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    pub secret: Secret<String>,
    pub user: User,
    pub expires_at_ms: i64,
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// Deletes codes and sessions that can no longer be used.
fn delete_expired(conn: &Connection, now: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM login_codes WHERE expires_at_ms <= ?1", [now])?;
    conn.execute(
        "DELETE FROM browser_sessions WHERE expires_at_ms <= ?1",
        [now],
    )?;
    Ok(())
}

impl Store {
    /// Mints a single-use login code for `user`, valid for [`LOGIN_CODE_TTL`].
    pub async fn create_login_code(&self, user: &UserId) -> Result<LoginCode> {
        let user = user.clone();
        let code = random_hex(16);
        let hash = secret_hash(&code);
        let now = now_ms();
        let expires_at_ms = now.saturating_add(ttl_ms(LOGIN_CODE_TTL));
        self.control(move |conn| {
            user_by_id(conn, &user)?;
            delete_expired(conn, now)?;
            conn.execute(
                "INSERT INTO login_codes (code_hash, user_id, created_at_ms, expires_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![hash, user.as_str(), now, expires_at_ms],
            )?;
            Ok(LoginCode {
                code: Secret::new(code),
                expires_at_ms,
            })
        })
        .await
    }

    /// Exchanges a login code for a new browser session, deleting the code in the same
    /// transaction so it works once. `None` for a code that is unknown, used or expired.
    pub async fn redeem_login_code(&self, code: &str) -> Result<Option<BrowserSession>> {
        if !is_lower_hex(code, 32) {
            return Ok(None);
        }
        let hash = secret_hash(code);
        let secret = format!("{SESSION_PREFIX}{}", random_hex(32));
        let session_hash = secret_hash(&secret);
        let now = now_ms();
        let expires_at_ms = now.saturating_add(ttl_ms(BROWSER_SESSION_TTL));
        self.control(move |conn| {
            let tx = conn.transaction()?;
            let user_id: Option<String> = tx
                .query_row(
                    "DELETE FROM login_codes WHERE code_hash = ?1 AND expires_at_ms > ?2
                     RETURNING user_id",
                    params![hash, now],
                    |row| row.get(0),
                )
                .optional()?;
            let Some(user_id) = user_id else {
                return Ok(None);
            };
            let user = tx.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1"),
                [&user_id],
                user_row,
            )?;
            delete_expired(&tx, now)?;
            tx.execute(
                "INSERT INTO browser_sessions (hash, user_id, created_at_ms, expires_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![session_hash, user_id, now, expires_at_ms],
            )?;
            tx.commit()?;
            Ok(Some(BrowserSession {
                secret: Secret::new(secret),
                user,
                expires_at_ms,
            }))
        })
        .await
    }

    /// The user of a live browser session, or `None` (unknown, ended or expired).
    pub async fn authenticate_browser(&self, secret: &str) -> Result<Option<User>> {
        let well_formed = secret
            .strip_prefix(SESSION_PREFIX)
            .is_some_and(|hex| is_lower_hex(hex, 64));
        if !well_formed {
            return Ok(None);
        }
        let hash = secret_hash(secret);
        self.control(move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {USER_COLUMNS}
                         FROM browser_sessions b JOIN users u ON u.id = b.user_id
                         WHERE b.hash = ?1 AND b.expires_at_ms > ?2
                           AND u.deactivated_at_ms IS NULL"
                    ),
                    params![hash, now_ms()],
                    user_row,
                )
                .optional()?)
        })
        .await
    }

    /// Ends a browser session (logging out); nothing happens for an unknown secret.
    pub async fn end_browser_session(&self, secret: &str) -> Result<()> {
        let hash = secret_hash(secret);
        self.control(move |conn| {
            conn.execute("DELETE FROM browser_sessions WHERE hash = ?1", [hash])?;
            Ok(())
        })
        .await
    }
}
