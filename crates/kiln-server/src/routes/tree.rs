//! `GET /api/sessions/{id}/tree`: a session among the sub-sessions that spawned each other —
//! the ids above it and the sessions below it, each with its state, title, repo and PR.
//!
//! Authorization: the caller's role in the session itself; below it, only the sessions the
//! caller is in (children inherit their parent's people, so normally all), a hidden session's
//! own descendants hidden with it.

use crate::AppState;
use crate::auth::Caller;
use crate::error::Result;
use crate::extract::Path;
use axum::Json;
use axum::extract::State;
use kiln_core::SessionId;
use kiln_protocol::api::SessionTree;
use std::collections::HashSet;

#[utoipa::path(get, path = "/api/sessions/{id}/tree", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = SessionTree), (status = 404, body = kiln_protocol::api::ApiError)))]
pub(crate) async fn session_tree(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SessionId>,
) -> Result<Json<SessionTree>> {
    caller.role_in(&state, &id).await?;
    let mut tree = state.engine.session_tree(&id).await?;
    if !caller.0.admin {
        let mut hidden: HashSet<SessionId> = HashSet::new();
        let mut kept = Vec::with_capacity(tree.nodes.len());
        for node in tree.nodes {
            let parent_hidden = node.parent.as_ref().is_some_and(|p| hidden.contains(p));
            if node.id != id
                && (parent_hidden || state.store.role_of(&node.id, &caller.0.id).await?.is_none())
            {
                hidden.insert(node.id);
                continue;
            }
            kept.push(node);
        }
        tree.nodes = kept;
    }
    Ok(Json(tree))
}
