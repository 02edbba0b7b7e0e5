//! The forge-neutral vocabulary: a repository, a change request (GitHub's pull request,
//! GitLab's merge request), the tokens a user and the host hold.

use crate::error::{ForgeError, Result};
use kiln_core::Secret;
use serde::{Deserialize, Serialize};

/// `owner/name` on a forge (GitLab: `group/subgroup/name`; the last segment is the name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RepoRef {
    pub owner: String,
    pub name: String,
}

impl RepoRef {
    /// Parses `owner/name` (an optional `.git` is dropped); anything else is refused with a
    /// message that shows the expected shape.
    pub fn parse(text: &str) -> Result<RepoRef> {
        let text = text.trim().trim_end_matches(".git");
        let ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match text.rsplit_once('/') {
            Some((owner, name)) if owner.split('/').all(ok) && ok(name) => Ok(RepoRef {
                owner: owner.to_string(),
                name: name.to_string(),
            }),
            _ => Err(ForgeError::BadRepo(text.chars().take(200).collect())),
        }
    }

    /// Reads `owner/name` out of a forge URL (`https://host/owner/name(.git)`, or
    /// `https://host/api/v3`-less GHES URLs) when its host is `host`.
    pub fn from_url(url: &str, host: &str) -> Option<RepoRef> {
        let rest = url.split_once("://")?.1;
        let (authority, path) = rest.split_once('/')?;
        let authority = authority.rsplit('@').next()?;
        if !authority.eq_ignore_ascii_case(host) {
            return None;
        }
        RepoRef::parse(path.trim_end_matches('/')).ok()
    }

    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// What kiln asks a forge to open: `head` into `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRequest {
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub draft: bool,
}

/// A change request as the forge reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeState {
    pub number: u64,
    /// The web page of the change request.
    pub url: String,
    /// `open` or `closed` (a merged one is closed and `merged`).
    pub state: String,
    pub draft: bool,
    pub merged: bool,
    pub merged_at_ms: Option<i64>,
}

/// What [`crate::Forge::open_or_update`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedChange {
    pub change: ChangeState,
    /// False when one was already open for the branch and was updated instead.
    pub created: bool,
}

/// A user's tokens from a sign-in or a refresh. Expiries are absent when the forge issues
/// tokens that do not expire.
#[derive(Debug, Clone)]
pub struct UserTokens {
    pub access: Secret<String>,
    pub refresh: Option<Secret<String>>,
    pub expires_at_ms: Option<i64>,
    pub refresh_expires_at_ms: Option<i64>,
}

/// A short-lived credential for the host's git traffic to one repository.
#[derive(Debug, Clone)]
pub struct RepoAccessToken {
    pub token: Secret<String>,
    pub expires_at_ms: i64,
    /// The user name that goes with the token in an HTTPS URL (`x-access-token` on GitHub).
    pub username: &'static str,
}

/// What a user may do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permission {
    /// See it and clone it.
    pub read: bool,
    /// Push to it.
    pub write: bool,
}

/// A forge account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgeUser {
    pub login: String,
    pub id: u64,
    pub name: Option<String>,
    pub email: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_refs_parse_and_refuse() {
        let r = RepoRef::parse("octo/hello-world.git").unwrap();
        assert_eq!(r.full_name(), "octo/hello-world");
        assert!(RepoRef::parse("octo").is_err());
        assert!(RepoRef::parse("octo/../x").is_err());
        assert!(RepoRef::parse("octo/a b").is_err());
        assert_eq!(
            RepoRef::from_url("https://github.com/octo/hw.git", "github.com"),
            Some(RepoRef::parse("octo/hw").unwrap())
        );
        assert_eq!(
            RepoRef::from_url("https://gitlab.com/octo/hw", "github.com"),
            None
        );
    }
}
