//! How a session gets its sandbox — the live one, the one found at start-up, its newest
//! snapshot, a warm pool's, or a new one from the repo's image or a clone — and the background
//! sync that brings an image's checkout to the branch head (reads go ahead, writes wait).

use super::{REFILL_DELAY, SessionActor};
use crate::Result;
use crate::engine::Inner;
use crate::sync_gate::SyncState;
use kiln_fleet::pool::Checkout;
use kiln_fleet::workspace::SyncTarget;
use kiln_protocol::api::{ErrorKind, Event, SandboxState};
use kiln_sandbox::Sandbox;
use std::sync::Arc;
use tracing::Instrument;

impl SessionActor {
    /// Starts creating the sandbox in the background, so it is ready when the agent needs it.
    pub(crate) fn warm_sandbox(self: &Arc<Self>, inner: &Arc<Inner>) {
        let (actor, inner2) = (self.clone(), inner.clone());
        let shutdown = inner.shutdown.clone();
        inner.tracker.spawn(async move {
            tokio::select! {
                _ = actor.sandbox(&inner2, Need::Warm) => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }

    /// The session's sandbox: the live one, the one found at start-up, or a new one — from the
    /// repo's newest image when it has one (then synced in the background), else from a fresh
    /// clone. Sandbox status events tell every client what is happening.
    pub(crate) async fn sandbox(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        need: Need,
    ) -> Result<Sandbox> {
        let workspaces = inner.fleet.workspaces();
        let mut slot = self.sandbox.lock().await;
        if let Some(sandbox) = &slot.sandbox
            && sandbox.guest().gone().is_none()
        {
            // A failed sync is retried when the next prompt asks for the sandbox. The state is
            // copied out first: `start_sync` writes the channel, and a read guard held across
            // that write would block this thread for good.
            let failed = matches!(*self.sync.borrow(), SyncState::Failed(_));
            if let (Some(checkout), true) = (&slot.checkout, failed) {
                self.start_sync(inner, sandbox.clone(), checkout.clone());
            }
            return Ok(sandbox.clone());
        }
        // A sandbox whose guest is gone cannot serve again: remove what is left of it (mounts,
        // cgroups, directory) before it is replaced, instead of leaving it to the next start.
        if let Some(dead) = slot.sandbox.take() {
            tracing::info!(session = %self.log.id(), sandbox = %dead.id(), "replacing a sandbox whose guest is gone");
            if let Err(e) = workspaces.provider.destroy(dead.id()).await {
                tracing::debug!(sandbox = %dead.id(), error = %e, "removing a dead sandbox");
            }
        }
        if let Some(id) = slot.recovered.take() {
            match workspaces.attach(&id).await {
                Ok(sandbox) => {
                    self.state.lock().expect("state lock").sandbox = Some(SandboxState::Ready);
                    inner.metrics.session_sandbox_start("reattach");
                    slot.sandbox = Some(sandbox.clone());
                    return Ok(sandbox);
                }
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "could not reattach; creating anew")
                }
            }
        }
        // A session that had a sandbox continues from its newest snapshot: no setup, no sync.
        match self.log.latest_snapshot().await {
            Ok(Some(snapshot)) => {
                self.status(SandboxState::Starting, None, None).await;
                // The files are the session's; the env and limits are the repo's as of now.
                let image = self.latest_image(inner).await;
                return match workspaces
                    .create_from_layers(
                        self.log.id(),
                        &self.repo.name,
                        &snapshot.layers,
                        image.as_ref(),
                    )
                    .await
                {
                    Ok(sandbox) => {
                        let detail = format!("restored from snapshot {}", snapshot.id);
                        let id = Some(sandbox.id().to_string());
                        self.status(SandboxState::Ready, id, Some(detail)).await;
                        inner.metrics.session_sandbox_start("snapshot");
                        slot.sandbox = Some(sandbox.clone());
                        slot.checkout = None;
                        self.sync.send_replace(SyncState::Done);
                        Ok(sandbox)
                    }
                    Err(e) => {
                        let detail = format!(
                            "restoring snapshot {}: {e}{}",
                            snapshot.id,
                            need.what_next()
                        );
                        self.status(SandboxState::Failed, None, Some(detail)).await;
                        Err(e.into())
                    }
                };
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(session = %self.log.id(), error = %e, "cannot read snapshots"),
        }
        // A warm sandbox from the pool (the user's reservation first): a hand-off.
        inner.fleet.pools().record_start(&self.repo.name);
        let (claimed, dead) = inner.fleet.pools().take(&self.repo.name, &self.creator.id);
        // Claimed or not, the pool refills: to its size, or to the demand it just saw; once
        // this session's first model request is on its way.
        crate::Engine::from_inner(inner.clone()).spawn_refill_after(&self.repo.name, REFILL_DELAY);
        for entry in dead {
            let _ = workspaces.provider.destroy(entry.sandbox.id()).await;
        }
        if let Some(entry) = claimed {
            let sandbox = entry.sandbox;
            let detail = format!(
                "claimed from the warm pool (image {}); syncing to {}",
                entry.image_id, self.repo.default_branch
            );
            if let Err(e) = self.log.set_claimed_sandbox(sandbox.id().as_str()).await {
                tracing::warn!(session = %self.log.id(), error = %e, "cannot record the claimed sandbox");
            }
            if let Err(e) = workspaces.adopt(&sandbox, self.log.id()).await {
                tracing::warn!(session = %self.log.id(), error = %e, "cannot label the claimed sandbox");
            }
            let id = Some(sandbox.id().to_string());
            self.status(SandboxState::Syncing, id, Some(detail)).await;
            inner.metrics.session_sandbox_start("pool");
            slot.sandbox = Some(sandbox.clone());
            slot.checkout = Some(entry.checkout.clone());
            self.start_sync(inner, sandbox.clone(), entry.checkout);
            return Ok(sandbox);
        }
        self.status(SandboxState::Starting, None, None).await;
        let image = self.latest_image(inner).await;
        let created = match &image {
            Some(image) => {
                workspaces
                    .create_from_layers(self.log.id(), &self.repo.name, &image.layers, Some(image))
                    .await
            }
            None => {
                workspaces
                    .create(self.log.id(), &self.repo, self.git_identity())
                    .await
            }
        };
        match created {
            Ok(sandbox) => {
                let id = Some(sandbox.id().to_string());
                slot.sandbox = Some(sandbox.clone());
                let source = if image.is_some() { "image" } else { "clone" };
                inner.metrics.session_sandbox_start(source);
                match image {
                    Some(image) => {
                        let detail = format!(
                            "from image {} at {}; syncing to {}",
                            image.id,
                            &image.commit[..image.commit.len().min(12)],
                            self.repo.default_branch
                        );
                        self.status(SandboxState::Syncing, id, Some(detail)).await;
                        let checkout = Arc::new(tokio::sync::Mutex::new(image.commit));
                        slot.checkout = Some(checkout.clone());
                        self.start_sync(inner, sandbox.clone(), checkout);
                    }
                    None => self.status(SandboxState::Ready, id, None).await,
                }
                Ok(sandbox)
            }
            Err(e) => {
                let detail = format!("{e}{}", need.what_next());
                self.status(SandboxState::Failed, None, Some(detail)).await;
                Err(e.into())
            }
        }
    }

    /// The repo's newest ready image; `None` (logged) when the registry cannot be read.
    pub(super) async fn latest_image(&self, inner: &Inner) -> Option<kiln_store::ImageRecord> {
        inner
            .store
            .latest_image(&self.repo.name)
            .await
            .inspect_err(|e| {
                tracing::warn!(repo = %self.repo.name, error = %e, "cannot read the image registry")
            })
            .ok()
            .flatten()
    }

    /// Syncs the checkout in the background; writes wait for it (the gate), reads do not.
    pub(super) fn start_sync(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        sandbox: Sandbox,
        checkout: Checkout,
    ) {
        self.sync.send_replace(SyncState::Pending);
        let (actor, workspaces) = (self.clone(), inner.fleet.workspaces().clone());
        let shutdown = inner.shutdown.clone();
        let span = tracing::info_span!("sync", session = %self.log.id());
        inner.tracker.spawn(
            async move {
                // Waits for a warm-up's sync of the same checkout, if one is running.
                let mut at = checkout.lock().await;
                let target = SyncTarget::Branch {
                    session: actor.log.id(),
                    author: actor.git_identity(),
                };
                let sync = workspaces.sync(&sandbox, &actor.repo, &at, target);
                let result = tokio::select! {
                    result = sync => result,
                    _ = shutdown.cancelled() => return,
                };
                match result {
                    Ok(head) => {
                        *at = head;
                        actor.sync.send_replace(SyncState::Done);
                        actor
                            .status(SandboxState::Ready, Some(sandbox.id().to_string()), None)
                            .await;
                    }
                    Err(e) => {
                        let message = format!(
                            "syncing the checkout failed: {e}. Reads work at the image's commit; \
                         writes are refused until a sync succeeds (the next prompt retries)"
                        );
                        actor.sync.send_replace(SyncState::Failed(e.to_string()));
                        if let Err(e) = actor
                            .log
                            .append(Event::Error {
                                prompt_id: None,
                                kind: ErrorKind::Sync,
                                message,
                            })
                            .await
                        {
                            tracing::error!(error = %e, "cannot record a sync failure");
                        }
                    }
                }
            }
            .instrument(span),
        );
    }
}

/// Who asks for the sandbox, which decides what a failure's status says happens next.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Need {
    /// Warm-up (the session was created, or someone is typing): the first prompt tries again.
    Warm,
    /// A prompt, which fails with its own error event saying what happens next.
    Prompt,
}

impl Need {
    fn what_next(self) -> &'static str {
        match self {
            Need::Warm => "; the first prompt tries again",
            Need::Prompt => "",
        }
    }
}
