//! `GET /api/repos/{name}/mcp`: the repo's MCP servers, whether kiln can reach them and the tools
//! they offer (anyone who can see the repo). Remote servers are connected to from here; their
//! secrets are used, never shown.

use crate::AppState;
use crate::auth::Caller;
use crate::error::Result;
use crate::extract::{Json, Path};
use crate::routes::access::require_repo;
use axum::extract::State;
use kiln_protocol::api::{ApiError, McpServer};

/// Each MCP server of the repo's environment definition: kind, state, tools (and whether the
/// allowlist lets the agent use each).
#[utoipa::path(get, path = "/api/repos/{name}/mcp", tag = "repos",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<McpServer>), (status = 400, body = ApiError),
        (status = 404, body = ApiError)))]
pub(crate) async fn list_mcp(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<McpServer>>> {
    require_repo(&state, &caller, &name).await?;
    Ok(Json(state.engine.repo_mcp(&name).await?))
}
