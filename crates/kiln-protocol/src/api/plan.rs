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

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(decision: PlanVerdict, plan: Option<&str>) -> PlanDecision {
        PlanDecision {
            decision,
            plan: plan.map(str::to_string),
            reason: None,
        }
    }

    #[test]
    fn an_edited_plan_goes_with_approval_only_and_is_not_empty() {
        assert!(decision(PlanVerdict::Approve, None).validate().is_ok());
        assert!(
            decision(PlanVerdict::Approve, Some("1. x"))
                .validate()
                .is_ok()
        );
        assert!(decision(PlanVerdict::Reject, None).validate().is_ok());
        let error = decision(PlanVerdict::Reject, Some("1. x")).validate();
        assert!(error.unwrap_err().0.contains("approve"));
        assert!(
            decision(PlanVerdict::Approve, Some("  "))
                .validate()
                .is_err()
        );
        let long = "x".repeat(PROMPT_CHARS + 1);
        assert!(
            decision(PlanVerdict::Approve, Some(&long))
                .validate()
                .is_err()
        );
        let body: PlanDecision =
            serde_json::from_str(r#"{"decision":"reject","reason":"too broad"}"#).unwrap();
        assert_eq!(body.reason.as_deref(), Some("too broad"));
        assert!(serde_json::from_str::<PlanDecision>(r#"{"decision":"maybe"}"#).is_err());
    }
}
