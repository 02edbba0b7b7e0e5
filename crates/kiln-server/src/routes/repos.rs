//! Repositories sessions can work on.
//!
//! Only admins add repos: the host fetches a repo's URL with the control plane's credentials,
//! and a local path as URL would let its author read any git repository on the host.

use crate::AppState;
use crate::auth::Caller;
use crate::error::Result;
use crate::extract::{Json, Path};
use axum::extract::State;
use axum::http::StatusCode;
use kiln_protocol::api::{CreateRepo, Image, ImageStatus, Repo, UpdateRepo, WarmReply};

#[utoipa::path(post, path = "/api/repos", tag = "repos", request_body = CreateRepo,
    responses((status = 201, body = Repo), (status = 400, body = kiln_protocol::api::ApiError),
        (status = 403, body = kiln_protocol::api::ApiError), (status = 409, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn create_repo(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateRepo>,
) -> Result<(StatusCode, Json<Repo>)> {
    caller.require_admin()?;
    state.engine.check_hooks(&body.hooks)?;
    Ok((
        StatusCode::CREATED,
        Json(state.store.create_repo(&body).await?),
    ))
}

/// Repo hooks run on the kiln host for every session on the repo: only admins set them.
#[utoipa::path(patch, path = "/api/repos/{name}", tag = "repos", params(("name" = String, Path)),
    request_body = UpdateRepo,
    responses((status = 200, body = Repo), (status = 400, body = kiln_protocol::api::ApiError),
        (status = 403, body = kiln_protocol::api::ApiError), (status = 404, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn update_repo(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<UpdateRepo>,
) -> Result<Json<Repo>> {
    caller.require_admin()?;
    if let Some(hooks) = &body.hooks {
        state.engine.check_hooks(hooks)?;
    }
    Ok(Json(state.store.update_repo(&name, &body).await?))
}

#[utoipa::path(get, path = "/api/repos", tag = "repos", responses((status = 200, body = Vec<Repo>)))]
pub(crate) async fn list_repos(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<Vec<Repo>>> {
    Ok(Json(state.store.list_repos().await?))
}

#[utoipa::path(get, path = "/api/repos/{name}", tag = "repos", params(("name" = String, Path)),
    responses((status = 200, body = Repo), (status = 404, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn get_repo(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Repo>> {
    Ok(Json(state.store.repo(&name).await?))
}

/// The API's view of an image record (its layers are host paths and stay private).
fn image(record: kiln_store::ImageRecord, with_log: bool) -> Image {
    Image {
        status: if record.is_ready() {
            ImageStatus::Ready
        } else {
            ImageStatus::Failed
        },
        id: record.id,
        repo: record.repo,
        commit: record.commit,
        parent: record.parent,
        error: record.error,
        setup_ran: record.setup_ran,
        duration_ms: record.duration_ms,
        size_bytes: record.size_bytes,
        created_at_ms: record.created_at_ms,
        log: with_log.then_some(record.log),
    }
}

/// Starts a build of the repo's image now; it appears in the image list when it ends.
#[utoipa::path(post, path = "/api/repos/{name}/images", tag = "repos", params(("name" = String, Path)),
    responses((status = 202, description = "the build started"), (status = 403, body = kiln_protocol::api::ApiError),
        (status = 404, body = kiln_protocol::api::ApiError), (status = 409, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn build_image(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    caller.require_admin()?;
    state.engine.start_image_build(&name).await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(get, path = "/api/repos/{name}/images", tag = "repos", params(("name" = String, Path)),
    responses((status = 200, body = Vec<Image>), (status = 404, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn list_images(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<Image>>> {
    state.store.repo(&name).await?;
    let images = state.store.images(&name).await?;
    Ok(Json(images.into_iter().map(|i| image(i, false)).collect()))
}

#[utoipa::path(get, path = "/api/repos/{name}/images/{id}", tag = "repos",
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Image), (status = 404, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn get_image(
    State(state): State<AppState>,
    _caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Image>> {
    Ok(Json(image(state.store.image(&name, &id).await?, true)))
}

/// Warm-up while typing: the caller is writing a prompt for this repo; hold a warm sandbox
/// for their next session (for a short time).
#[utoipa::path(post, path = "/api/repos/{name}/warm", tag = "repos", params(("name" = String, Path)),
    responses((status = 200, body = WarmReply), (status = 404, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn warm(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<WarmReply>> {
    let reserved = state
        .engine
        .reserve_sandbox(&caller.user_ref(), &name)
        .await?;
    Ok(Json(WarmReply { reserved }))
}
