//! The client side of managing people and taking things apart: user profiles and deactivation,
//! listings beyond one's own sessions, archiving and deleting sessions, share links and
//! participants, deleting repos. Kept apart from `client.rs` so each file reads as one concern.

use crate::client::{Client, NO_BODY, decode};
use crate::error::Result;
use kiln_core::{Role, SessionId, ShareId, UserId};
use kiln_protocol::api::{SessionSummary, SetRole, ShareInfo, UpdateUser, User};
use reqwest::Method;

/// Which sessions [`Client::sessions_with`] lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Listing {
    /// Every session on the server (admins).
    pub all: bool,
    /// Archived sessions too.
    pub archived: bool,
}

impl Client {
    /// Changes a user's display name and email (admins; anyone for themselves).
    pub async fn update_user(&self, id: &UserId, body: &UpdateUser) -> Result<User> {
        self.call(Method::PATCH, &["users", id.as_str()], Some(body))
            .await
    }

    /// Deactivates a user (admins): their tokens stop working at once.
    pub async fn deactivate_user(&self, id: &UserId) -> Result<User> {
        self.call(Method::DELETE, &["users", id.as_str()], NO_BODY)
            .await
    }

    /// Deletes a repo with its sessions (admins); `force` also stops active ones.
    pub async fn delete_repo(&self, name: &str, force: bool) -> Result<()> {
        let mut url = self.url(&["repos", name]);
        if force {
            url.query_pairs_mut().append_pair("force", "true");
        }
        self.send(Method::DELETE, url, NO_BODY).await?;
        Ok(())
    }

    /// Sessions newest first, as `listing` says, fetched a page at a time.
    pub async fn sessions_with(&self, listing: Listing) -> Result<Vec<SessionSummary>> {
        const PAGE: usize = 500;
        let mut all: Vec<SessionSummary> = Vec::new();
        loop {
            let mut url = self.url(&["sessions"]);
            url.query_pairs_mut()
                .append_pair("limit", &PAGE.to_string());
            if let Some(last) = all.last() {
                url.query_pairs_mut().append_pair("after", last.id.as_str());
            }
            if listing.all {
                url.query_pairs_mut().append_pair("all", "true");
            }
            if listing.archived {
                url.query_pairs_mut().append_pair("archived", "true");
            }
            let response = self.send(Method::GET, url, NO_BODY).await?;
            let page: Vec<SessionSummary> = decode(self.base_url(), response).await?;
            let last_page = page.len() < PAGE;
            all.extend(page);
            if last_page {
                return Ok(all);
            }
        }
    }

    pub async fn archive_session(&self, id: &SessionId) -> Result<()> {
        let path = ["sessions", id.as_str(), "archive"];
        self.call_empty(Method::POST, &path, NO_BODY).await
    }

    pub async fn delete_session(&self, id: &SessionId) -> Result<()> {
        self.call_empty(Method::DELETE, &["sessions", id.as_str()], NO_BODY)
            .await
    }

    /// The session's live share links (owners).
    pub async fn shares(&self, id: &SessionId) -> Result<Vec<ShareInfo>> {
        self.call(Method::GET, &["sessions", id.as_str(), "shares"], NO_BODY)
            .await
    }

    pub async fn revoke_share(&self, id: &SessionId, share: &ShareId) -> Result<()> {
        let path = ["sessions", id.as_str(), "shares", share.as_str()];
        self.call_empty(Method::DELETE, &path, NO_BODY).await
    }

    /// Sets a participant's role (owners).
    pub async fn set_role(&self, id: &SessionId, user: &UserId, role: Role) -> Result<()> {
        let path = ["sessions", id.as_str(), "participants", user.as_str()];
        self.call_empty(Method::PUT, &path, Some(&SetRole { role }))
            .await
    }

    /// Removes a participant (owners), or leaves when `user` is the caller.
    pub async fn remove_participant(&self, id: &SessionId, user: &UserId) -> Result<()> {
        let path = ["sessions", id.as_str(), "participants", user.as_str()];
        self.call_empty(Method::DELETE, &path, NO_BODY).await
    }
}
