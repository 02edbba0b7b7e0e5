//! A session's work leaving kiln: `POST /api/sessions/{id}/push` pushes the session's branch
//! to the repo's remote (kiln's credential, never the sandbox's); `GET …/diff` and `…/patch`
//! give the branch against the default branch as text, where no forge shows it.
//!
//! Authorization: those who may prompt (collaborators, owners) may push; viewers get 403 and
//! strangers 404, as for every session route.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::extract::{Json, Path};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kiln_core::SessionId;
use kiln_engine::SessionChanges;
use kiln_protocol::api::SessionPushed;

type ApiError = kiln_protocol::api::ApiError;

/// Pushes the session's branch `kiln/<session>` (and only it) to the repo's remote.
#[utoipa::path(post, path = "/api/sessions/{id}/push", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = SessionPushed), (status = 403, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "Nothing could be pushed, or the remote refused the push; the message says why"),
        (status = 503, body = ApiError, description = "The repository or the sandbox could not be reached")))]
pub(crate) async fn push_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SessionId>,
) -> Result<Json<SessionPushed>> {
    let role = caller.role_in(&state, &id).await?;
    if !role.can_prompt() {
        return Err(Error::Forbidden(
            "viewers cannot push a session's branch; ask an owner for the collaborator role".into(),
        ));
    }
    let pushed = state.engine.push_session(&id, &caller.user_ref()).await?;
    Ok(Json(pushed))
}

/// The session's branch against the default branch as a unified diff (`git diff
/// default...kiln/<session>`). Participants may read it.
#[utoipa::path(get, path = "/api/sessions/{id}/diff", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "The branch cannot be read yet, or its changes are too large to show"),
        (status = 503, body = ApiError, description = "The repository or the sandbox could not be reached")))]
pub(crate) async fn session_diff(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SessionId>,
) -> Result<Response> {
    changes(state, caller, id, SessionChanges::Diff).await
}

/// The session's commits since the default branch as a `git format-patch` mbox (for `git am`).
#[utoipa::path(get, path = "/api/sessions/{id}/patch", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "The branch cannot be read yet, or its changes are too large to show"),
        (status = 503, body = ApiError, description = "The repository or the sandbox could not be reached")))]
pub(crate) async fn session_patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SessionId>,
) -> Result<Response> {
    changes(state, caller, id, SessionChanges::Patch).await
}

async fn changes(
    state: AppState,
    caller: Caller,
    id: SessionId,
    kind: SessionChanges,
) -> Result<Response> {
    caller.role_in(&state, &id).await?;
    let text = state.engine.session_changes(&id, kind).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response())
}
