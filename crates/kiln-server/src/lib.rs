//! The HTTP and WebSocket API: the only crate that knows about serving HTTP. Everything a client
//! can do — CLI, web UI, Slack, the Chrome extension — goes through these routes.
//!
//! Handlers are thin: authenticate ([`auth::Caller`]), authorize (the caller's role in the
//! session), validate, call the engine or the store, map errors in one place ([`error`]).

mod auth;
mod bootstrap;
mod error;
mod extract;
mod login;
mod presence;
mod routes;
mod serve;
mod web;

pub use bootstrap::{ADMIN_TOKEN_FILE, admin_login_link, bootstrap, recover_admin_token};
pub use error::Error;
pub use serve::{ServeConfig, serve_with};
pub use web::built as web_ui_built;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use kiln_engine::Engine;
use kiln_store::Store;
use presence::Presence;
use std::future::Future;
use tokio::net::TcpListener;
use utoipa::OpenApi;

/// What every handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Engine,
    pub store: Store,
    presence: Presence,
    /// Cancelled when the server starts shutting down: responses that stream for as long as
    /// something runs (a build's log) end then, or the graceful shutdown would wait for them.
    closing: tokio_util::sync::CancellationToken,
    /// The address browsers use (`public_url`, `KILN_PUBLIC_URL`), when it is not the one the
    /// server listens on: sign-in links and the Origin check use it, and `https://` marks the
    /// session cookie `Secure`.
    public_url: Option<String>,
    /// Forge webhooks in (`POST /api/github/webhook`).
    intake: kiln_webhooks::Intake,
    /// Slack events in (`POST /api/slack/events`); refuses them until [`AppState::with_slack`].
    slack: kiln_slack::Slack,
    /// The session logs' folds behind `GET /api/stats`.
    stats: std::sync::Arc<kiln_stats::StatsIndex>,
    /// What `GET /metrics` exposes (this server's own registry, which its engine records into).
    metrics: kiln_telemetry::Metrics,
}

impl AppState {
    pub fn new(engine: Engine) -> AppState {
        AppState {
            metrics: engine.metrics().clone(),
            store: engine.store().clone(),
            intake: kiln_webhooks::Intake::new(engine.clone()),
            slack: kiln_slack::Slack::new(engine.clone(), None)
                .expect("Slack's intake without a configuration has no client to fail"),
            engine,
            presence: Presence::default(),
            closing: tokio_util::sync::CancellationToken::new(),
            public_url: None,
            stats: std::sync::Arc::default(),
        }
    }

    /// Takes Slack's events with this intake (`[slack]` configured).
    pub fn with_slack(mut self, slack: kiln_slack::Slack) -> AppState {
        self.slack = slack;
        self
    }

    /// Serves browsers at `url` (e.g. `https://kiln.example.com` behind a reverse proxy).
    pub fn with_public_url(mut self, url: Option<String>) -> AppState {
        self.public_url = url.map(|u| u.trim_end_matches('/').to_string());
        self
    }
}

