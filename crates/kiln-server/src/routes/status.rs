//! `GET /api/health` (anyone: is the server up, can it reach its model) and `GET /api/status`
//! (signed in: also sandboxes, images and pools — what `kiln status` shows).

use crate::AppState;
use crate::auth::Caller;
use crate::error::Result;
use crate::routes::repos::{image, running};
use axum::Json;
use axum::extract::State;
use kiln_protocol::api::{Health, RepoStatus, ServerStatus};

type ApiError = kiln_protocol::api::ApiError;

/// Whether the server is up and its model answers (checked at most every 30 s). Open to anyone.
#[utoipa::path(get, path = "/api/health", tag = "meta", security(()),
    responses((status = 200, body = Health)))]
pub(crate) async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        ok: true,
        version: env!("CARGO_PKG_VERSION").to_string(),
        model: state.engine.model_health().await,
    })
}

/// The server at a glance: version, the model's health, the sandboxes it runs (admins), and
/// each repo the caller can see with its newest image and warm pool.
#[utoipa::path(get, path = "/api/status", tag = "meta",
    responses((status = 200, body = ServerStatus), (status = 401, body = ApiError)))]
pub(crate) async fn status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ServerStatus>> {
    let closed = state.store.repos_closed_to(&caller.0).await?;
    let mut repos = Vec::new();
    for repo in state.store.list_repos().await? {
        if closed.contains(&repo.name) {
            continue;
        }
        let newest = match state.engine.running_build(&repo.name) {
            Some(build) => Some(running(&repo.name, build, false)),
            None => state
                .store
                .images(&repo.name)
                .await?
                .into_iter()
                .next()
                .map(|record| image(record, false, &caller)),
        };
        repos.push(RepoStatus {
            pool: state.engine.pool_status(&repo.name).await?,
            image: newest,
            name: repo.name,
        });
    }
    let sandboxes = match caller.0.admin {
        true => Some(state.engine.sandbox_counts().await?),
        false => None,
    };
    Ok(Json(ServerStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        model: state.engine.model_health().await,
        sandboxes,
        repos,
    }))
}
