//! Pushing a session's branch without any credential entering its sandbox: the inverse of
//! [`Workspaces::sync`]. Inside the sandbox the new commits of `kiln/<session>` become a git
//! bundle, read out through the guest (bounded); on the host the bundle is fetched into the
//! repo's mirror (under `refs/kiln/sessions/`, never its `refs/heads`), and the mirror pushes
//! the commit to exactly `refs/heads/kiln/<session>` on the remote with a credential the
//! control plane holds, handed to git through its environment only.
//!
//! The remote ref is computed from the session id, never taken from a request or the model, so
//! a push can touch no branch but the session's own; it is forced (the branch belongs to the
//! session, and an amended commit must be able to replace the last push), and only it is.

use crate::host::{git, git_with_credentials};
use crate::workspace::{Workspaces, shell_quote};
use crate::{Error, Result};
use kiln_core::{Secret, SessionId, WORKDIR};
use kiln_protocol::api::Repo;
use kiln_sandbox::{CommandLine, ExecRequest, Sandbox};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the push bundle is written inside the sandbox.
const PUSH_BUNDLE: &str = "/tmp/.kiln-push.bundle";

/// The largest bundle a push brings out of a sandbox.
pub const MAX_PUSH_BUNDLE: u64 = 1 << 30;

/// Branch names a push refuses whatever the session is called (besides the repo's default
/// branch).
const PROTECTED: &[&str] = &[
    "main",
    "master",
    "trunk",
    "develop",
    "release",
    "production",
];

/// The largest diff or patch [`Workspaces::session_changes`] returns.
pub const MAX_CHANGES: usize = 32 << 20;

/// What [`Workspaces::session_changes`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changes {
    /// `git diff default...branch`: unified, what the branch changed since it left.
    Diff,
    /// `git format-patch --stdout default..branch`: the commits as an mbox, for `git am`.
    Patch,
}

/// The credential a push uses.
#[derive(Debug, Clone)]
pub enum PushCredential {
    /// The host's, as fetches use: the one stored with the repo (its URL's user and password),
    /// else the forge's short-lived installation token.
    Repo,
    /// A short-lived one (`user:password`, percent-encoded), e.g. a forge's installation token.
    Given(Secret<String>),
    /// None at all (a remote that needs none, or a test proving one is needed).
    Anonymous,
}

/// What a push left on the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `kiln/<session>`.
    pub branch: String,
    /// The commit the remote branch now points at.
    pub commit: String,
    /// `refs/heads/kiln/<session>`.
    pub remote_ref: String,
}

/// The only remote ref a session may push to; refused if it could name a protected branch.
pub fn session_ref(session: &SessionId, default_branch: &str) -> Result<(String, String)> {
    let branch = format!("kiln/{session}");
    let refused = branch == default_branch
        || PROTECTED.contains(&branch.as_str())
        || branch.contains("..")
        || branch.contains(|c: char| c.is_whitespace() || "~^:?*[\\".contains(c));
    if refused {
        return Err(Error::Push(format!(
            "refusing to push to {branch}: only the session's own branch may be pushed"
        )));
    }
    Ok((branch.clone(), format!("refs/heads/{branch}")))
}

impl Workspaces {
    /// Pushes the session's branch `kiln/<session>` from `sandbox` to the repo's remote.
    pub async fn push_session_branch(
        &self,
        sandbox: &Sandbox,
        repo: &Repo,
        session: &SessionId,
        credential: PushCredential,
    ) -> Result<Pushed> {
        let (branch, remote_ref) = session_ref(session, &repo.default_branch)?;
        let (mirror, commit) = self
            .branch_in_mirror(sandbox, repo, session, &branch)
            .await?;
        let remote = self.store.repo_remote(&repo.name).await?;
        let credentials = match credential {
            PushCredential::Repo => self.host_credentials(&remote).await.map_err(Error::Push)?,
            PushCredential::Given(secret) => Some(secret),
            PushCredential::Anonymous => None,
        };
        // The commit, not the mirror's ref: a fetch of the mirror meanwhile may prune
        // `refs/kiln/...` (it is not on the remote), never the objects. `+` forces this one ref.
        let refspec = format!("+{commit}:{remote_ref}");
        git_with_credentials(
            &mirror,
            &["push", "--quiet", "--no-verify", &remote.url, &refspec],
            credentials.as_ref(),
            self.git_timeout,
        )
        .await
        .map_err(|e| match e {
            Error::Git { message, .. } => Error::Push(format!(
                "the remote refused the push of {branch}: {}",
                refusal(&message, credentials.is_some())
            )),
            other => other,
        })?;
        Ok(Pushed {
            branch,
            commit,
            remote_ref,
        })
    }

