//! A session's snapshots: after each prompt once the session is quiet, and before an idle
//! sandbox is stopped; a session's own layers are merged past `MAX_OWN_LAYERS`, so restores keep
//! a shallow stack.

use super::{MAX_OWN_LAYERS, SessionActor};
use crate::Result;
use crate::engine::Inner;
use kiln_core::PromptId;
use kiln_protocol::api::SandboxState;
use kiln_sandbox::Sandbox;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl SessionActor {
    /// Stops the sandbox when the session has been idle for `after`: a snapshot first (the
    /// files as they are now), then destroy. The next prompt restores it.
    pub(crate) async fn stop_if_idle(&self, inner: &Inner, after: Duration) {
        let idle = {
            let state = self.state.lock().expect("state lock");
            !state.worker && state.last_active.is_some_and(|t| t.elapsed() >= after)
        };
        if !idle {
            return;
        }
        let mut slot = self.sandbox.lock().await;
        // A prompt may have started while we waited for the slot.
        if self.state.lock().expect("state lock").worker {
            return;
        }
        let Some(sandbox) = slot.sandbox.take() else {
            return;
        };
        if sandbox.guest().gone().is_none()
            && let Err(e) = self.take_snapshot(inner, &sandbox, None).await
        {
            tracing::warn!(session = %self.log.id(), error = %e, "cannot snapshot an idle sandbox; keeping it");
            slot.sandbox = Some(sandbox);
            return;
        }
        if let Err(e) = inner.fleet.provider().destroy(sandbox.id()).await {
            tracing::warn!(sandbox = %sandbox.id(), error = %e, "cannot stop an idle sandbox");
        }
        slot.checkout = None;
        self.state.lock().expect("state lock").last_active = None;
        let detail = format!("idle for {after:?}; the next prompt restores it");
        self.status(
            SandboxState::Stopped,
            Some(sandbox.id().to_string()),
            Some(detail),
        )
        .await;
    }

    /// Snapshots the sandbox once the session has been quiet for the snapshot delay after
    /// `prompt`: off the path of a follow-up that is already waiting. A later prompt's
    /// schedule supersedes this one.
    pub(super) fn schedule_snapshot(self: &Arc<Self>, inner: &Arc<Inner>, prompt: PromptId) {
        let generation = self.snapshot_generation.fetch_add(1, Ordering::SeqCst) + 1;
        let (actor, inner2) = (self.clone(), inner.clone());
        inner.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(inner2.config.snapshot_delay) => {}
                _ = inner2.shutdown.cancelled() => return,
            }
            let current = actor.snapshot_generation.load(Ordering::SeqCst) == generation;
            if current && !actor.is_working() {
                actor.snapshot(&inner2, &prompt).await;
            }
        });
    }

    /// Snapshots the sandbox after a prompt, so the session can continue if it goes away.
    pub(super) async fn snapshot(&self, inner: &Inner, prompt: &PromptId) {
        let sandbox = self.sandbox.lock().await.sandbox.clone();
        let Some(sandbox) = sandbox.filter(|s| s.guest().gone().is_none()) else {
            return;
        };
        if let Err(e) = self.take_snapshot(inner, &sandbox, Some(prompt)).await {
            tracing::warn!(session = %self.log.id(), error = %e, "cannot snapshot the sandbox");
        }
    }

    /// Snapshots the sandbox and records it. Every restore stacks one more layer on what the
    /// session started from; past [`MAX_OWN_LAYERS`], the session's own layers are merged into
    /// one, so a session restored a thousand times still mounts a shallow stack.
    pub(super) async fn take_snapshot(
        &self,
        inner: &Inner,
        sandbox: &Sandbox,
        prompt: Option<&PromptId>,
    ) -> Result<()> {
        let provider = &inner.fleet.provider();
        let snapshot = provider.snapshot(sandbox.id()).await?;
        let (mut id, mut layers) = (snapshot.id.to_string(), snapshot.image.layers);
        let base = self.base_layers(sandbox).await.min(layers.len() - 1);
        if layers.len() - base > MAX_OWN_LAYERS {
            match provider.merge_snapshots(&layers[base..]).await {
                Ok(merged) => {
                    layers.truncate(base);
                    layers.push(merged.layer);
                    id = merged.id.to_string();
                }
                Err(e) => {
                    tracing::warn!(session = %self.log.id(), error = %e, "cannot merge snapshots; keeping the stack")
                }
            }
        }
        let record = kiln_store::SessionSnapshot {
            id,
            parent: None,
            prompt_id: prompt.cloned(),
            layers,
            size_bytes: snapshot.size_bytes,
            base_layers: Some(base),
        };
        self.log.record_snapshot(&record).await?;
        Ok(())
    }

    /// How many of the sandbox's layers are what the session started from: the base recorded
    /// with the newest snapshot when the sandbox stands on it (it was restored), else all of
    /// them (it came from the image, the pool or a clone).
    pub(super) async fn base_layers(&self, sandbox: &Sandbox) -> usize {
        let layers = &sandbox.info().spec.image.layers;
        match self.log.latest_snapshot().await {
            Ok(Some(snapshot)) => match snapshot.base_layers {
                Some(base)
                    if base <= snapshot.layers.len()
                        && layers.starts_with(&snapshot.layers[..base]) =>
                {
                    base
                }
                _ => layers.len(),
            },
            _ => layers.len(),
        }
    }
}
