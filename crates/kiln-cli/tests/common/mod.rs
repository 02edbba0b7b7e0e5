//! Shared by the CLI's integration tests: leave no sandbox behind, whatever happened.

#![allow(dead_code, unreachable_pub)]

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Destroys every sandbox of a data dir when dropped (after the test killed its server), so a
/// failing test does not leave sandboxes running with their mounts under a deleted tempdir.
pub struct SandboxReaper(pub PathBuf);

impl Drop for SandboxReaper {
    fn drop(&mut self) {
        destroy_all(&self.0);
    }
}

pub fn destroy_all(data: &Path) {
    if !data.is_dir() {
        return;
    }
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let Ok(listed) = Command::new(kiln)
        .args(["sandbox", "ls", "--json", "--data-dir"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|info| info["id"].as_str().map(str::to_string))
        .collect();
    if ids.is_empty() {
        return;
    }
    let _ = Command::new(kiln)
        .args(["sandbox", "rm", "--data-dir"])
        .arg(data)
        .args(&ids)
        .stderr(Stdio::null())
        .status();
}

/// Waits (at most 10 s) until a killed process is gone or a zombie: its flocks are released then.
pub fn wait_until_dead(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return;
        };
        // The state follows the command name, which is in parentheses.
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        if state.is_some_and(|s| s.starts_with('Z')) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
