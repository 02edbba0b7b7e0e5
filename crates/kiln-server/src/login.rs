//! Signing a browser in and out. A long-lived API token never travels in a URL: an
//! authenticated client mints a single-use login code (`POST /api/login-links`, `kiln
//! login-link`, or `kiln up` on a terminal), `GET /login?code=…` exchanges it once for a
//! browser session whose secret is set as an HttpOnly cookie, and `POST /api/logout` ends it.
//!
//! Because a code is made by the person who will use it and works once, a page that links a
//! victim to `/login` cannot sign them in as someone else for long (login CSRF needs a code the
//! attacker minted, which dies on first use and after ten minutes).

use crate::AppState;
use crate::auth::{COOKIE, Caller, origin_of, session_cookie};
use crate::error::{Error, Result};
use crate::extract::Query;
use crate::routes::audit;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use kiln_protocol::api::{ApiError, AuditAction, LoginLink, SignInMethods, UserRef};
use serde::Deserialize;

/// The address browsers use for this server: the configured public URL, else the scheme-less
/// `Host` the request came to (plain HTTP; behind TLS, configure `public_url`).
pub(crate) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(public) = &state.public_url {
        return public.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// How a browser can sign in here: what the sign-in page offers. Open to anyone (the page is
/// shown before signing in); it says only whether GitHub is configured.
#[utoipa::path(get, path = "/api/auth/methods", tag = "users", security(()),
    responses((status = 200, body = SignInMethods)))]
pub(crate) async fn sign_in_methods(State(state): State<AppState>) -> axum::Json<SignInMethods> {
    axum::Json(SignInMethods {
        github: state.engine.forge().is_ok(),
    })
}

/// Mints a sign-in link for the caller, valid once, for ten minutes.
#[utoipa::path(post, path = "/api/login-links", tag = "users",
    responses((status = 201, body = LoginLink), (status = 401, body = ApiError),
        (status = 403, body = ApiError)))]
pub(crate) async fn create_login_link(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<(StatusCode, axum::Json<LoginLink>)> {
    let code = state.store.create_login_code(&caller.0.id).await?;
    let detail = serde_json::json!({"expires_at_ms": code.expires_at_ms});
    let target = caller.0.id.to_string();
    audit::by(
        &state,
        &caller,
        AuditAction::LoginLinkCreated,
        target,
        detail,
    )
    .await;
    let url = format!(
        "{}/login?code={}",
        base_url(&state, &headers),
        code.code.expose()
    );
    Ok((
        StatusCode::CREATED,
        axum::Json(LoginLink {
            url,
            expires_at_ms: code.expires_at_ms,
        }),
    ))
}

/// Ends the browser session of the request's cookie and clears the cookie. A caller with a
/// bearer token has no browser session; the call changes nothing for them.
#[utoipa::path(post, path = "/api/logout", tag = "users",
    responses((status = 204), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response> {
    if let Some(secret) = session_cookie(&headers) {
        state.store.end_browser_session(&secret).await?;
        let target = caller.0.id.to_string();
        audit::by(
            &state,
            &caller,
            AuditAction::SignOut,
            target,
            serde_json::json!({}),
        )
        .await;
    }
    let cookie = cookie_header(&state, "", 0)?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginQuery {
    code: Option<String>,
    token: Option<String>,
}

/// The sign-in link: exchanges the code for a browser session cookie and goes home, so the
/// code leaves the address bar at once (and is useless in the history: it worked once).
pub(crate) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let refused = |message: &str| refusal(&headers, message);
    let Some(code) = query.code else {
        return refused(if query.token.is_some() {
            "signing in with ?token= is no longer possible: a token must not travel in a URL. \
             Run `kiln login-link` and open the link it prints"
        } else {
            "open a sign-in link: run `kiln login-link` and open the link it prints"
        });
    };
    let session = match state.store.redeem_login_code(&code).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            return refused(
                "this sign-in link was already used, has expired (links last 10 minutes) or \
                 is not valid; run `kiln login-link` for a new one",
            );
        }
        Err(e) => return Error::from(e).into_response(),
    };
    let max_age = kiln_store::BROWSER_SESSION_TTL.as_secs();
    let cookie = match cookie_header(&state, session.secret.expose(), max_age) {
        Ok(cookie) => cookie,
        Err(e) => return e.into_response(),
    };
    tracing::info!(user = %session.user.name, "a browser signed in");
    let user = UserRef {
        id: session.user.id.clone(),
        name: session.user.name.clone(),
    };
    let detail = serde_json::json!({"method": "login_link"});
    crate::routes::audit::record(
        &state,
        Some(user),
        AuditAction::SignIn,
        session.user.id.as_str(),
        detail,
    )
    .await;
    let mut response = Redirect::to("/").into_response();
    let headers = response.headers_mut();
    headers.insert(header::SET_COOKIE, cookie);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The session cookie: HttpOnly (no script reads it), SameSite=Lax (other sites' subrequests
/// do not carry it; the Origin check covers the rest), `Secure` when served over HTTPS.
pub(crate) fn cookie_header(state: &AppState, secret: &str, max_age: u64) -> Result<HeaderValue> {
    let secure = state
        .public_url
        .as_deref()
        .is_some_and(|url| origin_of(url).starts_with("https://"));
    let cookie = format!(
        "{COOKIE}={secret}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&cookie).map_err(|_| Error::Internal("a session cookie".into()))
}

/// A refused sign-in: a page for a browser, JSON for anything else.
pub(crate) fn refusal(headers: &HeaderMap, message: &str) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if !wants_html {
        let body = axum::Json(ApiError {
            error: message.to_string(),
        });
        return (StatusCode::BAD_REQUEST, body).into_response();
    }
    let page = format!(
        "<!doctype html><title>kiln: sign-in failed</title><h1>Sign-in failed</h1><p>{}</p>",
        escape_html(message)
    );
    (StatusCode::BAD_REQUEST, Html(page)).into_response()
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
