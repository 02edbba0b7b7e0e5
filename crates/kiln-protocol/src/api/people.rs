//! People in the API — users, their tokens, share links, roles — and what a person's record
//! may hold, checked in one place for every caller (the API's bodies, the store, the CLI
//! before it sends): a handle that is safe in commands and lists, a display
//! name and an email that git accepts in an identity, and bounded expiries for tokens and links.

use super::event::UserRef;
use super::limits::{Invalid, NAME_CHARS, Validate, check_chars};
use super::rest::CreateShare;
use kiln_core::{Role, ShareId, TokenId, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: UserId,
    /// The user's handle in commands and lists (`alice`): letters, digits, `.`, `_`, `-`.
    pub name: String,
    pub admin: bool,
    pub created_at_ms: i64,
    /// How the user's commits are signed (`Alice Smith`); empty: `name`.
    #[serde(default)]
    pub display_name: String,
    /// The email of the user's commits; none: `<id>@users.kiln.local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Deactivated users keep their record but cannot sign in or use a token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deactivated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// The handle: 1 to 64 of letters, digits, `.`, `_`, `-`, starting with a letter or digit.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]*$"
    )]
    pub name: String,
    #[serde(default)]
    pub admin: bool,
    /// How the user's commits are signed (`Alice Smith`); default: `name`.
    #[serde(default)]
    #[schema(max_length = 100)]
    pub display_name: Option<String>,
    /// The email of the user's commits (`alice@example.com`).
    #[serde(default)]
    #[schema(max_length = 254)]
    pub email: Option<String>,
}

/// Changes to a user's profile (`PATCH /api/users/{id}`); absent fields stay, `""` clears.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default)]
    #[schema(max_length = 100)]
    pub display_name: Option<String>,
    #[serde(default)]
    #[schema(max_length = 254)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token is for ("laptop", "ci").
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// The user the token acts as; defaults to the caller. Only admins may name another user.
    #[serde(default)]
    pub user_id: Option<UserId>,
    /// The token stops working this many days after it is made (1 to 3650); default: never.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<u32>,
    /// `read_only`: for dashboards and bots — it reads what its user may read and changes
    /// nothing. Default `full`.
    #[serde(default)]
    pub scope: TokenScope,
}

/// What a token may do: everything its user may, or only read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    #[default]
    Full,
    /// Only `GET`/`HEAD` requests, and sockets that follow without acting (no typing, no
    /// warm-ups); anything else is refused with 403.
    ReadOnly,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: TokenId,
    pub user_id: UserId,
    pub name: String,
    pub created_at_ms: i64,
    /// When the token stops working; none: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    /// When it was last used (to the minute); none: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_ms: Option<i64>,
    #[serde(default)]
    pub scope: TokenScope,
}

/// The only time a token is shown; kiln keeps only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    pub info: TokenInfo,
    pub token: String,
}

/// How long a share link works when its creator does not say: 7 days.
pub const SHARE_TTL_HOURS: u32 = 7 * 24;

/// A live share link as its session's owners see it (never its code, which is shown once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShareInfo {
    pub id: ShareId,
    pub role: Role,
    pub created_by: UserRef,
    pub created_at_ms: i64,
    /// When it stops working; none: never (links made before links expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    pub single_use: bool,
}

/// A participant's new role (`PUT /api/sessions/{id}/participants/{user}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    pub role: Role,
}

/// A display name's length, in characters.
pub const DISPLAY_NAME_CHARS: usize = 100;
/// An email's length (RFC 5321's path limit).
pub const EMAIL_CHARS: usize = 254;
/// The longest a token may be made to last, in days.
pub const TOKEN_DAYS_MAX: u32 = 3650;
/// The longest a share link may be made to last, in hours (a year).
pub const SHARE_HOURS_MAX: u32 = 8760;

/// A user's handle: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_user_name(name: &str) -> Result<(), Invalid> {
    let ok = (1..=NAME_CHARS).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        return Ok(());
    }
    Err(Invalid(format!(
        "user name {name:?} is not a handle: use 1 to {NAME_CHARS} of letters, digits, '.', '_' \
         and '-', starting with a letter or digit (e.g. \"bob.smith\"); put \"Bob Smith\" in the \
         display name"
    )))
}