    /// The session's branch against the repo's default branch, computed on the host after
    /// bringing the branch out: a unified diff, or the commits as a `format-patch` mbox.
    pub async fn session_changes(
        &self,
        sandbox: &Sandbox,
        repo: &Repo,
        session: &SessionId,
        kind: Changes,
    ) -> Result<String> {
        let (branch, _) = session_ref(session, &repo.default_branch)?;
        let (mirror, commit) = self
            .branch_in_mirror(sandbox, repo, session, &branch)
            .await?;
        let base = format!("refs/heads/{}", repo.default_branch);
        let text = match kind {
            Changes::Diff => {
                let range = format!("{base}...{commit}");
                git(
                    &mirror,
                    &["diff", "--no-color", "--no-ext-diff", &range],
                    self.git_timeout,
                )
                .await?
            }
            Changes::Patch => {
                let range = format!("{base}..{commit}");
                git(
                    &mirror,
                    &["format-patch", "--stdout", "--no-color", &range],
                    self.git_timeout,
                )
                .await?
            }
        };
        if text.len() > MAX_CHANGES {
            return Err(Error::Push(format!(
                "the changes of {branch} are {} MiB, more than the {} MiB shown here; fetch the branch with git instead",
                text.len() >> 20,
                MAX_CHANGES >> 20
            )));
        }
        Ok(text)
    }

    /// [`Workspaces::bring_out`]; when the mirror lacks a commit the bundle leaves out (the
    /// mirror was made again since the checkout), fetches the mirror and tries once more.
    /// The host's mirror holding the session branch's commits, and the branch's commit. The
    /// sandbox's checkout came from the mirror, so every commit the bundle leaves out is already
    /// there: no fetch is needed unless the mirror is gone.
    async fn branch_in_mirror(
        &self,
        sandbox: &Sandbox,
        repo: &Repo,
        session: &SessionId,
        branch: &str,
    ) -> Result<(PathBuf, String)> {
        let mirror = match self.existing_mirror(&repo.name) {
            Some(mirror) => mirror,
            None => self.refresh_mirror(repo).await?,
        };
        let commit = self
            .bring_out_or_fetch(sandbox, repo, &mirror, session, branch)
            .await?;
        Ok((mirror, commit))
    }

    async fn bring_out_or_fetch(
        &self,
        sandbox: &Sandbox,
        repo: &Repo,
        mirror: &Path,
        session: &SessionId,
        branch: &str,
    ) -> Result<String> {
        // The mirror is written (a ref) while held, as fetches hold it.
        let first = {
            let _held = self.mirror_locks.lock(&repo.name).await;
            self.bring_out(sandbox, mirror, session, branch).await
        };
        match first {
            Err(Error::Git { message, .. }) if message.contains("prerequisite") => {
                tracing::info!(%session, "the mirror lacks the push bundle's base; fetching it");
                self.refresh_mirror(repo).await?;
                let _held = self.mirror_locks.lock(&repo.name).await;
                self.bring_out(sandbox, mirror, session, branch).await
            }
            other => other,
        }
    }