/// The largest request body taken, in bytes (the longest prompt is 100,000 characters, at most
/// 400 KB of UTF-8): larger ones get a 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Every route.
pub fn router(state: AppState) -> Router {
    use axum::routing::{delete, put};
    use routes::{
        access, github, manage, mcp, prompts, repos, secrets, sessions, stats, status, users, ws,
    };
    let api = Router::new()
        .route("/health", get(status::health))
        .route("/status", get(status::status))
        .route("/openapi.json", get(openapi))
        .route("/me", get(users::me))
        .route("/me/github", delete(github::unlink))
        .route(
            "/me/slack",
            get(routes::slack::get_link)
                .put(routes::slack::link)
                .delete(routes::slack::unlink),
        )
        .route(
            "/slack/events",
            post(routes::slack::events).layer(axum::extract::DefaultBodyLimit::max(
                routes::slack::EVENTS_BODY_LIMIT,
            )),
        )
        .route("/auth/methods", get(login::sign_in_methods))
        .route("/auth/github/start", get(github::start))
        .route("/auth/github/callback", get(github::callback))
        .route(
            "/github/webhook",
            post(routes::webhook::webhook).layer(axum::extract::DefaultBodyLimit::max(
                routes::webhook::WEBHOOK_BODY_LIMIT,
            )),
        )
        .route("/users", post(users::create_user).get(users::list_users))
        .route(
            "/users/{id}",
            axum::routing::patch(users::update_user).delete(users::deactivate_user),
        )
        .route("/tokens", post(users::create_token).get(users::list_tokens))
        .route("/tokens/{id}", axum::routing::delete(users::revoke_token))
        .route("/login-links", post(login::create_login_link))
        .route("/logout", post(login::logout))
        .route("/repos", post(repos::create_repo).get(repos::list_repos))
        .route(
            "/repos/{name}",
            get(repos::get_repo)
                .patch(repos::update_repo)
                .delete(manage::delete_repo),
        )
        .route(
            "/repos/{name}/images",
            post(repos::build_image).get(repos::list_images),
        )
        .route("/repos/{name}/images/{id}", get(repos::get_image))
        .route("/repos/{name}/images/{id}/log", get(repos::image_log))
        .route("/repos/{name}/warm", post(repos::warm))
        .route("/repos/{name}/pool", get(repos::pool))
        .route(
            "/repos/{name}/access",
            get(access::get_access).put(access::set_access),
        )
        .route("/repos/{name}/secrets", get(secrets::list_secrets))
        .route("/repos/{name}/mcp", get(mcp::list_mcp))
        .route(
            "/repos/{name}/secrets/{secret}",
            axum::routing::put(secrets::set_secret).delete(secrets::delete_secret),
        )
        .route("/admin/gc", post(repos::collect_garbage))
        .route("/admin/audit", get(routes::audit::audit))
        .route(
            "/sessions",
            post(sessions::create_session).get(sessions::list_sessions),
        )
        .route(
            "/sessions/{id}",
            get(sessions::get_session)
                .patch(sessions::update_session)
                .delete(manage::delete_session),
        )
        .route("/sessions/{id}/archive", post(manage::archive_session))
        .route(
            "/sessions/{id}/shares/{share}",
            delete(manage::revoke_share),
        )
        .route(
            "/sessions/{id}/participants/{user}",
            put(manage::set_role).delete(manage::remove_participant),
        )
        .route("/sessions/{id}/prompts", post(sessions::send_prompt))
        .route(
            "/sessions/{id}/prompts/{prompt_id}/retry",
            post(prompts::retry_prompt),
        )
        .route(
            "/sessions/{id}/plan/{plan_id}",
            post(routes::plan::decide_plan),
        )
        .route("/sessions/{id}/stop", post(sessions::stop_session))
        .route("/sessions/{id}/push", post(routes::push::push_session))
        .route("/sessions/{id}/diff", get(routes::push::session_diff))
        .route("/sessions/{id}/patch", get(routes::push::session_patch))
        .route("/sessions/{id}/pr", post(github::open_pr))
        .route(
            "/sessions/{id}/shares",
            post(sessions::create_share).get(manage::list_shares),
        )
        .route("/sessions/{id}/events", get(sessions::events))
        .route("/sessions/{id}/tree", get(routes::tree::session_tree))
        .route("/sessions/{id}/ws", get(ws::ws))
        .route("/ws", get(ws::user_ws))
        .route("/join/{code}", post(sessions::join))
        .route("/stats", get(stats::stats))
        .route("/stats/starts", get(sessions::start_stats))
        .fallback(|| async { Error::NotFound("API route".into()) });
    Router::new()
        .nest("/api", api)
        .route("/metrics", get(routes::metrics::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::metrics::track,
        ))
        .route("/login", get(login::login))
        .merge(web::routes())
        .fallback(|| async { Error::NotFound("page".into()) })
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(trace_layer())
        .with_state(state)
}

/// Only `GET /metrics`, without a token: for the separate `metrics_listen` address, which
/// should be reachable only by the Prometheus server.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(routes::metrics::open_metrics))
        .fallback(|| async { Error::NotFound("page (only /metrics is served here)".into()) })
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(state)
}

/// Serves [`metrics_router`] on its own listener (`metrics_listen`) until the task is dropped
/// or aborted. Scrapes are small and quick: at most 16 connections at once, each with 10 s for
/// its request head.
pub async fn serve_metrics(listener: TcpListener, state: AppState) {
    let app = metrics_router(state);
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut http =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    http.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "the metrics listener cannot accept; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let http = http.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = http
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Serves until `shutdown` resolves, then lets open requests finish (streamed build logs end),
/// with the default [`ServeConfig`].
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, shutdown, ServeConfig::default()).await
}

/// This document. Open to anyone.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta", security(()),
    responses((status = 200, body = Object, description = "The OpenAPI 3.1 document")))]
async fn openapi() -> impl IntoResponse {
    axum::Json(routes::ApiDoc::openapi())
}

/// The OpenAPI document as pretty JSON, without a running server: what `kiln openapi` prints
/// and the web UI's types are generated from (`web/openapi.json`).
pub fn openapi_json() -> String {
    let mut json = routes::ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    json.push('\n');
    json
}

type TraceLayer = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    fn(&axum::http::Request<axum::body::Body>) -> tracing::Span,
>;

/// A span per request, the root of whatever the request causes (`KILN_LOG=debug` shows each
/// request and its status and latency). Only the method and the path are recorded: a query may
/// carry `?token=` (WebSocket upgrades), and no credential is ever logged.
fn trace_layer() -> TraceLayer {
    fn span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
        tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
        )
    }
    tower_http::trace::TraceLayer::new_for_http().make_span_with(span as fn(&_) -> _)
}
