//! `GET /api/stats`: whether the agents pay off (kiln-stats over the sessions the caller may
//! see).

use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::extract::{Json, Query};
use axum::extract::State;
use kiln_protocol::api::StatsReport;
use kiln_stats::{Range, StatsQuery};
use serde::Deserialize;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatsParams {
    /// First day, `YYYY-MM-DD` (UTC), inclusive; default 29 days before `to`.
    pub(crate) from: Option<String>,
    /// Last day, inclusive; default today. At most 366 days in all.
    pub(crate) to: Option<String>,
    /// Without `from`: this many days up to `to`.
    #[param(minimum = 1, maximum = 366)]
    pub(crate) days: Option<u32>,
    /// Only this repo's sessions.
    pub(crate) repo: Option<String>,
    /// Only sessions this user (name or id) created.
    pub(crate) user: Option<String>,
}

/// Sessions, pull requests, speed and spend, in total and per day, repo and user. Admins see
/// every session; others the sessions they take part in. See docs/stats.md.
#[utoipa::path(get, path = "/api/stats", tag = "sessions", params(StatsParams),
    responses((status = 200, body = StatsReport), (status = 400, body = kiln_protocol::api::ApiError, description = "A bad date or range")))]
pub(crate) async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<StatsParams>,
) -> Result<Json<StatsReport>> {
    let now = kiln_core::now_ms();
    let range = Range::parse(
        params.from.as_deref(),
        params.to.as_deref(),
        params.days,
        now,
    )
    .map_err(Error::BadRequest)?;
    let ids = if caller.0.admin {
        let ids = state.store.all_session_ids().await?;
        state.stats.retain(&ids).await;
        ids
    } else {
        state
            .store
            .sessions_for(&caller.0.id)
            .await?
            .into_iter()
            .map(|(row, _)| row.id)
            .collect()
    };
    let summaries = state.stats.summaries(&state.store, &ids).await?;
    let query = StatsQuery {
        repo: params.repo,
        user: params.user,
    };
    Ok(Json(kiln_stats::report(
        summaries.iter().map(|s| &**s),
        range,
        &query,
        now,
    )))
}
