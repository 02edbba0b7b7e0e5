//! The one place kiln runs programs on the host (git, to fetch repositories with the
//! control plane's credentials; mmdebstrap, to build Debian bases). Explicit cwd, a cleared
//! environment, a timeout, killed on drop.

use crate::{Error, Result};
use kiln_core::Secret;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// The `PATH` of every host program kiln runs.
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// A line of a program's output longer than this reaches the caller in pieces.
const MAX_LINE: usize = 4096;

/// Runs `git args...` in `cwd` and returns its stdout; a failure carries git's stderr.
pub async fn git(cwd: &Path, args: &[&str], timeout: Duration) -> Result<String> {
    git_with_credentials(cwd, args, None, timeout).await
}

/// [`git`] for output that need not be text (a file's contents with `cat-file blob`).
pub(crate) async fn git_bytes(cwd: &Path, args: &[&str], timeout: Duration) -> Result<Vec<u8>> {
    run_git(cwd, args, None, timeout).await
}

/// How a program run by [`run_streamed`] ended.
#[derive(Debug)]
pub(crate) enum Ended {
    Exited(ExitStatus),
    /// Killed at the timeout.
    TimedOut,
}

/// Runs `program args...` in `cwd` with nothing of kiln's environment but `PATH` and `env`,
/// handing each line it prints (stdout or stderr, as it comes) to `line`; killed at `timeout`
/// or when the future is dropped.
pub(crate) async fn run_streamed(
    program: &str,
    args: &[String],
    cwd: &Path,
    env: &[(&str, &str)],
    timeout: Duration,
    mut line: impl FnMut(&str),
) -> Result<Ended> {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", HOST_PATH)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::io(format!("running {program}")))?;
    let (mut stdout, mut stderr) = (
        Lines::new(child.stdout.take().expect("piped")),
        Lines::new(child.stderr.take().expect("piped")),
    );
    let run = async {
        loop {
            let next = tokio::select! {
                next = stdout.next(), if !stdout.done => next,
                next = stderr.next(), if !stderr.done => next,
                status = child.wait(), if stdout.done && stderr.done => return status,
            };
            if let Some(text) = next? {
                line(&text);
            }
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(status) => Ok(Ended::Exited(
            status.map_err(Error::io(format!("running {program}")))?,
        )),
        Err(_) => {
            let _ = child.kill().await;
            Ok(Ended::TimedOut)
        }
    }
}

/// Lines of a pipe, each at most [`MAX_LINE`] bytes, decoded lossily.
struct Lines<R> {
    reader: R,
    pending: Vec<u8>,
    done: bool,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    fn new(reader: R) -> Self {
        Lines {
            reader,
            pending: Vec::new(),
            done: false,
        }
    }

    /// The next whole line (or piece of a long one); `None` when the read ended none.
    async fn next(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let rest = self.pending.split_off(end + 1);
                let line = std::mem::replace(&mut self.pending, rest);
                return Ok(Some(String::from_utf8_lossy(&line[..end]).into_owned()));
            }
            if self.pending.len() >= MAX_LINE {
                let rest = self.pending.split_off(MAX_LINE);
                let piece = std::mem::replace(&mut self.pending, rest);
                return Ok(Some(String::from_utf8_lossy(&piece).into_owned()));
            }
            let mut buf = [0u8; 8192];
            let n = self.reader.read(&mut buf).await?;
            if n == 0 {
                self.done = true;
                if self.pending.is_empty() {
                    return Ok(None);
                }
                let last = std::mem::take(&mut self.pending);
                return Ok(Some(String::from_utf8_lossy(&last).into_owned()));
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }
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
    let stdout = run_git(cwd, args, credentials, timeout).await?;
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

async fn run_git(
    cwd: &Path,
    args: &[&str],
    credentials: Option<&Secret<String>>,
    timeout: Duration,
) -> Result<Vec<u8>> {
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
    Ok(output.stdout)
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
