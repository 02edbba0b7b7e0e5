//! The engine's periodic work under `kiln up`: stopping idle sandboxes, retention, garbage
//! collection (with pools resized to demand), and the image cadence. Each loop ends at
//! shutdown.

use super::Engine;
use crate::Result;
use crate::session::SessionActor;
use std::sync::Arc;

impl Engine {
    /// Stops sandboxes of sessions idle for `after` (snapshot first), checking every quarter
    /// of that (at most every 30 s).
    pub(super) fn start_idle_reaper(&self, after: std::time::Duration) {
        let inner = self.inner.clone();
        let every = (after / 4).min(std::time::Duration::from_secs(30));
        self.inner.tracker.spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = inner.shutdown.cancelled() => return,
                }
                let actors: Vec<Arc<SessionActor>> = inner
                    .sessions
                    .lock()
                    .expect("sessions lock")
                    .values()
                    .cloned()
                    .collect();
                for actor in actors {
                    if inner.shutdown.is_cancelled() {
                        return;
                    }
                    actor.stop_if_idle(&inner, after).await;
                }
            }
        });
    }

    /// Collects images and layers nothing uses any more (see `kiln_fleet::gc`).
    pub async fn collect_garbage(&self) -> Result<kiln_protocol::api::GcReport> {
        let report = self.inner.fleet.collect_garbage().await?;
        if report != kiln_protocol::api::GcReport::default() {
            tracing::info!(?report, "garbage collected");
        }
        Ok(report)
    }

    /// Housekeeping every `every`, until shutdown: [`Engine::apply_retention`], then
    /// [`Engine::collect_garbage`] (so the layers of deleted sessions go at once), and pools
    /// resized to their repo's recent demand (a pool that grew shrinks when demand falls).
    pub(super) fn start_gc(&self, every: std::time::Duration) {
        let engine = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                tokio::select! {
                    result = engine.apply_retention() => if let Err(e) = result {
                        tracing::warn!(error = %e, "the retention pass failed");
                    },
                    _ = shutdown.cancelled() => return,
                }
                tokio::select! {
                    result = engine.collect_garbage() => if let Err(e) = result {
                        tracing::warn!(error = %e, "garbage collection failed");
                    },
                    _ = shutdown.cancelled() => return,
                }
                match engine.inner.store.list_repos().await {
                    Ok(repos) => repos.iter().for_each(|r| engine.spawn_refill(&r.name)),
                    Err(e) => tracing::warn!(error = %e, "cannot list repos to resize pools"),
                }
            }
        });
    }

    /// Runs [`Engine::rebuild_moved_images`] now and then every `every`, until shutdown.
    pub(super) fn start_image_cadence(&self, every: std::time::Duration) {
        let engine = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                tokio::select! {
                    result = engine.rebuild_moved_images() => if let Err(e) = result {
                        tracing::warn!(error = %e, "the image cadence pass failed");
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }
}
