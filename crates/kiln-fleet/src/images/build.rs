//! Building an image for a repo: fetch it at the default branch's head (recording the commit),
//! run its setup, build and warm commands in a sandbox, and freeze the writable layer.
//!
//! Builds are incremental: a repo with a ready image builds on top of it — the old checkout,
//! dependencies and caches are already there — fetches, checks out the new commit, and reruns
//! setup only when a dependency manifest changed. A failed build is recorded with its log and
//! error; the last good image stays the one sessions use. Every step has a timeout.
//!
//! The repo's secrets (decrypted by the engine) are added to the environment of the setup,
//! build and warm steps — not the checkout's, and not the image's runtime, so no sandbox made
//! from the image gets them from here. The log masks them; the record keeps their names and
//! fingerprints, which also join the setup hash, so changing a secret reruns setup.

use super::environment::{ENVIRONMENT_FILE, Environment, Step};
use super::live::{BuildLog, Utf8Chunks};
use crate::host::git;
use crate::workspace::{WORKDIR, Workspaces};
use crate::{Error, Result};
use kiln_core::Secret;
use kiln_protocol::api::{ImageRuntime, ImageSecret, Repo};
use kiln_sandbox::{CommandLine, ExecEvent, ExecRequest, OutputStream, Sandbox};
use kiln_store::{ImageRecord, Store};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Label naming the image build a sandbox belongs to.
pub const IMAGE_LABEL: &str = "kiln.image";
/// The build log keeps at most this much (the head and the tail).
const LOG_LIMIT: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct ImageBuilder {
    pub(crate) workspaces: Workspaces,
    pub(crate) store: Store,
    /// Timeout of a step that names none (neither it nor its environment).
    pub(crate) step_timeout: Duration,
    /// The deepest layer stack an incremental build may make; past it, a full build.
    pub(crate) max_layers: usize,
    pub(crate) egress: crate::EgressSettings,
}

/// A repo secret as a build gets it: the value for the steps' environment, the fingerprint
/// for the record and the setup hash.
#[derive(Debug, Clone)]
pub struct BuildSecret {
    pub value: Secret<String>,
    pub fingerprint: String,
}

/// A build's secrets, by name.
pub type BuildSecrets = BTreeMap<String, BuildSecret>;

/// What decides setup besides the definition and the manifests: the secrets' names and
/// fingerprints. Empty without secrets, so a repo without any keeps the hash it had.
fn secrets_fingerprint(secrets: &BuildSecrets) -> String {
    secrets
        .iter()
        .map(|(name, secret)| format!("secret\0{name}\0{}\0", secret.fingerprint))
        .collect()
}

/// How far a build got, known also when it fails.
#[derive(Debug, Default)]
struct Progress {
    /// The commit being built (empty until the fetch).
    commit: String,
    /// Whether setup started.
    setup_ran: bool,
}

/// What a successful build produced.
struct Built {
    layers: Vec<PathBuf>,
    lockfile_hash: String,
    size_bytes: u64,
    runtime: ImageRuntime,
}

impl ImageBuilder {
    /// Builds and records image `id` of `repo`; the record says whether it is ready or why not.
    /// Every line goes to `log` as soon as it exists (followers see the build progress); the
    /// record keeps it capped.
    pub(crate) async fn build(
        &self,
        repo: &Repo,
        id: &str,
        log: &BuildLog,
        secrets: &BuildSecrets,
    ) -> Result<ImageRecord> {
        let started = Instant::now();
        log.mask_with(std::sync::Arc::new(kiln_vault::Masker::new(
            secrets.iter().map(|(name, s)| (name, s.value.expose())),
        )));
        let previous = self.store.latest_image(&repo.name).await?;
        let mut progress = Progress::default();
        let outcome = self
            .run(id, repo, previous.as_ref(), &mut progress, log, secrets)
            .await;
        let mut record = ImageRecord {
            id: id.to_string(),
            repo: repo.name.clone(),
            commit: progress.commit,
            parent: previous.map(|p| p.id),
            layers: Vec::new(),
            lockfile_hash: String::new(),
            // Also for a build that failed in (or after) setup: it ran.
            setup_ran: progress.setup_ran,
            error: None,
            log: String::new(),
            duration_ms: started.elapsed().as_millis() as u64,
            size_bytes: 0,
            created_at_ms: 0,
            runtime: ImageRuntime::default(),
            collected_at_ms: None,
            secrets: secrets
                .iter()
                .map(|(name, secret)| ImageSecret {
                    name: name.clone(),
                    fingerprint: secret.fingerprint.clone(),
                })
                .collect(),
        };
        match outcome {
            Ok(built) => {
                record.layers = built.layers;
                record.lockfile_hash = built.lockfile_hash;
                record.size_bytes = built.size_bytes;
                record.runtime = built.runtime;
            }
            Err(e) => {
                let message = log.masker().mask(&e.to_string()).into_owned();
                log.push_str(&format!("\n== build failed: {message}\n"));
                record.error = Some(message);
            }
        }
        record.log = cap(log.text());
        Ok(self.store.record_image(&record).await?)
    }

