//! A repo's environment definition: how to prepare a sandbox for it before anyone asks. It lives
//! in the repo at `.kiln/environment.toml`, so it is versioned with the code it builds:
//!
//! ```toml
//! manifests = ["Cargo.lock"]          # setup reruns only when these change
//! timeout_secs = 600                  # default per command
//! [env]
//! RUST_LOG = "info"
//! [limits]
//! memory_mb = 4096
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

use kiln_egress::{EgressMode, EgressPolicy, HostPattern};
use kiln_protocol::api::{AgentNetwork, ImageRuntime, ResourceLimits};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where the definition lives, relative to the checkout.
pub const ENVIRONMENT_FILE: &str = ".kiln/environment.toml";

/// Longest a single command may be given.
const MAX_TIMEOUT_SECS: u64 = 3 * 3600;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
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
}

/// One command, run by `/bin/sh -c` in the checkout.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Step {
    Plain(String),
    Full {
        run: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        timeout_secs: Option<u64>,
    },
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
        let steps = self.setup.iter().chain(&self.build).chain(&self.warm);
        for step in steps {
            if step.script().trim().is_empty() {
                return Err(format!("{ENVIRONMENT_FILE}: a command is empty"));
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

    /// Everything about setup other than the manifests' contents: its steps, the variables and
    /// the setup network policy. A change reruns setup.
    pub fn setup_fingerprint(&self) -> String {
        let mut text = String::new();
        for step in &self.setup {
            text.push_str(&format!("step\0{}\0{}\0", step.name(), step.script()));
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
        ];
        for (text, needle) in cases {
            let err = Environment::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        assert_eq!(Environment::parse("").unwrap(), Environment::default());
    }
}
