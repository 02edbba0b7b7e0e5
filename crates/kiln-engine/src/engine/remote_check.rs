//! Checking a repo's url before it is registered: one `git ls-remote` from the kiln host,
//! bounded in time, with the credentials kept off the command line, and git's words turned
//! into what a person can act on: no such path, no such host, authentication required, no
//! answer.

use super::Engine;
use crate::{Error, Result};
use kiln_fleet::host::git_with_credentials;
use std::path::Path;
use std::time::Duration;

/// Longest a check waits for the remote.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

impl Engine {
    /// Whether the kiln host can read `url` as a git repository; `Invalid` says what is wrong.
    pub async fn check_remote(&self, url: &str) -> Result<()> {
        let (clean, credentials) =
            kiln_store::split_repo_url(url).map_err(|e| Error::Invalid(store_message(e)))?;
        if let Some(path) = local_path(&clean)
            && !Path::new(path).exists()
        {
            return Err(Error::Invalid(format!(
                "no such path: {path} does not exist on the kiln host"
            )));
        }
        let credentials = match (credentials, &self.inner.forge) {
            (None, Some(forge)) => {
                let source = super::forge::ForgeCredentials {
                    forge: forge.clone(),
                };
                kiln_fleet::CredentialSource::credentials(&source, &clean)
                    .await
                    .map_err(Error::Invalid)?
            }
            (credentials, _) => credentials,
        };
        let cwd = std::env::temp_dir();
        let timeout = CHECK_TIMEOUT.min(self.inner.config.git_timeout);
        let args = ["ls-remote", "--quiet", "--", clean.as_str(), "HEAD"];
        match git_with_credentials(&cwd, &args, credentials.as_ref(), timeout).await {
            Ok(_) => Ok(()),
            Err(e @ (kiln_fleet::Error::Git { .. } | kiln_fleet::Error::GitTimeout { .. })) => {
                Err(Error::Invalid(explain(&clean, &e.to_string(), timeout)))
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn store_message(e: kiln_store::Error) -> String {
    match e {
        kiln_store::Error::Invalid(message) => message,
        other => other.to_string(),
    }
}

/// The path of a url that names a directory on the host (`/srv/x.git`, `file:///srv/x.git`).
fn local_path(url: &str) -> Option<&str> {
    if let Some(path) = url.strip_prefix("file://") {
        return Some(path);
    }
    (url.starts_with('/') || url.starts_with("./") || url.starts_with("../")).then_some(url)
}

/// The host a url names, for messages.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    // scp-like `git@host:path`.
    if url.contains("://") {
        authority
    } else {
        authority.split(':').next().unwrap_or(authority)
    }
}

/// What git's failure means for the person adding the repo.
fn explain(url: &str, said: &str, timeout: Duration) -> String {
    let lower = said.to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    let host = host_of(url);
    let what = if has(&["timed out after"]) {
        format!(
            "no answer: {host} did not answer within {} s",
            timeout.as_secs()
        )
    } else if has(&[
        "could not resolve host",
        "could not resolve hostname",
        "name or service not known",
        "temporary failure in name resolution",
        "no address associated",
    ]) {
        format!("no such host: {host} does not resolve from the kiln host")
    } else if has(&[
        "authentication failed",
        "could not read username",
        "could not read password",
        "terminal prompts disabled",
        "permission denied (publickey",
        "http 401",
        "the requested url returned error: 401",
        "the requested url returned error: 403",
        "invalid username or password",
    ]) {
        format!(
            "authentication required: {host} refused to serve it without valid credentials; \
             add a token to the url (https://USER:TOKEN@{host}/…) or give the kiln host an \
             ssh key"
        )
    } else if has(&[
        "connection refused",
        "failed to connect",
        "couldn't connect",
    ]) {
        format!("cannot connect: nothing answers at {host}")
    } else if has(&[
        "does not appear to be a git repository",
        "not a git repository",
        "repository not found",
        "not found",
    ]) {
        format!("no git repository at {url}")
    } else {
        "git ls-remote failed".to_string()
    };
    format!("the kiln host cannot read {url}: {what} ({})", said.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_failures_become_what_to_fix() {
        let t = Duration::from_secs(20);
        let cases = [
            (
                "https://nohost.example/x.git",
                "git ls-remote failed: fatal: unable to access 'https://nohost.example/x.git/': \
                 Could not resolve host: nohost.example",
                "no such host: nohost.example",
            ),
            (
                "git@gh.example:me/x.git",
                "ssh: Could not resolve hostname gh.example: Name or service not known",
                "no such host: gh.example",
            ),
            (
                "http://127.0.0.1:9/x.git",
                "fatal: could not read Username for 'http://127.0.0.1:9': terminal prompts \
                 disabled",
                "authentication required",
            ),
            (
                "http://127.0.0.1:9/x.git",
                "fatal: unable to access: Failed to connect to 127.0.0.1 port 9: Connection \
                 refused",
                "cannot connect: nothing answers at 127.0.0.1:9",
            ),
            (
                "/srv/x",
                "fatal: '/srv/x' does not appear to be a git repository",
                "no git repository at /srv/x",
            ),
            (
                "https://h/x",
                "git ls-remote timed out after 20s",
                "no answer",
            ),
        ];
        for (url, said, expected) in cases {
            let message = explain(url, said, t);
            assert!(message.contains(expected), "{url}: {message}");
        }
    }

    #[test]
    fn local_paths_are_recognised() {
        assert_eq!(local_path("/srv/x.git"), Some("/srv/x.git"));
        assert_eq!(local_path("file:///srv/x.git"), Some("/srv/x.git"));
        assert_eq!(local_path("https://h/x"), None);
        assert_eq!(local_path("git@h:x"), None);
    }
}
