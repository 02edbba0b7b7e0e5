//! Users, API tokens and the control DB's small key/value table. A token is `kiln_` + 64 hex
//! digits (32 random bytes); only its SHA-256 is stored, so a copy of the data dir holds no
//! usable credential.

use crate::db::{is_lower_hex, now_ms, parse_col, secret_hash};
use crate::error::{Error, Result};
use crate::store::Store;
use kiln_core::{TokenId, UserId, random_hex};
use kiln_protocol::api::{
    TokenCreated, TokenInfo, TokenScope, User, check_display_name, check_email, check_user_name,
};
use rusqlite::{Connection, OptionalExtension, params};

const TOKEN_PREFIX: &str = "kiln_";

/// `last_used_ms` is refreshed at most this often, so authentication is a read, not a write, on
/// nearly every request.
const LAST_USED_GRANULARITY_MS: i64 = 60_000;

/// What `user_row` reads; queries name the users table `u`.
pub(crate) const USER_COLUMNS: &str =
    "u.id, u.name, u.admin, u.created_at_ms, u.display_name, u.email, u.deactivated_at_ms";

pub(crate) fn user_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: parse_col(row, 0, UserId::parse)?,
        name: row.get(1)?,
        admin: row.get(2)?,
        created_at_ms: row.get(3)?,
        display_name: row.get(4)?,
        email: row.get(5)?,
        deactivated: row.get::<_, Option<i64>>(6)?.is_some(),
    })
}

pub(crate) fn user_by_id(conn: &Connection, id: &UserId) -> Result<User> {
    conn.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1"),
        [id.as_str()],
        user_row,
    )
    .optional()?
    .ok_or_else(|| Error::NotFound(format!("user {id}")))
}

fn invalid(e: kiln_protocol::api::Invalid) -> Error {
    Error::Invalid(e.0)
}

/// A user's profile as given: `None` and `""` are the same (not set).
fn profile(display_name: Option<&str>, email: Option<&str>) -> Result<(String, Option<String>)> {
    let display_name = display_name.map(str::trim).unwrap_or_default();
    if !display_name.is_empty() {
        check_display_name(display_name).map_err(invalid)?;
    }
    let email = email.map(str::trim).filter(|e| !e.is_empty());
    if let Some(email) = email {
        check_email(email).map_err(invalid)?;
    }
    Ok((display_name.to_string(), email.map(str::to_string)))
}

impl Store {
    /// Creates a user. A name that is taken is a `Conflict`; a name that is not a handle, a
    /// bad display name or email `Invalid`.
    pub async fn create_user(&self, name: &str, admin: bool) -> Result<User> {
        self.create_person(name, admin, None, None).await
    }

