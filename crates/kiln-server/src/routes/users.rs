//! Users and tokens: who may call the API.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::extract::{Json, Path};
use crate::routes::audit;
use axum::extract::State;
use axum::http::StatusCode;
use kiln_core::{TokenId, UserId};
use kiln_protocol::api::{
    AuditAction, CreateToken, CreateUser, Me, TokenCreated, TokenInfo, UpdateUser, User,
};
use serde_json::json;

#[utoipa::path(get, path = "/api/me", tag = "users",
    responses((status = 200, body = Me), (status = 401, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<Me>> {
    let github = state.engine.github_account(&caller.0.id).await?;
    Ok(Json(Me {
        user: caller.0,
        github,
    }))
}

#[utoipa::path(post, path = "/api/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = User), (status = 400, body = kiln_protocol::api::ApiError),
        (status = 403, body = kiln_protocol::api::ApiError),
        (status = 409, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateUser>,
) -> Result<(StatusCode, Json<User>)> {
    caller.require_admin()?;
    let user = state
        .store
        .create_person(
            &body.name,
            body.admin,
            body.display_name.as_deref(),
            body.email.as_deref(),
        )
        .await?;
    let detail = json!({"name": user.name, "admin": user.admin});
    audit::by(
        &state,
        &caller,
        AuditAction::UserCreated,
        user.id.as_str(),
        detail,
    )
    .await;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Changes a user's display name and email, which their commits carry. Admins change anyone's;
/// a user changes their own.
#[utoipa::path(patch, path = "/api/users/{id}", tag = "users", params(("id" = String, Path)),
    request_body = UpdateUser,
    responses((status = 200, body = User), (status = 400, body = kiln_protocol::api::ApiError),
        (status = 403, body = kiln_protocol::api::ApiError),
        (status = 404, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<UserId>,
    Json(body): Json<UpdateUser>,
) -> Result<Json<User>> {
    if id != caller.0.id {
        caller.require_admin()?;
    }
    let user = state
        .store
        .update_profile(&id, body.display_name.as_deref(), body.email.as_deref())
        .await?;
    let fields: Vec<&str> = [
        body.display_name.as_ref().map(|_| "display_name"),
        body.email.as_ref().map(|_| "email"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let detail = json!({"name": user.name, "fields": fields});
    audit::by(
        &state,
        &caller,
        AuditAction::UserUpdated,
        id.as_str(),
        detail,
    )
    .await;
    Ok(Json(user))
}

/// Deactivates a user (admins): their tokens and browser sessions stop working at once; the
/// record stays, since sessions and prompts name it. The last active admin is refused (409).
#[utoipa::path(delete, path = "/api/users/{id}", tag = "users", params(("id" = String, Path)),
    responses((status = 200, body = User, description = "The user, deactivated"),
        (status = 403, body = kiln_protocol::api::ApiError),
        (status = 404, body = kiln_protocol::api::ApiError),
        (status = 409, body = kiln_protocol::api::ApiError, description = "The last active admin")))]
pub(crate) async fn deactivate_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<UserId>,
) -> Result<Json<User>> {
    caller.require_admin()?;
    let user = state.store.deactivate_user(&id).await?;
    let detail = json!({"name": user.name});
    audit::by(
        &state,
        &caller,
        AuditAction::UserDeactivated,
        id.as_str(),
        detail,
    )
    .await;
    Ok(Json(user))
}

#[utoipa::path(get, path = "/api/users", tag = "users",
    responses((status = 200, body = Vec<User>), (status = 403, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<User>>> {
    caller.require_admin()?;
    Ok(Json(state.store.list_users().await?))
}

#[utoipa::path(post, path = "/api/tokens", tag = "users", request_body = CreateToken,
    responses((status = 201, body = TokenCreated), (status = 400, body = kiln_protocol::api::ApiError),
        (status = 403, body = kiln_protocol::api::ApiError),
        (status = 404, body = kiln_protocol::api::ApiError, description = "No such user"),
        (status = 409, body = kiln_protocol::api::ApiError, description = "The user is deactivated")))]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateToken>,
) -> Result<(StatusCode, Json<TokenCreated>)> {
    let user = match body.user_id {
        Some(id) if id != caller.0.id => {
            caller.require_admin()?;
            state.store.user(&id).await?.id
        }
        _ => caller.0.id.clone(),
    };
    let name = body.name.trim();
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(Error::BadRequest(
            "token name must be 1 to 64 characters without control characters".into(),
        ));
    }
    let created = state
        .store
        .issue_token(&user, name, body.expires_in_days, body.scope)
        .await?;
    let info = &created.info;
    let detail = json!({"name": info.name, "user": info.user_id, "scope": info.scope,
        "expires_at_ms": info.expires_at_ms});
    audit::by(
        &state,
        &caller,
        AuditAction::TokenCreated,
        info.id.as_str(),
        detail,
    )
    .await;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/api/tokens", tag = "users",
    responses((status = 200, body = Vec<TokenInfo>)))]
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<TokenInfo>>> {
    Ok(Json(state.store.list_tokens(&caller.0.id).await?))
}

/// Revokes one of the caller's tokens. The last token any admin has is refused (409): without
/// it nobody could administer kiln through the API (`kiln admin token` on the server recovers).
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "users",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = kiln_protocol::api::ApiError),
        (status = 409, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<TokenId>,
) -> Result<StatusCode> {
    state.store.revoke_token(&caller.0.id, &id).await?;
    audit::by(
        &state,
        &caller,
        AuditAction::TokenRevoked,
        id.as_str(),
        json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
