//! Building an image for a repo: fetch it at the default branch's head (recording the commit),
//! run its setup, build and warm commands in a sandbox, and freeze the writable layer.
//!
//! Builds are incremental: a repo with a ready image builds on top of it — the old checkout,
//! dependencies and caches are already there — fetches, checks out the new commit, and reruns
//! setup only when a dependency manifest changed. A failed build is recorded with its log and
//! error; the last good image stays the one sessions use. Every step has a timeout.

use super::environment::{ENVIRONMENT_FILE, Environment, Step};
use crate::workspace::{WORKDIR, Workspaces};
use crate::{Error, Result};
use kiln_protocol::api::Repo;
use kiln_sandbox::{CommandLine, ExecRequest, Sandbox};
use kiln_store::{ImageRecord, Store};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Label naming the image build a sandbox belongs to.
const IMAGE_LABEL: &str = "kiln.image";
/// The build log keeps at most this much (the head and the tail).
const LOG_LIMIT: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct ImageBuilder {
    pub(crate) workspaces: Workspaces,
    pub(crate) store: Store,
    /// Timeout of a step that names none (neither it nor its environment).
    pub(crate) step_timeout: Duration,
}

/// What a successful build produced.
struct Built {
    layers: Vec<PathBuf>,
    lockfile_hash: String,
    setup_ran: bool,
    size_bytes: u64,
}

impl ImageBuilder {
    /// Builds and records an image of `repo`; the record says whether it is ready or why not.
    pub(crate) async fn build(&self, repo: &Repo) -> Result<ImageRecord> {
        let started = Instant::now();
        let id = format!("img-{}", kiln_core::random_hex(8));
        let previous = self.store.latest_image(&repo.name).await?;
        let mut log = String::new();
        let mut commit = String::new();
        let outcome = self
            .run(&id, repo, previous.as_ref(), &mut commit, &mut log)
            .await;
        let mut record = ImageRecord {
            id,
            repo: repo.name.clone(),
            commit,
            parent: previous.map(|p| p.id),
            layers: Vec::new(),
            lockfile_hash: String::new(),
            setup_ran: false,
            error: None,
            log: String::new(),
            duration_ms: started.elapsed().as_millis() as u64,
            size_bytes: 0,
            created_at_ms: 0,
        };
        match outcome {
            Ok(built) => {
                record.layers = built.layers;
                record.lockfile_hash = built.lockfile_hash;
                record.setup_ran = built.setup_ran;
                record.size_bytes = built.size_bytes;
            }
            Err(e) => {
                let message = e.to_string();
                log.push_str(&format!("\n== build failed: {message}\n"));
                record.error = Some(message);
            }
        }
        record.log = cap(log);
        Ok(self.store.record_image(&record).await?)
    }

    async fn run(
        &self,
        id: &str,
        repo: &Repo,
        previous: Option<&ImageRecord>,
        commit: &mut String,
        log: &mut String,
    ) -> Result<Built> {
        let (mirror, head) = self.workspaces.branch_head(repo).await?;
        *commit = head;
        log.push_str(&format!("== {} at {commit}\n", repo.name));
        // The repo's objects as of now, as a read-only layer at /kiln/repo.git.
        let repo_layer = self
            .workspaces
            .data_dir
            .join("images")
            .join(id)
            .join("repo");
        self.workspaces.repo_layer(&mirror, &repo_layer).await?;
        let mut layers = previous.map(|p| p.layers.clone()).unwrap_or_default();
        layers.push(repo_layer);
        // Limits come from the environment file, which is only known after checkout: the build
        // runs with defaults.
        let sandbox = self
            .workspaces
            .create_labelled(layers, (IMAGE_LABEL, id))
            .await?;
        let result = self.prepare(&sandbox, commit, previous, log).await;
        let result = match result {
            Ok((lockfile_hash, setup_ran)) => self
                .workspaces
                .provider
                .snapshot(sandbox.id())
                .await
                .map(|snapshot| Built {
                    layers: snapshot.image.layers,
                    lockfile_hash,
                    setup_ran,
                    size_bytes: snapshot.size_bytes,
                })
                .map_err(Error::from),
            Err(e) => Err(e),
        };
        if let Err(e) = self.workspaces.provider.destroy(sandbox.id()).await {
            tracing::warn!(sandbox = %sandbox.id(), error = %e, "could not destroy a build sandbox");
        }
        result
    }

