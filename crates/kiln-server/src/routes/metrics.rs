//! `GET /metrics`: Prometheus metrics (see `docs/operations.md`), for admins and read-only
//! tokens; and the request-latency middleware that feeds `kiln_http_request_duration_seconds`.
//! Without a token, metrics are served only on the separate `metrics_listen` address.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, Result};
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;

#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, content_type = "text/plain", body = String,
        description = "Prometheus text exposition format 0.0.4"),
        (status = 401, body = kiln_protocol::api::ApiError),
        (status = 403, body = kiln_protocol::api::ApiError,
            description = "Neither an admin nor a read-only token")))]
pub(crate) async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response> {
    if !(caller.0.admin || caller.read_only()) {
        return Err(Error::Forbidden(
            "metrics are for admins and read-only tokens (make one with \
             `kiln token create NAME --read-only`)"
                .into(),
        ));
    }
    exposition(&state).await
}

/// `GET /metrics` on the `metrics_listen` address: no token, since only that address serves it.
pub(crate) async fn open_metrics(State(state): State<AppState>) -> Result<Response> {
    exposition(&state).await
}

async fn exposition(state: &AppState) -> Result<Response> {
    let (working, idle) = state.engine.open_session_states();
    let sandboxes = state.engine.sandbox_counts().await?;
    let mut pools = Vec::new();
    for repo in state.store.list_repos().await? {
        let pool = state.engine.pool_status(&repo.name).await?;
        pools.push((
            repo.name,
            [pool.ready, pool.reserved, pool.target].map(|n| n as u64),
        ));
    }
    let text = state.metrics.encode(&kiln_telemetry::State {
        sessions: vec![("working", working as u64), ("idle", idle as u64)],
        sandboxes: vec![
            ("session", sandboxes.sessions as u64),
            ("pooled", sandboxes.pooled as u64),
            ("build", sandboxes.builds as u64),
            ("other", sandboxes.other as u64),
        ],
        pools,
        egress: Some(state.engine.egress_totals()),
        memory: state.engine.sandbox_usage().await,
    });
    Ok(([(header::CONTENT_TYPE, kiln_telemetry::CONTENT_TYPE)], text).into_response())
}

/// Times each request of a matched route, labelled by its template (`/api/sessions/{id}`).
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let response = next.run(request).await;
    if let Some(route) = route {
        state.metrics.http_request(
            method.as_str(),
            &route,
            response.status().as_u16(),
            started.elapsed(),
        );
    }
    response
}
