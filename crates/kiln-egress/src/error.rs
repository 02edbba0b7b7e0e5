//! The crate's errors: what a person wrote wrong in a policy, and why a request was refused.
//!
//! A `Refusal` is not a failure of the proxy: it is the answer to one request, turned into the
//! 403/502/503 body the tool prints and into the audit record's reason. Its `Display` is that
//! body, so it is written for the person reading a build log.

use std::net::IpAddr;

use serde::Serialize;

use crate::address::AddressClass;
use crate::policy::EgressMode;

/// A policy, mode or host pattern that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "`{pattern}` is not a host pattern: {why} (allow entries look like `registry.example.org` or `*.example.org`)"
    )]
    Pattern { pattern: String, why: &'static str },
    #[error("`{0}` is not a network policy: use one of none, allowlist, open (or allow:HOST,HOST)")]
    Mode(String),
    #[error("`allow:` names no host: write allow:HOST,HOST, or none")]
    EmptyAllow,
}

/// Where a gate is used, for the hint in a refusal: who can change the policy and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Image builds: the repo's setup steps.
    Setup,
    /// Session sandboxes: anything the agent starts.
    Agent,
    /// `kiln sandbox run --net …`.
    AdHoc,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Self::Setup => "setup policy",
            Self::Agent => "agent policy",
            Self::AdHoc => "--net",
        }
    }

    fn how_to_allow(self, host: &str) -> String {
        match self {
            Self::Setup | Self::Agent => {
                "Add it to [network] allow in .kiln/environment.toml or ask an admin.".to_owned()
            }
            Self::AdHoc => format!("Pass --net allow:{host} (or --net open)."),
        }
    }
}

/// Why one request did not get through. Every variant names the host (or address) and, where a
/// person can change the outcome, how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    #[error("kiln egress: {host} is not reachable: this sandbox has no network ({}: none). {}", phase.name(), phase.how_to_allow(host))]
    NoNetwork { host: String, phase: Phase },
    #[error("kiln egress: {host} is not in this repo's allowlist ({}: allowlist). {}", phase.name(), phase.how_to_allow(host))]
    NotListed { host: String, phase: Phase },
    #[error(
        "kiln egress: {host} is on this server's deny list (entry {pattern}), which no repo policy overrides. Ask an admin."
    )]
    ServerDenied { host: String, pattern: String },
    #[error("kiln egress: {method} to {host} refused: this allowlist is read-only ({}: allowlist, read-only), only GET, HEAD and OPTIONS pass.", phase.name())]
    ReadOnly {
        host: String,
        method: String,
        phase: Phase,
    },
    #[error(
        "kiln egress: {host} resolves to {addr}, which is {class}; no policy reaches it (policy {mode})."
    )]
    Address {
        host: String,
        addr: IpAddr,
        class: AddressClass,
        mode: EgressMode,
    },
    #[error("kiln egress: {host} did not resolve: {detail}.")]
    Resolve { host: String, detail: String },
    #[error("kiln egress: connecting to {host} failed: {detail}.")]
    Connect { host: String, detail: String },
    #[error(
        "kiln egress: too many connections from this sandbox at once (limit {limit}); retry when some have finished."
    )]
    Busy { limit: usize },
    #[error("kiln egress: {detail}.")]
    BadRequest { detail: String },
}

impl Refusal {
    /// The status the proxy answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::NoNetwork { .. }
            | Self::NotListed { .. }
            | Self::ServerDenied { .. }
            | Self::ReadOnly { .. }
            | Self::Address { .. } => 403,
            Self::Resolve { .. } | Self::Connect { .. } => 502,
            Self::Busy { .. } => 503,
            Self::BadRequest { .. } => 400,
        }
    }

    /// Whether the refusal is the policy's or the address rules' (as opposed to a failure on
    /// the way: DNS, connect, capacity, a malformed request).
    pub fn is_policy(&self) -> bool {
        self.status() == 403
    }
}
