//! Who is calling. Every route but health, the OpenAPI document and login takes a [`Caller`],
//! so forgetting authentication is a compile error rather than an open endpoint.
//!
//! A token arrives as `Authorization: Bearer <token>` (CLI, scripts), as the `kiln_token` cookie
//! set by `/login` (browsers), or as `?token=` on WebSocket upgrades (browsers cannot set headers
//! there). Tokens are never logged.

use crate::AppState;
use crate::error::Error;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use kiln_core::{Role, SessionId};
use kiln_protocol::api::{User, UserRef};

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub User);

impl Caller {
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
        state
            .store
            .role_of(session, &self.0.id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("session {session}")))
    }
}

pub(crate) const COOKIE: &str = "kiln_token";

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let token = token_from(parts).ok_or(Error::Unauthorized)?;
        match state.store.authenticate(&token).await? {
            Some(user) => Ok(Caller(user)),
            None => Err(Error::Unauthorized),
        }
    }
}

fn token_from(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    if let Some(query) = parts.uri.query() {
        for pair in query.split('&') {
            if let Some(token) = pair.strip_prefix("token=") {
                return Some(token.to_string());
            }
        }
    }
    let cookies = parts.headers.get_all(header::COOKIE);
    for value in cookies {
        let Ok(value) = value.to_str() else { continue };
        for cookie in value.split(';') {
            if let Some(token) = cookie.trim().strip_prefix("kiln_token=") {
                return Some(token.to_string());
            }
        }
    }
    None
}
