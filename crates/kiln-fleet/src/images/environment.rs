//! A repo's environment definition: how to prepare a sandbox for it before anyone asks. It lives
//! in the repo at `.kiln/environment.toml`, so it is versioned with the code it builds:
//!
//! ```toml
//! base = "debian:bookworm"            # or "host" (default): this machine's /usr, read-only
//! packages = ["cargo", "pkg-config"]  # Debian packages built into the base (needs a Debian base)
//! manifests = ["Cargo.lock"]          # setup reruns only when these change
//! timeout_secs = 600                  # default per command
//! [env]
//! RUST_LOG = "info"
//! [limits]
//! memory_mb = 4096
//! [[setup]]                           # as root inside the sandbox (still unprivileged outside)
//! run = "apt-get install -y jq"
//! user = "root"
//! [[setup]]                           # install dependencies, create schemas
//! run = "cargo fetch"
//! [[build]]
//! run = "cargo build --offline"
//! timeout_secs = 1200
//! [[warm]]                            # run the app and the tests once to fill caches
//! run = "cargo test --offline --no-run"
//! ```
//!
//! A command may also be a plain string: `setup = ["npm ci"]`.
//!
//! `[[mcp]]` entries name the MCP servers the agent may use (see docs/mcp.md): a remote one by
//! `url` (called from the control plane, `secret` naming a repo secret sent as its bearer
//! token), a local one by `command` (run over stdio inside the session's sandbox), each with an
//! optional `tools` allowlist. They are read here with the rest and used by the engine.

use kiln_egress::{EgressMode, EgressPolicy, HostPattern};
use kiln_protocol::api::{AgentNetwork, ImageRuntime, ResourceLimits};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Where the definition lives, relative to the checkout.
pub const ENVIRONMENT_FILE: &str = ".kiln/environment.toml";

/// Longest a single command may be given.
const MAX_TIMEOUT_SECS: u64 = 3 * 3600;
/// Most Debian packages a base may list, and the longest name.
const MAX_PACKAGES: usize = 256;
const MAX_PACKAGE_LEN: usize = 128;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// What the image's root filesystem is made from.
    #[serde(default)]
    pub base: Base,
    /// Debian packages installed into the base when kiln builds it (a Debian base only).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Dependency manifests (lockfiles), relative to the repo root.
    #[serde(default)]
    pub manifests: Vec<String>,
    /// Default timeout of each command.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Limits of every sandbox made from the image (the build's own sandbox too).
    #[serde(default)]
    pub limits: ResourceLimits,
    /// Install dependencies; rerun only when a manifest changed.
    #[serde(default)]
    pub setup: Vec<Step>,
    /// Build; rerun on every image build.
    #[serde(default)]
    pub build: Vec<Step>,
    /// Fill caches (run the tests, start the app once); rerun on every image build.
    #[serde(default)]
    pub warm: Vec<Step>,
    /// What the steps may reach over HTTP(S), through kiln's egress proxy.
    #[serde(default)]
    pub network: Network,
    /// MCP servers the agent may use.
    #[serde(default)]
    pub mcp: Vec<McpEntry>,
}

/// Most MCP servers one repo may give its agent.
const MAX_MCP_SERVERS: usize = 16;

/// One `[[mcp]]` entry: exactly one of `url` (remote) and `command` (local).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpEntry {
    pub name: String,
    /// A Streamable HTTP endpoint, called from the control plane.
    #[serde(default)]
    pub url: Option<String>,
    /// A repo secret sent to `url` as `Authorization: Bearer …`; never enters a sandbox.
    #[serde(default)]
    pub secret: Option<String>,
    /// The tools the agent may use; absent: all the server lists.
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    /// argv of a stdio server run inside the session's sandbox.
    #[serde(default)]
    pub command: Option<Vec<String>>,
}

