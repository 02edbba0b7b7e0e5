//! Image builds as the engine runs them: one per repo at a time (`BuildGuard`), a live log to
//! follow, the cadence's pass over repos whose branch moved; the build itself is `images/`.

use super::{Engine, Inner};
use crate::{Error, Result};
use std::sync::Arc;
use tracing::Instrument;

impl Engine {
    /// Builds an image of the repo's default branch now (incrementally on its newest image) and
    /// records it. A failed build is recorded too, with its error and log, and returned as such:
    /// the repo's last good image stays the one in use. `Conflict` while the repo is building.
    pub async fn build_image(&self, repo: &str) -> Result<kiln_store::ImageRecord> {
        let repo = self.repo(repo).await?;
        let build = BuildGuard::take(&self.inner, &repo.name)?;
        self.run_image_build(&repo, &build).await
    }

    /// Runs the build `build` stands for; a build that cannot run says why in its live log.
    pub(super) async fn run_image_build(
        &self,
        repo: &kiln_protocol::api::Repo,
        build: &BuildGuard,
    ) -> Result<kiln_store::ImageRecord> {
        let builder = crate::images::ImageBuilder {
            workspaces: self.inner.workspaces.clone(),
            store: self.inner.store.clone(),
            step_timeout: self.inner.config.image_step_timeout,
            max_layers: self.inner.config.image_max_layers,
        };
        let span = tracing::info_span!("image_build", repo = %repo.name, image = %build.id);
        let image = builder
            .build(repo, &build.id, &build.log)
            .instrument(span)
            .await
            .inspect_err(|e| {
                build
                    .log
                    .push_str(&format!("\n== the build could not run: {e}\n"))
            })?;
        if image.is_ready() {
            self.spawn_refill(&repo.name);
        }
        Ok(image)
    }

    /// One pass of the image cadence: builds the image of every repo whose default branch moved
    /// since its last build (or that has none). A repo whose last build failed at the same
    /// commit is not retried until the branch moves or someone asks. Returns the builds made.
    pub async fn rebuild_moved_images(&self) -> Result<Vec<kiln_store::ImageRecord>> {
        let mut built = Vec::new();
        for repo in self.inner.store.list_repos().await? {
            let head = match self.inner.workspaces.branch_head(&repo).await {
                Ok((_, head)) => head,
                Err(e) => {
                    tracing::warn!(repo = %repo.name, error = %e, "cannot fetch the repo; no image build");
                    continue;
                }
            };
            let last = self
                .inner
                .store
                .images(&repo.name)
                .await?
                .into_iter()
                .next();
            if last.is_some_and(|image| image.commit == head) {
                continue;
            }
            match self.build_image(&repo.name).await {
                Ok(image) => built.push(image),
                Err(Error::Conflict(_)) => {}
                Err(e) => {
                    tracing::warn!(repo = %repo.name, error = %e, "image build could not run")
                }
            }
        }
        Ok(built)
    }

    /// Starts [`Engine::build_image`] in the background and returns the new image's id; its
    /// log can be followed at once ([`Engine::build_log`]) and its record appears in the
    /// registry when it ends. `Conflict` while the repo is building.
    pub async fn start_image_build(&self, repo: &str) -> Result<String> {
        let repo = self.repo(repo).await?;
        let build = BuildGuard::take(&self.inner, &repo.name)?;
        let id = build.id.clone();
        let engine = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            let name = &repo.name;
            tokio::select! {
                result = engine.run_image_build(&repo, &build) => match result {
                    Ok(image) => tracing::info!(repo = name, image = %image.id, ok = image.is_ready(), "image build ended"),
                    Err(e) => tracing::warn!(repo = name, error = %e, "image build could not run"),
                },
                _ = shutdown.cancelled() => {}
            }
        });
        Ok(id)
    }

    /// The log of the repo's build `id` while it runs: what was written so far, then each new
    /// piece until the build ends. `None` when no such build is running (it may have ended:
    /// its record has the log).
    pub fn build_log(&self, repo: &str, id: &str) -> Option<crate::images::BuildLogFollower> {
        let building = self.inner.building.lock().expect("building lock");
        building
            .get(repo)
            .filter(|build| build.id == id)
            .map(|build| build.log.follow())
    }
}

/// A repo's running image build, as others see it.
#[derive(Debug)]
pub(super) struct RunningBuild {
    id: String,
    log: Arc<crate::images::BuildLog>,
}

/// One image build of a repo: marks the repo as building while alive, and ends the live log
/// (its followers) when dropped — also when the build is cancelled.
pub(super) struct BuildGuard {
    inner: Arc<Inner>,
    repo: String,
    /// The image's id, chosen now so that callers can follow the build from its start.
    id: String,
    log: Arc<crate::images::BuildLog>,
}

impl BuildGuard {
    pub(super) fn take(inner: &Arc<Inner>, repo: &str) -> Result<BuildGuard> {
        let mut building = inner.building.lock().expect("building lock");
        if building.contains_key(repo) {
            return Err(Error::Conflict(format!(
                "an image of {repo:?} is being built"
            )));
        }
        let id = format!("img-{}", kiln_core::random_hex(8));
        let log = Arc::new(crate::images::BuildLog::default());
        building.insert(
            repo.to_string(),
            RunningBuild {
                id: id.clone(),
                log: log.clone(),
            },
        );
        Ok(BuildGuard {
            inner: inner.clone(),
            repo: repo.to_string(),
            id,
            log,
        })
    }
}

impl Drop for BuildGuard {
    fn drop(&mut self) {
        self.inner
            .building
            .lock()
            .expect("building lock")
            .remove(&self.repo);
        self.log.finish();
    }
}
