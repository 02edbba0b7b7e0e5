//! The one place kiln runs programs on the host (git, to fetch repositories with the
//! control plane's credentials). Explicit cwd, a cleared environment, a timeout, killed on drop.

use crate::{Error, Result};
use kiln_core::Secret;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Runs `git args...` in `cwd` and returns its stdout; a failure carries git's stderr.
pub async fn git(cwd: &Path, args: &[&str], timeout: Duration) -> Result<String> {
    git_with_credentials(cwd, args, None, timeout).await
}

/// [`git`] for a fetch or clone from a remote that needs credentials (`user:password` as they
/// were in the url, percent-encoded). They reach git only through its environment, as an
/// `Authorization` header (`GIT_CONFIG_*`), never on a command line, and are cut out of any
/// error it reports.
pub async fn git_with_credentials(
    cwd: &Path,
    args: &[&str],
    credentials: Option<&Secret<String>>,
    timeout: Duration,
) -> Result<String> {
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
    if let Some(credentials) = credentials {
        command
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                basic_auth_header(credentials.expose()),
            );
    }
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .map_err(|_| Error::GitTimeout {
            command: args[0].to_string(),
            after: timeout,
        })?
        .map_err(Error::io("running git"))?;
    if !output.status.success() {
        let mut stderr = kiln_core::redact_urls(String::from_utf8_lossy(&output.stderr).trim());
        if let Some(credentials) = credentials {
            for secret in secret_forms(credentials.expose()) {
                stderr = stderr.replace(&secret, "****");
            }
        }
        return Err(Error::Git {
            command: args[0].to_string(),
            message: stderr,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `Authorization: Basic …` for url credentials: user and password percent-decoded, as git
/// itself would send them.
fn basic_auth_header(userinfo: &str) -> String {
    use base64::Engine;
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
    let mut pair = decode(user);
    pair.push(b':');
    pair.extend(decode(password));
    format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Every form in which credentials could show up in a message: as given, decoded, and each
/// non-trivial part on its own.
fn secret_forms(userinfo: &str) -> Vec<String> {
    let decoded = percent_encoding::percent_decode_str(userinfo)
        .decode_utf8_lossy()
        .into_owned();
    let mut forms = vec![userinfo.to_string(), decoded.clone()];
    for whole in [userinfo, decoded.as_str()] {
        forms.extend(whole.split(':').map(str::to_string));
    }
    // Longest first, so a part never breaks up a longer form before it is replaced; parts of
    // fewer than 4 characters (a user like `git`) would blank out ordinary words.
    forms.retain(|f| f.chars().count() >= 4);
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    forms
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_credentials_become_a_basic_header() {
        // "u:p@ss" in base64.
        assert_eq!(
            super::basic_auth_header("u:p%40ss"),
            "Authorization: Basic dTpwQHNz"
        );
        assert_eq!(
            super::secret_forms("user:p%40ss1"),
            ["user:p%40ss1", "user:p@ss1", "p%40ss1", "p@ss1", "user"]
        );
    }
}
