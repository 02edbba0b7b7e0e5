//! How the server is doing, for `/api/health` and `/api/status`: whether the model answers
//! (checked at most every [`MODEL_CHECK_TTL`], so an open health endpoint cannot make kiln
//! call its provider at will) and what its sandboxes are for.

use super::Engine;
use crate::Result;
use kiln_protocol::api::{ModelHealth, SandboxCounts};
use std::time::{Duration, Instant};

/// How long a model check is reused.
pub(crate) const MODEL_CHECK_TTL: Duration = Duration::from_secs(30);
/// The longest a model check waits for its answer.
const MODEL_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The last model check and when it ran.
pub(crate) type ModelCheck = tokio::sync::Mutex<Option<(Instant, ModelHealth)>>;

impl Engine {
    /// Whether prompts can reach a model: configured, and (cached) whether its endpoint answered
    /// and took the key, with the answer's latency.
    pub async fn model_health(&self) -> ModelHealth {
        let Some(model) = &self.inner.agent.model else {
            return ModelHealth {
                configured: false,
                hint: Some(kiln_agent::NO_MODEL.to_string()),
                ..ModelHealth::default()
            };
        };
        // Held across the check: callers arriving meanwhile wait for its answer, not a second.
        let mut last = self.inner.model_check.lock().await;
        if let Some((at, health)) = &*last
            && at.elapsed() < MODEL_CHECK_TTL
        {
            return health.clone();
        }
        let checked = model.probe(MODEL_CHECK_TIMEOUT).await;
        let health = ModelHealth {
            configured: true,
            name: Some(model.config().display_name()),
            hint: None,
            reachable: Some(checked.is_ok()),
            latency_ms: checked.as_ref().ok().map(|d| d.as_millis() as u64),
            error: checked.as_ref().err().map(ToString::to_string),
            checked_at_ms: Some(kiln_core::now_ms()),
        };
        if let Err(e) = &checked {
            tracing::warn!(error = %e, "the model check failed");
        }
        *last = Some((Instant::now(), health.clone()));
        health
    }

    /// The sandboxes running now, by what they are for (their labels).
    pub async fn sandbox_counts(&self) -> Result<SandboxCounts> {
        let mut counts = SandboxCounts::default();
        for sandbox in self.inner.fleet.provider().list().await? {
            let labels = &sandbox.spec.labels;
            let slot = if labels.contains_key(kiln_fleet::SESSION_LABEL) {
                &mut counts.sessions
            } else if labels.contains_key(kiln_fleet::pool::POOL_LABEL) {
                &mut counts.pooled
            } else if labels.contains_key(kiln_fleet::images::IMAGE_LABEL) {
                &mut counts.builds
            } else {
                &mut counts.other
            };
            *slot += 1;
        }
        Ok(counts)
    }
}
