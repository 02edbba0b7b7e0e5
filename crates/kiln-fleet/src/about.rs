//! What an agent can read about kiln and about the sandbox it works in, without a network: a
//! directory per repo, shown read-only at [`kiln_sandbox::DOCS_DIR`] in every agent sandbox of
//! that repo (sessions, warm pools, restores). It holds kiln's user documentation (`kiln/`:
//! the README and `docs/*.md`, embedded in the binary) and `environment.md`, a description of
//! the repo's environment written from its newest image: how it was built, each step's time,
//! the network policy, the limits. So "how do I make this repo's setup faster?" has an answer
//! in the sandbox.
//!
//! One directory per repo, never per session: nothing in it is a secret (variable and secret
//! *names* only), and a repo's sandboxes see only their own repo's description.

use crate::{Error, Result};
use kiln_protocol::api::{EgressMode, ImageRuntime};
use kiln_store::ImageRecord;
use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

include!(concat!(env!("OUT_DIR"), "/kiln_docs.rs"));

/// The file describing the repo's environment, in the directory.
pub const ENVIRONMENT_FILE: &str = "environment.md";

/// The per-repo directories under `DATA/about/`.
#[derive(Debug)]
pub struct About {
    root: PathBuf,
    /// Per repo, the image whose description the directory holds (`None`: no image), so a
    /// sandbox made from an unchanged image costs one map lookup.
    written: Mutex<HashMap<String, Option<String>>>,
}

impl About {
    pub fn new(data_dir: &Path) -> About {
        About {
            root: data_dir.join("about"),
            written: Mutex::default(),
        }
    }

    /// The directory sandboxes of `repo` made from `image` see, written if it does not yet
    /// describe that image.
    pub fn dir(&self, repo: &str, image: Option<&ImageRecord>) -> Result<PathBuf> {
        let dir = self.root.join(repo);
        let id = image.map(|i| i.id.clone());
        if self.written.lock().expect("about lock").get(repo) == Some(&id) {
            return Ok(dir);
        }
        let docs = dir.join("kiln");
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&docs)?;
            for (name, text) in KILN_DOCS {
                write_atomically(&docs.join(name), text)?;
            }
            write_atomically(
                &dir.join(ENVIRONMENT_FILE),
                &describe(repo, image.filter(|i| i.is_ready())),
            )
        };
        write().map_err(Error::io(format!(
            "writing the docs directory {}",
            dir.display()
        )))?;
        self.written
            .lock()
            .expect("about lock")
            .insert(repo.to_string(), id);
        Ok(dir)
    }

    /// Removes a deleted repo's directory; a failure is logged.
    pub fn remove(&self, repo: &str) {
        self.written.lock().expect("about lock").remove(repo);
        let dir = self.root.join(repo);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted repo's docs");
        }
    }
}

/// Replaces `path` whole: a sandbox reading it sees the old or the new text, never a part.
/// Each write has its own partial file, so two sandboxes of one repo made at once (a warm pool
/// filling while a session starts) cannot rename each other's partial away.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    static PARTIALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    let n = PARTIALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partial = path.with_extension(format!("partial-{}-{n}", std::process::id()));
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