    /// [`Store::create_user`] with the user's commit identity.
    pub async fn create_person(
        &self,
        name: &str,
        admin: bool,
        display_name: Option<&str>,
        email: Option<&str>,
    ) -> Result<User> {
        check_user_name(name).map_err(invalid)?;
        let (display_name, email) = profile(display_name, email)?;
        let user = User {
            id: UserId::random(),
            name: name.to_string(),
            admin,
            created_at_ms: now_ms(),
            display_name,
            email,
            deactivated: false,
        };
        self.control(move |conn| {
            conn.execute(
                "INSERT INTO users (id, name, admin, created_at_ms, display_name, email)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    user.id.as_str(),
                    user.name,
                    user.admin,
                    user.created_at_ms,
                    user.display_name,
                    user.email
                ],
            )
            .map_err(Error::from)
            .map_err(|e| match e {
                e if e.is_unique_violation() => {
                    Error::Conflict(format!("a user named {:?} exists", user.name))
                }
                e => e,
            })?;
            Ok(user)
        })
        .await
    }

    /// Changes a user's display name and email (`Some("")` clears one, `None` keeps it).
    pub async fn update_profile(
        &self,
        id: &UserId,
        display_name: Option<&str>,
        email: Option<&str>,
    ) -> Result<User> {
        let (new_name, new_email) = profile(display_name, email)?;
        let (id, set_name, set_email) = (id.clone(), display_name.is_some(), email.is_some());
        self.control(move |conn| {
            user_by_id(conn, &id)?;
            if set_name {
                conn.execute(
                    "UPDATE users SET display_name = ?2 WHERE id = ?1",
                    params![id.as_str(), new_name],
                )?;
            }
            if set_email {
                conn.execute(
                    "UPDATE users SET email = ?2 WHERE id = ?1",
                    params![id.as_str(), new_email],
                )?;
            }
            user_by_id(conn, &id)
        })
        .await
    }

    /// Deactivates a user: their tokens, browser sessions and sign-in codes are deleted at
    /// once, and the record stays (sessions and prompts name it). `Conflict` for the last
    /// active admin, who is all that stands between kiln and nobody administering it.
    pub async fn deactivate_user(&self, id: &UserId) -> Result<User> {
        let id = id.clone();
        self.control(move |conn| {
            let tx = conn.transaction()?;
            let user = user_by_id(&tx, &id)?;
            if user.deactivated {
                return Ok(user);
            }
            if user.admin {
                let admins: i64 = tx.query_row(
                    "SELECT count(*) FROM users WHERE admin = 1 AND deactivated_at_ms IS NULL",
                    [],
                    |row| row.get(0),
                )?;
                if admins <= 1 {
                    return Err(Error::Conflict(format!(
                        "{} is the last active admin; make another admin first",
                        user.name
                    )));
                }
            }
            tx.execute(
                "UPDATE users SET deactivated_at_ms = ?2 WHERE id = ?1",
                params![id.as_str(), now_ms()],
            )?;
            for table in ["tokens", "browser_sessions", "login_codes"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE user_id = ?1"),
                    [id.as_str()],
                )?;
            }
            let user = user_by_id(&tx, &id)?;
            tx.commit()?;
            Ok(user)
        })
        .await
    }

    pub async fn user(&self, id: &UserId) -> Result<User> {
        let id = id.clone();
        self.control(move |conn| user_by_id(conn, &id)).await
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        let name = name.to_string();
        self.control(move |conn| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.name = ?1");
            Ok(conn.query_row(&sql, [name], user_row).optional()?)
        })
        .await
    }

    /// Every user, oldest first.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        self.control(|conn| {
            let sql =
                format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.created_at_ms, u.rowid");
            let mut stmt = conn.prepare(&sql)?;
            let users = stmt
                .query_map([], user_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(users)
        })
        .await
    }

    /// Issues a token for `user` that does not expire; see [`Store::issue_token`].
    pub async fn create_token(&self, user: &UserId, name: &str) -> Result<TokenCreated> {
        self.issue_token(user, name, None, TokenScope::Full).await
    }

    /// Issues a token for `user`, working for `expires_in_days` (or for good). The token is
    /// in the result and nowhere else. `Conflict` for a deactivated user.
    pub async fn issue_token(
        &self,
        user: &UserId,
        name: &str,
        expires_in_days: Option<u32>,
        scope: TokenScope,
    ) -> Result<TokenCreated> {
        let created_at_ms = now_ms();
        let info = TokenInfo {
            id: TokenId::random(),
            user_id: user.clone(),
            name: name.to_string(),
            created_at_ms,
            expires_at_ms: expires_in_days.map(|days| created_at_ms + i64::from(days) * 86_400_000),
            last_used_ms: None,
            scope,
        };
        let token = format!("{TOKEN_PREFIX}{}", random_hex(32));
        let hash = secret_hash(&token);
        self.control(move |conn| {
            let user = user_by_id(conn, &info.user_id)?;
            if user.deactivated {
                return Err(Error::Conflict(format!(
                    "{} is deactivated and gets no tokens",
                    user.name
                )));
            }
            conn.execute(
                "INSERT INTO tokens (id, user_id, name, hash, created_at_ms, expires_at_ms, scope)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    info.id.as_str(),
                    info.user_id.as_str(),
                    info.name,
                    hash,
                    info.created_at_ms,
                    info.expires_at_ms,
                    scope_col(info.scope)
                ],
            )?;
            Ok(TokenCreated { info, token })
        })
        .await
    }

    /// The user a token belongs to, or `None` for anything that is not a live token.
    ///
    /// The lookup is by the token's SHA-256, never by the token: the time an index probe takes
    /// depends on the hash, which an attacker cannot steer towards a real token's hash, so the
    /// timing says nothing useful about stored tokens.
    pub async fn authenticate(&self, token: &str) -> Result<Option<User>> {
        Ok(self.authenticate_scoped(token).await?.map(|(user, _)| user))
    }

    /// The user a token acts as and what it may do, as [`Store::authenticate`].
    pub async fn authenticate_scoped(&self, token: &str) -> Result<Option<(User, TokenScope)>> {
        let well_formed = token
            .strip_prefix(TOKEN_PREFIX)
            .is_some_and(|hex| is_lower_hex(hex, 64));
        if !well_formed {
            return Ok(None);
        }
        let hash = secret_hash(token);
        self.control(move |conn| {
            let found = conn
                .query_row(
                    &format!(
                        "SELECT {USER_COLUMNS}, t.id, t.last_used_ms, t.scope
                         FROM tokens t JOIN users u ON u.id = t.user_id
                         WHERE t.hash = ?1 AND u.deactivated_at_ms IS NULL
                           AND (t.expires_at_ms IS NULL OR t.expires_at_ms > ?2)"
                    ),
                    params![hash, now_ms()],
                    |row| {
                        let user = user_row(row)?;
                        let token_id: String = row.get(7)?;
                        let last_used: Option<i64> = row.get(8)?;
                        let scope: String = row.get(9)?;
                        Ok((token_id, last_used, (user, scope_of(&scope))))
                    },
                )
                .optional()?;
            let Some((token_id, last_used, user)) = found else {
                return Ok(None);
            };
            let now = now_ms();
            if last_used.is_none_or(|t| now - t >= LAST_USED_GRANULARITY_MS) {
                conn.execute(
                    "UPDATE tokens SET last_used_ms = ?2 WHERE id = ?1",
                    params![token_id, now],
                )?;
            }
            Ok(Some(user))
        })
        .await
    }

    /// A user's tokens (never the tokens themselves), oldest first.
    pub async fn list_tokens(&self, user: &UserId) -> Result<Vec<TokenInfo>> {
        let user = user.clone();
        self.control(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, user_id, name, created_at_ms, expires_at_ms, last_used_ms, scope
                 FROM tokens WHERE user_id = ?1 ORDER BY created_at_ms, rowid",
            )?;
            let rows = stmt.query_map([user.as_str()], |row| {
                Ok(TokenInfo {
                    id: parse_col(row, 0, TokenId::parse)?,
                    user_id: parse_col(row, 1, UserId::parse)?,
                    name: row.get(2)?,
                    created_at_ms: row.get(3)?,
                    expires_at_ms: row.get(4)?,
                    last_used_ms: row.get(5)?,
                    scope: scope_of(&row.get::<_, String>(6)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Deletes a token of `user`; it stops working at once. `NotFound` when `user` has no such
    /// token (including when it belongs to someone else); `Conflict` when it is the last token
    /// any admin has, which would leave nobody able to administer kiln through the API.
    pub async fn revoke_token(&self, user: &UserId, id: &TokenId) -> Result<()> {
        let (user, id) = (user.clone(), id.clone());
        self.control(move |conn| {
            let tx = conn.transaction()?;
            let admin: Option<bool> = tx
                .query_row(
                    "SELECT u.admin FROM tokens t JOIN users u ON u.id = t.user_id
                     WHERE t.id = ?1 AND t.user_id = ?2",
                    params![id.as_str(), user.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            let Some(admin) = admin else {
                return Err(Error::NotFound(format!("token {id} of user {user}")));
            };
            if admin {
                let admin_tokens: i64 = tx.query_row(
                    "SELECT count(*) FROM tokens t JOIN users u ON u.id = t.user_id
                     WHERE u.admin = 1 AND u.deactivated_at_ms IS NULL
                       AND (t.expires_at_ms IS NULL OR t.expires_at_ms > ?1)",
                    [now_ms()],
                    |row| row.get(0),
                )?;
                if admin_tokens <= 1 {
                    return Err(Error::Conflict(format!(
                        "token {id} is the last token of any admin; create another admin token \
                         first (POST /api/tokens), or recover later with `kiln admin token` on \
                         the server"
                    )));
                }
            }
            tx.execute("DELETE FROM tokens WHERE id = ?1", [id.as_str()])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// A value of the control DB's key/value table (instance-wide settings, bootstrap flags).
    pub async fn meta_get(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_string();
        self.control(move |conn| {
            Ok(conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                    row.get(0)
                })
                .optional()?)
        })
        .await
    }

    pub async fn meta_set(&self, key: &str, value: &str) -> Result<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.control(move |conn| {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
        .await
    }
}

/// A token scope as `tokens.scope` stores it.
fn scope_col(scope: TokenScope) -> &'static str {
    match scope {
        TokenScope::Full => "full",
        TokenScope::ReadOnly => "read",
    }
}

fn scope_of(column: &str) -> TokenScope {
    // The column's CHECK allows only these two; anything else would fail closed.
    if column == "full" {
        TokenScope::Full
    } else {
        TokenScope::ReadOnly
    }
}
