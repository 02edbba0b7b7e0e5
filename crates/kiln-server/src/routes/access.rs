//! Who may start sessions on a repo: `GET`/`PUT /api/repos/{name}/access` (admins), and the
//! check every repo route makes. To a user a members-only repo is closed to, it does not exist:
//! the same 404, word for word, as for a repo that was never added.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::extract::{Json, Path};
use axum::extract::State;
use kiln_protocol::api::{AuditAction, Repo, RepoAccess, SetRepoAccess};

/// The repo, if it exists and the caller may see it and start sessions on it; else the same
/// `NotFound` either way.
pub(crate) async fn require_repo(state: &AppState, caller: &Caller, repo: &str) -> Result<Repo> {
    let found = state.store.repo(repo).await?;
    if state.store.may_use_repo(repo, &caller.0).await?
        && forge_shows(state, caller, &found).await?
    {
        Ok(found)
    } else {
        Err(Error::NotFound(format!("repo {repo:?}")))
    }
}

/// Access follows the forge: whether it lets the caller (linked to a forge account) read
/// `repo`. Admins, who run kiln itself, and callers the forge has no say about see it.
pub(crate) async fn forge_shows(state: &AppState, caller: &Caller, repo: &Repo) -> Result<bool> {
    if caller.0.admin {
        return Ok(true);
    }
    Ok(state.engine.forge_allows_read(&caller.0.id, repo).await?)
}

/// The names of the repos the forge hides from the caller, of those in `repos`.
pub(crate) async fn forge_hidden(
    state: &AppState,
    caller: &Caller,
    repos: &[Repo],
) -> Result<std::collections::HashSet<String>> {
    let mut hidden = std::collections::HashSet::new();
    for repo in repos {
        if !forge_shows(state, caller, repo).await? {
            hidden.insert(repo.name.clone());
        }
    }
    Ok(hidden)
}

#[utoipa::path(get, path = "/api/repos/{name}/access", tag = "repos",
    params(("name" = String, Path)),
    responses((status = 200, body = RepoAccess), (status = 401, body = kiln_protocol::api::ApiError),
        (status = 403, body = kiln_protocol::api::ApiError), (status = 404, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn get_access(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<RepoAccess>> {
    caller.require_admin()?;
    Ok(Json(state.store.repo_access(&name).await?))
}

/// Sets who may start sessions on the repo: `everyone`, or its `members` (and admins) only.
/// Sessions that exist stay with their participants.
#[utoipa::path(put, path = "/api/repos/{name}/access", tag = "repos",
    params(("name" = String, Path)), request_body = SetRepoAccess,
    responses((status = 200, body = RepoAccess), (status = 400, body = kiln_protocol::api::ApiError),
        (status = 401, body = kiln_protocol::api::ApiError), (status = 403, body = kiln_protocol::api::ApiError),
        (status = 404, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn set_access(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<SetRepoAccess>,
) -> Result<Json<RepoAccess>> {
    caller.require_admin()?;
    let access = state
        .store
        .set_repo_access(&name, body.mode, &body.members)
        .await?;
    let detail = serde_json::to_value(&access).unwrap_or_default();
    crate::routes::audit::by(
        &state,
        &caller,
        AuditAction::RepoAccessChanged,
        &name,
        detail,
    )
    .await;
    Ok(Json(access))
}
