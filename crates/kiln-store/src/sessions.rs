//! The session index and who may do what in each session: membership and share links. This is
//! authorization data, so it lives in the control DB next to users, not in the session DBs:
//! "which sessions can this user see" is one indexed query instead of opening every log.

use crate::accounts::user_by_id;
use crate::db::{is_lower_hex, now_ms, parse_col, secret_hash};
use crate::error::{Error, Result};
use crate::log::SessionLog;
use crate::store::Store;
use crate::writer::SessionWriter;
use kiln_core::{Role, SessionId, UserId};
use kiln_protocol::api::{Participant, SessionPullRequest, UserRef};
use rusqlite::{Connection, OptionalExtension, params};

/// What redeeming a share link did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeemed {
    pub session: SessionId,
    /// The role the user has now: the higher of the one they had and the link's.
    pub role: Role,
    /// Whether the role is new (so a `participant_joined` event is due).
    pub changed: bool,
}

/// A session as the index knows it. Its live state (working or idle) is the engine's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: SessionId,
    pub repo: String,
    pub title: String,
    /// The creator, with their current name.
    pub created_by: UserRef,
    pub created_at_ms: i64,
    /// Stopped for good: takes no prompts.
    pub closed: bool,
    /// Archived by an owner: left out of default listings.
    pub archived: bool,
    /// Its latest change request on the forge, as last heard.
    pub pull_request: Option<SessionPullRequest>,
    /// The session whose agent spawned this one, if any.
    pub parent: Option<SessionId>,
}

/// What `session_row` reads, columns 0..=9; queries may select more after them.
pub(crate) const SESSION_COLUMNS: &str =
    "s.id, s.repo, s.title, s.created_by, u.name, s.created_at_ms, s.closed, s.archived_at_ms,
     (SELECT json_object('number', f.number, 'url', f.url, 'state', f.state)
        FROM forge_changes f WHERE f.session_id = s.id
        ORDER BY f.updated_at_ms DESC, f.number DESC LIMIT 1),
     s.parent";
/// The number of columns [`SESSION_COLUMNS`] selects; queries' own columns come after.
pub(crate) const SESSION_WIDTH: usize = 10;
pub(crate) const SESSION_FROM: &str = "FROM sessions s JOIN users u ON u.id = s.created_by";

pub(crate) fn session_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: parse_col(row, 0, SessionId::parse)?,
        repo: row.get(1)?,
        title: row.get(2)?,
        created_by: UserRef {
            id: parse_col(row, 3, UserId::parse)?,
            name: row.get(4)?,
        },
        created_at_ms: row.get(5)?,
        closed: row.get(6)?,
        archived: row.get::<_, Option<i64>>(7)?.is_some(),
        pull_request: match row.get::<_, Option<String>>(8)? {
            Some(json) => Some(serde_json::from_str(&json).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    8,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?),
            None => None,
        },
        parent: match row.get::<_, Option<String>>(9)? {
            Some(_) => Some(parse_col(row, 9, SessionId::parse)?),
            None => None,
        },
    })
}

pub(crate) fn require_session(conn: &Connection, id: &SessionId) -> Result<()> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM sessions WHERE id = ?1",
        [id.as_str()],
        |row| row.get(0),
    )?;
    if n == 0 {
        return Err(Error::NotFound(format!("session {id}")));
    }
    Ok(())
}

fn role_in(conn: &Connection, session: &SessionId, user: &UserId) -> Result<Option<Role>> {
    Ok(conn
        .query_row(
            "SELECT role FROM members WHERE session_id = ?1 AND user_id = ?2",
            [session.as_str(), user.as_str()],
            |row| parse_col(row, 0, Role::parse),
        )
        .optional()?)
}

pub(crate) fn upsert_role(
    conn: &Connection,
    session: &SessionId,
    user: &UserId,
    role: Role,
) -> Result<()> {
    conn.execute(
        "INSERT INTO members (session_id, user_id, role, joined_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (session_id, user_id) DO UPDATE SET role = excluded.role",
        params![session.as_str(), user.as_str(), role.as_str(), now_ms()],
    )?;
    Ok(())
}

impl Store {
    /// Creates a session: its index row, its creator as owner, and its DB, all or nothing.
    ///
    /// The session DB is created inside the control transaction and the index row committed
    /// last, so a failure anywhere leaves no index row (and the half-made directory is
    /// removed). A crash between the two leaves only an orphan directory, which nothing reads;
    /// creating that same id again is then a `Conflict` rather than a silent overwrite.
    pub async fn create_session(
        &self,
        id: &SessionId,
        repo: &str,
        title: &str,
        creator: &UserId,
    ) -> Result<SessionLog> {
        self.create_session_with(id, repo, title, creator, None, |_| Ok(()))
            .await
    }

