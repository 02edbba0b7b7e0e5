//! GitHub in the API: signing in with GitHub (or linking a signed-in kiln user's account), and
//! a session's pull request opened in the name of the person who asks.
//!
//! The sign-in's `state` is bound twice: kiln remembers it once for ten minutes (the store),
//! and the browser that started the sign-in holds it in a cookie of its own. A callback whose
//! `state` is not the one of this browser's cookie is refused, so a sign-in started elsewhere
//! cannot be completed in a victim's browser (login CSRF).

use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::extract::{OptionalJson, Path, Query};
use crate::login::{base_url, cookie_header, refusal};
use crate::routes::audit;
use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Redirect, Response};
use kiln_core::SessionId;
use kiln_protocol::api::{
    ApiError, AuditAction, NoForgeAccount, OpenPullRequest, PullRequest, UserRef,
};
use serde::Deserialize;

/// The cookie holding the `state` of this browser's sign-in in progress.
const STATE_COOKIE: &str = "kiln_github_state";
const CALLBACK: &str = "/api/auth/github/callback";

fn state_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(STATE_COOKIE)
                .and_then(|v| v.strip_prefix('='))
                .map(str::to_string)
        })
}

fn set_state_cookie(state: &AppState, value: &str, max_age: u64) -> Result<HeaderValue> {
    let secure = state
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    HeaderValue::from_str(&format!(
        "{STATE_COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/api/auth/github; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    ))
    .map_err(|_| Error::Internal("a sign-in cookie".into()))
}

/// Starts signing in with GitHub: redirects to GitHub's authorization page. A browser already
/// signed in to kiln links its user's GitHub account instead.
#[utoipa::path(get, path = "/api/auth/github/start", tag = "users", security(()),
    responses((status = 302, description = "To GitHub's authorization page"),
        (status = 500, body = ApiError, description = "GitHub is not configured")))]
pub(crate) async fn start(State(state): State<AppState>, mut parts: Parts) -> Result<Response> {
    let linking = Caller::from_request_parts(&mut parts, &state).await.ok();
    // Linking an account changes the user: a read-only token may not start it.
    if linking.as_ref().is_some_and(Caller::read_only) {
        return Err(crate::auth::read_only_refusal());
    }
    let redirect_uri = format!("{}{CALLBACK}", base_url(&state, &parts.headers));
    let url = state
        .engine
        .github_sign_in_url(linking.as_ref().map(|c| &c.0.id), &redirect_uri)
        .await?;
    // The state is the URL's `state` parameter; the browser keeps it too.
    let st = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("state="))
        .unwrap_or_default()
        .to_string();
    let mut response = Redirect::to(&url).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::SET_COOKIE,
        set_state_cookie(&state, &st, kiln_store::OAUTH_STATE_TTL.as_secs())?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub(crate) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// GitHub sends the browser back here. The `state` must be this browser's and one kiln issued,
