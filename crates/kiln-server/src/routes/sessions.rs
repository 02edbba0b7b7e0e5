//! Sessions, prompts, stop, sharing and the event log over REST.
//!
//! Authorization: every route resolves the caller's role first ([`Caller::role_in`]); strangers
//! get 404, viewers may read but not prompt or stop, only owners share and change settings.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::extract::{Json, OptionalJson, Path, Query};
use axum::extract::State;
use axum::http::StatusCode;
use kiln_core::{Role, SessionId};
use kiln_protocol::api::{
    CreateSession, CreateShare, DETAIL_PROMPTS, EventsPage, PROMPT_PREVIEW_CHARS, PromptAccepted,
    SendPrompt, SessionCreated, SessionDetail, SessionSummary, ShareCreated, StartPhases,
    StartStats, StopReport, StopSession, UpdateSession,
};
use serde::Deserialize;

type ApiError = kiln_protocol::api::ApiError;

#[utoipa::path(post, path = "/api/sessions", tag = "sessions", request_body = CreateSession,
    responses((status = 201, body = SessionCreated), (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 429, body = ApiError, description = "Too many sessions of the caller's at once, or a daily spend budget (the caller's or the repo's) is used up: the message names it, what was spent and when it resets")))]
pub(crate) async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateSession>,
) -> Result<(StatusCode, Json<SessionCreated>)> {
    crate::routes::access::require_repo(&state, &caller, &body.repo).await?;
    let created = state
        .engine
        .create_session(&caller.user_ref(), &body)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Sessions listed at once by default, and at most.
const SESSIONS_PAGE: usize = 100;
const SESSIONS_PAGE_MAX: usize = 500;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SessionsQuery {
    /// At most this many sessions (default 100, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub(crate) limit: Option<usize>,
    /// Only sessions listed after this one: pass the last id of the previous page. A page
    /// shorter than `limit` is the last.
    pub(crate) after: Option<SessionId>,
    /// Every session on this kiln, not only the caller's (admins only).
    #[serde(default)]
    pub(crate) all: bool,
    /// Archived sessions too.
    #[serde(default)]
    pub(crate) archived: bool,
}

/// The caller's sessions, newest first, a page at a time; archived ones with `archived=true`;
/// every session with `all=true` (admins; `role` is absent where the admin is not in it).
#[utoipa::path(get, path = "/api/sessions", tag = "sessions", params(SessionsQuery),
    responses((status = 200, body = Vec<SessionSummary>), (status = 400, body = ApiError),
        (status = 403, body = ApiError, description = "`all=true` from someone not an admin")))]
pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<SessionsQuery>,
) -> Result<Json<Vec<SessionSummary>>> {
    let limit = query
        .limit
        .unwrap_or(SESSIONS_PAGE)
        .clamp(1, SESSIONS_PAGE_MAX);
    if query.all {
        caller.require_admin()?;
    }
    let filter = kiln_store::SessionFilter {
        all: query.all,
        archived: query.archived,
    };
    let rows = state
        .store
        .sessions_page(&caller.0.id, filter, query.after.as_ref(), limit)
        .await?;
    // Sessions on repos the forge hides from the caller are left out (a page may come short).
    let mut repos: Vec<kiln_protocol::api::Repo> = Vec::new();
    for (row, _) in &rows {
        if !repos.iter().any(|r| r.name == row.repo) {
            repos.push(state.store.repo(&row.repo).await?);
        }
    }
    let hidden = crate::routes::access::forge_hidden(&state, &caller, &repos).await?;
    Ok(Json(
        rows.iter()
            .filter(|(row, _)| !hidden.contains(&row.repo))
            .map(|(row, role)| state.engine.summary(row, *role))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/sessions/{id}", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = SessionDetail), (status = 404, body = ApiError)))]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SessionId>,
) -> Result<Json<SessionDetail>> {
    let role = caller.role_in(&state, &id).await?;
    Ok(Json(detail(&state, &id, role).await?))
}

/// Events read to find a session's start phases.
const START_EVENTS: usize = 2_000;

async fn detail(state: &AppState, id: &SessionId, role: Role) -> Result<SessionDetail> {
    let row = state.store.session_row(id).await?;
    let log = state.store.open_session(id).await?;
    let (prompts, prompts_total) = log
        .recent_prompts(DETAIL_PROMPTS, PROMPT_PREVIEW_CHARS)
        .await?;
    Ok(SessionDetail {
        summary: state.engine.summary(&row, role),
        participants: state.store.members(id).await?,
        prompts,
        prompts_total,
        delivery: log.delivery_mode().await?,
        plan_mode: log.plan_mode().await?,
        sandbox: state.engine.sandbox_state(id),
        head_seq: log.head_seq().await,
        // The start is in the first events; a bounded read keeps long sessions cheap.
        start: StartPhases::from_events(&log.read_after(0, START_EVENTS).await?),
    })
}

#[utoipa::path(patch, path = "/api/sessions/{id}", tag = "sessions", params(("id" = String, Path)),
    request_body = UpdateSession,
    responses((status = 200, body = SessionDetail), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub(crate) async fn update_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SessionId>,
    Json(body): Json<UpdateSession>,
) -> Result<Json<SessionDetail>> {
    let role = caller.role_in(&state, &id).await?;
    if !role.can_change_settings() {
        return Err(Error::Forbidden(
            "only the session's owners change its settings".into(),
        ));
    }
    if let Some(delivery) = body.delivery {
        state.engine.set_delivery(&id, delivery).await?;
    }
    if let Some(on) = body.plan_mode {
        state.engine.set_plan_mode(&id, on).await?;
    }
    Ok(Json(detail(&state, &id, role).await?))
}

#[utoipa::path(post, path = "/api/sessions/{id}/prompts", tag = "sessions", params(("id" = String, Path)),
    request_body = SendPrompt,
    responses((status = 202, body = PromptAccepted), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "The session is closed"),
        (status = 429, body = ApiError, description = "The session's creator has too many active sessions, or a daily spend budget (the caller's or the repo's) is used up: the message names it, what was spent and when it resets")))]
pub(crate) async fn send_prompt(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SessionId>,
    Json(body): Json<SendPrompt>,
) -> Result<(StatusCode, Json<PromptAccepted>)> {
    let role = caller.role_in(&state, &id).await?;
    if !role.can_prompt() {
        return Err(Error::Forbidden(
            "viewers cannot send prompts; ask an owner for the collaborator role".into(),
        ));
    }
    let accepted = state
        .engine
        .send_prompt_with(&id, &caller.user_ref(), &body.text, body.plan)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Stops the running prompt (and with `clear_queue` the queued ones); the reply says what
/// that stopped — nothing, when the session was idle.
#[utoipa::path(post, path = "/api/sessions/{id}/stop", tag = "sessions", params(("id" = String, Path)),
    request_body(content = Option<StopSession>, description = "Optional: an empty body stops without clearing the queue"),
    responses((status = 200, body = StopReport), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub(crate) async fn stop_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SessionId>,
    // The body is optional: an empty POST stops without clearing the queue.
    OptionalJson(body): OptionalJson<StopSession>,
) -> Result<Json<StopReport>> {
    let role = caller.role_in(&state, &id).await?;
    if !role.can_stop() {
        return Err(Error::Forbidden("viewers cannot stop the agent".into()));
    }
    let stopped = state
        .engine
        .stop_reporting(&id, &caller.user_ref(), body.clear_queue)
        .await?;
    Ok(Json(StopReport {
        stopped_prompt: stopped.prompt,
        cancelled: stopped.cancelled,
    }))
}

#[utoipa::path(post, path = "/api/sessions/{id}/shares", tag = "sessions", params(("id" = String, Path)),
    request_body = CreateShare,
    responses((status = 201, body = ShareCreated), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub(crate) async fn create_share(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SessionId>,
    Json(body): Json<CreateShare>,
) -> Result<(StatusCode, Json<ShareCreated>)> {
    let role = caller.role_in(&state, &id).await?;
    if !role.can_share() {
        return Err(Error::Forbidden(
            "only the session's owners share it".into(),
        ));
    }
    let options = kiln_store::ShareOptions {
        expires_in_hours: body.expires_in_hours,
        single_use: body.single_use,
    };
    let share = state
        .store
        .create_share_with(&id, body.role, &caller.0.id, options)
        .await?;
    // Never the code: whoever holds it joins.
    let detail = serde_json::json!({"share": share.id, "role": share.role,
        "expires_at_ms": share.expires_at_ms, "single_use": share.single_use});
    let audit = kiln_protocol::api::AuditAction::ShareCreated;
    crate::routes::audit::by(&state, &caller, audit, id.as_str(), detail).await;
    Ok((StatusCode::CREATED, Json(share)))
}

#[utoipa::path(post, path = "/api/join/{code}", tag = "sessions", params(("code" = String, Path)),
    responses((status = 200, body = SessionSummary), (status = 404, body = ApiError)))]
