//! Shared set-up for the engine's tests: real sandboxes holding a small git repository at
//! `/workspace`, a way to call a tool and collect its updates, and hook contexts.

#![allow(dead_code, unreachable_pub)]

pub mod hooks;

use kiln_core::{PromptId, SessionId, UserId};
use kiln_protocol::api::UserRef;
use kiln_sandbox::{
    CommandLine, ExecRequest, ImageSpec, LocalConfig, LocalProvider, Provider, Sandbox, SandboxSpec,
};
use kiln_tools::hooks::HookContext;
use kiln_tools::tools::{self, ToolCall, ToolContext, ToolResult, ToolUpdate};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const WORKDIR: &str = "/workspace";

/// A provider on a fresh data directory; destroys its sandboxes when dropped, even on failure.
pub struct Harness {
    pub provider: LocalProvider,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn new() -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("kiln-engine-test-")
            .tempdir()
            .expect("tempdir");
        let provider = LocalProvider::open(LocalConfig::new(dir.path()))
            .await
            .expect("open provider");
        Harness {
            provider,
            _dir: dir,
        }
    }

    /// A sandbox of the host image whose `/workspace` is a git repository with one commit:
    /// `README.md` (3 lines), `src/main.rs`, `src/lib.rs`, `docs/guide.md`.
    pub async fn repo(&self) -> Sandbox {
        let spec = SandboxSpec {
            image: ImageSpec::host(),
            ..SandboxSpec::default()
        };
        let sandbox = self.provider.create(spec).await.expect("create sandbox");
        ok(
            &sandbox,
            r#"set -e
            git init -q -b main .
            git config user.email test@kiln.invalid
            git config user.name Test
            printf 'hello\nworld\nbye\n' > README.md
            mkdir -p src docs
            printf 'fn main() {\n    println!("hi");\n}\n' > src/main.rs
            printf 'pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n' > src/lib.rs
            printf '# Guide\nUse the tools.\n' > docs/guide.md
            git add -A
            git commit -q -m initial"#,
        )
        .await;
        sandbox
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.provider.destroy_all_blocking();
    }
}

/// Runs a shell script in the workdir; it must succeed. Returns stdout.
pub async fn ok(sandbox: &Sandbox, script: &str) -> String {
    let outcome = sandbox
        .run(ExecRequest {
            command: CommandLine::Shell {
                script: script.into(),
            },
            cwd: Some(WORKDIR.into()),
            env: Default::default(),
            stdin: false,
            timeout_ms: Some(30_000),
        })
        .await
        .expect("exec");
    assert!(
        outcome.status.success(),
        "`{script}` failed: {:?}\nstdout: {}\nstderr: {}",
        outcome.status,
        String::from_utf8_lossy(&outcome.stdout),
        String::from_utf8_lossy(&outcome.stderr)
    );
    String::from_utf8(outcome.stdout).expect("utf-8 output")
}

/// A tool call's result and every update it sent, in order.
pub struct Called {
    pub result: ToolResult,
    pub updates: Vec<ToolUpdate>,
}

impl Called {
    /// The result text, asserting the call succeeded.
    pub fn ok(&self) -> &str {
        assert!(
            !self.result.is_error,
            "tool failed: {}",
            self.result.content
        );
        &self.result.content
    }

    /// The result text, asserting the call failed.
    pub fn err(&self) -> &str {
        assert!(
            self.result.is_error,
            "tool succeeded: {}",
            self.result.content
        );
        &self.result.content
    }

    pub fn changes(&self) -> Vec<tools::FileChange> {
        self.updates
            .iter()
            .filter_map(|u| match u {
                ToolUpdate::FileChanged(change) => Some(change.clone()),
                ToolUpdate::Output { .. } => None,
            })
            .collect()
    }
}

/// Calls `name` with `input` in the sandbox's `/workspace`.
pub async fn call(sandbox: &Sandbox, name: &str, input: serde_json::Value) -> Called {
    call_with(sandbox, name, input, &CancellationToken::new()).await
}

pub async fn call_with(
    sandbox: &Sandbox,
    name: &str,
    input: serde_json::Value,
    cancel: &CancellationToken,
) -> Called {
    let ctx = ToolContext {
        sandbox,
        workdir: WORKDIR,
        cancel,
        bash_timeout: Duration::from_secs(60),
        env: &Default::default(),
    };
    let call = ToolCall {
        id: "call-1".into(),
        name: name.into(),
        input,
    };
    // Roomy enough that no test blocks on it; the receiver is drained after the call.
    let (tx, mut rx) = mpsc::channel(4096);
    let result = tools::run(&ctx, &call, &tx).await;
    drop(tx);
    let mut updates = Vec::new();
    while let Some(update) = rx.recv().await {
        updates.push(update);
    }
    Called { result, updates }
}

/// A hook context for tests.
pub fn hook_context() -> HookContext {
    HookContext {
        session_id: SessionId::random(),
        prompt_id: PromptId::random(),
        author: UserRef {
            id: UserId::random(),
            name: "Ada".into(),
        },
        repo: "acme/widgets".into(),
        cwd: WORKDIR.into(),
    }
}
