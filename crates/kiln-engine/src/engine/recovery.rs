//! Start-up after a crash or a stop: prompts left running become interrupted, queues resume,
//! and sandboxes found running are matched to their sessions (reattached on first use) or
//! destroyed as orphans.

use super::Engine;
use crate::Result;
use kiln_core::SessionId;
use kiln_fleet::SESSION_LABEL;
use kiln_protocol::api::{Event, PromptStatus};
use std::collections::HashMap;

impl Engine {
    pub(super) async fn recover(&self) -> Result<()> {
        let inner = &self.inner;
        let ids = inner.store.all_session_ids().await?;
        let mut resume = Vec::new();
        // Sandboxes sessions took from a warm pool: their labels name the pool.
        let mut claimed = HashMap::new();
        for id in &ids {
            let log = inner.store.open_session(id).await?;
            if let Some(sandbox) = log.claimed_sandbox().await? {
                claimed.insert(sandbox, id.clone());
            }
            let interrupted = log
                .write(|w| {
                    let running = w.prompts_with_status(PromptStatus::Running)?;
                    for prompt in &running {
                        // A request the model never answered is not history: following the
                        // advice to retry must not send it twice.
                        w.forget_unanswered(&prompt.id)?;
                        w.set_prompt_status(&prompt.id, PromptStatus::Interrupted)?;
                        w.event(Event::PromptInterrupted {
                            prompt_id: prompt.id.clone(),
                        })?;
                    }
                    Ok(running.len())
                })
                .await?
                .0;
            let queued = log
                .prompts()
                .await?
                .iter()
                .any(|p| p.status == PromptStatus::Queued);
            if interrupted > 0 {
                tracing::info!(session = %id, interrupted, "marked prompts interrupted after restart");
            }
            if queued {
                resume.push(id.clone());
            }
        }
        let provider = &inner.fleet.provider();
        for info in provider.list().await? {
            let owner = info
                .spec
                .labels
                .get(SESSION_LABEL)
                .and_then(|s| SessionId::parse(s))
                .or_else(|| claimed.get(info.id.as_str()).cloned());
            match owner {
                Some(session) if ids.contains(&session) => {
                    // Its processes may use the network before the session does.
                    if let Err(e) = inner.fleet.workspaces().egress.resume(&info) {
                        tracing::warn!(sandbox = %info.id, error = %e, "cannot serve a recovered sandbox's egress");
                    }
                    inner
                        .recovered
                        .lock()
                        .expect("recovered lock")
                        .insert(session, info.id);
                }
                _ => {
                    tracing::info!(sandbox = %info.id, "destroying a sandbox no session owns");
                    let _ = provider.destroy(&info.id).await;
                }
            }
        }
        for id in resume {
            self.actor(&id).await?.kick(&self.inner);
        }
        Ok(())
    }
}
