//! Shared set-up for the sandbox tests: a provider on a fresh data directory that destroys
//! whatever its test left behind, even when the test fails.

#![allow(dead_code, unreachable_pub)]

use kiln_sandbox::{
    CommandLine, ExecOutcome, ExecRequest, ImageSpec, LocalConfig, LocalProvider, Provider,
    Sandbox, SandboxSpec,
};
use std::path::Path;

pub struct Harness {
    pub provider: LocalProvider,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn new() -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-")
            .tempdir()
            .expect("tempdir");
        let provider = LocalProvider::open(LocalConfig::new(dir.path()))
            .await
            .expect("open provider");
        Harness { provider, dir }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub async fn sandbox(&self) -> Sandbox {
        self.provider
            .create(host_spec())
            .await
            .expect("create sandbox")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.provider.destroy_all_blocking();
    }
}

pub fn host_spec() -> SandboxSpec {
    SandboxSpec {
        image: ImageSpec::host(),
        ..SandboxSpec::default()
    }
}

pub fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        command: CommandLine::Shell {
            script: script.into(),
        },
        cwd: None,
        env: Default::default(),
        stdin: false,
        timeout_ms: Some(20_000),
    }
}

/// Runs a shell script and returns its outcome.
pub async fn run(sandbox: &Sandbox, script: &str) -> ExecOutcome {
    sandbox.run(sh(script)).await.expect("exec")
}

/// Runs a shell script that must succeed and returns its stdout.
pub async fn ok(sandbox: &Sandbox, script: &str) -> String {
    let outcome = run(sandbox, script).await;
    assert!(
        outcome.status.success(),
        "`{script}` failed: {:?}\nstdout: {}\nstderr: {}",
        outcome.status,
        String::from_utf8_lossy(&outcome.stdout),
        String::from_utf8_lossy(&outcome.stderr)
    );
    String::from_utf8(outcome.stdout).expect("utf-8 output")
}
