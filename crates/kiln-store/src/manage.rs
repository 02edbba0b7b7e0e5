//! Taking things apart again: listing sessions beyond one's own (archived ones, an admin's view
//! of all), share links that expire, are single-use and can be revoked, changing and removing
//! participants, archiving and deleting sessions, and deleting repos. Each change is one
//! transaction, and the rules that keep a session administrable (it always has an owner) are
//! checked inside it.

use crate::db::{now_ms, parse_col, secret_hash};
use crate::error::{Error, Result};
use crate::sessions::{
    SESSION_COLUMNS, SESSION_FROM, SESSION_WIDTH, SessionRow, require_session, session_row,
    upsert_role,
};
use crate::store::Store;
use kiln_core::{Role, SessionId, ShareId, UserId, random_hex};
use kiln_protocol::api::{SHARE_TTL_HOURS, ShareCreated, ShareInfo, UserRef};
use rusqlite::{Connection, OptionalExtension, params};

/// Which sessions a listing shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// Every session, not only the caller's (admins).
    pub all: bool,
    /// Archived sessions too.
    pub archived: bool,
}

/// How a share link works beyond its role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShareOptions {
    /// Hours it works for; `None`: [`SHARE_TTL_HOURS`].
    pub expires_in_hours: Option<u32>,
    /// It works once.
    pub single_use: bool,
}

fn owners(conn: &Connection, session: &SessionId) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM members WHERE session_id = ?1 AND role = 'owner'",
        [session.as_str()],
        |row| row.get(0),
    )?)
}

fn member_ref(conn: &Connection, session: &SessionId, user: &UserId) -> Result<(UserRef, Role)> {
    conn.query_row(
        "SELECT u.id, u.name, m.role FROM members m JOIN users u ON u.id = m.user_id
         WHERE m.session_id = ?1 AND m.user_id = ?2",
        [session.as_str(), user.as_str()],
        |row| {
            Ok((
                UserRef {
                    id: parse_col(row, 0, UserId::parse)?,
                    name: row.get(1)?,
                },
                parse_col(row, 2, Role::parse)?,
            ))
        },
    )
    .optional()?
    .ok_or_else(|| Error::NotFound(format!("participant {user} of session {session}")))
}

