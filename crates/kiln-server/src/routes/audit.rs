//! The audit log: [`record`] is what every route that changes something security-relevant
//! calls after it succeeded; `GET /api/admin/audit` is how admins read and export it.

use crate::AppState;
use crate::auth::Caller;
use crate::error::Result;
use crate::extract::Query;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kiln_protocol::api::{AuditAction, AuditPage, UserRef};
use serde::Deserialize;

/// Records that `actor` did `action` to `target`. The action already happened, so a failure to
/// record it is logged loudly rather than undoing it.
pub(crate) async fn record(
    state: &AppState,
    actor: Option<UserRef>,
    action: AuditAction,
    target: impl Into<String>,
    detail: serde_json::Value,
) {
    let target = target.into();
    if let Err(e) = state
        .store
        .audit(actor.as_ref(), action, &target, detail)
        .await
    {
        tracing::error!(?action, %target, error = %e, "cannot record an audited action");
    }
}

/// What `caller` did, as [`record`].
pub(crate) async fn by(
    state: &AppState,
    caller: &Caller,
    action: AuditAction,
    target: impl Into<String>,
    detail: serde_json::Value,
) {
    record(state, Some(caller.user_ref()), action, target, detail).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Entries with `seq` greater than this; 0 for all.
    #[serde(default)]
    after: i64,
    /// At most this many: default 500 (JSON) or 10,000 (JSON lines), at most 100,000.
    #[param(minimum = 1, maximum = 100000)]
    limit: Option<usize>,
    /// `jsonl`: one entry per line (`application/x-ndjson`), to export; default a JSON page.
    format: Option<String>,
}

#[utoipa::path(get, path = "/api/admin/audit", tag = "users", params(AuditQuery),
    responses((status = 200, body = AuditPage, description = "A page, oldest first; with \
        `format=jsonl`, the entries as JSON lines"),
        (status = 403, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Response> {
    caller.require_admin()?;
    let lines = match query.format.as_deref() {
        None | Some("json") => false,
        Some("jsonl") => true,
        Some(other) => {
            return Err(crate::error::Error::BadRequest(format!(
                "format must be json or jsonl, not {other:?}"
            )));
        }
    };
    let limit = query
        .limit
        .unwrap_or(if lines { 10_000 } else { 500 })
        .clamp(1, 100_000);
    let page = state.store.audit_page(query.after, limit).await?;
    if !lines {
        return Ok(axum::Json(page).into_response());
    }
    let mut body = String::new();
    for entry in &page.entries {
        body.push_str(&serde_json::to_string(entry).map_err(encoding_failed)?);
        body.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

fn encoding_failed(e: serde_json::Error) -> crate::error::Error {
    crate::error::Error::Internal(format!("encoding the audit log: {e}"))
}