impl McpEntry {
    fn check(&self) -> Result<(), String> {
        let name = &self.name;
        kiln_protocol::api::check_mcp_server_name(name)
            .map_err(|e| format!("{ENVIRONMENT_FILE}: [[mcp]]: {e}"))?;
        let at = |problem: String| format!("{ENVIRONMENT_FILE}: [[mcp]] {name:?}: {problem}");
        match (&self.url, &self.command) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(at(
                    "give exactly one of url (a remote server) and command (a local one)".into(),
                ));
            }
            (Some(url), None) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(at(format!(
                        "url {url:?} must start with https:// or http://"
                    )));
                }
            }
            (None, Some(command)) => {
                if command.first().is_none_or(|c| c.trim().is_empty()) {
                    return Err(at("command is empty".into()));
                }
                if self.secret.is_some() {
                    return Err(at(
                        "secret is for remote servers (url); a local server's command gets the \
                         agent's secrets like any command"
                            .into(),
                    ));
                }
            }
        }
        if let Some(secret) = &self.secret {
            kiln_protocol::api::check_secret_name(secret)
                .map_err(|e| at(format!("secret: {}", e.0)))?;
        }
        if let Some(tools) = &self.tools
            && tools.iter().any(|t| t.trim().is_empty())
        {
            return Err(at("a name in tools is empty".into()));
        }
        Ok(())
    }
}

/// What an image's root filesystem is made from: `"host"` or `"debian:<suite>"`.
///
/// Every base is a read-only bottom layer under the repo's layers. Further kinds (an OCI image
/// from a tarball or a registry) would be further variants with a builder of their own keyed by
/// their inputs, like [`crate::bases`]' Debian builder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum Base {
    /// The host's `/usr` (and a few `/etc` entries), bound read-only: nothing to build, and
    /// nothing can be installed into it.
    #[default]
    Host,
    /// A Debian release kiln builds with mmdebstrap, once per suite and package list, shared by
    /// every repo that asks for the same.
    Debian(DebianSuite),
}

/// The Debian releases a base can be: those whose C library is at least the host's (the guest
/// agent is linked against the host's glibc), with the archive keys the host's mmdebstrap has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DebianSuite {
    Bookworm,
    Trixie,
}

impl DebianSuite {
    pub fn codename(self) -> &'static str {
        match self {
            DebianSuite::Bookworm => "bookworm",
            DebianSuite::Trixie => "trixie",
        }
    }
}

const BASES: &str = r#""host", "debian:bookworm" or "debian:trixie""#;

impl FromStr for Base {
    type Err = String;

    fn from_str(s: &str) -> Result<Base, String> {
        match s {
            "host" => Ok(Base::Host),
            "debian:bookworm" => Ok(Base::Debian(DebianSuite::Bookworm)),
            "debian:trixie" => Ok(Base::Debian(DebianSuite::Trixie)),
            _ => Err(format!("base {s:?} is not one kiln builds: use {BASES}")),
        }
    }
}

impl TryFrom<String> for Base {
    type Error = String;

    fn try_from(s: String) -> Result<Base, String> {
        s.parse()
    }
}

impl fmt::Display for Base {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Base::Host => f.write_str("host"),
            Base::Debian(suite) => write!(f, "debian:{}", suite.codename()),
        }
    }
}

/// Who a step runs as inside the build's sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepUser {
    /// The sandbox user (uid 1000), like every session.
    #[default]
    Kiln,
    /// uid 0 inside the sandbox's user namespace (the unprivileged sandbox uid on the host,
    /// without capabilities) owning the Debian base's files, so `apt-get install` works.
    Root,
}

impl StepUser {
    fn as_str(self) -> &'static str {
        match self {
            StepUser::Kiln => "kiln",
            StepUser::Root => "root",
        }
    }
}

/// One command, run by `/bin/sh -c` in the checkout: a string, or a table with `run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Plain(String),
    Full {
        run: String,
        name: Option<String>,
        timeout_secs: Option<u64>,
        user: Option<StepUser>,
    },
}

