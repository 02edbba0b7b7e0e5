//! Which repos are building: one image build per repo at a time, each with a live log that
//! callers can follow from its first line.

use crate::images::{BuildLog, BuildLogFollower};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The running build per repo.
#[derive(Debug, Default)]
pub(crate) struct Builds {
    running: Arc<Mutex<HashMap<String, RunningBuild>>>,
}

/// A repo's running image build, as others see it.
#[derive(Debug)]
struct RunningBuild {
    id: String,
    log: Arc<BuildLog>,
    started_ms: i64,
}

/// A build that is running now, as the API lists it.
#[derive(Debug, Clone)]
pub struct RunningBuildInfo {
    pub id: String,
    /// When it started (ms since the epoch).
    pub started_ms: i64,
    /// Its log so far.
    pub log: String,
}

impl Builds {
    pub(crate) fn begin(&self, repo: &str) -> Result<BuildGuard> {
        let mut running = self.running.lock().expect("builds lock");
        if running.contains_key(repo) {
            return Err(Error::BuildRunning {
                repo: repo.to_string(),
            });
        }
        let id = format!("img-{}", kiln_core::random_hex(8));
        let log = Arc::new(BuildLog::default());
        running.insert(
            repo.to_string(),
            RunningBuild {
                id: id.clone(),
                log: log.clone(),
                started_ms: kiln_core::now_ms(),
            },
        );
        Ok(BuildGuard {
            running: self.running.clone(),
            repo: repo.to_string(),
            id,
            log,
        })
    }

    pub(crate) fn running(&self, repo: &str) -> Option<RunningBuildInfo> {
        let running = self.running.lock().expect("builds lock");
        running.get(repo).map(|build| RunningBuildInfo {
            id: build.id.clone(),
            started_ms: build.started_ms,
            log: build.log.text(),
        })
    }

    pub(crate) fn follow(&self, repo: &str, id: &str) -> Option<BuildLogFollower> {
        let running = self.running.lock().expect("builds lock");
        running
            .get(repo)
            .filter(|build| build.id == id)
            .map(|build| build.log.follow())
    }
}

/// One image build of a repo: marks the repo as building while alive, and ends the live log
/// (its followers) when dropped — also when the build is cancelled.
#[derive(Debug)]
pub struct BuildGuard {
    running: Arc<Mutex<HashMap<String, RunningBuild>>>,
    repo: String,
    /// The image's id, chosen at the start so that callers can follow the build from its start.
    id: String,
    log: Arc<BuildLog>,
}

impl BuildGuard {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn log(&self) -> &BuildLog {
        &self.log
    }

    /// Ends the build before it started: its log says why (followers read it), nothing is
    /// recorded. For what the caller could not prepare (the secrets did not decrypt).
    pub fn could_not_run(&self, why: &str) {
        self.log
            .push_str(&format!("== the build could not run: {why}\n"));
    }
}

impl Drop for BuildGuard {
    fn drop(&mut self) {
        self.running.lock().expect("builds lock").remove(&self.repo);
        self.log.finish();
    }
}
