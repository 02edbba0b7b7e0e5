//! Slack in the API: a kiln user's link to their Slack user (`/api/me/slack`), and what
//! `POST /api/slack/events` answers Slack.

use super::limits::{Invalid, Validate};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `PUT /api/me/slack`: the caller's Slack user id, and the answer of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackLink {
    /// The Slack member id (`U…` or `W…`: Slack's profile menu → "Copy member ID").
    #[schema(min_length = 3, max_length = 32, pattern = "^[UW][A-Z0-9]+$")]
    pub slack_user: String,
}

impl Validate for SlackLink {
    fn validate(&self) -> Result<(), Invalid> {
        let id = &self.slack_user;
        let ok = (3..=32).contains(&id.len())
            && id.starts_with(['U', 'W'])
            && id
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if ok {
            Ok(())
        } else {
            Err(Invalid(format!(
                "`slack_user` {id:?} is not a Slack member id: it looks like `U012AB3CD` \
                 (in Slack: your profile → ⋮ → Copy member ID)"
            )))
        }
    }
}

/// What `POST /api/slack/events` answers: Slack reads `challenge` when it verifies the URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SlackEventReceipt {
    /// `challenge` (URL verification), `accepted` (the work runs on), `duplicate` (this event
    /// id was seen before: nothing done again) or `ignored`.
    pub status: String,
    /// What is done, or why nothing is, in words.
    pub detail: String,
    /// The `url_verification` request's challenge, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
}