    /// [`Store::create_session`] for a sub-session of `parent` (which must exist): the child
    /// gets the parent's members with their roles instead of an owner of its own, and `first`
    /// writes its first events (its queued prompt) into its log before the index row commits,
    /// so a child the index lists always has its work queued, whenever the process dies.
    pub async fn create_child_session<F>(
        &self,
        id: &SessionId,
        repo: &str,
        title: &str,
        creator: &UserId,
        parent: &SessionId,
        first: F,
    ) -> Result<SessionLog>
    where
        F: FnOnce(&mut SessionWriter<'_>) -> Result<()> + Send + 'static,
    {
        self.create_session_with(id, repo, title, creator, Some(parent), first)
            .await
    }

    async fn create_session_with<F>(
        &self,
        id: &SessionId,
        repo: &str,
        title: &str,
        creator: &UserId,
        parent: Option<&SessionId>,
        first: F,
    ) -> Result<SessionLog>
    where
        F: FnOnce(&mut SessionWriter<'_>) -> Result<()> + Send + 'static,
    {
        let parent = parent.cloned();
        let store = self.clone();
        let (id, repo, title, creator) = (
            id.clone(),
            repo.to_string(),
            title.to_string(),
            creator.clone(),
        );
        self.control(move |conn| {
            let tx = conn.transaction()?;
            let repos: i64 = tx.query_row(
                "SELECT count(*) FROM repos WHERE name = ?1",
                [&repo],
                |row| row.get(0),
            )?;
            if repos == 0 {
                return Err(Error::NotFound(format!("repo {repo:?}")));
            }
            user_by_id(&tx, &creator)?;
            let now = now_ms();
            if let Some(parent) = &parent {
                require_session(&tx, parent)?;
            }
            tx.execute(
                "INSERT INTO sessions (id, repo, title, created_by, created_at_ms, parent)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id.as_str(),
                    repo,
                    title,
                    creator.as_str(),
                    now,
                    parent.as_ref().map(SessionId::as_str)
                ],
            )
            .map_err(Error::from)
            .map_err(|e| match e {
                e if e.is_unique_violation() => Error::Conflict(format!("session {id} exists")),
                e => e,
            })?;
            match &parent {
                // A sub-session has the people of its parent, each with the same role.
                Some(parent) => {
                    tx.execute(
                        "INSERT INTO members (session_id, user_id, role, joined_at_ms)
                         SELECT ?1, user_id, role, ?3 FROM members WHERE session_id = ?2",
                        params![id.as_str(), parent.as_str(), now],
                    )?;
                }
                None => upsert_role(&tx, &id, &creator, Role::Owner)?,
            }

            let dir = store.session_dir(&id);
            if let Err(e) = std::fs::create_dir(&dir) {
                return Err(match e.kind() {
                    std::io::ErrorKind::AlreadyExists => Error::Conflict(format!(
                        "{} exists but session {id} is not in the index; it is left over from \
                         an interrupted create: remove it or use another id",
                        dir.display()
                    )),
                    _ => e.into(),
                });
            }
            let log = match SessionLog::open(&dir.join("session.db"), &id, true)
                .and_then(|log| log.write_now(first).map(|_| log))
            {
                Ok(log) => log,
                Err(e) => {
                    remove_dir(&dir);
                    return Err(e);
                }
            };
            // Cached before the row is visible: an `open_session` that sees the row must find
            // this log, not open a second connection to the same DB.
            store.remember_log(&log);
            if let Err(e) = tx.commit() {
                store.forget_log(&id);
                drop(log);
                remove_dir(&dir);
                return Err(e.into());
            }
            Ok(log)
        })
        .await
    }

    pub async fn session_row(&self, id: &SessionId) -> Result<SessionRow> {
        let id = id.clone();
        self.control(move |conn| {
            let sql = format!("SELECT {SESSION_COLUMNS} {SESSION_FROM} WHERE s.id = ?1");
            conn.query_row(&sql, [id.as_str()], session_row)
                .optional()?
                .ok_or_else(|| Error::NotFound(format!("session {id}")))
        })
        .await
    }

    /// The sessions `user` is a member of, with their role, newest first.
    pub async fn sessions_for(&self, user: &UserId) -> Result<Vec<(SessionRow, Role)>> {
        let user = user.clone();
        self.control(move |conn| {
            let sql = format!(
                "SELECT {SESSION_COLUMNS}, m.role {SESSION_FROM}
                 JOIN members m ON m.session_id = s.id AND m.user_id = ?1
                 ORDER BY s.created_at_ms DESC, s.rowid DESC"
            );
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map([user.as_str()], |row| {
                Ok((
                    session_row(row)?,
                    parse_col(row, SESSION_WIDTH, Role::parse)?,
                ))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// The sessions `parent` spawned, oldest first.
    pub async fn children(&self, parent: &SessionId) -> Result<Vec<SessionRow>> {
        let parent = parent.clone();
        self.control(move |conn| {
            let sql = format!(
                "SELECT {SESSION_COLUMNS} {SESSION_FROM} WHERE s.parent = ?1 ORDER BY s.rowid"
            );
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map([parent.as_str()], session_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Every session in the index, closed ones included, oldest first: what start-up recovery
    /// walks to find prompts a crash interrupted.
    pub async fn all_session_ids(&self) -> Result<Vec<SessionId>> {
        self.control(|conn| {
            let mut stmt = conn.prepare("SELECT id FROM sessions ORDER BY rowid")?;
            let ids = stmt.query_map([], |row| parse_col(row, 0, SessionId::parse))?;
            Ok(ids.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    pub async fn set_session_closed(&self, id: &SessionId, closed: bool) -> Result<()> {
        let id = id.clone();
        self.control(move |conn| {
            let n = conn.execute(
                "UPDATE sessions SET closed = ?2 WHERE id = ?1",
                params![id.as_str(), closed],
            )?;
            if n == 0 {
                return Err(Error::NotFound(format!("session {id}")));
            }
            Ok(())
        })
        .await
    }

    /// `user`'s role in `session`; `None` when they are not a member (or there is no session).
    pub async fn role_of(&self, session: &SessionId, user: &UserId) -> Result<Option<Role>> {
        let (session, user) = (session.clone(), user.clone());
        self.control(move |conn| role_in(conn, &session, &user))
            .await
    }

    /// Sets `user`'s role, adding them when they are not a member. This is the unconditional
    /// form (it can downgrade); share links go through `redeem_share`, which never does.
    pub async fn set_role(&self, session: &SessionId, user: &UserId, role: Role) -> Result<()> {
        let (session, user) = (session.clone(), user.clone());
        self.control(move |conn| {
            let tx = conn.transaction()?;
            require_session(&tx, &session)?;
            user_by_id(&tx, &user)?;
            upsert_role(&tx, &session, &user, role)?;
            Ok(tx.commit()?)
        })
        .await
    }

    /// Members of a session, owners first, then by when they joined.
    pub async fn members(&self, session: &SessionId) -> Result<Vec<Participant>> {
        let session = session.clone();
        self.control(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT u.id, u.name, m.role FROM members m JOIN users u ON u.id = m.user_id
                 WHERE m.session_id = ?1 ORDER BY m.joined_at_ms, u.rowid",
            )?;
            let rows = stmt.query_map([session.as_str()], |row| {
                Ok(Participant {
                    user: UserRef {
                        id: parse_col(row, 0, UserId::parse)?,
                        name: row.get(1)?,
                    },
                    role: parse_col(row, 2, Role::parse)?,
                })
            })?;
            let mut members: Vec<Participant> = rows.collect::<rusqlite::Result<_>>()?;
            // Stable: equal roles keep their join order.
            members.sort_by_key(|m| std::cmp::Reverse(m.role));
            Ok(members)
        })
        .await
    }

    /// Redeems a share code: `user` gets the higher of their current role and the link's, so
    /// an owner opening a viewer link stays owner. `None` for a code that is not a live link.
    pub async fn redeem_share(&self, code: &str, user: &UserId) -> Result<Option<Redeemed>> {
        if !is_lower_hex(code, 32) {
            return Ok(None);
        }
        let hash = secret_hash(code);
        let user = user.clone();
        self.control(move |conn| {
            let tx = conn.transaction()?;
            let share = tx
                .query_row(
                    "SELECT session_id, role, single_use FROM shares
                     WHERE code_hash = ?1 AND (expires_at_ms IS NULL OR expires_at_ms > ?2)",
                    params![hash, now_ms()],
                    |row| {
                        Ok((
                            parse_col(row, 0, SessionId::parse)?,
                            parse_col(row, 1, Role::parse)?,
                            row.get::<_, bool>(2)?,
                        ))
                    },
                )
                .optional()?;
            let Some((session, granted, single_use)) = share else {
                return Ok(None);
            };
            if single_use {
                // Used up in the same transaction that grants the role: two people racing
                // for a single-use link cannot both get in.
                tx.execute("DELETE FROM shares WHERE code_hash = ?1", [&hash])?;
            }
            // Owner links made before links were limited grant what a link may grant today.
            let granted = granted.min(Role::Collaborator);
            user_by_id(&tx, &user)?;
            let current = role_in(&tx, &session, &user)?;
            let role = current.map_or(granted, |current| current.max(granted));
            let changed = current != Some(role);
            if changed {
                upsert_role(&tx, &session, &user, role)?;
            }
            tx.commit()?;
            Ok(Some(Redeemed {
                session,
                role,
                changed,
            }))
        })
        .await
    }
}

/// Removes a directory this process just created for a session that did not come to be. A
/// failure here only leaves an orphan, so it is logged, not returned over the original error.
fn remove_dir(dir: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove a half-created session");
    }
}