    async fn run(
        &self,
        id: &str,
        repo: &Repo,
        previous: Option<&ImageRecord>,
        progress: &mut Progress,
        log: &BuildLog,
        secrets: &BuildSecrets,
    ) -> Result<Built> {
        let (mirror, commit) = self.workspaces.branch_head(repo).await?;
        progress.commit = commit.clone();
        log.push_str(&format!("== {} at {commit}\n", repo.name));
        let environment = self.environment(repo, &mirror, &commit, log).await?;
        // Squashing: a deep stack of incremental layers slows every mount and every lookup,
        // so past a depth the build starts over from the bare system.
        let previous = previous.filter(|p| {
            let deep = p.layers.len() + 2 > self.max_layers;
            if deep {
                log.push_str(&format!(
                    "== full build: image {} already has {} layers\n",
                    p.id,
                    p.layers.len()
                ));
            }
            !deep
        });
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
        let repo_host = kiln_core::url_host(&repo.url);
        let runtime = environment.runtime(repo_host.as_deref());
        let egress = crate::egress::BuildEgress::start(
            &self.egress,
            &self.workspaces.data_dir,
            id,
            environment.network.setup_policy(repo_host.as_deref()),
        )?;
        let network = match &egress {
            Some(egress) => egress.network(),
            None => kiln_sandbox::NetworkPolicy::Isolated,
        };
        let sandbox = self
            .workspaces
            .create_labelled(layers, &runtime, (IMAGE_LABEL, id), network)
            .await?;
        let result = self
            .prepare(&sandbox, &environment, previous, progress, log, secrets)
            .await;
        let result = match result {
            Ok(lockfile_hash) => self
                .workspaces
                .provider
                .snapshot(sandbox.id())
                .await
                .map(|snapshot| Built {
                    layers: snapshot.image.layers,
                    lockfile_hash,
                    size_bytes: snapshot.size_bytes,
                    runtime,
                })
                .map_err(Error::from),
            Err(e) => Err(e),
        };
        if let Err(e) = self.workspaces.provider.destroy(sandbox.id()).await {
            tracing::warn!(sandbox = %sandbox.id(), error = %e, "could not destroy a build sandbox");
        }
        if let Some(egress) = egress {
            log.push_str(&egress.summary());
        }
        result
    }

    /// Checks out the commit and runs the environment's steps, noting in `progress` whether
    /// setup ran (before running it, so a failed setup still counts). Returns the lockfile hash.
    async fn prepare(
        &self,
        sandbox: &Sandbox,
        environment: &Environment,
        previous: Option<&ImageRecord>,
        progress: &mut Progress,
        log: &BuildLog,
        secrets: &BuildSecrets,
    ) -> Result<String> {
        let commit = &progress.commit;
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
        let lockfile_hash = self
            .lockfile_hash(sandbox, environment, &secrets_fingerprint(secrets))
            .await?;
        let setup_ran = previous.is_none_or(|p| p.lockfile_hash != lockfile_hash);
        progress.setup_ran = setup_ran;
        let phases: [(&str, &[Step]); 3] = [
            ("setup", if setup_ran { &environment.setup } else { &[] }),
            ("build", &environment.build),
            ("warm", &environment.warm),
        ];
        if !setup_ran {
            log.push_str("== setup skipped: the dependency manifests did not change\n");
        }
        // A secret of the same name as an [env] variable wins: it is the admin's, and newer.
        let mut env = environment.env.clone();
        env.extend(
            secrets
                .iter()
                .map(|(name, secret)| (name.clone(), secret.value.expose().clone())),
        );
        if !secrets.is_empty() {
            let names: Vec<&str> = secrets.keys().map(String::as_str).collect();
            log.push_str(&format!("== secrets: {}\n", names.join(", ")));
        }
        for (phase, steps) in phases {
            for step in steps {
                let timeout = step.timeout(environment, self.step_timeout);
                let name = format!("{phase}: {}", step.name());
                let script = format!("cd {WORKDIR} && {}", step.script());
                self.step(sandbox, &name, &script, &env, timeout, log)
                    .await?;
            }
        }
        Ok(lockfile_hash)
    }

