//! The fleet: everything sessions start from and leave behind, below the session actors.
//!
//! - [`host`]: the one place kiln runs programs on the host (git, with the control plane's
//!   credentials; mmdebstrap).
//! - `bases`: the Debian root filesystems images are built on, built once per inputs.
//! - [`workspace`]: per-repo mirrors, session checkouts, creating and syncing sandboxes.
//! - [`images`]: a repo's environment file, image builds and their live logs.
//! - [`pool`]: warm sandboxes per repo and reservations while a user types.
//! - [`gc`]: which image and snapshot layers are still needed, and removing the rest.
//!
//! [`Fleet`] owns the state these share (the pools, the running builds, the collector's lock)
//! and is what the engine holds. It depends on the store, the sandbox provider, the egress
//! proxy and kiln-vault's masker (a build's log masks the repo's secrets, which the engine
//! opens and hands over); the engine decides *when* (after a claim, on a cadence, at
//! shutdown), the fleet knows *how*.

pub mod about;
mod bases;
mod builds;
mod egress;
mod error;
mod gc;
pub mod host;
pub mod images;
pub mod pool;
pub mod push;
pub mod workspace;

pub use builds::{BuildGuard, RunningBuildInfo};
pub use egress::{EGRESS_LABEL, EgressSettings, HostTally, SandboxEgress, TallyKey};
pub use error::{Error, Result};
pub use workspace::{CredentialSource, SESSION_LABEL, WORKDIR};

use kiln_protocol::api::{GcReport, PoolStatus, Repo};
use kiln_sandbox::Provider;
use kiln_store::{ImageRecord, Store};
use pool::{PoolEntry, Pools};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use workspace::Workspaces;

/// How the fleet builds, keeps and collects.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Bound on one host-side git command (a clone, a fetch).
    pub git_timeout: Duration,
    /// Timeout of an image build step whose environment file names none.
    pub image_step_timeout: Duration,
    /// The deepest layer stack an incremental build may make; past it, a full build.
    pub image_max_layers: usize,
    /// Ready images kept per repo by the collector, besides any still in use.
    pub images_kept: usize,
    /// Layers younger than this are never collected.
    pub gc_grace: Duration,
    /// Ready sandboxes kept per repo that has an image (0: no pool).
    pub pool_size: usize,
    /// The most ready sandboxes per repo when demand is high.
    pub pool_max: usize,
    /// The address rule, deny list (and, in tests, resolve table) of every egress proxy.
    pub egress: EgressSettings,
    /// Where Debian bases are kept; `None`: `DATA/bases`, collected with the rest. A directory
    /// given here may be shared by several data dirs (tests share one, so each base is built
    /// once), so the collector leaves it alone.
    pub bases_dir: Option<PathBuf>,
    /// Where a fetch gets credentials for a repo whose url holds none (a forge's short-lived
    /// token); `None`: only the url's.
    pub credentials: Option<Arc<dyn CredentialSource>>,
}

/// Mirrors, checkouts, images, pools and the collector over one data dir and one provider.
#[derive(Debug)]
pub struct Fleet {
    store: Store,
    workspaces: Workspaces,
    pools: Pools,
    builds: builds::Builds,
    bases: bases::Bases,
    /// Held by a collection, so two never overlap.
    gc: tokio::sync::Mutex<()>,
    config: FleetConfig,
}

