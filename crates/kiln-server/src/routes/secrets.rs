//! A repo's secrets (admins): `GET /api/repos/{name}/secrets` lists names,
//! `PUT …/secrets/{secret}` sets one, `DELETE …/secrets/{secret}` removes one. Values go in
//! and never come out: no response carries one, and request bodies are never logged (the trace
//! layer records method and path only; `SetSecret`'s `Debug` hides the value).
//!
//! Setting or removing a secret rebuilds the repo's image. Like other repo management, only
//! admins may do it: a secret reaches every image build of the repo (and, with `agent`, every
//! session), so it is as powerful as the environment definition.

use crate::AppState;
use crate::auth::Caller;
use crate::error::Result;
use crate::extract::{Json, Path};
use crate::routes::audit;
use axum::extract::State;
use axum::http::StatusCode;
use kiln_core::Secret;
use kiln_protocol::api::{ApiError, AuditAction, RepoSecret, SetSecret};

/// The repo's secrets by name, with who set each and when; never a value.
#[utoipa::path(get, path = "/api/repos/{name}/secrets", tag = "repos",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<RepoSecret>), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
pub(crate) async fn list_secrets(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<RepoSecret>>> {
    caller.require_admin()?;
    Ok(Json(state.engine.secrets(&name).await?))
}

/// Sets a secret (adds it or replaces its value and flag). Its setup, build and warm steps get
/// it as an environment variable; with `agent`, sessions' commands too. The repo's image is
/// rebuilt when the value is new or changed.
#[utoipa::path(put, path = "/api/repos/{name}/secrets/{secret}", tag = "repos",
    params(("name" = String, Path), ("secret" = String, Path,
        description = "An environment variable name kiln does not set itself")),
    request_body = SetSecret,
    responses((status = 200, body = RepoSecret), (status = 400, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub(crate) async fn set_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, secret)): Path<(String, String)>,
    Json(body): Json<SetSecret>,
) -> Result<Json<RepoSecret>> {
    caller.require_admin()?;
    let SetSecret { value, agent } = body;
    let set = state
        .engine
        .set_secret(
            &caller.user_ref(),
            &name,
            &secret,
            Secret::new(value),
            agent,
        )
        .await?;
    // By name only: the value is never in the log.
    let detail = serde_json::json!({"repo": name, "secret": secret, "agent": agent});
    audit::by(
        &state,
        &caller,
        AuditAction::SecretSet,
        format!("{name}/{secret}"),
        detail,
    )
    .await;
    Ok(Json(set))
}

/// Removes a secret; the repo's image is rebuilt without it.
#[utoipa::path(delete, path = "/api/repos/{name}/secrets/{secret}", tag = "repos",
    params(("name" = String, Path), ("secret" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
pub(crate) async fn delete_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, secret)): Path<(String, String)>,
) -> Result<StatusCode> {
    caller.require_admin()?;
    state
        .engine
        .delete_secret(&caller.user_ref(), &name, &secret)
        .await?;
    let detail = serde_json::json!({"repo": name, "secret": secret});
    let target = format!("{name}/{secret}");
    audit::by(&state, &caller, AuditAction::SecretDeleted, target, detail).await;
    Ok(StatusCode::NO_CONTENT)
}
