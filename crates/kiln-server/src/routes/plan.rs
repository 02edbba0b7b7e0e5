//! Plan mode: deciding on a plan the agent proposed. Collaborators and owners decide; viewers
//! are refused (403), strangers do not see the session (404).

use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::extract::{Json, Path};
use axum::extract::State;
use kiln_core::{PlanId, SessionId};
use kiln_protocol::api::{PlanDecided, PlanDecision};

type ApiError = kiln_protocol::api::ApiError;

/// Approves (optionally with an edited plan) or rejects a pending plan. Approval queues the
/// implementation as a prompt of the author of the prompt that asked for the plan; who
/// decided is in the log (`plan_approved`, `plan_rejected`).
#[utoipa::path(post, path = "/api/sessions/{id}/plan/{plan_id}", tag = "sessions",
    params(("id" = String, Path), ("plan_id" = String, Path)),
    request_body = PlanDecision,
    responses((status = 200, body = PlanDecided), (status = 400, body = ApiError),
        (status = 403, body = ApiError, description = "Viewers cannot decide on plans"),
        (status = 404, body = ApiError, description = "No such session, or no such plan in it"),
        (status = 409, body = ApiError, description = "The plan was already approved or rejected"),
        (status = 429, body = ApiError, description = "The session's creator has too many active sessions")))]
pub(crate) async fn decide_plan(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, plan)): Path<(SessionId, PlanId)>,
    Json(body): Json<PlanDecision>,
) -> Result<Json<PlanDecided>> {
    let role = caller.role_in(&state, &id).await?;
    if !role.can_decide_plans() {
        return Err(Error::Forbidden(
            "viewers cannot approve or reject plans; ask an owner for the collaborator role".into(),
        ));
    }
    let decided = state
        .engine
        .decide_plan(&id, &plan, &caller.user_ref(), &body)
        .await?;
    Ok(Json(decided))
}
