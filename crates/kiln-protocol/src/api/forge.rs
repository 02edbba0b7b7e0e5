//! Forges in the API: opening a session's pull request (`POST /api/sessions/{id}/pr`) and the
//! GitHub account linked to a kiln user. Forge-neutral where it can be: a GitLab merge request
//! answers with the same [`PullRequest`].

use super::limits::{Invalid, Validate, check_chars};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The longest pull request title kiln sends (GitHub's own limit is 256).
pub const PR_TITLE_CHARS: usize = 256;

/// `POST /api/sessions/{id}/pr`: open (or update) the session branch's pull request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenPullRequest {
    /// Open it as a draft (default: ready for review). An open PR keeps what it was.
    #[serde(default)]
    pub draft: bool,
    /// The title; default: the session's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

impl Validate for OpenPullRequest {
    fn validate(&self) -> Result<(), Invalid> {
        if let Some(title) = &self.title {
            if title.trim().is_empty() {
                return Err(Invalid(
                    "`title` is empty; leave it out for the session's title".into(),
                ));
            }
            check_chars("title", title, PR_TITLE_CHARS)?;
        }
        Ok(())
    }
}

/// A session's pull request (or merge request) as the forge reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PullRequest {
    /// `github`; later `gitlab`.
    pub forge: String,
    pub number: u64,
    pub url: String,
    /// `open` or `closed`.
    pub state: String,
    pub draft: bool,
    pub merged: bool,
    /// False when one was already open for the branch and was updated.
    pub created: bool,
    /// The session branch it is opened from.
    pub head: String,
    pub base: String,
}

/// The GitHub account linked to a kiln user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GitHubAccount {
    pub login: String,
}

/// The 409 of `POST /api/sessions/{id}/pr` for a user with no linked forge account: the
/// message, and the page where they can open the pull request by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NoForgeAccount {
    pub error: String,
    pub compare_url: String,
}

/// What became of a webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebhookReceipt {
    /// `handled`, `duplicate` (this delivery id was handled before: nothing done again) or
    /// `ignored` (nothing for kiln to do).
    pub status: String,
    /// What was done, or why nothing was, in words.
    pub detail: String,
}
