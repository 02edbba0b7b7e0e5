//! Building an image for a repo: fetch it at the default branch's head (recording the commit),
//! run its setup, build and warm commands in a sandbox, and freeze the writable layer.
//!
//! Builds are incremental: a repo with a ready image builds on top of it — the old checkout,
//! dependencies and caches are already there — fetches, checks out the new commit, and skips
//! setup. When setup must rerun (a dependency manifest or the setup itself — steps, base,
//! packages, env, network — changed, which the host tells from its mirror before any sandbox
//! exists) the build starts from the clean base instead, so no file of an older setup survives.
//! A clean build on a Debian base starts from that base's layer (see `crate::bases`).
//!
//! Steps run as the sandbox user or, with `user = "root"`, as root inside the sandbox: each run
//! of steps with one user gets a sandbox, frozen into a layer the next one starts on. A failed
//! build is recorded with its log and error; the last good image stays the one sessions use.
//! Every step has a timeout.
//!
//! The repo's secrets (decrypted by the engine) are added to the environment of the setup,
//! build and warm steps — not the checkout's, and not the image's runtime, so no sandbox made
//! from the image gets them from here. The log masks them; the record keeps their names and
//! fingerprints, which also join the setup hash, so changing a secret reruns setup.

use super::environment::{Base, ENVIRONMENT_FILE, Environment, Step, StepUser};
use super::live::{BuildLog, Utf8Chunks};
use crate::host::{git, git_bytes};
use crate::workspace::{WORKDIR, Workspaces};
use crate::{Error, Result};
use kiln_core::Secret;
use kiln_protocol::api::{ImageRuntime, ImageSecret, Repo};
use kiln_sandbox::{CommandLine, ExecEvent, ExecRequest, OutputStream, Sandbox, SandboxUser};
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
    /// Where the Debian bases clean builds start from are built and kept.
    pub(crate) bases: crate::bases::Bases,
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

/// One command of a build as it will run.
struct Planned {
    /// For the log and errors: `checkout`, `setup: cargo fetch`, `setup: … (as root)`.
    name: String,
    script: String,
    user: StepUser,
    timeout: Duration,
    /// The first step: setup starts after it.
    checkout: bool,
}

