//! The one place the engine runs programs on the host (git, to fetch repositories with the
//! control plane's credentials). Explicit cwd, a cleared environment, a timeout, killed on drop.

use crate::{Error, Result};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Runs `git args...` in `cwd` and returns its stdout; a failure carries git's stderr.
pub(crate) async fn git(cwd: &Path, args: &[&str], timeout: Duration) -> Result<String> {
    let mut command = Command::new("git");
    command
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", cwd)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .map_err(|_| Error::Git(format!("git {} timed out after {timeout:?}", args[0])))?
        .map_err(|e| Error::Git(format!("could not run git: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::Git(format!(
            "git {} failed: {}",
            args[0],
            redact_urls(stderr.trim())
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Hides credentials in URLs (`https://user:token@host` → `https://****@host`) before a message
/// reaches a log or an event.
pub(crate) fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("****");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact_urls;

    #[test]
    fn credentials_in_urls_are_hidden() {
        assert_eq!(
            redact_urls("fatal: https://x:ghp_secret@github.com/a/b.git not found"),
            "fatal: https://****@github.com/a/b.git not found"
        );
        assert_eq!(
            redact_urls("see https://example.com/a"),
            "see https://example.com/a"
        );
        assert_eq!(redact_urls("no url"), "no url");
    }
}
