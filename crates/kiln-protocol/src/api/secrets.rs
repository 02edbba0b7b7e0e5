//! Repo secrets as the API knows them: set through `PUT /api/repos/{name}/secrets/{secret}`,
//! listed by name, removed by name. Values are write-only: no response, log or event carries
//! one. The name rules live here so the API, the engine and the CLI check them alike.

use super::UserRef;
use super::limits::{Invalid, Validate};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The longest secret name.
pub const SECRET_NAME_CHARS: usize = 128;
/// The largest secret value, in bytes of UTF-8.
pub const SECRET_VALUE_BYTES: usize = 64 * 1024;
/// The shortest secret value, in bytes: shorter ones could not be masked in logs without
/// masking unrelated text (and are guessable anyway).
pub const SECRET_VALUE_MIN_BYTES: usize = 4;
/// Secrets one repo may hold.
pub const SECRETS_PER_REPO: usize = 100;

/// Variables kiln sets itself in a sandbox (or its commands); a secret may not take their name.
const RESERVED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "PWD",
    "LANG",
    "TERM",
    "HOSTNAME",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "PIP_CERT",
];
/// Reserved in either case, since tools read both (`http_proxy` and `HTTP_PROXY`).
const RESERVED_ANY_CASE: &[&str] = &["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"];
/// Every name with this prefix is kiln's (`KILN_SESSION`, `KILN_EGRESS_SOCKET`, …).
const RESERVED_PREFIX: &str = "KILN_";

/// A secret name: an environment variable name (`[A-Za-z_][A-Za-z0-9_]*`, at most
/// [`SECRET_NAME_CHARS`]) that kiln does not set itself.
pub fn check_secret_name(name: &str) -> Result<(), Invalid> {
    let valid = !name.is_empty()
        && name.len() <= SECRET_NAME_CHARS
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(Invalid(format!(
            "secret name {:?} must be an environment variable name: 1 to {SECRET_NAME_CHARS} of \
             A-Z a-z 0-9 _, not starting with a digit",
            name.chars().take(SECRET_NAME_CHARS + 1).collect::<String>()
        )));
    }
    let reserved = RESERVED.contains(&name)
        || RESERVED_ANY_CASE
            .iter()
            .any(|r| r.eq_ignore_ascii_case(name))
        || name.to_ascii_uppercase().starts_with(RESERVED_PREFIX);
    if reserved {
        return Err(Invalid(format!(
            "secret name {name:?} is a variable kiln sets itself (PATH, HOME, proxies, git \
             identity, KILN_*); choose another name"
        )));
    }
    Ok(())
}

/// A secret value: [`SECRET_VALUE_MIN_BYTES`] to [`SECRET_VALUE_BYTES`] bytes, no NUL (it
/// becomes an environment variable). The message never quotes the value.
pub fn check_secret_value(value: &str) -> Result<(), Invalid> {
    if value.len() < SECRET_VALUE_MIN_BYTES {
        return Err(Invalid(format!(
            "a secret value must have at least {SECRET_VALUE_MIN_BYTES} bytes: a shorter one \
             cannot be masked in logs; if it is not secret, put it in the environment's [env]"
        )));
    }
    if value.len() > SECRET_VALUE_BYTES {
        return Err(Invalid(format!(
            "a secret value may have at most {SECRET_VALUE_BYTES} bytes (this one has {})",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(Invalid(
            "a secret value cannot contain a NUL byte (it becomes an environment variable)".into(),
        ));
    }
    Ok(())
}

/// `PUT /api/repos/{name}/secrets/{secret}`: the value, and whether sessions get it too.
/// `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    /// The value: 4 bytes to 64 KiB of UTF-8. Write-only: never returned.
    pub value: String,
    /// Also give it to session sandboxes (the agent can read it then); by default only image
    /// builds' setup, build and warm steps get it.
    #[serde(default)]
    pub agent: bool,
}

impl std::fmt::Debug for SetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetSecret")
            .field("value", &"****")
            .field("agent", &self.agent)
            .finish()
    }
}

impl Validate for SetSecret {
    fn validate(&self) -> Result<(), Invalid> {
        check_secret_value(&self.value)
    }
}

/// A repo secret as it is listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RepoSecret {
    pub name: String,
    /// Session sandboxes get it too, not only image builds.
    pub agent: bool,
    pub updated_at_ms: i64,
    pub updated_by: UserRef,
}

/// A secret an image was built with: its name and a keyed fingerprint of its value (an HMAC
/// under the server's key, which says whether the value changed and nothing about it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct ImageSecret {
    pub name: String,
    pub fingerprint: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_variable_names_kiln_does_not_set() {
        for good in ["TOKEN", "_x", "NPM_TOKEN_2", "kiln", &"A".repeat(128)] {
            assert_eq!(check_secret_name(good), Ok(()), "{good}");
        }
        for bad in ["", "1X", "A-B", "A B", "É", &"A".repeat(129)] {
            let error = check_secret_name(bad).unwrap_err();
            assert!(error.0.contains("environment variable name"), "{error}");
        }
        for reserved in [
            "PATH",
            "HOME",
            "http_proxy",
            "HTTPS_PROXY",
            "KILN_SESSION",
            "kiln_x",
        ] {
            let error = check_secret_name(reserved).unwrap_err();
            assert!(error.0.contains("kiln sets itself"), "{reserved}: {error}");
        }
    }

    #[test]
    fn values_are_bounded_and_never_quoted() {
        assert!(check_secret_value("abcd").is_ok());
        assert!(check_secret_value(&"x".repeat(SECRET_VALUE_BYTES)).is_ok());
        let short = check_secret_value("ab1").unwrap_err();
        assert!(!short.0.contains("ab1"), "{short}");
        assert!(check_secret_value(&"x".repeat(SECRET_VALUE_BYTES + 1)).is_err());
        assert!(check_secret_value("abc\0d").is_err());
        let body = SetSecret {
            value: "hunter22".into(),
            agent: true,
        };
        assert!(!format!("{body:?}").contains("hunter22"));
    }
}
