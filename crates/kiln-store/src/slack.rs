//! Slack's state in `control.db`: which Slack user is which kiln user (set by the kiln user
//! themselves, `PUT /api/me/slack`), which session a Slack thread drives, and which unlinked
//! Slack users were already told how to link (told once, not at every message). Event
//! de-duplication uses the forge's delivery table (`first_delivery`), keyed `slack:…`.

use crate::accounts::user_by_id;
use crate::db::{now_ms, parse_col};
use crate::error::{Error, Result};
use crate::store::Store;
use kiln_core::{SessionId, UserId};
use kiln_protocol::api::User;
use rusqlite::{OptionalExtension, params};

impl Store {
    /// Links `user` to Slack user `slack_user`, replacing their previous link. `Conflict` when
    /// that Slack user is linked to another kiln user.
    pub async fn set_slack_link(&self, user: &UserId, slack_user: &str) -> Result<()> {
        let (user, slack_user) = (user.clone(), slack_user.to_string());
        self.control(move |conn| {
            let tx = conn.transaction()?;
            let owner: Option<String> = tx
                .query_row(
                    "SELECT user_id FROM slack_links WHERE slack_user = ?1",
                    [&slack_user],
                    |r| r.get(0),
                )
                .optional()?;
            if owner.as_deref().is_some_and(|o| o != user.as_str()) {
                return Err(Error::Conflict(format!(
                    "Slack user {slack_user} is linked to another kiln user; they unlink it first"
                )));
            }
            tx.execute(
                "DELETE FROM slack_links WHERE user_id = ?1",
                [user.as_str()],
            )?;
            tx.execute(
                "INSERT INTO slack_links (slack_user, user_id, at_ms) VALUES (?1, ?2, ?3)",
                params![slack_user, user.as_str(), now_ms()],
            )?;
            tx.execute(
                "DELETE FROM slack_told WHERE slack_user = ?1",
                [&slack_user],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Removes `user`'s Slack link; whether there was one.
    pub async fn delete_slack_link(&self, user: &UserId) -> Result<bool> {
        let user = user.clone();
        self.control(move |conn| {
            Ok(conn.execute(
                "DELETE FROM slack_links WHERE user_id = ?1",
                [user.as_str()],
            )? == 1)
        })
        .await
    }

    /// The Slack user id `user` linked, if any.
    pub async fn slack_link_of(&self, user: &UserId) -> Result<Option<String>> {
        let user = user.clone();
        self.control(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT slack_user FROM slack_links WHERE user_id = ?1",
                    [user.as_str()],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    /// The active kiln user linked to Slack user `slack_user`, if any (a deactivated one is
    /// none: they may not work through Slack either).
    pub async fn user_of_slack(&self, slack_user: &str) -> Result<Option<User>> {
        let slack_user = slack_user.to_string();
        self.control(move |conn| {
            let id = conn
                .query_row(
                    "SELECT user_id FROM slack_links WHERE slack_user = ?1",
                    [&slack_user],
                    |row| parse_col(row, 0, UserId::parse),
                )
                .optional()?;
            let Some(id) = id else { return Ok(None) };
            let user = user_by_id(conn, &id)?;
            Ok((!user.deactivated).then_some(user))
        })
        .await
    }

    /// Records that unlinked Slack user `slack_user` was told how to link; true the first
    /// time only.
    pub async fn first_slack_telling(&self, slack_user: &str) -> Result<bool> {
        let slack_user = slack_user.to_string();
        self.control(move |conn| {
            Ok(conn.execute(
                "INSERT INTO slack_told (slack_user, at_ms) VALUES (?1, ?2)
                 ON CONFLICT (slack_user) DO NOTHING",
                params![slack_user, now_ms()],
            )? == 1)
        })
        .await
    }

    /// Remembers that the thread `thread_ts` of `channel` drives `session`.
    pub async fn set_slack_thread(
        &self,
        channel: &str,
        thread_ts: &str,
        session: &SessionId,
    ) -> Result<()> {
        let (channel, thread_ts, session) =
            (channel.to_string(), thread_ts.to_string(), session.clone());
        self.control(move |conn| {
            conn.execute(
                "INSERT INTO slack_threads (channel, thread_ts, session) VALUES (?1, ?2, ?3)
                 ON CONFLICT (channel, thread_ts) DO UPDATE SET session = excluded.session",
                params![channel, thread_ts, session.as_str()],
            )?;
            Ok(())
        })
        .await
    }

    /// The session the thread `thread_ts` of `channel` drives, if any.
    pub async fn slack_thread(&self, channel: &str, thread_ts: &str) -> Result<Option<SessionId>> {
        let (channel, thread_ts) = (channel.to_string(), thread_ts.to_string());
        self.control(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT session FROM slack_threads WHERE channel = ?1 AND thread_ts = ?2",
                    params![channel, thread_ts],
                    |row| parse_col(row, 0, SessionId::parse),
                )
                .optional()?)
        })
        .await
    }
}
