//! `POST /api/github/webhook`: GitHub's deliveries to the app. No kiln credential: the
//! `X-Hub-Signature-256` under the app's webhook secret is the authentication (checked in
//! constant time before anything is read; bad or missing → 401 and nothing changes). What a
//! delivery does is `kiln-webhooks`'; here it becomes a status: 2xx for everything handled,
//! seen before or of no interest to kiln (GitHub then stops retrying), 400 for a malformed
//! payload, 500 when kiln failed (the delivery can be redelivered from GitHub's settings).

use crate::AppState;
use crate::login::base_url;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_protocol::api::{ApiError, WebhookReceipt};
use kiln_webhooks::{IntakeError, Outcome};

/// GitHub caps a delivery's payload at 25 MB.
pub(crate) const WEBHOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;

/// Takes a GitHub webhook delivery (the GitHub App's webhook URL).
#[utoipa::path(post, path = "/api/github/webhook", tag = "github", security(()),
    request_body(content = Object, description = "A GitHub webhook payload (`application/json` or form-encoded `payload=`), signed with the app's webhook secret", content_type = "application/json"),
    params(
        ("X-GitHub-Event" = String, Header, description = "The event's name"),
        ("X-GitHub-Delivery" = String, Header, description = "The delivery's id: a redelivery has the same"),
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=` HMAC-SHA256 of the body under the webhook secret"),
    ),
    responses(
        (status = 200, body = WebhookReceipt, description = "Handled, a redelivery, or nothing for kiln to do"),
        (status = 400, body = ApiError, description = "The payload is not what GitHub documents for its event"),
        (status = 401, body = ApiError, description = "Missing or wrong signature; nothing changed"),
        (status = 500, body = ApiError, description = "kiln failed; redeliver it"),
        (status = 503, body = ApiError, description = "GitHub is not configured on this server")))]
pub(crate) async fn webhook(
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
    let refuse = |status: StatusCode, error: String| {
        (status, axum::Json(ApiError { error })).into_response()
    };
    match state.intake.handle(&header, &body, &base).await {
        Ok(outcome) => {
            let (status, detail) = match outcome {
                Outcome::Handled(d) => ("handled", d),
                Outcome::Duplicate => ("duplicate", "this delivery was handled before".into()),
                Outcome::Ignored(d) => ("ignored", d),
            };
            axum::Json(WebhookReceipt {
                status: status.into(),
                detail,
            })
            .into_response()
        }
        Err(IntakeError::Refused(kiln_forge::WebhookError::Unauthenticated(m))) => {
            refuse(StatusCode::UNAUTHORIZED, m)
        }
        Err(IntakeError::Refused(kiln_forge::WebhookError::Malformed(m))) => {
            refuse(StatusCode::BAD_REQUEST, m)
        }
        Err(e @ IntakeError::NotConfigured) => {
            refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(IntakeError::Engine(e)) => {
            tracing::error!(error = %e, "webhook delivery failed");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "kiln failed handling this delivery; redeliver it from the app's settings".into(),
            )
        }
    }
}