impl Store {
    /// One page of sessions, newest first: `user`'s (with their role), or with
    /// `filter.all` every session (the role `None` where `user` is not a member). At most
    /// `limit`, listed after the session `after`; archived ones only with `filter.archived`.
    /// `Invalid` when `after` is not a session the listing could show, so a cursor cannot
    /// probe others' sessions.
    pub async fn sessions_page(
        &self,
        user: &UserId,
        filter: SessionFilter,
        after: Option<&SessionId>,
        limit: usize,
    ) -> Result<Vec<(SessionRow, Option<Role>)>> {
        let (user, after) = (user.clone(), after.cloned());
        self.control(move |conn| {
            // ?4: every session; ?5: archived ones too.
            let visible = "(?4 OR m.role IS NOT NULL) AND (?5 OR s.archived_at_ms IS NULL)";
            if let Some(after) = &after {
                conn.query_row(
                    &format!(
                        "SELECT ?3 FROM sessions s
                         LEFT JOIN members m ON m.session_id = s.id AND m.user_id = ?1
                         WHERE s.id = ?2 AND {visible}"
                    ),
                    params![
                        user.as_str(),
                        after.as_str(),
                        1,
                        filter.all,
                        filter.archived
                    ],
                    |_| Ok(()),
                )
                .optional()?
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "`after` names no session of this listing ({after}); start without it"
                    ))
                })?;
            }
            let sql = format!(
                "SELECT {SESSION_COLUMNS}, m.role {SESSION_FROM}
                 LEFT JOIN members m ON m.session_id = s.id AND m.user_id = ?1
                 WHERE {visible}
                   AND (?2 IS NULL
                        OR (s.created_at_ms, s.rowid) <
                           (SELECT created_at_ms, rowid FROM sessions WHERE id = ?2))
                 ORDER BY s.created_at_ms DESC, s.rowid DESC
                 LIMIT ?3"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt.query_map(
                params![
                    user.as_str(),
                    after.as_ref().map(SessionId::as_str),
                    limit,
                    filter.all,
                    filter.archived
                ],
                |row| {
                    let role: Option<String> = row.get(SESSION_WIDTH)?;
                    let role = match role {
                        Some(_) => Some(parse_col(row, SESSION_WIDTH, Role::parse)?),
                        None => None,
                    };
                    Ok((session_row(row)?, role))
                },
            )?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Makes a share link granting `role` with the default expiry; see
    /// [`Store::create_share_with`].
    pub async fn create_share(
        &self,
        session: &SessionId,
        role: Role,
        by: &UserId,
    ) -> Result<ShareCreated> {
        self.create_share_with(session, role, by, ShareOptions::default())
            .await
    }

    /// Makes a share link granting `role`, working for `options.expires_in_hours` (default
    /// 7 days), once when `single_use`. Whether `by` may share is the caller's decision
    /// (`Role::can_share`). `Invalid` for a role no link may grant (`Role::can_be_shared`).
    pub async fn create_share_with(
        &self,
        session: &SessionId,
        role: Role,
        by: &UserId,
        options: ShareOptions,
    ) -> Result<ShareCreated> {
        if !role.can_be_shared() {
            return Err(Error::Invalid(format!(
                "a share link grants viewer or collaborator, not {role}"
            )));
        }
        let (session, by) = (session.clone(), by.clone());
        let id = ShareId::random();
        let code = random_hex(16);
        let hash = secret_hash(&code);
        let now = now_ms();
        let hours = options.expires_in_hours.unwrap_or(SHARE_TTL_HOURS);
        let expires_at_ms = now + i64::from(hours) * 3_600_000;
        self.control(move |conn| {
            require_session(conn, &session)?;
            conn.execute(
                "INSERT INTO shares (id, session_id, role, code_hash, created_by, created_at_ms,
                                     expires_at_ms, single_use)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    id.as_str(),
                    session.as_str(),
                    role.as_str(),
                    hash,
                    by.as_str(),
                    now,
                    expires_at_ms,
                    options.single_use
                ],
            )?;
            let path = format!("/api/join/{code}");
            Ok(ShareCreated {
                id,
                role,
                expires_at_ms: Some(expires_at_ms),
                single_use: options.single_use,
                code,
                path,
            })
        })
        .await
    }

    /// A session's live share links (expired ones are deleted on the way), oldest first.
    pub async fn shares(&self, session: &SessionId) -> Result<Vec<ShareInfo>> {
        let session = session.clone();
        self.control(move |conn| {
            require_session(conn, &session)?;
            conn.execute("DELETE FROM shares WHERE expires_at_ms <= ?1", [now_ms()])?;
            let mut stmt = conn.prepare(
                "SELECT s.id, s.role, u.id, u.name, s.created_at_ms, s.expires_at_ms,
                        s.single_use
                 FROM shares s JOIN users u ON u.id = s.created_by
                 WHERE s.session_id = ?1 ORDER BY s.created_at_ms, s.rowid",
            )?;
            let rows = stmt.query_map([session.as_str()], |row| {
                Ok(ShareInfo {
                    id: parse_col(row, 0, ShareId::parse)?,
                    role: parse_col(row, 1, Role::parse)?,
                    created_by: UserRef {
                        id: parse_col(row, 2, UserId::parse)?,
                        name: row.get(3)?,
                    },
                    created_at_ms: row.get(4)?,
                    expires_at_ms: row.get(5)?,
                    single_use: row.get(6)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Revokes a share link of `session`: it stops working at once. `NotFound` when the
    /// session has no such link.
    pub async fn revoke_share(&self, session: &SessionId, share: &ShareId) -> Result<()> {
        let (session, share) = (session.clone(), share.clone());
        self.control(move |conn| {
            let n = conn.execute(
                "DELETE FROM shares WHERE id = ?1 AND session_id = ?2",
                [share.as_str(), session.as_str()],
            )?;
            if n == 0 {
                return Err(Error::NotFound(format!(
                    "share link {share} of session {session}"
                )));
            }
            Ok(())
        })
        .await
    }

    /// Changes a participant's role. `NotFound` for someone who is not a participant;
    /// `Conflict` when it would leave the session without an owner. Returns the participant
    /// and whether the role changed.
    pub async fn change_role(
        &self,
        session: &SessionId,
        user: &UserId,
        role: Role,
    ) -> Result<(UserRef, bool)> {
        let (session, user) = (session.clone(), user.clone());
        self.control(move |conn| {
            let tx = conn.transaction()?;
            let (who, current) = member_ref(&tx, &session, &user)?;
            if current == role {
                return Ok((who, false));
            }
            if current == Role::Owner && owners(&tx, &session)? <= 1 {
                return Err(Error::Conflict(format!(
                    "{} is the session's only owner; make someone else owner first",
                    who.name
                )));
            }
            upsert_role(&tx, &session, &user, role)?;
            tx.commit()?;
            Ok((who, true))
        })
        .await
    }

    /// Removes a participant. `NotFound` for someone who is not one; `Conflict` for the
    /// session's only owner.
    pub async fn remove_member(&self, session: &SessionId, user: &UserId) -> Result<UserRef> {
        let (session, user) = (session.clone(), user.clone());
        self.control(move |conn| {
            let tx = conn.transaction()?;
            let (who, role) = member_ref(&tx, &session, &user)?;
            if role == Role::Owner && owners(&tx, &session)? <= 1 {
                return Err(Error::Conflict(format!(
                    "{} is the session's only owner and cannot leave it; make someone else \
                     owner first, or delete the session",
                    who.name
                )));
            }
            tx.execute(
                "DELETE FROM members WHERE session_id = ?1 AND user_id = ?2",
                [session.as_str(), user.as_str()],
            )?;
            tx.commit()?;
            Ok(who)
        })
        .await
    }

    /// Archives a session (or brings it back): archived sessions leave default listings.
    pub async fn set_session_archived(&self, id: &SessionId, archived: bool) -> Result<()> {
        let id = id.clone();
        self.control(move |conn| {
            require_session(conn, &id)?;
            conn.execute(
                "UPDATE sessions SET archived_at_ms = CASE WHEN ?2 THEN coalesce(archived_at_ms, ?3)
                 END WHERE id = ?1",
                params![id.as_str(), archived, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes a session: its index row (members and share links go with it), then its
    /// directory (its log, its own layers). The caller has stopped everything that used it.
    pub async fn delete_session(&self, id: &SessionId) -> Result<()> {
        let store = self.clone();
        let id = id.clone();
        self.control(move |conn| {
            let n = conn.execute("DELETE FROM sessions WHERE id = ?1", [id.as_str()])?;
            if n == 0 {
                return Err(Error::NotFound(format!("session {id}")));
            }
            store.forget_log(&id);
            let dir = store.session_dir(&id);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// The sessions on a repo, oldest first.
    pub async fn repo_sessions(&self, repo: &str) -> Result<Vec<SessionId>> {
        let repo = repo.to_string();
        self.control(move |conn| {
            let mut stmt =
                conn.prepare("SELECT id FROM sessions WHERE repo = ?1 ORDER BY rowid")?;
            let ids = stmt.query_map([repo], |row| parse_col(row, 0, SessionId::parse))?;
            Ok(ids.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Top-level sessions (not spawned by another) created before `before_ms`, oldest first;
    /// archived ones only with `archived`. What a retention pass looks at: a session younger
    /// than the cut-off cannot have been idle that long.
    pub async fn retention_candidates(
        &self,
        before_ms: i64,
        archived: bool,
    ) -> Result<Vec<SessionRow>> {
        self.control(move |conn| {
            let sql = format!(
                "SELECT {SESSION_COLUMNS} {SESSION_FROM}
                 WHERE s.parent IS NULL AND s.created_at_ms < ?1
                   AND (?2 OR s.archived_at_ms IS NULL)
                 ORDER BY s.rowid"
            );
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(params![before_ms, archived], session_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Deletes a repo and its image records (the garbage collector then removes their
    /// layers). `Conflict` while sessions still stand on it: delete them first.
    pub async fn delete_repo(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.control(move |conn| {
            let tx = conn.transaction()?;
            let sessions: i64 = tx.query_row(
                "SELECT count(*) FROM sessions WHERE repo = ?1",
                [&name],
                |row| row.get(0),
            )?;
            if sessions > 0 {
                return Err(Error::Conflict(format!(
                    "repo {name:?} still has {sessions} session(s)"
                )));
            }
            // Children before parents: an image's parent is another image of the repo.
            tx.execute("UPDATE images SET parent = NULL WHERE repo = ?1", [&name])?;
            tx.execute("DELETE FROM images WHERE repo = ?1", [&name])?;
            let n = tx.execute("DELETE FROM repos WHERE name = ?1", [&name])?;
            if n == 0 {
                return Err(Error::NotFound(format!("repo {name:?}")));
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}
