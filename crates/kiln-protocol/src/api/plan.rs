//! Plan mode over the API: deciding on a plan the agent proposed (`plan_proposed`). The events
//! themselves are in `event.rs`; asking for a plan is `plan` on a prompt or `plan_mode` on the
//! session (`rest.rs`).

use super::limits::{Invalid, PROMPT_CHARS, Validate, check_chars};
use kiln_core::{PlanId, PromptId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Characters of a rejection's reason.
pub const PLAN_REASON_CHARS: usize = 2_000;

/// What a participant decides on a proposed plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanVerdict {
    /// The agent implements the plan (as edited, when `plan` is given).
    Approve,
    /// Nothing runs for the plan.
    Reject,
}

/// `POST /api/sessions/{id}/plan/{plan_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanDecision {
    pub decision: PlanVerdict,
    /// The plan as edited (Markdown), approved instead of the agent's; approve only.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100000)]
    pub plan: Option<String>,
    /// Why: shown in the log (and, on approval, to the agent).
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub reason: Option<String>,
}

impl Validate for PlanDecision {
    fn validate(&self) -> Result<(), Invalid> {
        if let Some(plan) = &self.plan {
            if self.decision == PlanVerdict::Reject {
                return Err(Invalid(
                    "`plan` (an edited plan) goes with `approve` only; leave it out to reject"
                        .into(),
                ));
            }
            if plan.trim().is_empty() {
                return Err(Invalid(
                    "`plan` is empty: leave it out to approve the plan as proposed".into(),
                ));
            }
            check_chars("plan", plan, PROMPT_CHARS)?;
        }
        if let Some(reason) = &self.reason {
            check_chars("reason", reason, PLAN_REASON_CHARS)?;
        }
        Ok(())
    }
}

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlanDecided {
    pub plan_id: PlanId,
    pub decision: PlanVerdict,
    /// On approval: the queued prompt that implements the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_id: Option<PromptId>,
    /// The decision's event (`plan_approved` or `plan_rejected`), already durable.
    pub seq: u64,
}