/// `environment.md` for `repo`, from its newest ready image if it has one.
pub fn describe(repo: &str, image: Option<&ImageRecord>) -> String {
    let mut out = format!(
        "# The environment of this sandbox\n\n\
         kiln runs this session in a sandbox of the repository `{repo}`. This directory \
         ({docs}) is read-only: this file describes the environment, and `{docs}/kiln/` holds \
         kiln's own documentation (start with `README.md`; the environment definition is \
         `environment.md`, repository secrets `secrets.md`).\n\n\
         - The checkout is `{workdir}`, on the session's branch `kiln/<session>`. `git push` \
         does not work here: the `push` tool pushes the branch, and `open_pr` opens a pull \
         request, in the name of the person who asked.\n\
         - No credential is in the sandbox. Outbound HTTP(S) goes through kiln's egress proxy \
         (`HTTPS_PROXY` is set); a refused host answers 403 with the reason.\n\n",
        docs = kiln_sandbox::DOCS_DIR,
        workdir = kiln_core::WORKDIR,
    );
    let Some(image) = image else {
        out.push_str(
            "## No environment image\n\n\
             This repository has no environment image yet: every session starts from a fresh \
             clone, without its dependencies installed or its build caches warm. Add \
             `.kiln/environment.toml` to the default branch (see `kiln/environment.md`); kiln \
             then builds an image on every push, and sessions start from it in milliseconds.\n",
        );
        return out;
    };
    let commit = &image.commit[..image.commit.len().min(12)];
    let _ = writeln!(
        out,
        "## The image\n\n\
         Sessions start from image `{id}`, built from commit `{commit}` in {took}. {setup}\n",
        id = image.id,
        took = kiln_core::human_duration(std::time::Duration::from_millis(image.duration_ms)),
        setup = if image.setup_ran {
            "Its setup steps ran (the setup or a dependency manifest had changed)."
        } else {
            "Its setup steps were skipped: the setup and the dependency manifests were unchanged, \
             so it reused the previous image's dependencies and ran only the build and warm steps."
        },
    );
    let steps: Vec<&str> = image
        .log
        .lines()
        .filter(|l| l.starts_with("== ") && (l.contains(": ok in ") || l.contains("setup")))
        .collect();
    if !steps.is_empty() {
        out.push_str("What the build did, from its log:\n\n");
        for line in steps {
            let _ = writeln!(out, "- {}", line.trim_start_matches("== "));
        }
        out.push('\n');
    }
    describe_runtime(&mut out, &image.runtime);
    if !image.secrets.is_empty() {
        let names: Vec<&str> = image.secrets.iter().map(|s| s.name.as_str()).collect();
        let _ = writeln!(
            out,
            "Repository secrets the build's steps got (names only): {}. Those marked for the \
             agent are in your commands' environment; others are not.\n",
            names.join(", ")
        );
    }
    out.push_str(
        "## Making sessions faster\n\n\
         - Setup steps rerun only when the setup or a file listed in `manifests` changes: put \
         dependency installs there, keyed by their lockfiles.\n\
         - Build steps run on every image build, starting from the previous image: keep them \
         incremental.\n\
         - Warm steps fill caches (compilers, test runners) so a session's first command is \
         fast.\n\
         - Every step's time is above; `kiln image logs` shows a build's whole log.\n",
    );
    out
}

fn describe_runtime(out: &mut String, runtime: &ImageRuntime) {
    let network = &runtime.network;
    let policy = match network.mode {
        EgressMode::None => "no outbound network".to_string(),
        EgressMode::Open => "any public host".to_string(),
        EgressMode::Allowlist if network.allow.is_empty() => {
            "the package registries (PyPI, npm, crates.io, Go, RubyGems, Maven, Debian) only"
                .to_string()
        }
        EgressMode::Allowlist => format!(
            "the package registries and {}",
            network
                .allow
                .iter()
                .map(|h| format!("`{h}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let _ = writeln!(
        out,
        "## Network and resources\n\n\
         - Network: {policy}{read_only}. Never this host, loopback or private addresses.",
        read_only = if network.read_only {
            "; plain-HTTP writes (other than GET, HEAD, OPTIONS) are refused"
        } else {
            ""
        },
    );
    let limits = &runtime.limits;
    let limit =
        |v: Option<u64>, unit: &str| v.map_or("kiln's default".into(), |v| format!("{v}{unit}"));
    let _ = writeln!(
        out,
        "- Memory: {}; processes: {}; disk (writable layer): {}.",
        limit(limits.memory_mb, " MB"),
        limit(limits.pids, ""),
        limit(limits.disk_mb, " MB"),
    );
    if !runtime.env.is_empty() {
        let names: Vec<&str> = runtime.env.keys().map(String::as_str).collect();
        let _ = writeln!(out, "- Variables the image sets: {}.", names.join(", "));
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docs_are_embedded() {
        let names: Vec<&str> = KILN_DOCS.iter().map(|(n, _)| *n).collect();
        assert!(names.contains(&"README.md"), "{names:?}");
        assert!(names.contains(&"environment.md"), "{names:?}");
        assert!(KILN_DOCS.iter().all(|(_, text)| !text.is_empty()));
    }

    #[test]
    fn a_repo_without_an_image_is_told_how_to_get_one() {
        let text = describe("demo", None);
        assert!(text.contains("No environment image"), "{text}");
        assert!(text.contains(".kiln/environment.toml"), "{text}");
    }

    #[test]
    fn writers_racing_on_one_file_all_succeed_and_leave_one_whole_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ENVIRONMENT_FILE);
        std::thread::scope(|s| {
            for t in 0..8 {
                let path = &path;
                s.spawn(move || {
                    for i in 0..50 {
                        let text = format!("writer {t} pass {i}\n").repeat(100);
                        write_atomically(path, &text).expect("a racing write fails");
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("pass 49\n"), "{text}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "partial files were left behind");
    }
}