/// A display name: 1 to [`DISPLAY_NAME_CHARS`] characters as git takes them in an identity:
/// no control characters, no `<` or `>`, no leading or trailing spaces.
pub fn check_display_name(name: &str) -> Result<(), Invalid> {
    check_chars("display_name", name, DISPLAY_NAME_CHARS)?;
    let ok = !name.trim().is_empty()
        && name.trim() == name
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '<' | '>'));
    if ok {
        return Ok(());
    }
    Err(Invalid(format!(
        "display name {name:?} must be 1 to {DISPLAY_NAME_CHARS} characters without control \
         characters, '<' or '>', and without leading or trailing spaces"
    )))
}

/// An email as commits carry it: `local@domain.tld`, no spaces, no `<>`, at most
/// [`EMAIL_CHARS`] characters. Deliberately simple: kiln sends no mail, it signs commits.
pub fn check_email(email: &str) -> Result<(), Invalid> {
    check_chars("email", email, EMAIL_CHARS)?;
    let valid = email.split_once('@').is_some_and(|(local, domain)| {
        let labels_ok = domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
        !local.is_empty()
            && !local.contains('@')
            && local
                .chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | ',' | '"' | '\\'))
            && domain.contains('.')
            && labels_ok
    });
    if valid {
        return Ok(());
    }
    Err(Invalid(format!(
        "email {email:?} is not an address like alice@example.com"
    )))
}

fn check_range(field: &str, value: Option<u32>, max: u32) -> Result<(), Invalid> {
    match value {
        Some(n) if n == 0 || n > max => {
            Err(Invalid(format!("`{field}` is {n}; it must be 1 to {max}")))
        }
        _ => Ok(()),
    }
}

impl Validate for CreateUser {
    fn validate(&self) -> Result<(), Invalid> {
        check_user_name(&self.name)?;
        if let Some(name) = &self.display_name {
            check_display_name(name)?;
        }
        self.email.as_deref().map_or(Ok(()), check_email)
    }
}

impl Validate for UpdateUser {
    fn validate(&self) -> Result<(), Invalid> {
        if let Some(name) = self.display_name.as_deref().filter(|n| !n.is_empty()) {
            check_display_name(name)?;
        }
        self.email
            .as_deref()
            .filter(|e| !e.is_empty())
            .map_or(Ok(()), check_email)
    }
}

impl Validate for CreateToken {
    fn validate(&self) -> Result<(), Invalid> {
        check_chars("name", &self.name, NAME_CHARS)?;
        check_range("expires_in_days", self.expires_in_days, TOKEN_DAYS_MAX)
    }
}

impl Validate for CreateShare {
    fn validate(&self) -> Result<(), Invalid> {
        check_range("expires_in_hours", self.expires_in_hours, SHARE_HOURS_MAX)
    }
}

impl Validate for SetRole {
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_safe_words() {
        for good in ["alice", "bob.smith", "a", "x_1-2", &"a".repeat(64)] {
            assert_eq!(check_user_name(good), Ok(()), "{good}");
        }
        for bad in [
            "bob smith!",
            "",
            ".x",
            "-x",
            "é",
            "a/b",
            &"a".repeat(65),
            "a\n",
        ] {
            let error = check_user_name(bad).unwrap_err();
            assert!(error.0.contains("display name"), "{bad}: {error}");
        }
    }

    #[test]
    fn display_names_fit_a_git_identity() {
        assert_eq!(check_display_name("Zoë O'Brien-Smith"), Ok(()));
        for bad in ["", " x", "x ", "a<b", "a>b", "a\nb", &"x".repeat(101)] {
            assert!(check_display_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails_look_like_addresses() {
        for good in ["alice@example.com", "a.b+c@sub.example.co", "x@bücher.de"] {
            assert_eq!(check_email(good), Ok(()), "{good}");
        }
        for bad in [
            "alice",
            "alice@",
            "@example.com",
            "alice@localhost",
            "a b@example.com",
            "a@b@example.com",
            "<a@example.com>",
            "a@example..com",
            "a@-x.com",
        ] {
            let error = check_email(bad).unwrap_err();
            assert!(error.0.contains("alice@example.com"), "{bad}: {error}");
        }
    }

    #[test]
    fn expiries_are_bounded() {
        let token = |days| CreateToken {
            scope: TokenScope::Full,
            name: "ci".into(),
            user_id: None,
            expires_in_days: days,
        };
        assert_eq!(token(None).validate(), Ok(()));
        assert_eq!(token(Some(30)).validate(), Ok(()));
        assert!(token(Some(0)).validate().is_err());
        assert!(token(Some(TOKEN_DAYS_MAX + 1)).validate().is_err());
    }
}
