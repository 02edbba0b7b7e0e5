//! Who may start sessions on a repo (see [`kiln_protocol::api::RepoAccess`]). Admins always
//! may; in `members` mode, only the repo's members may — to anyone else it does not exist.

use crate::error::{Error, Result};
use crate::store::Store;
use kiln_core::UserId;
use kiln_protocol::api::{AccessMode, RepoAccess, User, UserRef};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashSet;

use kiln_protocol::api::REPO_MEMBERS_MAX as MAX_MEMBERS;

fn mode_of(conn: &Connection, repo: &str) -> Result<AccessMode> {
    let mode: Option<String> = conn
        .query_row(
            "SELECT mode FROM repo_access WHERE repo = ?1",
            [repo],
            |row| row.get(0),
        )
        .optional()?;
    Ok(match mode.as_deref() {
        Some("members") => AccessMode::Members,
        _ => AccessMode::Everyone,
    })
}

fn access_of(conn: &Connection, repo: &str) -> Result<RepoAccess> {
    let exists: Option<i64> = conn
        .query_row("SELECT 1 FROM repos WHERE name = ?1", [repo], |row| {
            row.get(0)
        })
        .optional()?;
    if exists.is_none() {
        return Err(Error::NotFound(format!("repo {repo:?}")));
    }
    let mut statement = conn.prepare(
        "SELECT u.id, u.name FROM repo_members m JOIN users u ON u.id = m.user_id \
         WHERE m.repo = ?1 ORDER BY u.name",
    )?;
    let members = statement
        .query_map([repo], |row| {
            Ok(UserRef {
                id: crate::db::parse_col(row, 0, UserId::parse)?,
                name: row.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(RepoAccess {
        mode: mode_of(conn, repo)?,
        members,
    })
}

impl Store {
    /// A repo's access; `NotFound` for an unknown repo.
    pub async fn repo_access(&self, repo: &str) -> Result<RepoAccess> {
        let repo = repo.to_string();
        self.control(move |conn| access_of(conn, &repo)).await
    }

    /// Replaces a repo's access whole. `Invalid` names a member who is not a user.
    pub async fn set_repo_access(
        &self,
        repo: &str,
        mode: AccessMode,
        members: &[UserId],
    ) -> Result<RepoAccess> {
        if members.len() > MAX_MEMBERS {
            return Err(Error::Invalid(format!(
                "a repo has at most {MAX_MEMBERS} members"
            )));
        }
        let (repo, members) = (repo.to_string(), members.to_vec());
        self.control(move |conn| {
            let tx = conn.transaction()?;
            access_of(&tx, &repo)?;
            tx.execute("DELETE FROM repo_members WHERE repo = ?1", [&repo])?;
            for user in &members {
                let known: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM users WHERE id = ?1",
                        [user.as_str()],
                        |row| row.get(0),
                    )
                    .optional()?;
                if known.is_none() {
                    return Err(Error::Invalid(format!("members: no user {user}")));
                }
                tx.execute(
                    "INSERT OR IGNORE INTO repo_members (repo, user_id) VALUES (?1, ?2)",
                    params![repo, user.as_str()],
                )?;
            }
            match mode {
                AccessMode::Everyone => {
                    tx.execute("DELETE FROM repo_access WHERE repo = ?1", [&repo])?;
                }
                AccessMode::Members => {
                    tx.execute(
                        "INSERT INTO repo_access (repo, mode) VALUES (?1, 'members') \
                         ON CONFLICT (repo) DO UPDATE SET mode = excluded.mode",
                        [&repo],
                    )?;
                }
            }
            let access = access_of(&tx, &repo)?;
            tx.commit()?;
            Ok(access)
        })
        .await
    }

    /// The repos `user` may not see or start sessions on: members-only repos they are not a
    /// member of (none for admins).
    pub async fn repos_closed_to(&self, user: &User) -> Result<HashSet<String>> {
        if user.admin {
            return Ok(HashSet::new());
        }
        let user = user.id.clone();
        self.control(move |conn| {
            let mut statement = conn.prepare(
                "SELECT a.repo FROM repo_access a WHERE a.mode = 'members' AND NOT EXISTS \
                 (SELECT 1 FROM repo_members m WHERE m.repo = a.repo AND m.user_id = ?1)",
            )?;
            let closed = statement
                .query_map([user.as_str()], |row| row.get(0))?
                .collect::<rusqlite::Result<HashSet<String>>>()?;
            Ok(closed)
        })
        .await
    }

    /// Whether `user` may see `repo` and start sessions on it.
    pub async fn may_use_repo(&self, repo: &str, user: &User) -> Result<bool> {
        if user.admin {
            return Ok(true);
        }
        let (repo, user) = (repo.to_string(), user.id.clone());
        self.control(move |conn| {
            if mode_of(conn, &repo)? == AccessMode::Everyone {
                return Ok(true);
            }
            let member: Option<i64> = conn
                .query_row(
                    "SELECT 1 FROM repo_members WHERE repo = ?1 AND user_id = ?2",
                    params![repo, user.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(member.is_some())
        })
        .await
    }
}
