//! Image builds as the engine runs them: in the foreground or the background, the cadence's
//! pass over repos whose branch moved, and a refill of the pool after a good build. How a
//! build runs is `kiln_fleet::images`.
//!
//! A build reads the repo's secrets when it starts; a change of secrets meanwhile marks the
//! repo in `rebuilds_wanted`, and the build's end starts another one.

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
        let image = {
            let build = self.inner.fleet.begin_build(&repo.name)?;
            self.run_image_build(&repo, &build).await
        };
        self.follow_up_build(&repo.name).await;
        image
    }

    async fn run_image_build(
        &self,
        repo: &kiln_protocol::api::Repo,
        build: &BuildGuard,
    ) -> Result<kiln_store::ImageRecord> {
        let span = tracing::info_span!("image_build", repo = %repo.name, image = %build.id());
        // Taken before the secrets are read: a change after this starts another build.
        self.inner
            .rebuilds_wanted
            .lock()
            .expect("rebuilds lock")
            .remove(&repo.name);
        let secrets = match self.build_secrets(&repo.name).await {
            Ok(secrets) => secrets,
            Err(e) => {
                build.could_not_run(&format!("the repo's secrets cannot be read: {e}"));
                return Err(e);
            }
        };
        let started = std::time::Instant::now();
        let result = self
            .inner
            .fleet
            .build_image(repo, build, &secrets)
            .instrument(span)
            .await;
        let ready = result.as_ref().is_ok_and(|image| image.is_ready());
        let outcome = if ready { "ready" } else { "failed" };
        self.inner.metrics.image_build(outcome, started.elapsed());
        let image = result?;
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
            // Secrets changed since the last build (one that was running then, or before a
            // restart) rebuild it too; their fingerprints say so without opening them.
            let secrets = self.inner.store.secret_fingerprints(&repo.name).await?;
            if last.is_some_and(|image| image.commit == head && image.secrets == secrets) {
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
                _ = shutdown.cancelled() => return,
            }
            drop(build);
            engine.follow_up_build(name).await;
        });
        Ok(id)
    }

    /// After a build ended (its guard dropped): starts another when the repo's secrets changed
    /// while it ran.
    ///
    /// A boxed future of a named type: it is reached from the task `start_image_build` spawns,
    /// and the compiler cannot see through that cycle to prove it `Send`.
    fn follow_up_build<'a>(
        &'a self,
        repo: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let wanted = self
                .inner
                .rebuilds_wanted
                .lock()
                .expect("rebuilds lock")
                .contains(repo);
            if !wanted || self.inner.shutdown.is_cancelled() {
                return;
            }
            match self.start_image_build(repo).await {
                Ok(id) => tracing::info!(repo, image = %id, "image build for changed secrets"),
                Err(crate::Error::Fleet(kiln_fleet::Error::BuildRunning { .. })) => {}
                Err(e) => {
                    tracing::warn!(repo, error = %e, "cannot start an image build for changed secrets")
                }
            }
        })
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
