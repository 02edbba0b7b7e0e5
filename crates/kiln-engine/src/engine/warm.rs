//! Warm pools from the engine's side: refilling a repo's pool (after a claim, an image, a change
//! of demand), reservations while a user types, and what the API shows of a pool. The pool's
//! own bookkeeping and its refill are `kiln_fleet::pool`.

use super::Engine;
use super::admission::Admission;
use crate::Result;
use kiln_core::SessionId;
use kiln_fleet::pool::{PoolEntry, Reserved};
use kiln_fleet::workspace::SyncTarget;
use kiln_protocol::api::UserRef;

impl Engine {
    /// Brings the repo's pool to its size with sandboxes from the newest image, replacing
    /// entries made from an older one. Returns how many it made.
    pub async fn refill_pool(&self, repo: &str) -> Result<usize> {
        Ok(self
            .inner
            .fleet
            .refill_pool(repo, &self.inner.shutdown)
            .await?)
    }

    /// Refills the repo's pool in the background (one refill per repo at a time).
    pub(crate) fn spawn_refill(&self, repo: &str) {
        self.spawn_refill_after(repo, std::time::Duration::ZERO);
    }

    /// [`Engine::spawn_refill`] after `delay`: a session that just claimed a sandbox is on
    /// its way to the model, and making the next sandbox (bubblewrap, mounts) would compete
    /// with it for the CPU.
    pub(crate) fn spawn_refill_after(&self, repo: &str, delay: std::time::Duration) {
        if !self.inner.fleet.pools_enabled()
            || !self
                .inner
                .fleet
                .pools()
                .refilling
                .lock()
                .expect("pool lock")
                .insert(repo.to_string())
        {
            return;
        }
        let (engine, repo) = (self.clone(), repo.to_string());
        self.inner.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = engine.inner.shutdown.cancelled() => {}
            }
            if let Err(e) = engine.refill_pool(&repo).await {
                tracing::warn!(repo, error = %e, "cannot refill the warm pool");
            }
            engine
                .inner
                .fleet
                .pools()
                .refilling
                .lock()
                .expect("pool lock")
                .remove(&repo);
        });
    }

    /// Warm-up while typing: holds a pooled sandbox of `repo` for `user`'s next session for
    /// the reservation time. `false` when none is ready (the pool is refilled).
    pub async fn reserve_sandbox(&self, user: &UserRef, repo: &str) -> Result<bool> {
        let repo = self.repo(repo).await?;
        let reserved = self.inner.fleet.pools().reserve(
            &repo.name,
            &user.id,
            self.inner.config.reservation_ttl,
        );
        self.spawn_refill(&repo.name);
        Ok(match reserved {
            Reserved::New(entry) => {
                self.spawn_warm_sync(repo, entry);
                true
            }
            Reserved::Extended => true,
            Reserved::None => false,
        })
    }

    /// Brings a reserved sandbox's checkout to the head of the default branch while its user
    /// types, so the session's own sync only has to name its branch.
    pub(super) fn spawn_warm_sync(&self, repo: kiln_protocol::api::Repo, entry: PoolEntry) {
        let inner = self.inner.clone();
        self.inner.tracker.spawn(async move {
            let mut checkout = entry.checkout.lock().await;
            let sync = inner.fleet.workspaces().sync(
                &entry.sandbox,
                &repo,
                &checkout,
                SyncTarget::Detached,
            );
            let result = tokio::select! {
                result = sync => result,
                _ = inner.shutdown.cancelled() => return,
            };
            match result {
                Ok(head) => *checkout = head,
                // The session's own sync tries again from where the checkout is.
                Err(e) => tracing::info!(repo = %repo.name, error = %e, "warm-up sync failed"),
            }
        });
    }

    /// Warm-up while typing in a session: when its sandbox was stopped (or never made), it
    /// starts coming back now rather than when the prompt arrives. Best effort.
    pub async fn warm_session(&self, session: &SessionId) {
        match self.actor(session).await {
            Ok(actor) if actor.is_active() => {}
            Ok(actor) => match Admission::take(&self.inner, actor.creator(), Some(session)) {
                Ok(_admitted) => actor.warm_sandbox(&self.inner),
                Err(e) => tracing::debug!(%session, error = %e, "not warming a session"),
            },
            Err(e) => tracing::debug!(%session, error = %e, "cannot warm a session"),
        }
    }

    /// The repo's warm pool right now.
    pub async fn pool_status(&self, repo: &str) -> Result<kiln_protocol::api::PoolStatus> {
        self.repo(repo).await?;
        Ok(self.inner.fleet.pool_status(repo).await?)
    }

    /// The image of each ready sandbox in the repo's pool.
    pub fn pool_images(&self, repo: &str) -> Vec<String> {
        self.inner.fleet.pools().images(repo)
    }

    /// Ready (unreserved) sandboxes in the repo's pool.
    pub fn pool_ready(&self, repo: &str) -> usize {
        let pools = self.inner.fleet.pools();
        pools.expire();
        pools.ready(repo)
    }
}
