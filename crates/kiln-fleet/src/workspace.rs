//! A session's sandbox and the checkout in it.
//!
//! The host keeps one bare mirror per repo (`DATA/repos/NAME.git`), fetched with the control
//! plane's credentials, which never enter a sandbox. Each session gets a hard-linked bare clone of
//! the mirror as a read-only layer at `/kiln/repo.git`; inside the sandbox, the sandbox user
//! clones it with `--shared` into `/workspace` (objects stay in the layer, nothing is copied) and
//! creates the session branch. Images and warm pools (issue 4) replace the per-session clone.

use crate::host::{git, git_with_credentials};
use crate::{Error, Result};
use kiln_core::SessionId;
use kiln_protocol::api::{ImageRuntime, Repo, ResourceLimits};
use kiln_sandbox::{
    CommandLine, ExecRequest, ImageSpec, Limits, NetworkPolicy, Provider, Sandbox, SandboxId,
    SandboxSpec, SandboxUser,
};
use kiln_store::ImageRecord;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use kiln_core::WORKDIR;

/// Where a sync's git bundle is written inside the sandbox.
const SYNC_BUNDLE: &str = "/tmp/.kiln-sync.bundle";

/// Label naming the session a sandbox belongs to; recovery uses it to find orphans.
pub const SESSION_LABEL: &str = "kiln.session";

/// Where [`Workspaces::sync`] leaves the checkout.
#[derive(Debug, Clone, Copy)]
pub enum SyncTarget<'a> {
    /// At the head, on no branch: a warm sandbox no session owns yet.
    Detached,
    /// On the session's branch `kiln/<session>`, committing as `author` (name, email).
    Branch {
        session: &'a SessionId,
        author: (&'a str, &'a str),
    },
}

/// Credentials for the host's git traffic to a url that carries none of its own: the
/// engine plugs a forge's installation tokens in here, so no token is ever stored with a repo.
/// The answer is `user:password` as in a url (`x-access-token:TOKEN`); `None`: fetch without.
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync + std::fmt::Debug {
    /// The error is a message for people (never holding a token).
    async fn credentials(
        &self,
        url: &str,
    ) -> std::result::Result<Option<kiln_core::Secret<String>>, String>;
}

/// Prepares checkouts and creates session sandboxes.
#[derive(Debug, Clone)]
pub struct Workspaces {
    pub data_dir: PathBuf,
    pub provider: Arc<dyn Provider>,
    pub git_timeout: Duration,
    /// Where a repo's credentials are read, at the fetch and nowhere else.
    pub store: kiln_store::Store,
    /// The egress proxies of the agent's sandboxes.
    pub egress: Arc<crate::egress::SandboxEgress>,
    /// What the agent's sandboxes read about kiln and their repo's environment.
    pub about: Arc<crate::about::About>,
    /// Repos' definitions as read from their mirrors, for prompts (their MCP servers).
    pub environments: Arc<crate::images::current::EnvironmentCache>,
    /// One per repo, held while its mirror is fetched or written: two git processes updating
    /// the same refs at once fail on git's ref locks.
    pub mirror_locks: MirrorLocks,
    /// Credentials for urls that hold none (a forge's), asked at each fetch.
    pub credentials: Option<Arc<dyn CredentialSource>>,
}

