//! Fixtures for the hook tests: executable scripts, chains of command hooks, and built-in
//! hooks that substitute, decide or hang.

use kiln_tools::hooks::{
    CommandHook, Hook, HookContext, HookDecision, HookEvent, HookEventKind, HookOutcome, Hooks,
};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Writes an executable `/bin/sh` script.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

pub fn hook(event: HookEventKind, path: &Path) -> CommandHook {
    CommandHook::new(event, vec![path.to_string_lossy().into_owned()]).unwrap()
}

pub fn chain(hooks: Vec<CommandHook>) -> Hooks {
    Hooks::new(
        hooks
            .into_iter()
            .map(|h| Arc::new(h) as Arc<dyn Hook>)
            .collect(),
    )
}

pub fn pre_tool(tool: &str, input: Value) -> HookEvent {
    HookEvent::PreToolUse {
        tool_name: tool.into(),
        tool_input: input,
        tool_use_id: "toolu_1".into(),
    }
}

/// The process whose pid is in `pid_file` is gone (or a zombie nobody reaped yet).
pub async fn assert_gone(pid_file: &Path) {
    let pid = std::fs::read_to_string(pid_file).unwrap();
    for _ in 0..40 {
        match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
            Err(_) => return,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z')) =>
            {
                return;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("process {} survived its hook", pid.trim());
}

/// A built-in hook that answers `read_file` calls itself.
#[derive(Debug)]
pub struct Cached;

#[async_trait::async_trait]
impl Hook for Cached {
    fn name(&self) -> &str {
        "cache"
    }
    fn matches(&self, event: &HookEvent) -> bool {
        event.tool_name() == Some("read_file")
    }
    async fn call(&self, _ctx: &HookContext, _event: &HookEvent) -> HookOutcome {
        HookOutcome {
            decisions: vec![
                HookDecision::Substitute {
                    result: "1\tcached".into(),
                },
                HookDecision::AddContext {
                    text: "served from cache".into(),
                },
            ],
            error: None,
        }
    }
}

/// A built-in hook that always decides the same, or never answers.
#[derive(Debug)]
pub struct Always(pub HookDecision);

#[async_trait::async_trait]
impl Hook for Always {
    fn name(&self) -> &str {
        "always"
    }
    fn matches(&self, _event: &HookEvent) -> bool {
        true
    }
    async fn call(&self, _ctx: &HookContext, _event: &HookEvent) -> HookOutcome {
        HookOutcome::decide(self.0.clone())
    }
}

#[derive(Debug)]
pub struct Hangs;

#[async_trait::async_trait]
impl Hook for Hangs {
    fn name(&self) -> &str {
        "hangs"
    }
    fn matches(&self, _event: &HookEvent) -> bool {
        true
    }
    async fn call(&self, _ctx: &HookContext, _event: &HookEvent) -> HookOutcome {
        std::future::pending().await
    }
    fn time_limit(&self) -> Duration {
        Duration::from_millis(200)
    }
}
