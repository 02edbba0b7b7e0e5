//! Signing in with GitHub: a GitHub App's user authorization, the OAuth web flow. kiln keeps
//! `state` (one use, short-lived) and the tokens; this module only speaks to GitHub. Errors
//! come back with status 200 and an `error` field, as GitHub documents.

use super::{FORGE, GitHub};
use crate::error::{ForgeError, Result};
use crate::http;
use crate::types::UserTokens;
use kiln_core::{Secret, now_ms};
use serde::Deserialize;

pub(crate) struct OAuthApp {
    pub(crate) client_id: String,
    pub(crate) client_secret: Secret<String>,
}

impl std::fmt::Debug for OAuthApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthApp")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn configured(gh: &GitHub) -> Result<&OAuthApp> {
    gh.oauth.as_ref().ok_or(ForgeError::NotConfigured {
        forge: FORGE,
        what: "sign-in",
        hint: "[github] client_id and client_secret (or KILN_GITHUB_CLIENT_ID, KILN_GITHUB_CLIENT_SECRET)",
    })
}

pub(crate) fn authorize_url(gh: &GitHub, state: &str, redirect_uri: &str) -> Result<String> {
    let app = configured(gh)?;
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    Ok(format!(
        "{}/login/oauth/authorize?client_id={}&redirect_uri={}&state={}",
        gh.web,
        enc(&app.client_id),
        enc(redirect_uri),
        enc(state)
    ))
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<i64>,
    refresh_token_expires_in: Option<i64>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `POST /login/oauth/access_token` with the client's credentials and `params` (a code, or a
/// refresh token).
pub(crate) async fn exchange(gh: &GitHub, params: &[(&str, &str)]) -> Result<UserTokens> {
    let app = configured(gh)?;
    let mut form: Vec<(&str, &str)> = vec![
        ("client_id", app.client_id.as_str()),
        ("client_secret", app.client_secret.expose().as_str()),
    ];
    form.extend_from_slice(params);
    let request = gh
        .http
        .post(format!("{}/login/oauth/access_token", gh.web))
        .header("accept", "application/json")
        .form(&form);
    let response = http::send(FORGE, "the sign-in", request).await?;
    let body: TokenResponse = GitHub::json("the sign-in", response).await?;
    if let Some(code) = body.error {
        let message = match code.as_str() {
            "bad_verification_code" => "the sign-in code is wrong or expired; sign in again".into(),
            "bad_refresh_token" => "the GitHub session expired; sign in with GitHub again".into(),
            "incorrect_client_credentials" => {
                "GitHub refused kiln's client id or secret; check [github] client_id and client_secret".into()
            }
            "redirect_uri_mismatch" => {
                "the callback URL is not the one registered for the GitHub App".into()
            }
            _ => body
                .error_description
                .unwrap_or_else(|| code.clone())
                .chars()
                .take(200)
                .collect(),
        };
        return Err(ForgeError::SignIn {
            forge: FORGE,
            code,
            message,
        });
    }
    let access = body.access_token.ok_or_else(|| ForgeError::Protocol {
        forge: FORGE,
        what: "the sign-in".into(),
        message: "no access_token in the answer".into(),
    })?;
    let now = now_ms();
    Ok(UserTokens {
        access: Secret::new(access),
        refresh: body.refresh_token.map(Secret::new),
        expires_at_ms: body.expires_in.map(|s| now + s * 1000),
        refresh_expires_at_ms: body.refresh_token_expires_in.map(|s| now + s * 1000),
    })
}