/// Per-repo locks over the host's mirrors.
#[derive(Debug, Clone, Default)]
pub struct MirrorLocks(Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

impl MirrorLocks {
    /// Waits for and holds `repo`'s mirror.
    pub async fn lock(&self, repo: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .0
            .lock()
            .expect("mirror locks")
            .entry(repo.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}

impl Workspaces {
    pub(crate) fn mirror(&self, repo: &str) -> PathBuf {
        self.data_dir.join("repos").join(format!("{repo}.git"))
    }

    /// The repo's mirror, if it has been made.
    pub(crate) fn existing_mirror(&self, repo: &str) -> Option<PathBuf> {
        let mirror = self.mirror(repo);
        mirror.join("HEAD").is_file().then_some(mirror)
    }

    fn layer(&self, session: &SessionId) -> PathBuf {
        self.data_dir
            .join("sessions")
            .join(session.as_str())
            .join("layer")
    }

    /// The host's credentials for a remote: the ones stored with the repo, else the
    /// [`CredentialSource`]'s (a forge's short-lived installation token), else none. The error
    /// is a message for people.
    pub(crate) async fn host_credentials(
        &self,
        remote: &kiln_store::RepoRemote,
    ) -> std::result::Result<Option<kiln_core::Secret<String>>, String> {
        match (&remote.credentials, &self.credentials) {
            (Some(stored), _) => Ok(Some(stored.clone())),
            (None, Some(source)) => source.credentials(&remote.url).await,
            (None, None) => Ok(None),
        }
    }

    /// Clones or fetches the repo's mirror, so the session starts from the latest default branch.
    ///
    /// The url's credentials are kept apart from it (`Store::repo_remote`) and reach git only
    /// at the fetch, through its environment: the mirror's config holds the bare url.
    pub async fn refresh_mirror(&self, repo: &Repo) -> Result<PathBuf> {
        let _held = self.mirror_locks.lock(&repo.name).await;
        let remote = self.store.repo_remote(&repo.name).await?;
        let credentials = self
            .host_credentials(&remote)
            .await
            .map_err(|message| Error::Git {
                command: "fetch".into(),
                message,
            })?;
        let credentials = credentials.as_ref();
        let mirror = self.mirror(&repo.name);
        let parent = mirror.parent().expect("mirror has a parent");
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(Error::io(format!("creating {}", parent.display())))?;
        if mirror.join("HEAD").is_file() {
            // A mirror made before credentials were kept apart has them in its config's url:
            // replace it (once; reading the file costs less than running git on every fetch).
            let config = tokio::fs::read_to_string(mirror.join("config"))
                .await
                .unwrap_or_default();
            if !config
                .lines()
                .any(|l| l.trim() == format!("url = {}", remote.url))
            {
                let set_url = ["config", "remote.origin.url", remote.url.as_str()];
                git(&mirror, &set_url, self.git_timeout).await?;
            }
            git_with_credentials(
                &mirror,
                &["fetch", "--prune", "--quiet", "origin"],
                credentials,
                self.git_timeout,
            )
            .await?;
        } else {
            let partial = parent.join(format!(".{}.partial", repo.name));
            let _ = tokio::fs::remove_dir_all(&partial).await;
            let partial_str = partial.to_string_lossy().into_owned();
            git_with_credentials(
                parent,
                &[
                    "clone",
                    "--mirror",
                    "--quiet",
                    "--",
                    &remote.url,
                    &partial_str,
                ],
                credentials,
                self.git_timeout,
            )
            .await?;
            tokio::fs::rename(&partial, &mirror)
                .await
                .map_err(Error::io("installing the mirror"))?;
        }
        Ok(mirror)
    }

    /// Fetches the repo's mirror and returns it with the head commit of its default branch.
    pub async fn branch_head(&self, repo: &Repo) -> Result<(PathBuf, String)> {
        let mirror = self.refresh_mirror(repo).await?;
        let branch = format!("refs/heads/{}", repo.default_branch);
        let head = git(
            &mirror,
            &["rev-parse", "--verify", &branch],
            self.git_timeout,
        )
        .await?;
        Ok((mirror, head.trim().to_string()))
    }

    /// Makes `layer` a read-only layer holding the repo's objects at `/kiln/repo.git`: a bare
    /// clone of the mirror with hard links, so it costs no copies.
    pub async fn repo_layer(&self, mirror: &Path, layer: &Path) -> Result<()> {
        let target = layer.join("kiln").join("repo.git");
        if target.join("HEAD").is_file() {
            return Ok(());
        }
        let _ = tokio::fs::remove_dir_all(layer).await;
        tokio::fs::create_dir_all(target.parent().expect("has a parent"))
            .await
            .map_err(Error::io(format!("creating {}", layer.display())))?;
        let (mirror, target) = (path_str(mirror), path_str(&target));
        let args = [
            "clone", "--bare", "--local", "--quiet", "--", &mirror, &target,
        ];
        git(layer, &args, self.git_timeout).await?;
        // The clone's `origin` is the mirror's host path; a sandbox learns nothing of the host.
        let git_dir = format!("--git-dir={target}");
        let forget_origin = [&git_dir, "config", "--remove-section", "remote.origin"];
        git(layer, &forget_origin, self.git_timeout).await?;
        Ok(())
    }

    /// Creates a sandbox from read-only layers with the env and limits of the repo's
    /// environment, tagged with one label saying what it is for: a session, a pool, an image
    /// build. A stack whose bottom layer is a base brings its own system; any other runs over
    /// the host's `/usr`.
    pub async fn create_labelled(
        &self,
        layers: Vec<PathBuf>,
        runtime: &ImageRuntime,
        label: (&str, &str),
        network: NetworkPolicy,
        user: SandboxUser,
    ) -> Result<Sandbox> {
        let spec = spec(layers, runtime, label, network, user);
        Ok(self.provider.create(spec).await?)
    }

    /// Creates a sandbox the agent works in (a session's, a warm pool's): as
    /// [`Workspaces::create_labelled`], with its own egress proxy under the image's agent-time
    /// policy, and the repo's docs directory (see [`crate::about`]) read-only.
    async fn create_for_agent(
        &self,
        layers: Vec<PathBuf>,
        runtime: &ImageRuntime,
        label: (&str, &str),
        docs: PathBuf,
    ) -> Result<Sandbox> {
        let (network, egress) = self.egress.serve(&runtime.network)?;
        let mut spec = spec(layers, runtime, label, network, SandboxUser::Kiln);
        spec.labels.insert(egress.0, egress.1);
        spec.docs = Some(docs);
        Ok(self.provider.create(spec).await?)
    }

    /// Creates the session's sandbox with a fresh checkout of `repo` on branch `kiln/<session>`.
    pub async fn create(
        &self,
        session: &SessionId,
        repo: &Repo,
        author: (&str, &str),
    ) -> Result<Sandbox> {
        let mirror = self.refresh_mirror(repo).await?;
        let layer = self.layer(session);
        self.repo_layer(&mirror, &layer).await?;
        // No image yet: the default policy (the registry preset) and the repo's own git host.
        let mut runtime = ImageRuntime::default();
        runtime.network.allow.extend(kiln_core::url_host(&repo.url));
        let docs = self.about.dir(&repo.name, None)?;
        let sandbox = self
            .create_for_agent(
                vec![layer],
                &runtime,
                (SESSION_LABEL, session.as_str()),
                docs,
            )
            .await?;
        let branch = format!("kiln/{session}");
        let script = format!(
            "set -e\n\
             git config --global --add safe.directory /kiln/repo.git\n\
             git clone --quiet --template= --shared --branch {default} /kiln/repo.git {WORKDIR} 2>&1\n\
             cd {WORKDIR}\n\
             git checkout --quiet -b {branch}\n\
             git config user.name {name}\n\
             git config user.email {email}\n\
             {hooks}",
            default = shell_quote(&repo.default_branch),
            name = shell_quote(author.0),
            email = shell_quote(author.1),
            hooks = session_hooks(session),
        );
        match self.run_script(&sandbox, script).await {
            Ok(o) if o.status.success() => Ok(sandbox),
            Ok(o) => {
                let _ = self.provider.destroy(sandbox.id()).await;
                Err(Error::Checkout {
                    action: format!("checking out {}", repo.default_branch),
                    message: String::from_utf8_lossy(&o.stdout).trim().to_string(),
                })
            }
            Err(e) => {
                let _ = self.provider.destroy(sandbox.id()).await;
                Err(e.into())
            }
        }
    }

    /// Creates the session's sandbox of `repo` from read-only layers: its newest `image`'s (the
    /// checkout is the image's commit until [`Workspaces::sync`] brings it to the branch head)
    /// or a session snapshot's (the files exactly as they were; the env and limits are the
    /// image's, the repo's as of now).
    pub async fn create_from_layers(
        &self,
        session: &SessionId,
        repo: &str,
        layers: &[PathBuf],
        image: Option<&ImageRecord>,
    ) -> Result<Sandbox> {
        let docs = self.about.dir(repo, image)?;
        let runtime = image.map(|i| i.runtime.clone()).unwrap_or_default();
        self.create_for_agent(
            layers.to_vec(),
            &runtime,
            (SESSION_LABEL, session.as_str()),
            docs,
        )
        .await
    }

    /// Creates a warm pool sandbox of `repo` from its image.
    pub async fn create_pooled(&self, repo: &str, image: &ImageRecord) -> Result<Sandbox> {
        let docs = self.about.dir(repo, Some(image))?;
        self.create_for_agent(
            image.layers.clone(),
            &image.runtime,
            (crate::pool::POOL_LABEL, repo),
            docs,
        )
        .await
    }

    /// Brings a sandbox's checkout from `base_commit` to the head of the repo's default branch,
    /// then onto `target`; returns the head. New commits travel as a git bundle written through
    /// the guest: the sandbox has no network and never sees a credential.
    pub async fn sync(
        &self,
        sandbox: &Sandbox,
        repo: &Repo,
        base_commit: &str,
        target: SyncTarget<'_>,
    ) -> Result<String> {
        let (mirror, head) = self.branch_head(repo).await?;
        let branch = format!("refs/heads/{}", repo.default_branch);
        let mut script = format!("set -e\ncd {WORKDIR}\n");
        if head != base_commit {
            let scratch = self.data_dir.join("tmp");
            tokio::fs::create_dir_all(&scratch)
                .await
                .map_err(Error::io(format!("creating {}", scratch.display())))?;
            let bundle = scratch.join(format!("sync-{}.bundle", kiln_core::random_hex(8)));
            let exclude = format!("^{base_commit}");
            let created = git(
                &mirror,
                &[
                    "bundle",
                    "create",
                    "--quiet",
                    &path_str(&bundle),
                    &exclude,
                    &branch,
                ],
                self.git_timeout,
            )
            .await;
            let bytes = match created {
                Ok(_) => tokio::fs::read(&bundle)
                    .await
                    .map_err(Error::io(format!("reading {}", bundle.display()))),
                Err(e) => Err(e),
            };
            let _ = tokio::fs::remove_file(&bundle).await;
            sandbox
                .guest()
                .write_file(SYNC_BUNDLE, &bytes?, Some(0o600))
                .await?;
            script.push_str(&format!(
                // The remote-tracking ref follows, so a push's bundle leaves out what the
                // mirror has (`push.rs`).
                "git fetch --quiet {SYNC_BUNDLE} +{branch}:refs/remotes/origin/{default}\nrm -f {SYNC_BUNDLE}\n",
                default = repo.default_branch,
            ));
        }
        match target {
            SyncTarget::Detached => {
                if head == base_commit {
                    return Ok(head);
                }
                script.push_str(&format!("git checkout --quiet --detach {head}\n"));
            }
            SyncTarget::Branch { session, author } => script.push_str(&format!(
                "git checkout --quiet -B kiln/{session} {head}\n\
                 git config user.name {name}\n\
                 git config user.email {email}\n\
                 {hooks}",
                name = shell_quote(author.0),
                email = shell_quote(author.1),
                hooks = session_hooks(session),
            )),
        }
        let outcome = self.run_script(sandbox, script).await?;
        if !outcome.status.success() {
            return Err(Error::Checkout {
                action: format!("syncing to {}", repo.default_branch),
                message: String::from_utf8_lossy(&outcome.stderr).trim().to_string(),
            });
        }
        Ok(head)
    }

    /// Runs a git shell script in the sandbox as its user, bounded by the git timeout.
    async fn run_script(
        &self,
        sandbox: &Sandbox,
        script: String,
    ) -> kiln_sandbox::Result<kiln_sandbox::ExecOutcome> {
        sandbox
            .run(ExecRequest {
                command: CommandLine::Shell { script },
                cwd: Some("/".into()),
                env: BTreeMap::new(),
                stdin: false,
                timeout_ms: Some(self.git_timeout.as_millis() as u64),
            })
            .await
    }

    /// Removes the repo's mirror (the repo is going away); a failure is logged.
    pub async fn remove_mirror(&self, repo: &str) {
        self.about.remove(repo);
        let mirror = self.mirror(repo);
        if let Err(e) = tokio::fs::remove_dir_all(&mirror).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(mirror = %mirror.display(), error = %e, "cannot remove a deleted repo's mirror");
        }
    }

    /// Makes a claimed pool sandbox the session's: labelled with the session from now on, no
    /// longer with the pool.
    pub async fn adopt(&self, sandbox: &Sandbox, session: &SessionId) -> Result<()> {
        let labels = [(SESSION_LABEL.to_string(), session.to_string())].into();
        Ok(self.provider.relabel(sandbox.id(), labels).await?)
    }

    /// A sandbox found running after a restart, its egress proxy served again.
    pub async fn attach(&self, id: &SandboxId) -> Result<Sandbox> {
        let sandbox = self.provider.attach(id).await?;
        self.egress.resume(sandbox.info())?;
        Ok(sandbox)
    }
}

/// A sandbox from `layers` with the env and limits of the repo's environment and one label. A
/// stack whose bottom layer is a base brings its own system; any other runs over the host's
/// `/usr`.
fn spec(
    layers: Vec<PathBuf>,
    runtime: &ImageRuntime,
    label: (&str, &str),
    network: NetworkPolicy,
    user: SandboxUser,
) -> SandboxSpec {
    let host_system = !layers
        .first()
        .is_some_and(|bottom| crate::bases::is_base_layer(bottom));
    SandboxSpec {
        image: ImageSpec {
            layers,
            host_system,
        },
        user,
        env: runtime.env.clone(),
        limits: limits(&runtime.limits),
        labels: BTreeMap::from([(label.0.to_string(), label.1.to_string())]),
        network,
        docs: None,
    }
}

/// The server's default limits with the environment's where it sets them.
fn limits(wanted: &ResourceLimits) -> Limits {
    let defaults = Limits::default();
    Limits {
        memory_bytes: wanted
            .memory_mb
            .map(|mb| mb << 20)
            .or(defaults.memory_bytes),
        pids: wanted.pids.or(defaults.pids),
        cpu_weight: defaults.cpu_weight,
        disk_bytes: wanted.disk_mb.map_or(defaults.disk_bytes, |mb| mb << 20),
    }
}

/// What `git push` in a sandbox says: the sandbox holds no credential and no remote it may
/// write to, and the agent has a tool for it.
pub const PUSH_REFUSAL: &str = "git push does not work inside the sandbox: use the `push` tool (kiln pushes the session branch for you)";

/// Shell lines (run in the checkout) installing the session's git hooks: every commit gets a
/// `Kiln-Session:` trailer (`prepare-commit-msg`, which `--no-verify` does not skip), and
/// `git push` fails naming the `push` tool (`pre-push`; the remote is the read-only
/// `/kiln/repo.git` and no credential is here, so a push could not succeed anyway).
fn session_hooks(session: &SessionId) -> String {
    let trailer = shell_quote(&format!("Kiln-Session: {session}"));
    let refusal = shell_quote(PUSH_REFUSAL);
    format!(
        "hooks=$(git rev-parse --git-path hooks)\n\
         mkdir -p \"$hooks\"\n\
         printf '%s\\n' '#!/bin/sh' \
           'case \"$2\" in merge|squash) exit 0;; esac' \
           'exec git interpret-trailers --in-place --if-exists addIfDifferent --trailer '{trailer_q}' \"$1\"' \
           > \"$hooks/prepare-commit-msg\"\n\
         printf '%s\\n' '#!/bin/sh' 'echo '{refusal_q}' >&2' 'exit 1' > \"$hooks/pre-push\"\n\
         chmod 755 \"$hooks/prepare-commit-msg\" \"$hooks/pre-push\"\n",
        trailer_q = shell_quote(&trailer),
        refusal_q = shell_quote(&refusal),
    )
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Quotes a value for `/bin/sh`: single quotes, with embedded ones closed and escaped.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    fn sh(dir: &Path, script: &str) -> std::process::Output {
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Ann")
            .env("GIT_AUTHOR_EMAIL", "ann@example.org")
            .env("GIT_COMMITTER_NAME", "kiln")
            .env("GIT_COMMITTER_EMAIL", "kiln@localhost")
            .output()
            .expect("sh runs")
    }

    /// The checkout's hooks, on real git: every commit (`-m`, `--no-verify`, an amend) gets
    /// the trailer once, and `git push` fails naming the tool.
    #[test]
    fn session_hooks_add_the_trailer_and_refuse_git_push() {
        let dir = std::env::temp_dir().join(format!("kiln-hooks-{}", kiln_core::random_hex(6)));
        std::fs::create_dir_all(&dir).unwrap();
        let session = kiln_core::SessionId::random();
        let setup = format!(
            "set -e\ngit init -q --bare remote.git\ngit init -q -b main work\ncd work\n\
             git remote add origin ../remote.git\n{}",
            super::session_hooks(&session)
        );
        let out = sh(&dir, &setup);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let work = dir.join("work");
        let out = sh(
            &work,
            "echo a > a && git add a && git commit -qm 'Add a' && \
             echo b > b && git add b && git commit -q --no-verify -m 'Add b' && \
             git commit -q --amend --no-edit && git log --format=%B%x00",
        );
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let trailer = format!("Kiln-Session: {session}");
        let commits: Vec<&str> = log.split('\0').filter(|c| !c.trim().is_empty()).collect();
        assert_eq!(commits.len(), 2, "{log}");
        for commit in commits {
            assert_eq!(commit.matches(&trailer).count(), 1, "{log}");
        }
        let out = sh(&work, "git push -q origin main");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(super::PUSH_REFUSAL), "{stderr}");
    }
}