pub(crate) async fn join(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<Json<SessionSummary>> {
    let Some(redeemed) = state.store.redeem_share(&code, &caller.0.id).await? else {
        return Err(Error::NotFound("share link".into()));
    };
    let (id, role) = (redeemed.session, redeemed.role);
    if redeemed.changed {
        state
            .engine
            .participant_joined(&id, &caller.user_ref(), role)
            .await?;
        let detail = serde_json::json!({"role": role});
        let audit = kiln_protocol::api::AuditAction::SessionJoined;
        crate::routes::audit::by(&state, &caller, audit, id.as_str(), detail).await;
    }
    let row = state.store.session_row(&id).await?;
    Ok(Json(state.engine.summary(&row, role)))
}

/// A page of events ends once it holds this many bytes of JSON.
const EVENTS_PAGE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Return events with seq greater than this; 0 for all.
    #[serde(default)]
    pub(crate) after_seq: u64,
    /// At most this many (default 500, at most 5,000); a page also ends at 4 MiB of JSON.
    /// Page on with `after_seq` = the page's `next_after_seq`.
    #[param(minimum = 1, maximum = 5000)]
    pub(crate) limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/sessions/{id}/events", tag = "sessions",
    params(("id" = String, Path), EventsQuery),
    responses((status = 200, body = EventsPage), (status = 404, body = ApiError)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SessionId>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventsPage>> {
    caller.role_in(&state, &id).await?;
    let limit = query.limit.unwrap_or(500).clamp(1, 5_000);
    let log = state.store.open_session(&id).await?;
    let head_seq = log.head_seq().await;
    let mut events = log.read_after(query.after_seq, limit).await?;
    // A page also stops at EVENTS_PAGE_BYTES (a prompt's event alone may be 400 KB); the
    // first event always fits, so paging makes progress.
    let mut bytes = 0;
    if let Some(keep) = events.iter().position(|event| {
        bytes += serde_json::to_string(event).map_or(0, |json| json.len());
        bytes > EVENTS_PAGE_BYTES
    }) {
        events.truncate(keep.max(1));
    }
    let next_after_seq = events.last().map_or(query.after_seq, |e| e.seq);
    Ok(Json(EventsPage {
        events,
        next_after_seq,
        head_seq,
    }))
}

/// Start phases (p50/p95) over the caller's sessions.
#[utoipa::path(get, path = "/api/stats/starts", tag = "sessions",
    responses((status = 200, body = StartStats)))]
pub(crate) async fn start_stats(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<StartStats>> {
    let mut phases = Vec::new();
    for (row, _) in state.store.sessions_for(&caller.0.id).await? {
        let log = state.store.open_session(&row.id).await?;
        phases.push(StartPhases::from_events(
            &log.read_after(0, START_EVENTS).await?,
        ));
    }
    Ok(Json(StartStats::of(&phases)))
}
