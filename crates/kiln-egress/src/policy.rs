//! Which host names a sandbox may reach: the policy (`none`, `allowlist`, `open`), host patterns
//! with a leading wildcard, the built-in registry preset and the parsing of all three from the
//! strings people write in `.kiln/environment.toml`, `kiln.toml` and on the command line.
//!
//! A policy speaks only of names. Addresses are `address.rs`'s business and are checked after
//! the policy, on what a name resolved to, under every policy.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;

/// Hosts every package manager in common use needs, so that `allowlist` works for `pip`, `npm`,
/// `cargo`, `go`, `gem`, `mvn`, `apt` and `git clone https://github.com/…` without any entry of
/// the repo's own. Documented in ARCHITECTURE.md; change both together.
pub const REGISTRY_PRESET: &[&str] = &[
    // PyPI: the index and the file host.
    "pypi.org",
    "files.pythonhosted.org",
    // npm.
    "registry.npmjs.org",
    "*.npmjs.org",
    // crates.io: the API, the sparse index and the crate files.
    "crates.io",
    "static.crates.io",
    "index.crates.io",
    // Go module proxy and checksum database.
    "proxy.golang.org",
    "sum.golang.org",
    // RubyGems.
    "rubygems.org",
    "*.rubygems.org",
    // Maven Central.
    "repo.maven.apache.org",
    "repo1.maven.org",
    // Debian and Ubuntu archives.
    "deb.debian.org",
    "security.debian.org",
    "archive.ubuntu.com",
    "security.ubuntu.com",
    // GitHub: clones, archives and release assets.
    "github.com",
    "codeload.github.com",
    "objects.githubusercontent.com",
];

/// A host name pattern: an exact name, or `*.suffix` for every name strictly below `suffix`
/// (`*.npmjs.org` matches `registry.npmjs.org`, not `npmjs.org`). Case-insensitive; a trailing
/// dot is ignored, in the pattern and in the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPattern {
    /// The lowercase name without a trailing dot; for a wildcard the part after `*.`.
    name: String,
    /// Whether this is `*.name`.
    wildcard: bool,
}

impl HostPattern {
    /// Whether `host` (as written in a request, any case, optional trailing dot) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = normalize_host(host);
        if self.wildcard {
            // One or more whole, non-empty labels in front of `.name`.
            host.strip_suffix(&self.name)
                .and_then(|front| front.strip_suffix('.'))
                .is_some_and(|front| !front.is_empty() && !front.split('.').any(str::is_empty))
        } else {
            host == self.name
        }
    }
}

impl FromStr for HostPattern {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let bad = |why: &'static str| PolicyError::Pattern {
            pattern: s.to_owned(),
            why,
        };
        let (wildcard, rest) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let name = normalize_host(rest);
        if name.is_empty() {
            return Err(bad("it names no host"));
        }
        if name.contains('*') {
            return Err(bad("a wildcard is only allowed as a leading `*.`"));
        }
        if name.split('.').any(str::is_empty) {
            return Err(bad("it has an empty label"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(bad("a host name has only letters, digits, `-` and `.`"));
        }
        Ok(Self { name, wildcard })
    }
}

impl TryFrom<String> for HostPattern {
    type Error = PolicyError;
    fn try_from(s: String) -> Result<Self, PolicyError> {
        s.parse()
    }
}

impl From<HostPattern> for String {
    fn from(p: HostPattern) -> String {
        p.to_string()
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

/// Lowercase, without a trailing dot: the one form hosts are compared in.
pub(crate) fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// The three modes as people write them (`setup = "allowlist"`); the hosts of an allowlist
/// come from elsewhere (the preset, `allow = [...]`, `kiln.toml`). Defined with the API's types,
/// since images and repos report it.
pub use kiln_protocol::api::EgressMode;

/// What one listener lets through, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum EgressPolicy {
    /// Nothing leaves: every request is refused (the proxy still answers, with a reason).
    None,
    /// Only names matching one of `hosts`. With `read_only`, plain-HTTP requests other than
    /// GET/HEAD/OPTIONS are refused; CONNECT tunnels carry TLS the proxy cannot read, so a
    /// tunnel to an allowed host is let through whatever it carries.
    Allowlist {
        hosts: Vec<HostPattern>,
        #[serde(default)]
        read_only: bool,
    },
    /// Any name; the address rules still hold.
    Open,
}

impl EgressPolicy {
    /// The policy a mode stands for: `allowlist` is the registry preset plus `extra`.
    pub fn from_mode(mode: EgressMode, extra: &[HostPattern], read_only: bool) -> Self {
        match mode {
            EgressMode::None => Self::None,
            EgressMode::Open => Self::Open,
            EgressMode::Allowlist => {
                let mut hosts = preset();
                hosts.extend(extra.iter().cloned());
                Self::Allowlist { hosts, read_only }
            }
        }
    }