    /// Brings the branch's commits from the sandbox into the mirror; returns the branch's
    /// commit.
    async fn bring_out(
        &self,
        sandbox: &Sandbox,
        mirror: &Path,
        session: &SessionId,
        branch: &str,
    ) -> Result<String> {
        // Whatever the sandbox got from the mirror (its remote-tracking refs) is left out of
        // the bundle; a branch with nothing new needs none.
        let script = format!(
            "set -e\ncd {WORKDIR}\n\
             tip=$(git rev-parse --verify --quiet {b}^{{commit}}) || {{ echo 'the session branch {branch} does not exist in the checkout' >&2; exit 3; }}\n\
             rm -f {PUSH_BUNDLE}\n\
             if [ \"$(git rev-list --count \"$tip\" --not --remotes)\" != 0 ]; then\n\
               git bundle create --quiet {PUSH_BUNDLE} {b} --not --remotes\n\
             fi\n\
             echo \"$tip\"\n",
            b = shell_quote(&format!("refs/heads/{branch}")),
        );
        let outcome = sandbox
            .run(ExecRequest {
                command: CommandLine::Shell { script },
                cwd: Some("/".into()),
                env: BTreeMap::new(),
                stdin: false,
                timeout_ms: Some(self.git_timeout.as_millis() as u64),
            })
            .await?;
        if !outcome.status.success() {
            return Err(Error::Checkout {
                action: format!("bundling {branch}"),
                message: String::from_utf8_lossy(&outcome.stderr).trim().to_string(),
            });
        }
        let commit = String::from_utf8_lossy(&outcome.stdout).trim().to_string();
        if commit.len() < 40 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Checkout {
                action: format!("bundling {branch}"),
                message: format!("unexpected output {commit:?}"),
            });
        }
        let size = match sandbox.guest().stat(PUSH_BUNDLE).await {
            Ok(stat) => Some(stat.size),
            Err(_) => None,
        };
        let Some(size) = size else {
            // Nothing new: the commit is already among the mirror's objects.
            return Ok(commit);
        };
        if size > MAX_PUSH_BUNDLE {
            let _ = sandbox.guest().remove(PUSH_BUNDLE, false).await;
            return Err(Error::Push(format!(
                "the commits of {branch} make a bundle of {} MiB, more than the {} MiB a push may bring out",
                size >> 20,
                MAX_PUSH_BUNDLE >> 20
            )));
        }
        let scratch = self.data_dir.join("tmp");
        tokio::fs::create_dir_all(&scratch)
            .await
            .map_err(Error::io(format!("creating {}", scratch.display())))?;
        let bundle = scratch.join(format!("push-{}.bundle", kiln_core::random_hex(8)));
        let fetched = self
            .fetch_bundle(sandbox, mirror, session, branch, &bundle)
            .await;
        let _ = tokio::fs::remove_file(&bundle).await;
        let _ = sandbox.guest().remove(PUSH_BUNDLE, false).await;
        fetched?;
        Ok(commit)
    }

    async fn fetch_bundle(
        &self,
        sandbox: &Sandbox,
        mirror: &Path,
        session: &SessionId,
        branch: &str,
        bundle: &Path,
    ) -> Result<()> {
        let mut file = std::fs::File::create(bundle)
            .map_err(Error::io(format!("creating {}", bundle.display())))?;
        let mut written = 0u64;
        let read = sandbox
            .guest()
            .read_file_with(PUSH_BUNDLE, |chunk| {
                written += chunk.len() as u64;
                if written > MAX_PUSH_BUNDLE {
                    return Err(kiln_sandbox::Error::Io {
                        context: "reading the push bundle (it grew past its bound)",
                        path: PUSH_BUNDLE.into(),
                        source: std::io::Error::other("too large"),
                    });
                }
                file.write_all(&chunk)
                    .map_err(|source| kiln_sandbox::Error::Io {
                        context: "writing the push bundle on the host",
                        path: bundle.to_path_buf(),
                        source,
                    })
            })
            .await;
        drop(file);
        read?;
        let refspec = format!("+refs/heads/{branch}:refs/kiln/sessions/{session}");
        let bundle = bundle.to_string_lossy().into_owned();
        git(
            mirror,
            &["fetch", "--quiet", &bundle, &refspec],
            self.git_timeout,
        )
        .await
        .map(|_| ())
    }
}

/// What git's error says, for people. A remote that answers 401 makes git ask for a user
/// name, which it may not (no terminal), so git speaks of prompts; say what happened instead.
fn refusal(message: &str, had_credentials: bool) -> String {
    let asked = message.contains("could not read Username")
        || message.contains("could not read Password")
        || message.contains("Authentication failed");
    if !asked {
        return message.to_string();
    }
    if had_credentials {
        "it answered 401 (authentication required) to the credential kiln holds for it: the \
         credential is wrong or expired, or (on GitHub) the app is not installed on the \
         repository"
            .into()
    } else {
        "it answered 401 (authentication required) and kiln holds no credential for it: add \
         one to the repo's URL, or configure the forge's app"
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_401_is_told_as_such_not_as_a_prompt() {
        let git = "fatal: could not read Username for 'http://127.0.0.1:1': terminal prompts \
                   disabled";
        let told = refusal(git, true);
        assert!(
            told.contains("401") && told.contains("credential kiln holds"),
            "{told}"
        );
        assert!(refusal(git, false).contains("holds no credential"));
        let other = "error: RPC failed; HTTP 403 curl 22 The requested URL returned error: 403";
        assert_eq!(refusal(other, true), other);
    }

    #[test]
    fn a_session_pushes_to_its_own_branch_only() {
        let session = SessionId::random();
        let (branch, remote_ref) = session_ref(&session, "main").unwrap();
        assert_eq!(branch, format!("kiln/{session}"));
        assert_eq!(remote_ref, format!("refs/heads/kiln/{session}"));
        // A repo whose default branch is the session's own name cannot be pushed to.
        let err = session_ref(&session, &branch).unwrap_err();
        assert!(err.to_string().contains("refusing to push"), "{err}");
    }
}
