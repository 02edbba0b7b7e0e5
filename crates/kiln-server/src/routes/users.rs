//! Users and tokens: who may call the API.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::extract::{Json, Path};
use axum::extract::State;
use axum::http::StatusCode;
use kiln_core::TokenId;
use kiln_protocol::api::{CreateToken, CreateUser, Me, TokenCreated, TokenInfo, User};

#[utoipa::path(get, path = "/api/me", tag = "users",
    responses((status = 200, body = Me), (status = 401, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn me(caller: Caller) -> Json<Me> {
    Json(Me { user: caller.0 })
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
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Error::BadRequest(
            "user name must be 1 to 64 characters without control characters".into(),
        ));
    }
    let user = state.store.create_user(name, body.admin).await?;
    Ok((StatusCode::CREATED, Json(user)))
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
    responses((status = 201, body = TokenCreated), (status = 403, body = kiln_protocol::api::ApiError),
        (status = 404, body = kiln_protocol::api::ApiError, description = "No such user")))]
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
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Error::BadRequest(
            "token name must be 1 to 64 characters without control characters".into(),
        ));
    }
    let created = state.store.create_token(&user, name).await?;
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
    Ok(StatusCode::NO_CONTENT)
}
