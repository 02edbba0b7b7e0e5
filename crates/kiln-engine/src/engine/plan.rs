//! Plan mode on the engine's façade: deciding on a proposed plan and the session's
//! `plan_mode` setting. Who may decide (collaborators and owners) is the server's to check.

use super::Engine;
use crate::Result;
use kiln_core::{PlanId, SessionId};
use kiln_protocol::api::{PlanDecided, PlanDecision, PlanVerdict, UserRef};

impl Engine {
    /// `by` approves or rejects a pending plan of `session`. An approval queues the
    /// implementation (so, like a prompt, it may bring the session's sandbox back).
    pub async fn decide_plan(
        &self,
        session: &SessionId,
        plan: &PlanId,
        by: &UserRef,
        decision: &PlanDecision,
    ) -> Result<PlanDecided> {
        kiln_protocol::api::Validate::validate(decision).map_err(|e| crate::Error::Invalid(e.0))?;
        let actor = self.actor(session).await?;
        // Only an approval queues work.
        let _admitted = match decision.decision {
            PlanVerdict::Reject => None,
            _ => self.admit_wake(&actor, session)?,
        };
        actor.decide_plan(&self.inner, by, plan, decision).await
    }

    /// Plan mode: every prompt from now on asks for a plan first.
    pub async fn set_plan_mode(&self, session: &SessionId, on: bool) -> Result<()> {
        self.actor(session).await?.set_plan_mode(on).await
    }
}
