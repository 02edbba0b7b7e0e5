//! Repositories sessions can work on.
//!
//! Only admins add repos: the host fetches a repo's URL with the control plane's credentials,
//! and a local path as URL would let its author read any git repository on the host.

use crate::AppState;
use crate::auth::Caller;
use crate::error::Result;
use crate::extract::{Json, Path, Query};
use crate::routes::access::require_repo;
use crate::routes::audit;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use kiln_protocol::api::{
    AuditAction, CreateRepo, GcReport, Image, ImageBuildStarted, ImageStatus, PoolStatus, Repo,
    UpdateRepo, WarmReply,
};
use serde_json::json;

/// Registers a repo (admins), after checking that the kiln host can read its url (unless
/// `check` is false): a url it cannot read is a 400 saying why.
#[utoipa::path(post, path = "/api/repos", tag = "repos", request_body = CreateRepo,
    responses((status = 201, body = Repo), (status = 400, body = kiln_protocol::api::ApiError),
        (status = 403, body = kiln_protocol::api::ApiError), (status = 409, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn create_repo(
    State(state): State<AppState>,
    caller: Caller,
    Json(mut body): Json<CreateRepo>,
) -> Result<(StatusCode, Json<Repo>)> {
    caller.require_admin()?;
    // `owner/name` is a repository on the configured forge.
    body.url = state.engine.resolve_repo_url(&body.url);
    state.engine.check_hooks(&body.hooks)?;
    if let Some(environment) = &body.environment {
        state.engine.check_environment(environment)?;
    }
    if body.check {
        // A bad or taken name is said before the url is tried: the quicker thing to fix.
        kiln_store::check_repo_name(&body.name)?;
        match state.store.repo(&body.name).await {
            Ok(_) => {
                return Err(crate::error::Error::Conflict(format!(
                    "a repo named {:?} exists",
                    body.name
                )));
            }
            Err(kiln_store::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        state.engine.check_remote(&body.url).await?;
    }
    let repo = state.store.create_repo(&body).await?;
    let detail = json!({
        "url": kiln_core::redact_urls(&body.url),
        "hooks": body.hooks.len(),
        "environment": body.environment.is_some(),
    });
    audit::by(
        &state,
        &caller,
        AuditAction::RepoCreated,
        &repo.name,
        detail,
    )
    .await;
    Ok((StatusCode::CREATED, Json(repo)))
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
    if let Some(environment) = &body.environment {
        state.engine.check_environment(environment)?;
    }
    let repo = state.store.update_repo(&name, &body).await?;
    // Hooks run on the host and the environment decides what sandboxes run: each is an entry
    // of its own; the other settings share one.
    if let Some(hooks) = &body.hooks {
        // How many, not the commands: an argument may hold something private.
        let detail = json!({"hooks": hooks.len()});
        audit::by(&state, &caller, AuditAction::HooksChanged, &name, detail).await;
    }
    if let Some(environment) = &body.environment {
        let detail = json!({"removed": environment.is_empty()});
        audit::by(
            &state,
            &caller,
            AuditAction::EnvironmentChanged,
            &name,
            detail,
        )
        .await;
    }
    let fields: Vec<&str> = [
        body.default_branch.as_ref().map(|_| "default_branch"),
        body.description.as_ref().map(|_| "description"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !fields.is_empty() {
        let detail = json!({"fields": fields});
        audit::by(&state, &caller, AuditAction::RepoUpdated, &name, detail).await;
    }
    Ok(Json(repo))
}

/// A repo as `caller` may see it. The url never carries credentials (the store shows them as
/// `****`). Hooks and the environment definition are the admins' business: hooks are commands
/// on the kiln host and an environment holds env values, often secrets; other users get what
/// starting a session needs.
fn shown(mut repo: Repo, caller: &Caller) -> Repo {
    if !caller.0.admin {
        repo.hooks.clear();
        repo.environment = None;
    }
    repo
}

/// Every repo; `hooks` and `environment` are shown to admins only.
#[utoipa::path(get, path = "/api/repos", tag = "repos", responses((status = 200, body = Vec<Repo>)))]
pub(crate) async fn list_repos(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Repo>>> {
    let closed = state.store.repos_closed_to(&caller.0).await?;
    let repos = state.store.list_repos().await?;
    let hidden = crate::routes::access::forge_hidden(&state, &caller, &repos).await?;
    Ok(Json(
        repos
            .into_iter()
            .filter(|repo| !closed.contains(&repo.name) && !hidden.contains(&repo.name))
            .map(|r| shown(r, &caller))
            .collect(),
    ))
}

/// One repo; `hooks` and `environment` are shown to admins only.
#[utoipa::path(get, path = "/api/repos/{name}", tag = "repos", params(("name" = String, Path)),
    responses((status = 200, body = Repo), (status = 404, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn get_repo(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Repo>> {
    Ok(Json(shown(
        require_repo(&state, &caller, &name).await?,
        &caller,
    )))
}

/// The API's view of an image record (its layers are host paths and stay private). The
/// runtime's env values come from the environment definition and are shown to admins only;
/// others see which variables are set.
/// A build that is running now, as an image in the making: no commit, size or runtime yet.
pub(crate) fn running(repo: &str, build: kiln_engine::RunningBuild, with_log: bool) -> Image {
    Image {
        id: build.id,
        repo: repo.to_string(),
        commit: String::new(),
        parent: None,
        status: ImageStatus::Building,
        error: None,
        setup_ran: false,
        duration_ms: (kiln_core::now_ms() - build.started_ms).max(0) as u64,
        size_bytes: 0,
        created_at_ms: build.started_ms,
        runtime: Default::default(),
        secrets: Vec::new(),
        log: with_log.then_some(build.log),
    }
}

pub(crate) fn image(mut record: kiln_store::ImageRecord, with_log: bool, caller: &Caller) -> Image {
    if !caller.0.admin {
        for value in record.runtime.env.values_mut() {
            *value = "****".into();
        }
    }
    Image {
        status: if record.collected_at_ms.is_some() {
            ImageStatus::Collected
        } else if record.error.is_none() {
            ImageStatus::Ready
        } else {
            ImageStatus::Failed
        },
        runtime: record.runtime,
        secrets: record.secrets,
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

/// Starts a build of the repo's image now; follow its log at `…/images/{id}/log`. It appears
/// in the image list when it ends.
#[utoipa::path(post, path = "/api/repos/{name}/images", tag = "repos", params(("name" = String, Path)),
    responses((status = 202, body = ImageBuildStarted), (status = 403, body = kiln_protocol::api::ApiError),
        (status = 404, body = kiln_protocol::api::ApiError), (status = 409, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn build_image(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<ImageBuildStarted>)> {
    caller.require_admin()?;
    let id = state.engine.start_image_build(&name).await?;
    Ok((StatusCode::ACCEPTED, Json(ImageBuildStarted { id })))
}

/// `GET …/images/{id}/log`'s options.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// While the build runs, keep the response open and send each new piece until it ends
    /// (default `true`); `false` answers with what it wrote so far.
    pub(crate) follow: Option<bool>,
}

/// An image build's log as plain text. While the build runs: what it wrote so far, then (unless
/// `follow=false`) each new piece as it is written, until the build ends (or the server shuts
/// down); after: the stored log.
#[utoipa::path(get, path = "/api/repos/{name}/images/{id}/log", tag = "repos",
    params(("name" = String, Path), ("id" = String, Path), LogQuery),
    responses((status = 200, content_type = "text/plain", body = String),
        (status = 404, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn image_log(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Response> {
    require_repo(&state, &caller, &name).await?;
    let running = || state.engine.running_build(&name).filter(|b| b.id == id);
    let body = match state.engine.build_log(&name, &id) {
        // What it wrote so far; a build that ended meanwhile was recorded before it ended.
        Some(_) if query.follow == Some(false) => match running() {
            Some(build) => Body::from(build.log),
            None => Body::from(state.store.image(&name, &id).await?.log),
        },
        Some(follower) => {
            let pieces = futures_util::stream::unfold(follower, |mut follower| async move {
                let text = follower.next().await?;
                Some((Ok::<_, std::convert::Infallible>(text), follower))
            });
            Body::from_stream(pieces.take_until(state.closing.clone().cancelled_owned()))
        }
        None => Body::from(state.store.image(&name, &id).await?.log),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/repos/{name}/images", tag = "repos", params(("name" = String, Path)),
    responses((status = 200, body = Vec<Image>), (status = 404, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn list_images(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<Image>>> {
    require_repo(&state, &caller, &name).await?;
    let images = state.store.images(&name).await?;
    let building = state.engine.running_build(&name);
    Ok(Json(
        building
            .map(|b| running(&name, b, false))
            .into_iter()
            .chain(images.into_iter().map(|i| image(i, false, &caller)))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/repos/{name}/images/{id}", tag = "repos",
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Image), (status = 404, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn get_image(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Image>> {
    require_repo(&state, &caller, &name).await?;
    if let Some(build) = state.engine.running_build(&name).filter(|b| b.id == id) {
        return Ok(Json(running(&name, build, true)));
    }
    let record = state.store.image(&name, &id).await?;
    Ok(Json(image(record, true, &caller)))
}

/// Collects images and snapshot layers nothing uses any more, now (it also runs every 10
/// minutes under `kiln up`).
#[utoipa::path(post, path = "/api/admin/gc", tag = "repos",
    responses((status = 200, body = GcReport), (status = 403, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn collect_garbage(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<GcReport>> {
    caller.require_admin()?;
    let report = state.engine.collect_garbage().await?;
    let detail = serde_json::to_value(&report).unwrap_or_default();
    audit::by(&state, &caller, AuditAction::GarbageCollected, "gc", detail).await;
    Ok(Json(report))
}

#[utoipa::path(get, path = "/api/repos/{name}/pool", tag = "repos", params(("name" = String, Path)),
    responses((status = 200, body = PoolStatus), (status = 404, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn pool(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<PoolStatus>> {
    require_repo(&state, &caller, &name).await?;
    Ok(Json(state.engine.pool_status(&name).await?))
}

/// Warm-up while typing: the caller is writing a prompt for this repo; hold a warm sandbox
/// for their next session (for a short time).
#[utoipa::path(post, path = "/api/repos/{name}/warm", tag = "repos", params(("name" = String, Path)),
    responses((status = 200, body = WarmReply), (status = 404, body = kiln_protocol::api::ApiError),
        (status = 429, body = kiln_protocol::api::ApiError, description = "Too many sandboxes of the caller's at once")))]
pub(crate) async fn warm(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<WarmReply>> {
    require_repo(&state, &caller, &name).await?;
    let reserved = state
        .engine
        .reserve_sandbox(&caller.user_ref(), &name)
        .await?;
    Ok(Json(WarmReply { reserved }))
}