/// Read by hand rather than `#[serde(untagged)]`, whose only error is "did not match any
/// variant": a table's mistakes (an unknown key, `user = "admin"`) are named.
impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Step, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            run: String,
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            timeout_secs: Option<u64>,
            #[serde(default)]
            user: Option<StepUser>,
        }
        use serde::de::Error as _;
        match toml::Value::deserialize(deserializer)? {
            toml::Value::String(run) => Ok(Step::Plain(run)),
            toml::Value::Table(table) => {
                let full: Full = table.try_into().map_err(D::Error::custom)?;
                Ok(Step::Full {
                    run: full.run,
                    name: full.name,
                    timeout_secs: full.timeout_secs,
                    user: full.user,
                })
            }
            other => Err(D::Error::custom(format!(
                "a step is a command or a table with `run`, not a {}",
                other.type_str()
            ))),
        }
    }
}

impl Step {
    pub fn script(&self) -> &str {
        match self {
            Step::Plain(run) | Step::Full { run, .. } => run,
        }
    }

    /// A short name for logs: the given one, or the command's first line.
    pub fn name(&self) -> String {
        match self {
            Step::Full {
                name: Some(name), ..
            } => name.clone(),
            _ => self
                .script()
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(80)
                .collect(),
        }
    }

    /// Who runs it.
    pub fn user(&self) -> StepUser {
        match self {
            Step::Full {
                user: Some(user), ..
            } => *user,
            _ => StepUser::Kiln,
        }
    }

    /// This step's timeout, else the environment's, else `fallback`.
    pub fn timeout(&self, environment: &Environment, fallback: Duration) -> Duration {
        let own = match self {
            Step::Full { timeout_secs, .. } => *timeout_secs,
            Step::Plain(_) => None,
        };
        own.or(environment.timeout_secs)
            .map(Duration::from_secs)
            .unwrap_or(fallback)
    }
}

/// `[network]`: what an image build's steps (`setup`) and, once sessions are proxied, the
/// agent (`agent`) may reach: `none`, `allowlist` (the package registries' preset plus `allow`)
/// or `open`. Never this host, loopback or private addresses, whatever the mode.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default = "allowlist")]
    pub setup: EgressMode,
    #[serde(default = "allowlist")]
    pub agent: EgressMode,
    /// Hosts added to the preset (`registry.example.org`, `*.example.org`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// At agent time, refuse plain-HTTP requests other than GET, HEAD and OPTIONS.
    #[serde(default)]
    pub read_only: bool,
}

fn allowlist() -> EgressMode {
    EgressMode::Allowlist
}

impl Default for Network {
    fn default() -> Self {
        Network {
            setup: EgressMode::Allowlist,
            agent: EgressMode::Allowlist,
            allow: Vec::new(),
            read_only: false,
        }
    }
}

impl Network {
    fn hosts(&self) -> Result<Vec<HostPattern>, String> {
        self.allow
            .iter()
            .map(|host| {
                host.parse()
                    .map_err(|e| format!("{ENVIRONMENT_FILE}: network.allow {host:?}: {e}"))
            })
            .collect()
    }

    /// The policy of an image build's steps; `repo_host` (the repo's own git host) joins the
    /// allowlist.
    pub fn setup_policy(&self, repo_host: Option<&str>) -> EgressPolicy {
        let mut hosts = self.hosts().unwrap_or_default();
        hosts.extend(repo_host.and_then(|h| h.parse().ok()));
        EgressPolicy::from_mode(self.setup, &hosts, false)
    }

    /// The agent-time policy of the sandboxes made from the image, as the image records it.
    pub fn agent_network(&self, repo_host: Option<&str>) -> AgentNetwork {
        let mut allow = self.allow.clone();
        allow.extend(repo_host.map(str::to_string));
        AgentNetwork {
            mode: self.agent,
            allow,
            read_only: self.read_only,
        }
    }
}

impl Environment {
    /// Parses and checks a definition; the error names the line or the field at fault.
    pub fn parse(text: &str) -> Result<Environment, String> {
        let environment: Environment =
            toml::from_str(text).map_err(|e| format!("{ENVIRONMENT_FILE}: {e}"))?;
        environment.check()?;
        Ok(environment)
    }

