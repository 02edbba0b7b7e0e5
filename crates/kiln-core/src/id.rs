//! Random, prefixed, URL-safe ids. A prefix says what an id names in logs and URLs; `parse`
//! accepts only what `random` could produce, so ids from requests are safe in paths.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `n` random bytes as lowercase hex, from the OS generator.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the OS random generator is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

macro_rules! ids {
    ($($(#[$doc:meta])* $ty:ident = $prefix:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(try_from = "String", into = "String")]
        #[schema(value_type = String)]
        pub struct $ty(String);

        impl $ty {
            pub fn random() -> Self {
                $ty(format!(concat!($prefix, "{}"), random_hex(8)))
            }

            pub fn parse(s: &str) -> Option<Self> {
                let hex = s.strip_prefix($prefix)?;
                (hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                    .then(|| $ty(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $ty::parse(&s).ok_or_else(|| {
                    format!(concat!("not a valid ", stringify!($ty), " (expected \"", $prefix, "\" and 16 hex digits): {:?}"), s)
                })
            }
        }

        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $ty::try_from(s.to_string())
            }
        }
    )*};
}

ids! {
    /// A person or a bot with an account on this kiln.
    UserId = "u-";
    /// One API token of a user; the token itself is a secret, this names it.
    TokenId = "t-";
    /// A session: one sandbox, one event log, many prompts.
    SessionId = "s-";
    /// One prompt sent to a session by one author.
    PromptId = "p-";
    /// A share link that grants a role in a session.
    ShareId = "sh-";
    /// A plan the agent proposed in plan mode, approved or rejected by a participant.
    PlanId = "pl-";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_only_what_random_makes() {
        let id = SessionId::random();
        assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
        assert!(SessionId::parse("s-0123").is_none());
        assert!(SessionId::parse("s-0123456789ABCDEF").is_none());
        assert!(SessionId::parse("u-0123456789abcdef").is_none());
        assert!(SessionId::parse("s-../../etc/passwd..").is_none());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<SessionId>(&json).unwrap(), id);
        let err = serde_json::from_str::<SessionId>("\"nope\"").unwrap_err();
        assert!(err.to_string().contains("SessionId"), "{err}");
    }
}
