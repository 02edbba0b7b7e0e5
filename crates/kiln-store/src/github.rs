//! GitHub links and sign-in states. A link's tokens arrive sealed by the engine's vault: the
//! store never sees a token in the clear. A sign-in `state` is kept as its hash, works once
//! (deleted when taken) and only for [`OAUTH_STATE_TTL`].

use crate::accounts::user_by_id;
use crate::db::{now_ms, parse_col, secret_hash};
use crate::error::{Error, Result};
use crate::store::Store;
use kiln_core::UserId;
use rusqlite::{OptionalExtension, params};
use std::time::Duration;

/// How long a GitHub sign-in may take between leaving kiln and coming back.
pub const OAUTH_STATE_TTL: Duration = Duration::from_secs(10 * 60);

/// A user's GitHub account as stored: tokens sealed. `Debug` leaves the ciphertexts out.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedGitHubLink {
    pub login: String,
    pub github_id: u64,
    pub access_ciphertext: Vec<u8>,
    pub refresh_ciphertext: Option<Vec<u8>>,
    pub expires_at_ms: Option<i64>,
    pub refresh_expires_at_ms: Option<i64>,
}

impl std::fmt::Debug for SealedGitHubLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedGitHubLink")
            .field("login", &self.login)
            .field("github_id", &self.github_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Links `user` to a GitHub account, or replaces the tokens of their link. `Conflict` when
    /// the GitHub login is linked to another kiln user.
    pub async fn set_github_link(&self, user: &UserId, link: SealedGitHubLink) -> Result<()> {
        let user = user.clone();
        self.control(move |conn| {
            let tx = conn.transaction()?;
            user_by_id(&tx, &user)?;
            let other: Option<String> = tx
                .query_row(
                    "SELECT user_id FROM github_links WHERE login = ?1 AND user_id != ?2",
                    params![link.login, user.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            if other.is_some() {
                return Err(Error::Conflict(format!(
                    "GitHub account {} is linked to another kiln user; unlink it there first",
                    link.login
                )));
            }
            tx.execute(
                "INSERT INTO github_links (user_id, login, github_id, access_ciphertext,
                     refresh_ciphertext, expires_at_ms, refresh_expires_at_ms, linked_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (user_id) DO UPDATE SET login = excluded.login,
                     github_id = excluded.github_id,
                     access_ciphertext = excluded.access_ciphertext,
                     refresh_ciphertext = excluded.refresh_ciphertext,
                     expires_at_ms = excluded.expires_at_ms,
                     refresh_expires_at_ms = excluded.refresh_expires_at_ms",
                params![
                    user.as_str(),
                    link.login,
                    link.github_id as i64,
                    link.access_ciphertext,
                    link.refresh_ciphertext,
                    link.expires_at_ms,
                    link.refresh_expires_at_ms,
                    now_ms()
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The GitHub link of `user`, if any.
    pub async fn github_link(&self, user: &UserId) -> Result<Option<SealedGitHubLink>> {
        let user = user.clone();
        self.control(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT login, github_id, access_ciphertext, refresh_ciphertext,
                            expires_at_ms, refresh_expires_at_ms
                     FROM github_links WHERE user_id = ?1",
                    [user.as_str()],
                    |row| {
                        Ok(SealedGitHubLink {
                            login: row.get(0)?,
                            github_id: row.get::<_, i64>(1)? as u64,
                            access_ciphertext: row.get(2)?,
                            refresh_ciphertext: row.get(3)?,
                            expires_at_ms: row.get(4)?,
                            refresh_expires_at_ms: row.get(5)?,
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    /// The kiln user linked to a GitHub login (case-insensitive, as GitHub logins are).
    pub async fn user_by_github_login(&self, login: &str) -> Result<Option<UserId>> {
        let login = login.to_string();
        self.control(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT user_id FROM github_links WHERE login = ?1",
                    [login],
                    |row| parse_col(row, 0, UserId::parse),
                )
                .optional()?)
        })
        .await
    }

    /// Removes the link of `user`; false when there was none.
    pub async fn delete_github_link(&self, user: &UserId) -> Result<bool> {
        let user = user.clone();
        self.control(move |conn| {
            Ok(conn.execute(
                "DELETE FROM github_links WHERE user_id = ?1",
                [user.as_str()],
            )? > 0)
        })
        .await
    }

    /// Records a sign-in `state` (for `linking` when a signed-in user links their account),
    /// deleting expired ones.
    pub async fn add_oauth_state(&self, state: &str, linking: Option<&UserId>) -> Result<()> {
        let hash = secret_hash(state);
        let linking = linking.map(|u| u.as_str().to_string());
        let now = now_ms();
        let expires = now + OAUTH_STATE_TTL.as_millis() as i64;
        self.control(move |conn| {
            conn.execute("DELETE FROM oauth_states WHERE expires_at_ms <= ?1", [now])?;
            conn.execute(
                "INSERT INTO oauth_states (state_hash, user_id, created_at_ms, expires_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![hash, linking, now, expires],
            )?;
            Ok(())
        })
        .await
    }

    /// Takes a sign-in `state` once: `None` when it is unknown, used or expired; else
    /// `Some(the linking user, if any)`.
    pub async fn take_oauth_state(&self, state: &str) -> Result<Option<Option<UserId>>> {
        let hash = secret_hash(state);
        let now = now_ms();
        self.control(move |conn| {
            let row: Option<Option<String>> = conn
                .query_row(
                    "DELETE FROM oauth_states WHERE state_hash = ?1 AND expires_at_ms > ?2
                     RETURNING user_id",
                    params![hash, now],
                    |row| row.get(0),
                )
                .optional()?;
            match row {
                None => Ok(None),
                Some(None) => Ok(Some(None)),
                Some(Some(id)) => Ok(Some(Some(UserId::parse(&id).ok_or_else(|| {
                    Error::Invalid(format!("a stored user id {id:?} is malformed"))
                })?))),
            }
        })
        .await
    }
}

/// How long a webhook delivery id is remembered (GitHub redelivers on request, within days).
pub const DELIVERY_MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);

impl Store {
    /// Records a webhook delivery; false when it was recorded before (a redelivery), which the
    /// caller then ignores. Deliveries older than [`DELIVERY_MEMORY`] are forgotten.
    pub async fn first_delivery(&self, delivery: &str, event: &str) -> Result<bool> {
        let (delivery, event) = (delivery.to_string(), event.to_string());
        let now = now_ms();
        self.control(move |conn| {
            conn.execute(
                "DELETE FROM forge_deliveries WHERE at_ms < ?1",
                [now - DELIVERY_MEMORY.as_millis() as i64],
            )?;
            Ok(conn.execute(
                "INSERT INTO forge_deliveries (delivery, event, at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (delivery) DO NOTHING",
                params![delivery, event, now],
            )? == 1)
        })
        .await
    }

    /// Forgets a delivery recorded by [`Store::first_delivery`] whose handling failed, so that
    /// its redelivery is handled.
    pub async fn forget_delivery(&self, delivery: &str) -> Result<()> {
        let delivery = delivery.to_string();
        self.control(move |conn| {
            conn.execute(
                "DELETE FROM forge_deliveries WHERE delivery = ?1",
                [delivery],
            )?;
            Ok(())
        })
        .await
    }

    /// Remembers that change request `number` of `forge_repo` (`owner/name`) is `session`'s,
    /// with its page and state (`open`, `closed` or `merged`) as last heard.
    pub async fn set_forge_change(
        &self,
        forge_repo: &str,
        number: u64,
        session: &kiln_core::SessionId,
        url: &str,
        state: &str,
    ) -> Result<()> {
        let (forge_repo, session) = (forge_repo.to_string(), session.as_str().to_string());
        let (url, state) = (url.to_string(), state.to_string());
        self.control(move |conn| {
            conn.execute(
                "INSERT INTO forge_changes (forge_repo, number, session_id, url, state, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (forge_repo, number) DO UPDATE SET session_id = excluded.session_id,
                     url = excluded.url, state = excluded.state,
                     updated_at_ms = excluded.updated_at_ms",
                params![forge_repo, number as i64, session, url, state, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    /// The session whose change request `number` of `forge_repo` is, if kiln knows it.
    pub async fn forge_change_session(
        &self,
        forge_repo: &str,
        number: u64,
    ) -> Result<Option<kiln_core::SessionId>> {
        let forge_repo = forge_repo.to_string();
        self.control(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT session_id FROM forge_changes WHERE forge_repo = ?1 AND number = ?2",
                    params![forge_repo, number as i64],
                    |row| parse_col(row, 0, kiln_core::SessionId::parse),
                )
                .optional()?)
        })
        .await
    }
}
