//! How configuration declares hooks: one `[[hooks]]` table per command hook, in the server's
//! config file or a repository's settings.
//!
//! ```toml
//! [[hooks]]
//! event = "PreToolUse"                 # PreToolUse | PostToolUse | UserPromptSubmit | Stop
//! matcher = "bash|write_file"          # tool events only; default: every tool
//! command = ["/etc/kiln/hooks/guard", "--strict"]
//! timeout_secs = 30                    # default 60, at most 600
//! cwd = "/var/lib/kiln"                # where it runs on the host; default "/"
//! ```
//!
//! Unknown keys are refused, so a misspelt `matcher` cannot silently widen a hook to every tool.
//! The matcher and timeout are checked by [`HookConfig::build`], once, when the config loads.

use super::{CommandHook, Hook, HookError, HookEventKind, Matcher};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The longest timeout a hook may have; longer would let one hook stall a session for too long.
const MAX_TIMEOUT_SECS: u64 = 600;

/// One configured command hook.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    pub event: HookEventKind,
    #[serde(default)]
    pub matcher: Option<String>,
    /// argv; not run through a shell.
    pub command: Vec<String>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
}

impl From<&kiln_protocol::api::HookSpec> for HookConfig {
    /// A repo's hook: runs in `/` on the host, like every hook without a `cwd`.
    fn from(spec: &kiln_protocol::api::HookSpec) -> Self {
        HookConfig {
            event: spec.event,
            matcher: spec.matcher.clone(),
            command: spec.command.clone(),
            timeout_secs: spec.timeout_secs,
            cwd: None,
        }
    }
}

impl HookConfig {
    /// Checks the entry and makes the hook.
    pub fn build(&self) -> Result<Arc<dyn Hook>, HookError> {
        let matcher = match &self.matcher {
            Some(pattern) => Matcher::parse(pattern)?,
            None => Matcher::any(),
        };
        let timeout = match self.timeout_secs {
            Some(secs) if secs == 0 || secs > MAX_TIMEOUT_SECS => {
                return Err(HookError::BadTimeout {
                    got: secs,
                    max: MAX_TIMEOUT_SECS,
                });
            }
            Some(secs) => Duration::from_secs(secs),
            None => super::DEFAULT_HOOK_TIMEOUT,
        };
        let mut hook = CommandHook::new(self.event, self.command.clone())?
            .with_matcher(matcher)
            .with_timeout(timeout);
        if let Some(cwd) = &self.cwd {
            hook = hook.with_cwd(cwd);
        }
        Ok(Arc::new(hook))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_builds() {
        let config: HookConfig = serde_json::from_value(serde_json::json!({
            "event": "PreToolUse",
            "matcher": "bash",
            "command": ["/bin/true", "x"],
            "timeout_secs": 30
        }))
        .unwrap();
        assert_eq!(config.event, HookEventKind::PreToolUse);
        let hook = config.build().unwrap();
        assert_eq!(hook.name(), "/bin/true");
        assert_eq!(hook.time_limit(), Duration::from_secs(32));
    }

    #[test]
    fn config_mistakes_are_refused() {
        let parse = |v: serde_json::Value| serde_json::from_value::<HookConfig>(v);
        let err =
            parse(serde_json::json!({"event": "PreToolUse", "command": ["x"], "matchr": "a"}));
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("unknown field `matchr`")
        );
        assert!(parse(serde_json::json!({"event": "BeforeTool", "command": ["x"]})).is_err());
        let build = |v: serde_json::Value| parse(v).unwrap().build().map(|_| ());
        assert!(matches!(
            build(serde_json::json!({"event": "Stop", "command": []})),
            Err(HookError::EmptyCommand)
        ));
        assert!(matches!(
            build(serde_json::json!({"event": "Stop", "command": ["x"], "timeout_secs": 0})),
            Err(HookError::BadTimeout { .. })
        ));
        assert!(matches!(
            build(serde_json::json!({"event": "PreToolUse", "command": ["x"], "matcher": "(a"})),
            Err(HookError::BadMatcher { .. })
        ));
    }
}