/// How many sandboxes `steps` take: one per run of steps with the same user.
fn segments(steps: &[Planned]) -> usize {
    steps
        .iter()
        .enumerate()
        .filter(|(i, step)| *i == 0 || steps[i - 1].user != step.user)
        .count()
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
        // Decided on the host, before any sandbox exists: when setup reruns, the build starts
        // from the clean base, so nothing an older setup left survives into the new image.
        let lockfile_hash = self
            .lockfile_hash(
                &mirror,
                &commit,
                &environment,
                &secrets_fingerprint(secrets),
            )
            .await?;
        let previous = self.reusable(previous, &lockfile_hash, &environment, &commit, log);
        let mut layers = match previous {
            Some(previous) => previous.layers.clone(),
            None => match environment.base {
                Base::Host => Vec::new(),
                Base::Debian(suite) => vec![
                    self.bases
                        .debian(suite, &environment.base_packages(), log)
                        .await?,
                ],
            },
        };
        // The repo's objects as of now, as a read-only layer at /kiln/repo.git.
        let repo_layer = self
            .workspaces
            .data_dir
            .join("images")
            .join(id)
            .join("repo");
        self.workspaces.repo_layer(&mirror, &repo_layer).await?;
        layers.push(repo_layer);
        let steps = self.plan(&environment, previous.is_some(), &commit);
        let repo_host = kiln_core::url_host(&repo.url);
        let runtime = environment.runtime(repo_host.as_deref());
        let egress = crate::egress::BuildEgress::start(
            &self.egress,
            &self.workspaces.data_dir,
            id,
            environment.network.setup_policy(repo_host.as_deref()),
            self.workspaces.egress.totals(),
        )?;
        let network = match &egress {
            Some(egress) => egress.network(),
            None => kiln_sandbox::NetworkPolicy::Isolated,
        };
        // A secret of the same name as an [env] variable wins: it is the admin's, and newer.
        let mut env = runtime.env.clone();
        env.extend(
            secrets
                .iter()
                .map(|(name, secret)| (name.clone(), secret.value.expose().clone())),
        );
        if !secrets.is_empty() {
            let names: Vec<&str> = secrets.keys().map(String::as_str).collect();
            log.push_str(&format!("== secrets: {}\n", names.join(", ")));
        }
        let ran = self
            .run_steps(
                id,
                layers,
                &runtime,
                &env,
                network,
                &steps,
                previous.is_none(),
                progress,
                log,
            )
            .await;
        if let Some(egress) = egress {
            log.push_str(&egress.summary());
        }
        let (layers, size_bytes) = ran?;
        Ok(Built {
            layers,
            lockfile_hash,
            size_bytes,
            runtime,
        })
    }

    /// The previous image when this build can go on from it: setup need not rerun (the same
    /// lockfile hash) and its stack is not too deep yet. Says in the log which it is.
    fn reusable<'a>(
        &self,
        previous: Option<&'a ImageRecord>,
        lockfile_hash: &str,
        environment: &Environment,
        commit: &str,
        log: &BuildLog,
    ) -> Option<&'a ImageRecord> {
        let previous = previous?;
        if previous.lockfile_hash != lockfile_hash {
            log.push_str(
                "== setup reruns, from the clean base: the setup (its steps, base, packages, \
                 env or network) or a dependency manifest changed\n",
            );
            return None;
        }
        // Squashing: a deep stack of incremental layers slows every mount and every lookup,
        // so past a depth the build starts over from the base.
        let added = 1 + segments(&self.plan(environment, true, commit));
        if previous.layers.len() + added > self.max_layers {
            log.push_str(&format!(
                "== full build: image {} already has {} layers\n",
                previous.id,
                previous.layers.len()
            ));
            return None;
        }
        log.push_str("== setup skipped: the setup and the dependency manifests did not change\n");
        Some(previous)
    }

    /// What the build runs, in order: the checkout (a fetch on top of the previous image, else a
    /// clone), setup on a clean build, then build and warm.
    fn plan(&self, environment: &Environment, incremental: bool, commit: &str) -> Vec<Planned> {
        let checkout = if incremental {
            format!(
                "cd {WORKDIR} && git fetch --quiet /kiln/repo.git && git checkout --quiet --force --detach {commit}"
            )
        } else {
            format!(
                "git config --global --add safe.directory /kiln/repo.git && \
                 git clone --quiet --template= --shared --no-checkout /kiln/repo.git {WORKDIR} && \
                 cd {WORKDIR} && git checkout --quiet --detach {commit}"
            )
        };
        let mut steps = vec![Planned {
            name: "checkout".into(),
            script: checkout,
            user: StepUser::Kiln,
            timeout: self.workspaces.git_timeout,
            checkout: true,
        }];
        let phases: [(&str, &[Step]); 3] = [
            ("setup", if incremental { &[] } else { &environment.setup }),
            ("build", &environment.build),
            ("warm", &environment.warm),
        ];
        for (phase, list) in phases {
            for step in list {
                let user = step.user();
                steps.push(Planned {
                    name: match user {
                        StepUser::Kiln => format!("{phase}: {}", step.name()),
                        StepUser::Root => format!("{phase}: {} (as root)", step.name()),
                    },
                    script: format!("cd {WORKDIR} && {}", step.script()),
                    user,
                    timeout: step.timeout(environment, self.step_timeout),
                    checkout: false,
                });
            }
        }
        steps
    }

    /// Runs `steps` on `layers`, one sandbox per run of steps with the same user: at a switch,
    /// the sandbox's writable layer is frozen and the next sandbox starts on it. Returns the
    /// layers of the image and the bytes its new layers hold.
    #[allow(clippy::too_many_arguments)]
    async fn run_steps(
        &self,
        id: &str,
        mut layers: Vec<PathBuf>,
        runtime: &ImageRuntime,
        env: &BTreeMap<String, String>,
        network: kiln_sandbox::NetworkPolicy,
        steps: &[Planned],
        clean: bool,
        progress: &mut Progress,
        log: &BuildLog,
    ) -> Result<(Vec<PathBuf>, u64)> {
        let mut size_bytes = 0;
        let mut rest = steps;
        while let Some(user) = rest.first().map(|step| step.user) {
            let run = rest.iter().take_while(|step| step.user == user).count();
            let (segment, after) = rest.split_at(run);
            rest = after;
            let sandbox = self
                .workspaces
                .create_labelled(
                    layers.clone(),
                    runtime,
                    (IMAGE_LABEL, id),
                    network.clone(),
                    match user {
                        StepUser::Kiln => SandboxUser::Kiln,
                        StepUser::Root => SandboxUser::Root,
                    },
                )
                .await?;
            let mut ran = Ok(());
            for step in segment {
                // The checkout runs without the secrets: it needs none.
                let mut env = if step.checkout {
                    runtime.env.clone()
                } else {
                    env.clone()
                };
                if step.user == StepUser::Root {
                    env.insert("DEBIAN_FRONTEND".into(), "noninteractive".into());
                }
                ran = self
                    .step(&sandbox, &step.name, &step.script, &env, step.timeout, log)
                    .await;
                if ran.is_err() {
                    break;
                }
                if step.checkout {
                    // Noted before setup starts, so a failed setup still counts as run.
                    progress.setup_ran = clean;
                }
            }
            let snapshot = match ran {
                Ok(()) => self
                    .workspaces
                    .provider
                    .snapshot(sandbox.id())
                    .await
                    .map_err(Error::from),
                Err(e) => Err(e),
            };
            if let Err(e) = self.workspaces.provider.destroy(sandbox.id()).await {
                tracing::warn!(sandbox = %sandbox.id(), error = %e, "could not destroy a build sandbox");
            }
            let snapshot = snapshot?;
            layers = snapshot.image.layers;
            size_bytes += snapshot.size_bytes;
        }
        Ok((layers, size_bytes))
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
            None => match self.blob(mirror, commit, ENVIRONMENT_FILE).await? {
                Some(bytes) => String::from_utf8(bytes).map_err(|_| {
                    Error::Environment(format!("{ENVIRONMENT_FILE}: not UTF-8 text"))
                })?,
                None => {
                    log.push_str(&format!("== no {ENVIRONMENT_FILE}: nothing to set up\n"));
                    return Ok(Environment::default());
                }
            },
        };
        Environment::parse(&text).map_err(Error::Environment)
    }

    /// The contents of file `path` at `commit` in the host's mirror; `None` when there is no
    /// such file (or it is a directory).
    async fn blob(&self, mirror: &Path, commit: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let timeout = self.workspaces.git_timeout;
        let listed = git(mirror, &["ls-tree", "-z", commit, "--", path], timeout).await?;
        // `<mode> <type> <object>\t<path>`, NUL-terminated.
        let blob = listed
            .split('\0')
            .filter_map(|entry| entry.split_once('\t'))
            .find(|(_, name)| *name == path)
            .and_then(|(meta, _)| match meta.split(' ').collect::<Vec<_>>()[..] {
                [_, "blob", object] => Some(object.to_string()),
                _ => None,
            });
        match blob {
            Some(object) => Ok(Some(
                git_bytes(mirror, &["cat-file", "blob", &object], timeout).await?,
            )),
            None => Ok(None),
        }
    }

    /// sha256 over what setup is ([`Environment::setup_fingerprint`]: a changed step, base,
    /// package, variable or network policy reruns it), the secrets it gets (`secrets`, names
    /// and fingerprints) and each manifest's path and contents at `commit` (a missing one counts
    /// as missing), read from the host's mirror.
    async fn lockfile_hash(
        &self,
        mirror: &Path,
        commit: &str,
        environment: &Environment,
        secrets: &str,
    ) -> Result<String> {
        let mut hasher = Sha256::new();
        hasher.update(environment.setup_fingerprint().as_bytes());
        hasher.update(secrets.as_bytes());
        hasher.update([0]);
        for manifest in &environment.manifests {
            hasher.update(manifest.as_bytes());
            hasher.update([0]);
            match self.blob(mirror, commit, manifest).await? {
                Some(bytes) => hasher.update(&bytes),
                None => hasher.update(b"\xffmissing"),
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