    /// Checks out `commit` and runs the environment's steps. Returns the lockfile hash and
    /// whether setup ran.
    async fn prepare(
        &self,
        sandbox: &Sandbox,
        commit: &str,
        previous: Option<&ImageRecord>,
        log: &mut String,
    ) -> Result<(String, bool)> {
        let checkout = match previous {
            Some(_) => format!(
                "cd {WORKDIR} && git fetch --quiet /kiln/repo.git && git checkout --quiet --force --detach {commit}"
            ),
            None => format!(
                "git config --global --add safe.directory /kiln/repo.git && \
                 git clone --quiet --template= --shared --no-checkout /kiln/repo.git {WORKDIR} && \
                 cd {WORKDIR} && git checkout --quiet --detach {commit}"
            ),
        };
        self.step(
            sandbox,
            "checkout",
            &checkout,
            &BTreeMap::new(),
            self.workspaces.git_timeout,
            log,
        )
        .await?;
        let environment = match sandbox
            .guest()
            .read_file(&format!("{WORKDIR}/{ENVIRONMENT_FILE}"))
            .await
        {
            Ok(bytes) => {
                Environment::parse(&String::from_utf8_lossy(&bytes)).map_err(Error::Invalid)?
            }
            Err(e) if e.is_file_not_found() => {
                log.push_str(&format!("== no {ENVIRONMENT_FILE}: nothing to set up\n"));
                Environment::default()
            }
            Err(e) => return Err(e.into()),
        };
        let lockfile_hash = self.lockfile_hash(sandbox, &environment).await?;
        let setup_ran = previous.is_none_or(|p| p.lockfile_hash != lockfile_hash);
        let phases: [(&str, &[Step]); 3] = [
            ("setup", if setup_ran { &environment.setup } else { &[] }),
            ("build", &environment.build),
            ("warm", &environment.warm),
        ];
        if !setup_ran {
            log.push_str("== setup skipped: the dependency manifests did not change\n");
        }
        for (phase, steps) in phases {
            for step in steps {
                let timeout = step.timeout(&environment, self.step_timeout);
                let name = format!("{phase}: {}", step.name());
                let script = format!("cd {WORKDIR} && {}", step.script());
                self.step(sandbox, &name, &script, &environment.env, timeout, log)
                    .await?;
            }
        }
        Ok((lockfile_hash, setup_ran))
    }

    /// sha256 over each manifest's path and contents (a missing one counts as missing).
    async fn lockfile_hash(&self, sandbox: &Sandbox, environment: &Environment) -> Result<String> {
        let mut hasher = Sha256::new();
        for manifest in &environment.manifests {
            hasher.update(manifest.as_bytes());
            hasher.update([0]);
            match sandbox
                .guest()
                .read_file(&format!("{WORKDIR}/{manifest}"))
                .await
            {
                Ok(bytes) => hasher.update(&bytes),
                Err(e) if e.is_file_not_found() => hasher.update(b"\xffmissing"),
                Err(e) => return Err(e.into()),
            }
            hasher.update([0]);
        }
        Ok(hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    /// Runs one step, appending its output to the log; a non-zero exit or a timeout fails it.
    async fn step(
        &self,
        sandbox: &Sandbox,
        name: &str,
        script: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        log: &mut String,
    ) -> Result<()> {
        log.push_str(&format!("== {name}\n"));
        let started = Instant::now();
        let outcome = sandbox
            .run(ExecRequest {
                command: CommandLine::Shell {
                    script: script.to_string(),
                },
                cwd: Some("/".into()),
                env: env.clone(),
                stdin: false,
                timeout_ms: Some(timeout.as_millis() as u64),
            })
            .await?;
        log.push_str(&String::from_utf8_lossy(&outcome.stdout));
        log.push_str(&String::from_utf8_lossy(&outcome.stderr));
        let elapsed = started.elapsed();
        if outcome.status.timed_out {
            return Err(Error::Invalid(format!(
                "step {name:?} timed out after {timeout:?}"
            )));
        }
        if !outcome.status.success() {
            return Err(Error::Invalid(format!(
                "step {name:?} failed ({:?}) after {elapsed:.1?}",
                outcome.status
            )));
        }
        log.push_str(&format!("== {name}: ok in {elapsed:.1?}\n"));
        Ok(())
    }
}

/// Keeps the head and the tail of a long log.
fn cap(log: String) -> String {
    if log.len() <= LOG_LIMIT {
        return log;
    }
    let half = LOG_LIMIT / 2;
    let head_end = (0..=half)
        .rev()
        .find(|&i| log.is_char_boundary(i))
        .unwrap_or(0);
    let tail_start = (log.len() - half..log.len())
        .find(|&i| log.is_char_boundary(i))
        .unwrap_or(log.len());
    format!(
        "{}\n… {} bytes left out …\n{}",
        &log[..head_end],
        tail_start - head_end,
        &log[tail_start..]
    )
}