    /// The mode's name, as in messages ("agent policy: allowlist").
    pub fn mode(&self) -> EgressMode {
        match self {
            Self::None => EgressMode::None,
            Self::Allowlist { .. } => EgressMode::Allowlist,
            Self::Open => EgressMode::Open,
        }
    }

    /// The first pattern that lets `host` through, or `None` when the policy refuses it.
    /// `Open` answers with no pattern but `Some`.
    pub(crate) fn admits(&self, host: &str) -> Option<Option<&HostPattern>> {
        match self {
            Self::None => None,
            Self::Open => Some(None),
            Self::Allowlist { hosts, .. } => hosts.iter().find(|p| p.matches(host)).map(Some),
        }
    }

    pub(crate) fn read_only(&self) -> bool {
        matches!(
            self,
            Self::Allowlist {
                read_only: true,
                ..
            }
        )
    }
}

/// `REGISTRY_PRESET` as patterns.
pub fn preset() -> Vec<HostPattern> {
    REGISTRY_PRESET
        .iter()
        .map(|p| p.parse().expect("the preset's patterns are valid"))
        .collect()
}

fn parse_mode(s: &str) -> Result<EgressMode, PolicyError> {
    match s {
        "none" => Ok(EgressMode::None),
        "allowlist" => Ok(EgressMode::Allowlist),
        "open" => Ok(EgressMode::Open),
        _ => Err(PolicyError::Mode(s.to_owned())),
    }
}

/// The command line's form (`kiln sandbox run --net …`): `none`, `open`, `allowlist` (the
/// registry preset), or `allow:HOST,HOST` (exactly those hosts, no preset; add `allowlist`'s
/// hosts by naming them).
impl FromStr for EgressPolicy {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        if let Some(list) = s.strip_prefix("allow:") {
            let hosts = list
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::parse)
                .collect::<Result<Vec<HostPattern>, _>>()?;
            if hosts.is_empty() {
                return Err(PolicyError::EmptyAllow);
            }
            return Ok(Self::Allowlist {
                hosts,
                read_only: false,
            });
        }
        Ok(Self::from_mode(parse_mode(s)?, &[], false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> HostPattern {
        s.parse().unwrap()
    }

    #[test]
    fn wildcards_match_strictly_below_their_suffix() {
        let p = pat("*.npmjs.org");
        assert!(p.matches("registry.npmjs.org"));
        assert!(p.matches("a.b.npmjs.org"));
        assert!(p.matches("Registry.NPMJS.org."));
        assert!(!p.matches("npmjs.org"));
        assert!(!p.matches("evilnpmjs.org"));
        assert!(!p.matches("npmjs.org.evil.com"));
        assert!(!p.matches(".npmjs.org"));
    }

    #[test]
    fn exact_names_ignore_case_and_a_trailing_dot() {
        let p = pat("PyPI.org.");
        assert_eq!(p.to_string(), "pypi.org");
        assert!(p.matches("pypi.org"));
        assert!(p.matches("PYPI.ORG."));
        assert!(!p.matches("files.pypi.org"));
        assert!(!p.matches("pypi.org.evil.com"));
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for bad in [
            "",
            "*.",
            "a.*.org",
            "*",
            "foo..org",
            "foo bar.org",
            "*npmjs.org",
            "a/b",
        ] {
            let err = bad.parse::<HostPattern>().unwrap_err().to_string();
            assert!(err.contains("allow"), "{bad}: {err}");
        }
    }

    #[test]
    fn every_preset_entry_parses_and_the_preset_admits_registries() {
        let policy =
            EgressPolicy::from_mode(EgressMode::Allowlist, &[pat("registry.example.org")], false);
        for host in [
            "pypi.org",
            "registry.npmjs.org",
            "static.crates.io",
            "github.com",
            "registry.example.org",
        ] {
            assert!(policy.admits(host).is_some(), "{host}");
        }
        assert!(policy.admits("example.org").is_none());
        assert!(policy.admits("evil.com").is_none());
    }

    proptest::proptest! {
        /// Request hosts are untrusted: matching never panics, and agrees with a label-wise
        /// reference (a wildcard covers one or more whole, non-empty labels before its suffix).
        #[test]
        fn matching_agrees_with_labels(
            prefix in "[a-zA-Z0-9.é-]{0,12}",
            suffix in "[a-z0-9]{1,6}(\\.[a-z0-9]{1,4}){0,2}",
            attach: bool,
            trailing_dot: bool,
        ) {
            let host = format!("{prefix}{}{}", if attach { suffix.as_str() } else { "" }, if trailing_dot { "." } else { "" });
            let exact: HostPattern = suffix.parse().unwrap();
            let wild: HostPattern = format!("*.{suffix}").parse().unwrap();
            let h = normalize_host(&host);
            proptest::prop_assert_eq!(exact.matches(&host), h == suffix);
            let labels: Vec<&str> = h.split('.').collect();
            let suffix_labels: Vec<&str> = suffix.split('.').collect();
            let n = labels.len().saturating_sub(suffix_labels.len());
            let below = labels.len() > suffix_labels.len()
                && labels[n..] == suffix_labels[..]
                && labels[..n].iter().all(|l| !l.is_empty());
            proptest::prop_assert_eq!(wild.matches(&host), below, "host {:?}", h);
        }
    }

    #[test]
    fn command_line_forms() {
        assert_eq!("none".parse::<EgressPolicy>().unwrap(), EgressPolicy::None);
        assert_eq!("open".parse::<EgressPolicy>().unwrap(), EgressPolicy::Open);
        assert_eq!(
            "allowlist"
                .parse::<EgressPolicy>()
                .unwrap()
                .admits("pypi.org"),
            Some(Some(&pat("pypi.org")))
        );
        let allow: EgressPolicy = "allow:a.example.org, *.b.example.org".parse().unwrap();
        assert!(allow.admits("a.example.org").is_some());
        assert!(allow.admits("x.b.example.org").is_some());
        assert!(
            allow.admits("pypi.org").is_none(),
            "allow: carries no preset"
        );
        assert!("allow:".parse::<EgressPolicy>().is_err());
        let err = "closed".parse::<EgressPolicy>().unwrap_err().to_string();
        assert!(err.contains("none, allowlist, open"), "{err}");
    }

    #[test]
    fn serde_round_trips_through_toml_and_json() {
        let policy = EgressPolicy::Allowlist {
            hosts: vec![pat("*.npmjs.org"), pat("pypi.org")],
            read_only: true,
        };
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(
            json,
            r#"{"mode":"allowlist","hosts":["*.npmjs.org","pypi.org"],"read_only":true}"#
        );
        assert_eq!(serde_json::from_str::<EgressPolicy>(&json).unwrap(), policy);
        let from_toml: EgressPolicy = toml::from_str(
            "mode = \"allowlist\"\nhosts = [\"*.NPMJS.org\", \"pypi.org.\"]\nread_only = true",
        )
        .unwrap();
        assert_eq!(from_toml, policy);
        let open: EgressPolicy = toml::from_str("mode = \"open\"").unwrap();
        assert_eq!(open, EgressPolicy::Open);
        assert!(toml::from_str::<EgressPolicy>("mode = \"allowlist\"\nhosts = [\"a.*\"]").is_err());
        assert_eq!(
            toml::from_str::<std::collections::BTreeMap<String, EgressMode>>("setup = \"none\"")
                .unwrap()["setup"],
            EgressMode::None
        );
    }
}