/// unused and at most ten minutes old; then the code is exchanged, the account linked or its
/// kiln user signed in (a browser session cookie, as a sign-in link gives).
pub(crate) async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let refused = |message: &str| refusal(&headers, message);
    if query.error.is_some() {
        return refused("GitHub sign-in was cancelled or refused; start again to sign in");
    }
    let (Some(code), Some(st)) = (query.code, query.state) else {
        return refused("this is GitHub's way back to kiln: it needs `code` and `state`");
    };
    if state_cookie(&headers).as_deref() != Some(st.as_str()) {
        return refused(
            "this GitHub sign-in was not started in this browser (its state does not match); \
             start again from kiln",
        );
    }
    let redirect_uri = format!("{}{CALLBACK}", base_url(&state, &headers));
    let signed_in = match state.engine.github_sign_in(&code, &st, &redirect_uri).await {
        Ok(s) => s,
        Err(kiln_engine::Error::Invalid(message)) => return refused(&message),
        Err(kiln_engine::Error::Forge(e)) => return refused(&e.to_string()),
        Err(kiln_engine::Error::Store(kiln_store::Error::Conflict(message))) => {
            return refused(&message);
        }
        Err(e) => return Error::from(e).into_response(),
    };
    let actor = state
        .store
        .user(&signed_in.user)
        .await
        .ok()
        .map(|u| UserRef {
            id: u.id,
            name: u.name,
        });
    let action = if signed_in.linked {
        AuditAction::GithubLinked
    } else {
        AuditAction::SignIn
    };
    let detail = serde_json::json!({"method": "github", "login": signed_in.login});
    audit::record(&state, actor, action, signed_in.user.as_str(), detail).await;
    let mut response = Redirect::to("/").into_response();
    let out = response.headers_mut();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    match set_state_cookie(&state, "", 0) {
        Ok(c) => out.append(header::SET_COOKIE, c),
        Err(e) => return e.into_response(),
    };
    if !signed_in.linked {
        // A browser session for the user, made the way a sign-in link makes one.
        let session = match new_browser_session(&state, &signed_in.user).await {
            Ok(s) => s,
            Err(e) => return e.into_response(),
        };
        let max_age = kiln_store::BROWSER_SESSION_TTL.as_secs();
        match cookie_header(&state, session.secret.expose(), max_age) {
            Ok(c) => response.headers_mut().append(header::SET_COOKIE, c),
            Err(e) => return e.into_response(),
        };
    }
    response
}

async fn new_browser_session(
    state: &AppState,
    user: &kiln_core::UserId,
) -> Result<kiln_store::BrowserSession> {
    let code = state.store.create_login_code(user).await?;
    state
        .store
        .redeem_login_code(code.code.expose())
        .await?
        .ok_or_else(|| Error::Internal("a fresh login code did not redeem".into()))
}

/// Unlinks the caller's GitHub account.
#[utoipa::path(delete, path = "/api/me/github", tag = "users",
    responses((status = 204), (status = 404, body = ApiError)))]
pub(crate) async fn unlink(State(state): State<AppState>, caller: Caller) -> Result<StatusCode> {
    if state.engine.unlink_github(&caller.0.id).await? {
        let target = caller.0.id.to_string();
        audit::by(
            &state,
            &caller,
            AuditAction::GithubUnlinked,
            target,
            serde_json::json!({}),
        )
        .await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound("linked GitHub account".into()))
    }
}

/// Opens the session branch's pull request, or updates the one open for it (title and body
/// from the session: its title, the prompts with their authors, a link back), with the
/// caller's own GitHub account. Collaborators and owners may; a caller without a linked
/// account gets a 409 with the compare page, where they can open it by hand.
#[utoipa::path(post, path = "/api/sessions/{id}/pr", tag = "sessions", params(("id" = String, Path)),
    request_body(content = OpenPullRequest, description = "Optional: an empty body opens a ready PR with the session's title"),
    responses((status = 200, body = PullRequest), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = NoForgeAccount),
        (status = 429, body = ApiError, description = "GitHub's rate limit; the message says when to retry"),
        (status = 502, body = ApiError, description = "GitHub refused or failed")))]
pub(crate) async fn open_pr(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<SessionId>,
    OptionalJson(body): OptionalJson<OpenPullRequest>,
) -> Result<Response> {
    let role = caller.role_in(&state, &id).await?;
    if !role.can_prompt() {
        return Err(Error::Forbidden(
            "viewers cannot open the session's pull request".into(),
        ));
    }
    let link = format!("{}/sessions/{id}", base_url(&state, &headers));
    match state
        .engine
        .open_pull_request(&id, &caller.user_ref(), &body, &link)
        .await
    {
        Ok(pr) => Ok(axum::Json(pr).into_response()),
        Err(kiln_engine::Error::NoForgeAccount { forge, compare_url }) => {
            let error = kiln_engine::Error::NoForgeAccount {
                forge,
                compare_url: compare_url.clone(),
            }
            .to_string();
            let body = NoForgeAccount { error, compare_url };
            Ok((StatusCode::CONFLICT, axum::Json(body)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}