    /// The repo's environment definition: the one set through the API, else the repo's file at
    /// `commit`, read from the host's mirror (so limits apply to the build's sandbox too and a
    /// bad definition fails before any sandbox exists).
    async fn environment(
        &self,
        repo: &Repo,
        mirror: &Path,
        commit: &str,
        log: &BuildLog,
    ) -> Result<Environment> {
        let text = match &repo.environment {
            Some(text) => {
                log.push_str("== environment: set through the API\n");
                text.clone()
            }
            None => {
                let timeout = self.workspaces.git_timeout;
                let listed = git(
                    mirror,
                    &["ls-tree", "--name-only", commit, "--", ENVIRONMENT_FILE],
                    timeout,
                )
                .await?;
                if listed.trim().is_empty() {
                    log.push_str(&format!("== no {ENVIRONMENT_FILE}: nothing to set up\n"));
                    return Ok(Environment::default());
                }
                let spec = format!("{commit}:{ENVIRONMENT_FILE}");
                git(mirror, &["cat-file", "blob", &spec], timeout).await?
            }
        };
        Environment::parse(&text).map_err(Error::Environment)
    }

    /// sha256 over each manifest's path and contents (a missing one counts as missing).
    async fn lockfile_hash(
        &self,
        sandbox: &Sandbox,
        environment: &Environment,
        secrets: &str,
    ) -> Result<String> {
        let mut hasher = Sha256::new();
        // What setup does and what it runs with count as much as the manifests: a changed
        // step, variable, secret or network policy reruns it.
        hasher.update(environment.setup_fingerprint().as_bytes());
        hasher.update(secrets.as_bytes());
        hasher.update([0]);
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
        log: &BuildLog,
    ) -> Result<()> {
        log.push_str(&format!("== {name}\n"));
        let started = Instant::now();
        let oom_before = sandbox.resource_events()?.oom_kills;
        let mut exec = sandbox
            .exec(ExecRequest {
                command: CommandLine::Shell {
                    script: script.to_string(),
                },
                cwd: Some("/".into()),
                env: env.clone(),
                stdin: false,
                timeout_ms: Some(timeout.as_millis() as u64),
            })
            .await?;
        // The output goes to the log as it comes, so that a long step shows its progress;
        // each stream is masked on its own, holding back only what may start a secret.
        let (mut stdout, mut stderr) = (Utf8Chunks::default(), Utf8Chunks::default());
        let masker = log.masker();
        let (mut out_masked, mut err_masked) = (masker.stream(), masker.stream());
        let status = loop {
            match exec.next().await? {
                Some(ExecEvent::Output { stream, data }) => log.push_masked(&match stream {
                    OutputStream::Stdout => out_masked.push(&stdout.decode(&data)),
                    OutputStream::Stderr => err_masked.push(&stderr.decode(&data)),
                }),
                Some(ExecEvent::Started { .. }) => {}
                Some(ExecEvent::Exited(status)) => break status,
                None => {
                    return Err(kiln_sandbox::Error::Protocol(
                        "exec stream ended without an exit status".into(),
                    )
                    .into());
                }
            }
        };
        log.push_masked(&(out_masked.push(&stdout.finish()) + &out_masked.finish()));
        log.push_masked(&(err_masked.push(&stderr.finish()) + &err_masked.finish()));
        let elapsed = started.elapsed();
        if status.timed_out {
            return Err(Error::Step {
                step: name.to_string(),
                ended: format!("timed out after {}", kiln_core::human_duration(timeout)),
            });
        }
        if !status.success() {
            // A shell reports its child's SIGKILL as exit code 137: say when it was an OOM kill.
            let oom = sandbox.resource_events()?.oom_kills > oom_before;
            return Err(Error::Step {
                step: name.to_string(),
                ended: format!(
                    "{status} after {}{}",
                    kiln_core::human_duration(elapsed),
                    if oom {
                        " (the sandbox's memory limit killed it)"
                    } else {
                        ""
                    }
                ),
            });
        }
        log.push_str(&format!(
            "== {name}: ok in {}\n",
            kiln_core::human_duration(elapsed)
        ));
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
