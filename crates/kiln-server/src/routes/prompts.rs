//! One prompt of a session: sending it again after it was interrupted, failed or was stopped.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::extract::{Json, Path};
use axum::extract::State;
use axum::http::StatusCode;
use kiln_core::{PromptId, SessionId};
use kiln_protocol::api::PromptAccepted;

type ApiError = kiln_protocol::api::ApiError;

/// Queues the prompt's text again as a new prompt by the caller (the original keeps its
/// outcome). No body.
#[utoipa::path(post, path = "/api/sessions/{id}/prompts/{prompt_id}/retry", tag = "sessions",
    params(("id" = String, Path), ("prompt_id" = String, Path)),
    responses((status = 202, body = PromptAccepted), (status = 403, body = ApiError),
        (status = 404, body = ApiError, description = "No such session, or no such prompt in it"),
        (status = 409, body = ApiError, description = "The prompt is queued, running or completed: nothing to retry"),
        (status = 429, body = ApiError, description = "The session's creator has too many active sessions, or a daily spend budget (the caller's or the repo's) is used up")))]
pub(crate) async fn retry_prompt(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, prompt)): Path<(SessionId, PromptId)>,
) -> Result<(StatusCode, Json<PromptAccepted>)> {
    let role = caller.role_in(&state, &id).await?;
    if !role.can_prompt() {
        return Err(Error::Forbidden(
            "viewers cannot send prompts; ask an owner for the collaborator role".into(),
        ));
    }
    let accepted = state
        .engine
        .retry_prompt(&id, &prompt, &caller.user_ref())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}
