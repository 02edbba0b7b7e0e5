//! Acting as the GitHub App: a JWT signed with the app's key (RS256, `iss` = the app id, at
//! most ten minutes) buys an installation token, which is cached per installation until
//! [`REFRESH_BEFORE_MS`] before it expires. The repository → installation lookup is cached too.

use super::{FORGE, GitHub};
use crate::error::{ForgeError, Result};
use crate::http;
use crate::types::{RepoAccessToken, RepoRef};
use kiln_core::{Secret, now_ms};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A cached installation token is replaced this long before it expires, so a fetch or push that
/// starts with it never meets an expired one mid-way.
pub(crate) const REFRESH_BEFORE_MS: i64 = 5 * 60 * 1000;
/// GitHub refuses app JWTs that live longer than ten minutes; a minute of margin each side for
/// clock drift.
const JWT_LIFETIME_S: i64 = 9 * 60;

pub(crate) struct App {
    id: String,
    key: jsonwebtoken::EncodingKey,
    /// Installation ids by `owner/name`, and tokens by installation id. The lock is held across
    /// the token request on purpose: two fetches that need a token at once make one request
    /// (the request itself is bounded by the client's timeout).
    cache: tokio::sync::Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    installations: HashMap<String, u64>,
    tokens: HashMap<u64, (Secret<String>, i64)>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iat: i64,
    exp: i64,
    iss: &'a str,
}

impl App {
    pub(crate) fn new(id: String, pem: &Secret<Vec<u8>>) -> Result<App> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.expose())
            .map_err(|e| ForgeError::AppKey(format!("not an RSA private key in PEM form ({e})")))?;
        Ok(App {
            id,
            key,
            cache: tokio::sync::Mutex::new(Cache::default()),
        })
    }

    fn jwt(&self) -> Result<Secret<String>> {
        let now = now_ms() / 1000;
        let claims = Claims {
            iat: now - 60,
            exp: now + JWT_LIFETIME_S,
            iss: &self.id,
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &self.key,
        )
        .map(Secret::new)
        .map_err(|e| ForgeError::AppKey(format!("signing failed ({e})")))
    }

    pub(crate) async fn installation_token(
        &self,
        gh: &GitHub,
        repo: &RepoRef,
    ) -> Result<RepoAccessToken> {
        let mut cache = self.cache.lock().await;
        let installation = match cache.installations.get(&repo.full_name()) {
            Some(id) => *id,
            None => {
                let id = self.installation_of(gh, repo).await?;
                cache.installations.insert(repo.full_name(), id);
                id
            }
        };
        if let Some((token, expires_at_ms)) = cache.tokens.get(&installation)
            && *expires_at_ms - REFRESH_BEFORE_MS > now_ms()
        {
            return Ok(RepoAccessToken {
                token: token.clone(),
                expires_at_ms: *expires_at_ms,
                username: "x-access-token",
            });
        }
        let (token, expires_at_ms) = match self.new_token(gh, installation).await {
            Ok(t) => t,
            Err(e) => {
                // The app may have been uninstalled or moved: look the repository up again
                // next time.
                if matches!(e, ForgeError::NotFound { .. }) {
                    cache.installations.remove(&repo.full_name());
                }
                return Err(e);
            }
        };
        tracing::debug!(installation, repo = %repo, "new GitHub installation token");
        cache
            .tokens
            .insert(installation, (token.clone(), expires_at_ms));
        Ok(RepoAccessToken {
            token,
            expires_at_ms,
            username: "x-access-token",
        })
    }

    /// Forgets the installation lookups of `repos` and the tokens of their installations.
    pub(crate) async fn forget(&self, repos: &[RepoRef]) {
        let mut cache = self.cache.lock().await;
        for repo in repos {
            if let Some(installation) = cache.installations.remove(&repo.full_name()) {
                cache.tokens.remove(&installation);
            }
        }
    }

    async fn installation_of(&self, gh: &GitHub, repo: &RepoRef) -> Result<u64> {
        #[derive(Deserialize)]
        struct Installation {
            id: u64,
        }
        let what = format!("the app's installation on {repo}");
        let path = format!("/repos/{}/{}/installation", repo.owner, repo.name);
        let response =
            http::send(FORGE, &what, gh.request(Method::GET, &path, &self.jwt()?)?).await?;
        Ok(GitHub::json::<Installation>(&what, response).await?.id)
    }

    async fn new_token(&self, gh: &GitHub, installation: u64) -> Result<(Secret<String>, i64)> {
        #[derive(Deserialize)]
        struct AccessToken {
            token: String,
            expires_at: String,
        }
        let what = format!("an installation token (installation {installation})");
        let path = format!("/app/installations/{installation}/access_tokens");
        let response =
            http::send(FORGE, &what, gh.request(Method::POST, &path, &self.jwt()?)?).await?;
        let body: AccessToken = GitHub::json(&what, response).await?;
        let expires_at_ms = crate::time::parse_rfc3339_utc(&body.expires_at).ok_or_else(|| {
            ForgeError::Protocol {
                forge: FORGE,
                what: what.clone(),
                message: "expires_at is not a UTC timestamp".into(),
            }
        })?;
        Ok((Secret::new(body.token), expires_at_ms))
    }
}
