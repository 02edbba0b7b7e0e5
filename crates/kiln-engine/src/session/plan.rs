//! Plan mode in a session: the `plan_mode` setting, recording a proposed plan, and deciding on
//! it. Decisions happen in one transaction with their event (a plan is decided once; the
//! second decision is a conflict), and an approval queues the implementation in the same
//! transaction, so a crash leaves either a pending plan or an approved one with its prompt.
//!
//! A plan-first prompt ends `completed` once it has proposed: the queue moves on and crash
//! recovery knows nothing of plans; the pending plan lives in the session DB until decided.
//! A person's new prompt while a plan is pending supersedes it (rejected, `superseded`): they
//! answered the plan with something else, and a stale plan approved later would implement
//! what the conversation already left behind.

use super::SessionActor;
use crate::engine::Inner;
use crate::{Error, Result};
use kiln_core::{PlanId, PromptId};
use kiln_protocol::api::{Event, PlanDecided, PlanDecision, PlanVerdict, PromptStatus, UserRef};
use kiln_store::{PlanState, SessionWriter};
use std::sync::Arc;

/// What a superseded plan's rejection says.
const SUPERSEDED: &str = "superseded by a new prompt sent while the plan waited";

/// Rejects every pending plan as superseded by `by`'s new prompt (inside its transaction).
pub(super) fn supersede_pending(w: &mut SessionWriter<'_>, by: &UserRef) -> kiln_store::Result<()> {
    for plan in w.pending_plans()? {
        w.decide_plan(&plan.id, PlanState::Rejected)?;
        w.event(Event::PlanRejected {
            plan_id: plan.id,
            by: by.clone(),
            reason: Some(SUPERSEDED.into()),
            superseded: true,
        })?;
    }
    Ok(())
}

/// The implementation prompt's text: the approved plan, and who approved it.
fn implementation_text(by: &UserRef, edited: bool, reason: Option<&str>, plan: &str) -> String {
    let mut text = format!(
        "{} approved your plan{}. Implement it now; every tool is available again.",
        by.name,
        if edited {
            ", with edits: follow the plan below, not the one you proposed"
        } else {
            ""
        },
    );
    if let Some(reason) = reason.filter(|r| !r.trim().is_empty()) {
        text.push_str(&format!("\n\nTheir note: {reason}"));
    }
    text.push_str(&format!("\n\n<approved_plan>\n{plan}\n</approved_plan>"));
    text
}

impl SessionActor {
    /// Records the plan `prompt` proposed, pending, with its event.
    pub(super) async fn propose_plan(
        &self,
        prompt: &PromptId,
        title: Option<String>,
        plan: String,
    ) -> Result<PlanId> {
        let plan_id = PlanId::random();
        let prompt_id = prompt.clone();
        let id = plan_id.clone();
        self.log
            .write(move |w| {
                w.insert_plan(&id, &prompt_id, title.as_deref(), &plan)?;
                w.event(Event::PlanProposed {
                    prompt_id,
                    plan_id: id,
                    title,
                    plan,
                    by_agent: true,
                })
            })
            .await?;
        Ok(plan_id)
    }

    pub(crate) async fn set_plan_mode(&self, on: bool) -> Result<()> {
        self.log
            .write(move |w| {
                if w.plan_mode()? != on {
                    w.set_plan_mode(on)?;
                    let delivery = w.delivery_mode()?;
                    w.event(Event::SettingsChanged {
                        delivery,
                        plan_mode: on,
                    })?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// `by`'s decision on a pending plan. Approval queues the implementation as a prompt of
    /// the author of the prompt that asked for the plan, with every tool.
    pub(crate) async fn decide_plan(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        by: &UserRef,
        plan_id: &PlanId,
        decision: &PlanDecision,
    ) -> Result<PlanDecided> {
        if inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let (by, id, decision) = (by.clone(), plan_id.clone(), decision.clone());
        let verdict = decision.decision;
        let ((seq, prompt_id), _) = self
            .log
            .write(move |w| match decision.decision {
                PlanVerdict::Reject => {
                    w.decide_plan(&id, PlanState::Rejected)?;
                    let seq = w.event(Event::PlanRejected {
                        plan_id: id,
                        by,
                        reason: decision.reason.filter(|r| !r.trim().is_empty()),
                        superseded: false,
                    })?;
                    Ok((seq, None))
                }
                PlanVerdict::Approve => {
                    let record = w.decide_plan(&id, PlanState::Approved)?;
                    let author = w.prompt(&record.prompt_id)?.author;
                    let edited = decision
                        .plan
                        .as_ref()
                        .is_some_and(|edit| edit.trim() != record.plan.trim());
                    let plan = match decision.plan {
                        Some(edit) if edited => edit,
                        _ => record.plan,
                    };
                    let text = implementation_text(&by, edited, decision.reason.as_deref(), &plan);
                    let prompt_id = PromptId::random();
                    let seq = w.event(Event::PlanApproved {
                        plan_id: id,
                        by,
                        edited,
                        plan,
                        prompt_id: prompt_id.clone(),
                    })?;
                    let delivery = w.delivery_mode()?;
                    w.insert_prompt(&prompt_id, &author, &text, PromptStatus::Queued)?;
                    w.event(Event::PromptQueued {
                        prompt_id: prompt_id.clone(),
                        author,
                        text,
                        delivery,
                        plan: false,
                    })?;
                    Ok((seq, Some(prompt_id)))
                }
            })
            .await?;
        if prompt_id.is_some() {
            self.kick(inner);
        }
        Ok(PlanDecided {
            plan_id: plan_id.clone(),
            decision: verdict,
            prompt_id,
            seq,
        })
    }
}
