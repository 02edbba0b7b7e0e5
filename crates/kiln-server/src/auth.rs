//! Who is calling. Every route but health, the OpenAPI document and login takes a [`Caller`],
//! so forgetting authentication is a compile error rather than an open endpoint.
//!
//! A credential arrives as `Authorization: Bearer <token>` (CLI, scripts), as `?token=<token>`
//! on WebSocket upgrades only (browsers cannot set headers there), or as the `kiln_session`
//! cookie of a browser session (made by `/login` from a single-use code; see `login.rs`).
//! Credentials are never logged.
//!
//! A cookie is ambient authority: the browser sends it whichever page makes the request, and a
//! page on another port of the same host is "same-site". So a cookie-authenticated WebSocket
//! upgrade or state-changing request must come with an `Origin` that is this server's own.

use crate::AppState;
use crate::error::Error;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use kiln_core::{Role, SessionId};
use kiln_protocol::api::{TokenScope, User, UserRef};

/// The authenticated user of a request, and what its credential may do (a browser session's
/// is always full).
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub User, pub TokenScope);

/// What a read-only token gets for anything but reading.
pub(crate) fn read_only_refusal() -> Error {
    Error::Forbidden(
        "this token is read-only: it can read but not change anything (make a full one with \
         `kiln token create NAME`)"
            .into(),
    )
}

impl Caller {
    /// A read-only token: the request may only read.
    pub(crate) fn read_only(&self) -> bool {
        self.1 == TokenScope::ReadOnly
    }

    pub(crate) fn user_ref(&self) -> UserRef {
        UserRef {
            id: self.0.id.clone(),
            name: self.0.name.clone(),
        }
    }

    pub(crate) fn require_admin(&self) -> Result<(), Error> {
        if self.0.admin {
            Ok(())
        } else {
            Err(Error::Forbidden("only admins may do this".into()))
        }
    }

    /// The caller's role in a session. Strangers get the same 404 as for a session that does
    /// not exist, so ids cannot be probed.
    pub(crate) async fn role_in(
        &self,
        state: &AppState,
        session: &SessionId,
    ) -> Result<Role, Error> {
        let role = state
            .store
            .role_of(session, &self.0.id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("session {session}")))?;
        // Access follows the forge: a session on a repo it hides from the caller is a stranger's.
        if state.engine.forge().is_ok() && !self.0.admin {
            let repo = state.store.session_row(session).await?.repo;
            let repo = state.store.repo(&repo).await?;
            if !crate::routes::access::forge_shows(state, self, &repo).await? {
                return Err(Error::NotFound(format!("session {session}")));
            }
        }
        Ok(role)
    }
}

/// The cookie holding a browser session's secret.
pub(crate) const COOKIE: &str = "kiln_session";

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let caller = match credential(parts).ok_or(Error::Unauthorized)? {
            Credential::Token(token) => state.store.authenticate_scoped(&token).await?,
            Credential::Cookie(secret) => {
                check_origin(parts, state.public_url.as_deref())?;
                let user = state.store.authenticate_browser(&secret).await?;
                user.map(|user| (user, TokenScope::Full))
            }
        };
        let (user, scope) = caller.ok_or(Error::Unauthorized)?;
        // Every route takes a `Caller`: this one check holds a read-only token to reading
        // everywhere. Sockets are GETs; their pumps refuse what acts (warm-ups).
        let reads = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if scope == TokenScope::ReadOnly && !reads {
            return Err(read_only_refusal());
        }
        Ok(Caller(user, scope))
    }
}

/// A credential and where it came from.
enum Credential {
    /// An API token: from the `Authorization` header, or `?token=` on a WebSocket upgrade.
    Token(String),
    /// A browser session's secret, from the cookie.
    Cookie(String),
}

fn credential(parts: &Parts) -> Option<Credential> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        return value
            .strip_prefix("Bearer ")
            .map(|t| Credential::Token(t.trim().to_string()));
    }
    if is_websocket_upgrade(&parts.headers)
        && let Some(query) = parts.uri.query()
    {
        for pair in query.split('&') {
            if let Some(token) = pair.strip_prefix("token=") {
                return Some(Credential::Token(token.to_string()));
            }
        }
    }
    session_cookie(&parts.headers).map(Credential::Cookie)
}

/// The browser session secret in the request's cookies, if any.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for cookie in value.split(';') {
            if let Some(secret) = cookie.trim().strip_prefix(COOKIE)
                && let Some(secret) = secret.strip_prefix('=')
            {
                return Some(secret.to_string());
            }
        }
    }
    None
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Refuses a cookie-authenticated WebSocket upgrade or state-changing request whose `Origin`
/// is not this server: its `Host`, or the configured public URL (behind a reverse proxy that
/// rewrites `Host`).
pub(crate) fn check_origin(parts: &Parts, public_url: Option<&str>) -> Result<(), Error> {
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if safe && !is_websocket_upgrade(&parts.headers) {
        return Ok(());
    }
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    if origin.is_some_and(|origin| same_origin(origin, host, public_url)) {
        return Ok(());
    }
    Err(Error::Forbidden(format!(
        "a request signed in with the browser cookie must come from this server's own pages \
         (Origin {}); other clients send `Authorization: Bearer <token>`; behind a reverse \
         proxy, set public_url (KILN_PUBLIC_URL) to the address browsers use",
        origin.unwrap_or("missing")
    )))
}

/// Whether `origin` (`scheme://host[:port]`) is the public URL's origin or names `host`.
fn same_origin(origin: &str, host: Option<&str>, public_url: Option<&str>) -> bool {
    let origin = origin.trim_end_matches('/');
    if let Some(public) = public_url.map(origin_of)
        && origin.eq_ignore_ascii_case(public)
    {
        return true;
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

/// `scheme://host[:port]` of a URL.
pub(crate) fn origin_of(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    &url[..end]
}

#[cfg(test)]
mod tests {
    use super::{origin_of, same_origin};

    #[test]
    fn origins() {
        assert!(same_origin(
            "http://127.0.0.1:7800",
            Some("127.0.0.1:7800"),
            None
        ));
        assert!(!same_origin(
            "http://127.0.0.1:7801",
            Some("127.0.0.1:7800"),
            None
        ));
        assert!(!same_origin("null", Some("127.0.0.1:7800"), None));
        assert!(!same_origin("http://evil", None, None));
        let public = "https://kiln.example.com/base";
        assert_eq!(origin_of(public), "https://kiln.example.com");
        let public = Some(public);
        assert!(same_origin(
            "https://kiln.example.com",
            Some("127.0.0.1:7800"),
            public
        ));
        assert!(!same_origin(
            "http://kiln.example.com:81",
            Some("x"),
            public
        ));
    }
}
