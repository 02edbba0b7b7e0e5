//! Repo secrets, sealed. The store keeps what the engine's vault made of each value — the
//! ciphertext and a keyed fingerprint — and never sees a value in the clear: encryption happens
//! above it. A repo's secrets go when the repo does (`ON DELETE CASCADE`).

use crate::db::{now_ms, parse_col};
use crate::error::{Error, Result};
use crate::store::Store;
use kiln_core::UserId;
use kiln_protocol::api::{ImageSecret, RepoSecret, SECRETS_PER_REPO, UserRef};
use rusqlite::{Connection, OptionalExtension, params};

/// A secret as the engine stores and reads it: sealed. `Debug` leaves the ciphertext out.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub name: String,
    pub ciphertext: Vec<u8>,
    /// Session sandboxes get it too.
    pub agent: bool,
    pub fingerprint: String,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecret")
            .field("name", &self.name)
            .field("agent", &self.agent)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn require_repo(conn: &Connection, repo: &str) -> Result<()> {
    conn.query_row("SELECT 1 FROM repos WHERE name = ?1", [repo], |_| Ok(()))
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("repo {repo:?}")))
}

const LISTED: &str = "SELECT s.name, s.agent, s.updated_at_ms, u.id, u.name
     FROM repo_secrets s JOIN users u ON u.id = s.updated_by";

fn listed_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RepoSecret> {
    Ok(RepoSecret {
        name: row.get(0)?,
        agent: row.get(1)?,
        updated_at_ms: row.get(2)?,
        updated_by: UserRef {
            id: parse_col(row, 3, UserId::parse)?,
            name: row.get(4)?,
        },
    })
}

impl Store {
    /// Sets (adds or replaces) a secret of `repo` as `by`. `NotFound` for an unknown repo,
    /// `Invalid` when the repo already holds [`SECRETS_PER_REPO`] others.
    pub async fn set_secret(
        &self,
        repo: &str,
        secret: SealedSecret,
        by: &UserId,
    ) -> Result<RepoSecret> {
        let (repo, by) = (repo.to_string(), by.clone());
        self.control(move |conn| {
            let tx = conn.transaction()?;
            require_repo(&tx, &repo)?;
            let others: i64 = tx.query_row(
                "SELECT count(*) FROM repo_secrets WHERE repo = ?1 AND name != ?2",
                params![repo, secret.name],
                |row| row.get(0),
            )?;
            if others as usize >= SECRETS_PER_REPO {
                return Err(Error::Invalid(format!(
                    "repo {repo:?} already has {SECRETS_PER_REPO} secrets; remove one first"
                )));
            }
            tx.execute(
                "INSERT INTO repo_secrets (repo, name, ciphertext, agent, fingerprint,
                                           updated_at_ms, updated_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (repo, name) DO UPDATE SET ciphertext = excluded.ciphertext,
                     agent = excluded.agent, fingerprint = excluded.fingerprint,
                     updated_at_ms = excluded.updated_at_ms, updated_by = excluded.updated_by",
                params![
                    repo,
                    secret.name,
                    secret.ciphertext,
                    secret.agent,
                    secret.fingerprint,
                    now_ms(),
                    by.as_str()
                ],
            )?;
            let listed = tx.query_row(
                &format!("{LISTED} WHERE s.repo = ?1 AND s.name = ?2"),
                params![repo, secret.name],
                listed_row,
            )?;
            tx.commit()?;
            Ok(listed)
        })
        .await
    }

    /// The repo's secrets by name, without values. `NotFound` for an unknown repo.
    pub async fn secrets(&self, repo: &str) -> Result<Vec<RepoSecret>> {
        let repo = repo.to_string();
        self.control(move |conn| {
            require_repo(conn, &repo)?;
            let mut stmt = conn.prepare(&format!("{LISTED} WHERE s.repo = ?1 ORDER BY s.name"))?;
            let secrets = stmt
                .query_map([&repo], listed_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(secrets)
        })
        .await
    }

    /// The repo's secrets as sealed, by name (none for an unknown repo).
    pub async fn sealed_secrets(&self, repo: &str) -> Result<Vec<SealedSecret>> {
        let repo = repo.to_string();
        self.control(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT name, ciphertext, agent, fingerprint FROM repo_secrets
                 WHERE repo = ?1 ORDER BY name",
            )?;
            let secrets = stmt
                .query_map([&repo], |row| {
                    Ok(SealedSecret {
                        name: row.get(0)?,
                        ciphertext: row.get(1)?,
                        agent: row.get(2)?,
                        fingerprint: row.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(secrets)
        })
        .await
    }

    /// What an image built now would record of the repo's secrets: names and fingerprints.
    pub async fn secret_fingerprints(&self, repo: &str) -> Result<Vec<ImageSecret>> {
        Ok(self
            .sealed_secrets(repo)
            .await?
            .into_iter()
            .map(|s| ImageSecret {
                name: s.name,
                fingerprint: s.fingerprint,
            })
            .collect())
    }

    /// Removes a secret. `NotFound` when the repo has no such secret (or no such repo).
    pub async fn delete_secret(&self, repo: &str, name: &str) -> Result<()> {
        let (repo, name) = (repo.to_string(), name.to_string());
        self.control(move |conn| {
            require_repo(conn, &repo)?;
            let n = conn.execute(
                "DELETE FROM repo_secrets WHERE repo = ?1 AND name = ?2",
                params![repo, name],
            )?;
            if n == 0 {
                return Err(Error::NotFound(format!("secret {name:?} of repo {repo:?}")));
            }
            Ok(())
        })
        .await
    }
}