    fn check(&self) -> Result<(), String> {
        let read_only_host =
            "the host base is this machine's /usr, read-only: add base = \"debian:bookworm\"";
        let steps = self.setup.iter().chain(&self.build).chain(&self.warm);
        for step in steps {
            if step.script().trim().is_empty() {
                return Err(format!("{ENVIRONMENT_FILE}: a command is empty"));
            }
            if step.user() == StepUser::Root && self.base == Base::Host {
                return Err(format!(
                    "{ENVIRONMENT_FILE}: step {:?} runs as root, which needs a Debian base ({read_only_host})",
                    step.name()
                ));
            }
            if let Step::Full {
                timeout_secs: Some(secs),
                ..
            } = step
            {
                check_timeout(*secs)?;
            }
        }
        if let Some(secs) = self.timeout_secs {
            check_timeout(secs)?;
        }
        self.network.hosts()?;
        if self.mcp.len() > MAX_MCP_SERVERS {
            return Err(format!(
                "{ENVIRONMENT_FILE}: at most {MAX_MCP_SERVERS} [[mcp]] servers, not {}",
                self.mcp.len()
            ));
        }
        for (i, entry) in self.mcp.iter().enumerate() {
            entry.check()?;
            if self.mcp[..i].iter().any(|e| e.name == entry.name) {
                return Err(format!(
                    "{ENVIRONMENT_FILE}: two [[mcp]] servers are named {:?}",
                    entry.name
                ));
            }
        }
        if !self.packages.is_empty() && self.base == Base::Host {
            return Err(format!(
                "{ENVIRONMENT_FILE}: packages need a Debian base ({read_only_host})"
            ));
        }
        if self.packages.len() > MAX_PACKAGES {
            return Err(format!(
                "{ENVIRONMENT_FILE}: at most {MAX_PACKAGES} packages, not {}",
                self.packages.len()
            ));
        }
        for package in &self.packages {
            if !is_package_name(package) {
                return Err(format!(
                    "{ENVIRONMENT_FILE}: package {package:?} is not a Debian package name \
                     (lowercase letters, digits, + - and ., at least two, starting with a letter or digit)"
                ));
            }
        }
        for manifest in &self.manifests {
            let escapes = manifest.starts_with('/')
                || manifest.split('/').any(|part| part == "..")
                || manifest.is_empty();
            if escapes {
                return Err(format!(
                    "{ENVIRONMENT_FILE}: manifest {manifest:?} must be a path inside the repo"
                ));
            }
        }
        for key in self.env.keys() {
            let valid = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "{ENVIRONMENT_FILE}: {key:?} is not a variable name"
                ));
            }
        }
        let limits = [
            ("memory_mb", self.limits.memory_mb, MIN_MEMORY_MB),
            ("pids", self.limits.pids, MIN_PIDS),
            ("disk_mb", self.limits.disk_mb, MIN_DISK_MB),
        ];
        for (name, value, min) in limits {
            if value.is_some_and(|v| v < min) {
                return Err(format!(
                    "{ENVIRONMENT_FILE}: limits.{name} must be at least {min}"
                ));
            }
        }
        Ok(())
    }

    /// The packages sorted, each once: what the base is built with.
    pub fn base_packages(&self) -> Vec<String> {
        let mut packages = self.packages.clone();
        packages.sort();
        packages.dedup();
        packages
    }

    /// Everything about setup other than the manifests' contents: the base and its packages,
    /// the steps (and who runs them), the variables and the setup network policy. A change reruns
    /// setup, from the clean base.
    pub fn setup_fingerprint(&self) -> String {
        let mut text = format!(
            "base\0{}\0packages\0{}\0",
            self.base,
            self.base_packages().join(",")
        );
        for step in &self.setup {
            text.push_str(&format!(
                "step\0{}\0{}\0{}\0",
                step.name(),
                step.script(),
                step.user().as_str()
            ));
        }
        for (key, value) in &self.env {
            text.push_str(&format!("env\0{key}\0{value}\0"));
        }
        // The agent-time policy is not setup's business: the image records it on every build.
        let n = &self.network;
        text.push_str(&format!("network\0{}\0{}\0", n.setup, n.allow.join(",")));
        text
    }

    /// What every sandbox made from an image built with this definition runs with.
    pub fn runtime(&self, repo_host: Option<&str>) -> ImageRuntime {
        ImageRuntime {
            env: self.env.clone(),
            limits: self.limits,
            network: self.network.agent_network(repo_host),
        }
    }
}

