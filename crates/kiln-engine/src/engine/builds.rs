//! Image builds as the engine runs them: in the foreground or the background, the cadence's
//! pass over repos whose branch moved, and a refill of the pool after a good build. How a
//! build runs is `kiln_fleet::images`.

use super::Engine;
use crate::Result;
use kiln_fleet::BuildGuard;
use kiln_fleet::images::BuildLogFollower;
use tracing::Instrument;

impl Engine {
    /// Builds an image of the repo's default branch now (incrementally on its newest image) and
    /// records it. A failed build is recorded too, with its error and log, and returned as such:
    /// the repo's last good image stays the one in use. `BuildRunning` while the repo builds.
    pub async fn build_image(&self, repo: &str) -> Result<kiln_store::ImageRecord> {
        let repo = self.repo(repo).await?;
        let build = self.inner.fleet.begin_build(&repo.name)?;
        self.run_image_build(&repo, &build).await
    }

    async fn run_image_build(
        &self,
        repo: &kiln_protocol::api::Repo,
        build: &BuildGuard,
    ) -> Result<kiln_store::ImageRecord> {
        let span = tracing::info_span!("image_build", repo = %repo.name, image = %build.id());
        let image = self
            .inner
            .fleet
            .build_image(repo, build)
            .instrument(span)
            .await?;
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
            let head = match self.inner.fleet.workspaces().branch_head(&repo).await {
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
                Err(crate::Error::Fleet(kiln_fleet::Error::BuildRunning { .. })) => {}
                Err(e) => {
                    tracing::warn!(repo = %repo.name, error = %e, "image build could not run")
                }
            }
        }
        Ok(built)
    }

    /// Starts [`Engine::build_image`] in the background and returns the new image's id; its
    /// log can be followed at once ([`Engine::build_log`]) and its record appears in the
    /// registry when it ends. `BuildRunning` while the repo builds.
    pub async fn start_image_build(&self, repo: &str) -> Result<String> {
        let repo = self.repo(repo).await?;
        let build = self.inner.fleet.begin_build(&repo.name)?;
        let id = build.id().to_string();
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
    pub fn build_log(&self, repo: &str, id: &str) -> Option<BuildLogFollower> {
        self.inner.fleet.build_log(repo, id)
    }

    /// The repo's build running now (its id, start and log so far), if one is.
    pub fn running_build(&self, repo: &str) -> Option<kiln_fleet::RunningBuildInfo> {
        self.inner.fleet.running_build(repo)
    }
}
