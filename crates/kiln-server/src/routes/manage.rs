//! Taking things apart and managing who is in a session: archive and delete sessions, list
//! and revoke share links, change a participant's role or remove them, delete repos.
//!
//! Authorization follows the session routes: strangers get 404, only owners archive, delete,
//! see and revoke links and change others' roles; anyone may leave (remove themselves). Repos
//! are deleted by admins only.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::extract::{Json, Path, Query};
use crate::routes::audit;
use axum::extract::State;
use axum::http::StatusCode;
use kiln_core::{Role, SessionId, ShareId, UserId};
use kiln_protocol::api::{AuditAction, SetRole, ShareInfo};
use serde::Deserialize;
use serde_json::json;

type ApiError = kiln_protocol::api::ApiError;

async fn require_owner(
    state: &AppState,
    caller: &Caller,
    id: &SessionId,
    what: &str,
) -> Result<()> {
    let role = caller.role_in(state, id).await?;
    if role != Role::Owner {
        return Err(Error::Forbidden(format!(
            "only the session's owners {what}"
        )));
    }
    Ok(())
}

/// Archives the session (owners): its prompt stops, its queue is cleared, its sandbox is
/// snapshotted and stopped, and it leaves the default listing (`?archived=true` shows it). A
/// prompt sent to it later still works.
#[utoipa::path(post, path = "/api/sessions/{id}/archive", tag = "sessions",
    params(("id" = String, Path)),
    responses((status = 204, description = "Archived"), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
pub(crate) async fn archive_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SessionId>,
) -> Result<StatusCode> {
    require_owner(&state, &caller, &id, "archive it").await?;
    state
        .engine
        .archive_session(&id, &caller.user_ref())
        .await?;
    audit::by(
        &state,
        &caller,
        AuditAction::SessionArchived,
        id.as_str(),
        json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes the session (owners): its work stops, its sandbox is destroyed, its directory (log,
/// layers) and newest snapshot are removed; the garbage collector removes what is left.
#[utoipa::path(delete, path = "/api/sessions/{id}", tag = "sessions",
    params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
pub(crate) async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SessionId>,
) -> Result<StatusCode> {
    require_owner(&state, &caller, &id, "delete it").await?;
    state.engine.delete_session(&id, &caller.user_ref()).await?;
    audit::by(
        &state,
        &caller,
        AuditAction::SessionDeleted,
        id.as_str(),
        json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The session's live share links (owners), never their codes.
#[utoipa::path(get, path = "/api/sessions/{id}/shares", tag = "sessions",
    params(("id" = String, Path)),
    responses((status = 200, body = Vec<ShareInfo>), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
pub(crate) async fn list_shares(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SessionId>,
) -> Result<Json<Vec<ShareInfo>>> {
    require_owner(&state, &caller, &id, "see its share links").await?;
    Ok(Json(state.store.shares(&id).await?))
}

/// Revokes a share link (owners): it stops working at once. Whoever joined with it stays.
#[utoipa::path(delete, path = "/api/sessions/{id}/shares/{share}", tag = "sessions",
    params(("id" = String, Path), ("share" = String, Path)),
    responses((status = 204, description = "Revoked"), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
pub(crate) async fn revoke_share(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, share)): Path<(SessionId, ShareId)>,
) -> Result<StatusCode> {
    require_owner(&state, &caller, &id, "revoke its share links").await?;
    state.store.revoke_share(&id, &share).await?;
    let detail = json!({"share": share});
    audit::by(
        &state,
        &caller,
        AuditAction::ShareRevoked,
        id.as_str(),
        detail,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes a participant's role (owners); a `participant_joined` event carries the new role.
/// The session's only owner cannot be demoted (409).
#[utoipa::path(put, path = "/api/sessions/{id}/participants/{user}", tag = "sessions",
    params(("id" = String, Path), ("user" = String, Path)), request_body = SetRole,
    responses((status = 204, description = "Changed (or already so)"), (status = 403, body = ApiError),
        (status = 404, body = ApiError, description = "No such session or participant"),
        (status = 409, body = ApiError, description = "The session's only owner")))]
pub(crate) async fn set_role(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, user)): Path<(SessionId, UserId)>,
    Json(body): Json<SetRole>,
) -> Result<StatusCode> {
    require_owner(&state, &caller, &id, "change roles").await?;
    let (who, changed) = state.store.change_role(&id, &user, body.role).await?;
    if changed {
        state.engine.role_changed(&id, &who, body.role).await?;
        let detail = json!({"user": who, "role": body.role});
        audit::by(
            &state,
            &caller,
            AuditAction::RoleChanged,
            id.as_str(),
            detail,
        )
        .await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a participant (owners), or leaves (anyone, for themselves); a `participant_left`
/// event says so. The session's only owner cannot be removed (409).
#[utoipa::path(delete, path = "/api/sessions/{id}/participants/{user}", tag = "sessions",
    params(("id" = String, Path), ("user" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 403, body = ApiError),
        (status = 404, body = ApiError, description = "No such session or participant"),
        (status = 409, body = ApiError, description = "The session's only owner")))]
pub(crate) async fn remove_participant(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, user)): Path<(SessionId, UserId)>,
) -> Result<StatusCode> {
    if user == caller.0.id {
        caller.role_in(&state, &id).await?;
    } else {
        require_owner(&state, &caller, &id, "remove participants").await?;
    }
    let who = state.store.remove_member(&id, &user).await?;
    state.engine.participant_left(&id, &who).await?;
    let detail = json!({"user": who});
    audit::by(
        &state,
        &caller,
        AuditAction::ParticipantRemoved,
        id.as_str(),
        detail,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteRepoQuery {
    /// Also when sessions on the repo are working or hold a sandbox: they are stopped.
    #[serde(default)]
    pub(crate) force: bool,
}

/// Deletes a repo (admins) with its sessions, warm pool, mirror and image records; the garbage
/// collector removes their layers. Refused (409) while a session on it is working or holds a
/// sandbox, unless `force=true`.
#[utoipa::path(delete, path = "/api/repos/{name}", tag = "repos",
    params(("name" = String, Path), DeleteRepoQuery),
    responses((status = 204, description = "Deleted"), (status = 403, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "Sessions on the repo are active")))]
pub(crate) async fn delete_repo(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<DeleteRepoQuery>,
) -> Result<StatusCode> {
    caller.require_admin()?;
    state
        .engine
        .delete_repo(&name, &caller.user_ref(), query.force)
        .await?;
    let detail = json!({"force": query.force});
    audit::by(&state, &caller, AuditAction::RepoDeleted, &name, detail).await;
    Ok(StatusCode::NO_CONTENT)
}