impl Fleet {
    pub fn new(
        store: Store,
        provider: Arc<dyn Provider>,
        data_dir: PathBuf,
        config: FleetConfig,
    ) -> Fleet {
        let bases = bases::Bases {
            dir: config
                .bases_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("bases")),
            provider: provider.clone(),
            egress: config.egress.clone(),
        };
        Fleet {
            bases,
            workspaces: Workspaces {
                egress: Arc::new(egress::SandboxEgress::new(config.egress.clone(), &data_dir)),
                about: Arc::new(about::About::new(&data_dir)),
                environments: Default::default(),
                data_dir,
                provider,
                git_timeout: config.git_timeout,
                store: store.clone(),
                mirror_locks: Default::default(),
                credentials: config.credentials.clone(),
            },
            store,
            pools: Pools::default(),
            builds: builds::Builds::default(),
            gc: tokio::sync::Mutex::new(()),
            config,
        }
    }

    pub fn workspaces(&self) -> &Workspaces {
        &self.workspaces
    }

    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.workspaces.provider
    }

    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// Whether pools are on at all.
    pub fn pools_enabled(&self) -> bool {
        self.config.pool_size.max(self.config.pool_max) > 0
    }

    /// Brings the repo's pool to its size with sandboxes from the newest image, replacing
    /// entries made from an older one and trimming past recent demand. Returns how many it
    /// made; stops early at `stop`.
    pub async fn refill_pool(&self, repo: &str, stop: &CancellationToken) -> Result<usize> {
        let size = self
            .pools
            .target(repo, self.config.pool_size, self.config.pool_max);
        let Some(image) = self.store.latest_image(repo).await? else {
            return Ok(0);
        };
        let stale = self.pools.remove_stale(repo, &image.id);
        for stale in stale.into_iter().chain(self.pools.trim(repo, size)) {
            let _ = self.provider().destroy(stale.sandbox.id()).await;
        }
        let mut made = 0;
        while self.pools.size(repo) < size && !stop.is_cancelled() {
            let sandbox = self.workspaces.create_pooled(repo, &image).await?;
            self.pools.add(
                repo,
                PoolEntry {
                    sandbox,
                    image_id: image.id.clone(),
                    checkout: Arc::new(tokio::sync::Mutex::new(image.commit.clone())),
                },
            );
            made += 1;
        }
        Ok(made)
    }

    /// The repo's warm pool right now.
    pub async fn pool_status(&self, repo: &str) -> Result<PoolStatus> {
        let image = self.store.latest_image(repo).await?.map(|i| i.id);
        self.pools.expire();
        let ready = self.pools.ready(repo);
        Ok(PoolStatus {
            ready,
            reserved: self.pools.size(repo) - ready,
            target: self
                .pools
                .target(repo, self.config.pool_size, self.config.pool_max),
            image,
        })
    }

    /// Destroys the repo's ready pooled sandboxes (the repo is going away).
    pub async fn drain_pool(&self, repo: &str) {
        for entry in self.pools.trim(repo, 0) {
            if let Err(e) = self.provider().destroy(entry.sandbox.id()).await {
                tracing::warn!(sandbox = %entry.sandbox.id(), error = %e, "cannot destroy a pooled sandbox");
            }
        }
    }

    /// Destroys every pooled sandbox (reserved ones too): at shutdown, pools are not kept.
    pub async fn drain_pools(&self) {
        for entry in self.pools.drain() {
            if let Err(e) = self.provider().destroy(entry.sandbox.id()).await {
                tracing::warn!(sandbox = %entry.sandbox.id(), error = %e, "cannot destroy a pooled sandbox");
            }
        }
    }

    /// Marks `repo` as building and returns the build's guard (its id and live log), or
    /// [`Error::BuildRunning`].
    pub fn begin_build(&self, repo: &str) -> Result<BuildGuard> {
        self.builds.begin(repo)
    }

    /// Runs the build `build` stands for and records it (a failed build too, with its error
    /// and log; the last good image stays the one in use). A build that cannot run says why in
    /// its live log.
    pub async fn build_image(
        &self,
        repo: &Repo,
        build: &BuildGuard,
        secrets: &images::BuildSecrets,
    ) -> Result<ImageRecord> {
        let builder = images::ImageBuilder {
            workspaces: self.workspaces.clone(),
            store: self.store.clone(),
            step_timeout: self.config.image_step_timeout,
            max_layers: self.config.image_max_layers,
            egress: self.config.egress.clone(),
            bases: self.bases.clone(),
        };
        builder
            .build(repo, build.id(), build.log(), secrets)
            .await
            .inspect_err(|e| {
                build
                    .log()
                    .push_str(&format!("\n== the build could not run: {e}\n"))
            })
    }

    /// The live log of the repo's build `id`; `None` when no such build is running (it may
    /// have ended: its record has the log).
    pub fn build_log(&self, repo: &str, id: &str) -> Option<images::BuildLogFollower> {
        self.builds.follow(repo, id)
    }

    /// The repo's build running now, if one is.
    pub fn running_build(&self, repo: &str) -> Option<RunningBuildInfo> {
        self.builds.running(repo)
    }

    /// Collects images and layers nothing uses any more (see [`gc`]); one collection at a
    /// time.
    pub async fn collect_garbage(&self) -> Result<GcReport> {
        let _one = self.gc.lock().await;
        gc::collect(self).await
    }
}