/// Below these, a sandbox cannot run git and a shell reliably.
const MIN_MEMORY_MB: u64 = 64;
const MIN_PIDS: u64 = 16;
const MIN_DISK_MB: u64 = 16;

/// Debian policy's package name: lowercase letters, digits, `+`, `-` and `.`, at least two
/// characters, starting with a letter or digit. No version or architecture: a base takes what
/// its suite has.
fn is_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.len() <= MAX_PACKAGE_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

fn check_timeout(secs: u64) -> Result<(), String> {
    if secs == 0 || secs > MAX_TIMEOUT_SECS {
        return Err(format!(
            "{ENVIRONMENT_FILE}: timeout_secs {secs} must be 1 to {MAX_TIMEOUT_SECS}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_definition_parses() {
        let environment = Environment::parse(
            r#"
            manifests = ["Cargo.lock", "web/package-lock.json"]
            timeout_secs = 600
            setup = ["cargo fetch"]
            [env]
            RUST_LOG = "info"
            [limits]
            memory_mb = 4096
            [[build]]
            run = "cargo build --offline"
            name = "build"
            timeout_secs = 1200
            [[warm]]
            run = "cargo test --offline --no-run"
            "#,
        )
        .unwrap();
        assert_eq!(environment.manifests.len(), 2);
        assert_eq!(environment.setup[0].script(), "cargo fetch");
        assert_eq!(environment.build[0].name(), "build");
        let fallback = Duration::from_secs(1);
        assert_eq!(
            environment.build[0].timeout(&environment, fallback),
            Duration::from_secs(1200)
        );
        assert_eq!(
            environment.warm[0].timeout(&environment, fallback),
            Duration::from_secs(600)
        );
        assert_eq!(environment.limits.memory_mb, Some(4096));
        assert_eq!(environment.env["RUST_LOG"], "info");
    }

    #[test]
    fn bases_packages_and_root_steps_parse_and_join_the_fingerprint() {
        let text = r#"
            base = "debian:bookworm"
            packages = ["python3-pip", "nodejs", "python3-pip"]
            [[setup]]
            run = "apt-get install -y jq"
            user = "root"
            [[setup]]
            run = "pip install -r requirements.txt"
            "#;
        let environment = Environment::parse(text).unwrap();
        assert_eq!(environment.base, Base::Debian(DebianSuite::Bookworm));
        assert_eq!(environment.base.to_string(), "debian:bookworm");
        assert_eq!(environment.base_packages(), ["nodejs", "python3-pip"]);
        assert_eq!(environment.setup[0].user(), StepUser::Root);
        assert_eq!(environment.setup[1].user(), StepUser::Kiln);
        assert_eq!(Environment::parse("").unwrap().base, Base::Host);
        // Each of them changes what setup is, so each reruns it.
        let fingerprint = environment.setup_fingerprint();
        for changed in [
            text.replace("debian:bookworm", "debian:trixie"),
            text.replace("\"nodejs\", ", ""),
            text.replace("user = \"root\"", ""),
        ] {
            let other = Environment::parse(&changed).unwrap();
            assert_ne!(other.setup_fingerprint(), fingerprint, "{changed}");
        }
        // The order and repetition of packages do not.
        let reordered = text.replace(
            "[\"python3-pip\", \"nodejs\", \"python3-pip\"]",
            "[\"nodejs\", \"python3-pip\"]",
        );
        assert_eq!(
            Environment::parse(&reordered).unwrap().setup_fingerprint(),
            fingerprint
        );
    }

    #[test]
    fn mistakes_are_refused_with_the_reason() {
        let cases = [
            ("setup = [\"\"]", "empty"),
            ("colour = 1", "colour"),
            ("manifests = [\"../secrets\"]", "inside the repo"),
            ("manifests = [\"/etc/passwd\"]", "inside the repo"),
            ("timeout_secs = 0", "timeout_secs"),
            (
                "[[build]]\nrun = \"x\"\ntimeout_secs = 999999",
                "timeout_secs",
            ),
            ("[env]\n\"1BAD\" = \"x\"", "variable name"),
            ("[limits]\nmemory_mb = 1", "limits.memory_mb"),
            ("[limits]\ncpus = 1", "cpus"),
            ("setup = [", "environment.toml"),
            ("base = \"ubuntu:noble\"", "debian:bookworm"),
            ("base = \"debian:buster\"", "is not one kiln builds"),
            ("packages = [\"jq\"]", "packages need a Debian base"),
            (
                "base = \"debian:bookworm\"\npackages = [\"jq; rm -rf /\"]",
                "not a Debian package name",
            ),
            (
                "base = \"debian:bookworm\"\npackages = [\"-o\"]",
                "not a Debian package name",
            ),
            (
                "[[setup]]\nrun = \"apt-get install -y jq\"\nuser = \"root\"",
                "needs a Debian base",
            ),
            (
                "base = \"debian:bookworm\"\n[[setup]]\nrun = \"x\"\nuser = \"admin\"",
                "`kiln` or `root`",
            ),
            ("[[setup]]\nrun = \"x\"\ncolour = 1", "colour"),
            ("setup = [1]", "a step is a command"),
        ];
        for (text, needle) in cases {
            let err = Environment::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        assert_eq!(Environment::parse("").unwrap(), Environment::default());
    }

    #[test]
    fn mcp_servers_parse_and_are_checked() {
        let environment = Environment::parse(
            r#"
            [[mcp]]
            name = "tracker"
            url = "https://mcp.example.com/mcp"
            secret = "TRACKER_TOKEN"
            tools = ["search_issues", "get_issue"]
            [[mcp]]
            name = "db"
            command = ["node", "tools/db-mcp.js"]
            "#,
        )
        .unwrap();
        assert_eq!(environment.mcp.len(), 2);
        assert_eq!(environment.mcp[0].secret.as_deref(), Some("TRACKER_TOKEN"));
        assert_eq!(environment.mcp[1].tools, None);
        let refused = [
            (
                "name = \"x\"\nurl = \"https://a\"\ncommand = [\"a\"]",
                "exactly one of url",
            ),
            ("name = \"x\"", "exactly one of url"),
            ("name = \"Bad Name\"\nurl = \"https://a\"", "must be 1 to"),
            ("name = \"a__b\"\nurl = \"https://a\"", "__"),
            ("name = \"x\"\nurl = \"ftp://a\"", "https://"),
            ("name = \"x\"\ncommand = []", "command is empty"),
            (
                "name = \"x\"\ncommand = [\"a\"]\nsecret = \"TOKEN\"",
                "secret is for remote",
            ),
            (
                "name = \"x\"\nurl = \"https://a\"\nheaders = 1",
                "unknown field",
            ),
        ];
        for (entry, expected) in refused {
            let err = Environment::parse(&format!("[[mcp]]\n{entry}")).unwrap_err();
            assert!(err.contains(expected), "{entry}: {err}");
        }
        let twice =
            "[[mcp]]\nname = \"a\"\nurl = \"https://a\"\n[[mcp]]\nname = \"a\"\ncommand = [\"b\"]";
        assert!(
            Environment::parse(twice)
                .unwrap_err()
                .contains("two [[mcp]] servers")
        );
    }
}
