//! Slack: `POST /api/slack/events` (the app's Events API Request URL) and a kiln user's link to
//! their Slack member id (`PUT`/`DELETE /api/me/slack`). The events route takes no kiln
//! credential: the `X-Slack-Signature` under the app's signing secret is the authentication,
//! checked in constant time before the body is read (missing, wrong or older than five
//! minutes → 401 and nothing changes). What an event does is `kiln-slack`'s; the answer comes
//! at once (Slack waits three seconds), the work runs on.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::extract::Json;
use crate::login::base_url;
use crate::routes::audit;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_protocol::api::{ApiError, AuditAction, SlackEventReceipt, SlackLink};
use kiln_slack::{Receipt, SlackError};

/// Slack's event payloads are small; this is generous.
pub(crate) const EVENTS_BODY_LIMIT: usize = 1024 * 1024;

/// Takes a Slack Events API request (the app's Request URL).
#[utoipa::path(post, path = "/api/slack/events", tag = "slack", security(()),
    request_body(content = Object, description = "A Slack Events API payload (`url_verification` or `event_callback`), signed with the app's signing secret", content_type = "application/json"),
    params(
        ("X-Slack-Request-Timestamp" = String, Header, description = "Unix seconds when Slack sent it; more than five minutes away is refused"),
        ("X-Slack-Signature" = String, Header, description = "`v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}` under the signing secret"),
        ("X-Slack-Retry-Num" = Option<String>, Header, description = "Set on Slack's retries; a retried event is not handled twice"),
    ),
    responses(
        (status = 200, body = SlackEventReceipt, description = "The URL verification's challenge, or the event taken, seen before or of no interest to kiln"),
        (status = 400, body = ApiError, description = "The body is not a Slack Events API payload"),
        (status = 401, body = ApiError, description = "Missing, wrong or stale signature; nothing changed"),
        (status = 500, body = ApiError, description = "kiln failed; Slack retries"),
        (status = 503, body = ApiError, description = "Slack is not configured on this server")))]
pub(crate) async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let base = base_url(&state, &headers);
    let now_secs = kiln_core::now_ms() / 1000;
    let refuse = |status: StatusCode, error: String| {
        (status, axum::Json(ApiError { error })).into_response()
    };
    let receipt = |status: &str, detail: String, challenge: Option<String>| {
        axum::Json(SlackEventReceipt {
            status: status.into(),
            detail,
            challenge,
        })
        .into_response()
    };
    match state.slack.handle(&header, &body, &base, now_secs).await {
        Ok(Receipt::Challenge(c)) => {
            receipt("challenge", "the Request URL is kiln's".into(), Some(c))
        }
        Ok(Receipt::Accepted(d)) => receipt("accepted", d, None),
        Ok(Receipt::Duplicate) => receipt("duplicate", "this event was seen before".into(), None),
        Ok(Receipt::Ignored(d)) => receipt("ignored", d, None),
        Err(SlackError::Unauthenticated(m)) => refuse(StatusCode::UNAUTHORIZED, m),
        Err(SlackError::Malformed(m)) => refuse(StatusCode::BAD_REQUEST, m),
        Err(e @ SlackError::NotConfigured) => {
            refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "Slack event failed");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "kiln failed handling this event; Slack will retry it".into(),
            )
        }
    }
}

/// Links the caller to their Slack member id: mentions and messages from it in Slack then act
/// as the caller. One Slack user per kiln user; a Slack user linked to someone else is a 409.
#[utoipa::path(put, path = "/api/me/slack", tag = "users", request_body = SlackLink,
    responses((status = 200, body = SlackLink), (status = 409, body = ApiError)))]
pub(crate) async fn link(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<SlackLink>,
) -> Result<Json<SlackLink>> {
    state
        .store
        .set_slack_link(&caller.0.id, &body.slack_user)
        .await?;
    audit::by(
        &state,
        &caller,
        AuditAction::SlackLinked,
        caller.0.id.to_string(),
        serde_json::json!({"slack_user": body.slack_user}),
    )
    .await;
    Ok(Json(body))
}

/// The caller's Slack link.
#[utoipa::path(get, path = "/api/me/slack", tag = "users",
    responses((status = 200, body = SlackLink), (status = 404, body = ApiError)))]
pub(crate) async fn get_link(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SlackLink>> {
    match state.store.slack_link_of(&caller.0.id).await? {
        Some(slack_user) => Ok(Json(SlackLink { slack_user })),
        None => Err(Error::NotFound("linked Slack user".into())),
    }
}

/// Unlinks the caller's Slack user.
#[utoipa::path(delete, path = "/api/me/slack", tag = "users",
    responses((status = 204), (status = 404, body = ApiError)))]
pub(crate) async fn unlink(State(state): State<AppState>, caller: Caller) -> Result<StatusCode> {
    if state.store.delete_slack_link(&caller.0.id).await? {
        audit::by(
            &state,
            &caller,
            AuditAction::SlackUnlinked,
            caller.0.id.to_string(),
            serde_json::json!({}),
        )
        .await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound("linked Slack user".into()))
    }
}
