//! The shapes of the store's JSON columns (`repos.hooks`, `images.runtime`, `images.secrets`),
//! owned here and
//! converted to and from the API types at the store's boundary. Changing the wire format (the
//! API types in kiln-protocol) must not change what is on disk: these types change only with a
//! migration, and the tests below pin their JSON.

use kiln_protocol::api::{
    AgentNetwork, EgressMode, HookEventKind, HookSpec, ImageRuntime, ImageSecret, ResourceLimits,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One repo hook, as `repos.hooks` holds it (a JSON array of these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredHook {
    event: StoredHookEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    matcher: Option<String>,
    command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_secs: Option<u64>,
}

/// Named as in the Claude Code hooks contract, which is what the first rows were written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum StoredHookEvent {
    PreToolUse,
    PostToolUse,
    UserPromptSubmit,
    Stop,
}

impl From<&HookSpec> for StoredHook {
    fn from(spec: &HookSpec) -> StoredHook {
        StoredHook {
            event: match spec.event {
                HookEventKind::PreToolUse => StoredHookEvent::PreToolUse,
                HookEventKind::PostToolUse => StoredHookEvent::PostToolUse,
                HookEventKind::UserPromptSubmit => StoredHookEvent::UserPromptSubmit,
                HookEventKind::Stop => StoredHookEvent::Stop,
            },
            matcher: spec.matcher.clone(),
            command: spec.command.clone(),
            timeout_secs: spec.timeout_secs,
        }
    }
}

impl From<StoredHook> for HookSpec {
    fn from(stored: StoredHook) -> HookSpec {
        HookSpec {
            event: match stored.event {
                StoredHookEvent::PreToolUse => HookEventKind::PreToolUse,
                StoredHookEvent::PostToolUse => HookEventKind::PostToolUse,
                StoredHookEvent::UserPromptSubmit => HookEventKind::UserPromptSubmit,
                StoredHookEvent::Stop => HookEventKind::Stop,
            },
            matcher: stored.matcher,
            command: stored.command,
            timeout_secs: stored.timeout_secs,
        }
    }
}

/// The `repos.hooks` text for `hooks`.
pub(crate) fn hooks_json(hooks: &[HookSpec]) -> serde_json::Result<String> {
    serde_json::to_string(&hooks.iter().map(StoredHook::from).collect::<Vec<_>>())
}

/// What `images.runtime` holds: the env and limits of every sandbox made from the image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredRuntime {
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    limits: StoredLimits,
    /// Absent for the default (the registry preset), as in rows written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    network: Option<StoredNetwork>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredNetwork {
    mode: StoredMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    allow: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StoredMode {
    None,
    Allowlist,
    Open,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StoredLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disk_mb: Option<u64>,
}

impl From<&ImageRuntime> for StoredRuntime {
    fn from(runtime: &ImageRuntime) -> StoredRuntime {
        let limits = runtime.limits;
        StoredRuntime {
            env: runtime.env.clone(),
            limits: StoredLimits {
                memory_mb: limits.memory_mb,
                pids: limits.pids,
                disk_mb: limits.disk_mb,
            },
            network: (runtime.network != AgentNetwork::default()).then(|| StoredNetwork {
                mode: match runtime.network.mode {
                    EgressMode::None => StoredMode::None,
                    EgressMode::Allowlist => StoredMode::Allowlist,
                    EgressMode::Open => StoredMode::Open,
                },
                allow: runtime.network.allow.clone(),
                read_only: runtime.network.read_only,
            }),
        }
    }
}

impl From<StoredRuntime> for ImageRuntime {
    fn from(stored: StoredRuntime) -> ImageRuntime {
        ImageRuntime {
            env: stored.env,
            limits: ResourceLimits {
                memory_mb: stored.limits.memory_mb,
                pids: stored.limits.pids,
                disk_mb: stored.limits.disk_mb,
            },
            network: stored
                .network
                .map(|n| AgentNetwork {
                    mode: match n.mode {
                        StoredMode::None => EgressMode::None,
                        StoredMode::Allowlist => EgressMode::Allowlist,
                        StoredMode::Open => EgressMode::Open,
                    },
                    allow: n.allow,
                    read_only: n.read_only,
                })
                .unwrap_or_default(),
        }
    }
}

/// One entry of `images.secrets`: a secret the build's steps got, by name and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredImageSecret {
    name: String,
    fingerprint: String,
}

impl From<&ImageSecret> for StoredImageSecret {
    fn from(secret: &ImageSecret) -> StoredImageSecret {
        StoredImageSecret {
            name: secret.name.clone(),
            fingerprint: secret.fingerprint.clone(),
        }
    }
}

impl From<StoredImageSecret> for ImageSecret {
    fn from(stored: StoredImageSecret) -> ImageSecret {
        ImageSecret {
            name: stored.name,
            fingerprint: stored.fingerprint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows written before these types existed (by the API types) read back the same, and are
    /// written back byte for byte: the disk format is this module's, pinned here.
    #[test]
    fn the_disk_format_is_pinned() {
        let hooks = r#"[{"event":"PreToolUse","matcher":"bash","command":["/bin/check"],"timeout_secs":30},{"event":"Stop","command":["/bin/done"]}]"#;
        let stored: Vec<StoredHook> = serde_json::from_str(hooks).unwrap();
        let specs: Vec<HookSpec> = stored.into_iter().map(HookSpec::from).collect();
        assert_eq!(specs[0].event, HookEventKind::PreToolUse);
        assert_eq!(specs[0].timeout_secs, Some(30));
        assert_eq!(specs[1].matcher, None);
        assert_eq!(hooks_json(&specs).unwrap(), hooks);

        let runtime = r#"{"env":{"RUST_LOG":"info"},"limits":{"memory_mb":4096,"disk_mb":8192}}"#;
        let stored: StoredRuntime = serde_json::from_str(runtime).unwrap();
        let api = ImageRuntime::from(stored);
        assert_eq!(api.limits.memory_mb, Some(4096));
        assert_eq!(api.limits.pids, None);
        let back = serde_json::to_string(&StoredRuntime::from(&api)).unwrap();
        assert_eq!(back, runtime);
        // An image recorded before runtimes existed has `{}`.
        let empty: StoredRuntime = serde_json::from_str("{}").unwrap();
        assert_eq!(ImageRuntime::from(empty), ImageRuntime::default());

        let runtime = r#"{"env":{},"limits":{},"network":{"mode":"open","read_only":true}}"#;
        let api = ImageRuntime::from(serde_json::from_str::<StoredRuntime>(runtime).unwrap());
        assert_eq!(api.network.mode, EgressMode::Open);
        assert!(api.network.read_only && api.network.allow.is_empty());
        let back = serde_json::to_string(&StoredRuntime::from(&api)).unwrap();
        assert_eq!(back, runtime);

        let secrets = r#"[{"name":"NPM_TOKEN","fingerprint":"00ff"}]"#;
        let stored: Vec<StoredImageSecret> = serde_json::from_str(secrets).unwrap();
        let api: Vec<ImageSecret> = stored.into_iter().map(ImageSecret::from).collect();
        assert_eq!(api[0].name, "NPM_TOKEN");
        let back: Vec<StoredImageSecret> = api.iter().map(StoredImageSecret::from).collect();
        assert_eq!(serde_json::to_string(&back).unwrap(), secrets);
    }
}
