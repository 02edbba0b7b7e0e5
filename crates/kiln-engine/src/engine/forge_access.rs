//! Access follows the forge. For a user linked to a forge account, on a repo whose remote is on
//! the forge, kiln asks the forge what they may do with their own token — read to see and
//! start sessions on it, write before kiln pushes or opens a change request in their name —
//! and keeps the answer for [`ACCESS_TTL`]. Where the forge has no say (none configured, a repo
//! elsewhere, a user with no linked account) kiln's own roles and repo access decide alone.

use super::Engine;
use crate::{Error, Result};
use kiln_core::{Secret, UserId};
use kiln_forge::Permission;
use kiln_protocol::api::Repo;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a forge's answer about a user's access is trusted.
pub const ACCESS_TTL: Duration = Duration::from_secs(60);
/// The most answers kept; past it the oldest half is dropped.
const MAX_ENTRIES: usize = 10_000;

/// A user and a forge repository (`owner/name`).
type AccessKey = (UserId, String);
/// The forge's answer (none: it has no say) and when it was given.
type Answer = (Option<Permission>, Instant);

/// Recent answers, by user and forge repository.
#[derive(Debug, Default)]
pub(crate) struct AccessCache(Mutex<HashMap<AccessKey, Answer>>);

impl AccessCache {
    fn get(&self, key: &AccessKey) -> Option<Option<Permission>> {
        let map = self.0.lock().expect("access cache");
        map.get(key)
            .filter(|(_, at)| at.elapsed() < ACCESS_TTL)
            .map(|(p, _)| *p)
    }

    fn put(&self, key: AccessKey, permission: Option<Permission>) {
        let mut map = self.0.lock().expect("access cache");
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, at)| at.elapsed() < ACCESS_TTL);
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, (permission, Instant::now()));
    }

    /// Forgets what is known of `user` (their link changed).
    pub(crate) fn forget_user(&self, user: &UserId) {
        self.0
            .lock()
            .expect("access cache")
            .retain(|(u, _), _| u != user);
    }
}

impl Engine {
    /// What `user` may do with `repo` by the forge's word, or `None` when the forge has no say.
    pub async fn forge_permission(&self, user: &UserId, repo: &Repo) -> Result<Option<Permission>> {
        self.permission_with(user, repo, None).await
    }

    /// [`Engine::forge_permission`] with the user's token at hand, if the caller has it.
    async fn permission_with(
        &self,
        user: &UserId,
        repo: &Repo,
        token: Option<&Secret<String>>,
    ) -> Result<Option<Permission>> {
        let Some(forge) = &self.inner.forge else {
            return Ok(None);
        };
        let Some(repo_ref) = forge.repo_of_url(&repo.url) else {
            return Ok(None);
        };
        let key = (user.clone(), repo_ref.full_name());
        if let Some(known) = self.inner.access.get(&key) {
            return Ok(known);
        }
        let token = match token {
            Some(t) => Some(t.clone()),
            None => self.github_token(user).await?,
        };
        let permission = match token {
            None => None,
            Some(token) => Some(forge.permission(&token, &repo_ref).await?),
        };
        self.inner.access.put(key, permission);
        Ok(permission)
    }

    /// Whether `user` may see `repo` and its sessions: true unless the forge has a say and
    /// says no. A forge that cannot be asked (down, rate-limited) is an error, not a yes.
    pub async fn forge_allows_read(&self, user: &UserId, repo: &Repo) -> Result<bool> {
        Ok(self
            .forge_permission(user, repo)
            .await?
            .is_none_or(|p| p.read))
    }

    /// Refuses unless `user` may push to `repo` when the forge has a say: checked before kiln
    /// pushes or opens a change request in someone's name.
    pub async fn check_forge_write(&self, user: &UserId, repo: &Repo) -> Result<()> {
        self.check_forge_write_with(user, repo, None).await
    }

    /// [`Engine::check_forge_write`] with the user's token at hand.
    pub(crate) async fn check_forge_write_with(
        &self,
        user: &UserId,
        repo: &Repo,
        token: Option<&Secret<String>>,
    ) -> Result<()> {
        match self.permission_with(user, repo, token).await? {
            Some(p) if !p.write => {
                let forge = self.forge()?.name();
                Err(Error::Forbidden(format!(
                    "your {forge} account cannot push to {}: kiln pushes and opens pull \
                     requests in your name only where {forge} lets you write",
                    kiln_core::redact_urls(&repo.url)
                )))
            }
            _ => Ok(()),
        }
    }
}
