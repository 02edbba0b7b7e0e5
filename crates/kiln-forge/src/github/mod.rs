//! GitHub and GitHub Enterprise Server through the REST API (version 2022-11-28): the API base
//! is configuration (`https://api.github.com`, or `https://HOST/api/v3` for GHES), and the web
//! base (sign-in, compare pages) is derived from it.

mod app;
mod oauth;
mod pulls;
mod webhook;

use crate::Forge;
use crate::error::{ForgeError, Result};
use crate::events::{Delivery, Thread, Triggers, WebhookError};
use crate::http;
use crate::types::{
    ChangeRequest, ChangeState, ForgeUser, OpenedChange, Permission, RepoAccessToken, RepoRef,
    UserTokens,
};
use async_trait::async_trait;
use kiln_core::Secret;
use reqwest::Method;
use serde::Deserialize;

const FORGE: &str = "GitHub";
pub(crate) const DEFAULT_API_URL: &str = "https://api.github.com";

/// What kiln needs to act as a GitHub App. Everything but the API URL is optional: without
/// `app_id`/`private_key` there are no installation tokens, without `client_id`/`client_secret`
/// no sign-in; each call that needs a missing piece says which.
#[derive(Clone, Default)]
pub struct GitHubConfig {
    /// `https://api.github.com` or `https://HOST/api/v3`; empty means the former.
    pub api_url: String,
    pub app_id: Option<String>,
    /// The app's private key, PEM.
    pub private_key_pem: Option<Secret<Vec<u8>>>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret<String>>,
    /// What GitHub signs webhook deliveries with (`X-Hub-Signature-256`), for the webhook
    /// endpoint.
    pub webhook_secret: Option<Secret<String>>,
    /// The label and the `@mention` that ask kiln for work (both `kiln` by default).
    pub triggers: Triggers,
}

impl std::fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubConfig")
            .field("api_url", &self.api_url)
            .field("app_id", &self.app_id)
            .field(
                "private_key_pem",
                &self.private_key_pem.as_ref().map(|_| "****"),
            )
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("webhook_secret", &self.webhook_secret)
            .field("triggers", &self.triggers)
            .finish()
    }
}

/// The web base for an API base: github.com for api.github.com, the host for GHES
/// (`…/api/v3`), and the API base itself otherwise (a test server answering both).
pub(crate) fn web_url_for(api_url: &str) -> String {
    let api = api_url.trim_end_matches('/');
    if api == DEFAULT_API_URL {
        "https://github.com".to_string()
    } else if let Some(host) = api.strip_suffix("/api/v3") {
        host.to_string()
    } else {
        api.to_string()
    }
}

/// A GitHub forge: cheap to share (`Arc`), caches installation tokens.
#[derive(Debug)]
pub struct GitHub {
    api: String,
    web: String,
    http: reqwest::Client,
    app: Option<app::App>,
    oauth: Option<oauth::OAuthApp>,
    webhook_secret: Option<Secret<String>>,
    triggers: Triggers,
}

impl GitHub {
    pub fn new(config: GitHubConfig) -> Result<GitHub> {
        let api = if config.api_url.trim().is_empty() {
            DEFAULT_API_URL.to_string()
        } else {
            config.api_url.trim().trim_end_matches('/').to_string()
        };
        if !(api.starts_with("https://") || api.starts_with("http://")) {
            return Err(ForgeError::Protocol {
                forge: FORGE,
                what: "the configuration".into(),
                message: format!("api_url `{api}` is not an http(s) URL"),
            });
        }
        let web = web_url_for(&api);
        let app = match (config.app_id.clone(), config.private_key_pem.clone()) {
            (Some(id), Some(pem)) => Some(app::App::new(id, &pem)?),
            _ => None,
        };
        let oauth = match (config.client_id.clone(), config.client_secret.clone()) {
            (Some(client_id), Some(client_secret)) => Some(oauth::OAuthApp {
                client_id,
                client_secret,
            }),
            _ => None,
        };
        Ok(GitHub {
            http: http::client(&api)?,
            api,
            web,
            app,
            oauth,
            webhook_secret: config.webhook_secret,
            triggers: config.triggers,
        })
    }

    pub fn api_url(&self) -> &str {
        &self.api
    }

    pub fn web_url(&self) -> &str {
        &self.web
    }

    /// The host git URLs use (`github.com`, the GHES host, `127.0.0.1:PORT` in tests).
    pub fn git_host(&self) -> &str {
        self.web
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(&self.web)
    }

    pub fn has_app(&self) -> bool {
        self.app.is_some()
    }

    pub fn has_sign_in(&self) -> bool {
        self.oauth.is_some()
    }

    /// A request to the REST API with the headers GitHub's documentation asks for.
    fn request(
        &self,
        method: Method,
        path: &str,
        token: &Secret<String>,
    ) -> Result<reqwest::RequestBuilder> {
        Ok(self
            .http
            .request(method, format!("{}{path}", self.api))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header("authorization", http::bearer(token)?))
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        what: &str,
        response: reqwest::Response,
    ) -> Result<T> {
        response
            .json::<T>()
            .await
            .map_err(|e| ForgeError::Protocol {
                forge: FORGE,
                what: what.to_string(),
                message: format!("unreadable body: {e}"),
            })
    }
}

/// What a branch name may hold that a URL path may not (branch names are checked refnames, so
/// this is little; `/` stays, as GitHub's own compare links keep it).
const BRANCH_IN_PATH: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'#')
    .add(b'?')
    .add(b'%');

fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, BRANCH_IN_PATH).to_string()
}

#[async_trait]
impl Forge for GitHub {
    fn kind(&self) -> &'static str {
        "github"
    }

    fn name(&self) -> &'static str {
        FORGE
    }

    fn compare_url(&self, repo: &RepoRef, base: &str, head: &str) -> String {
        format!(
            "{}/{}/{}/compare/{}...{}?expand=1",
            self.web,
            repo.owner,
            repo.name,
            path_segment(base),
            path_segment(head)
        )
    }

    fn repo_of_url(&self, url: &str) -> Option<RepoRef> {
        RepoRef::from_url(url, self.git_host())
    }

    fn clone_url(&self, repo: &RepoRef) -> String {
        format!("{}/{}/{}.git", self.web, repo.owner, repo.name)
    }

    async fn open_or_update(
        &self,
        user_token: &Secret<String>,
        repo: &RepoRef,
        change: &ChangeRequest,
    ) -> Result<OpenedChange> {
        pulls::open_or_update(self, user_token, repo, change).await
    }

    async fn change_request(
        &self,
        token: &Secret<String>,
        repo: &RepoRef,
        number: u64,
    ) -> Result<ChangeState> {
        pulls::get(self, token, repo, number).await
    }

    async fn installation_token(&self, repo: &RepoRef) -> Result<RepoAccessToken> {
        let app = self.app.as_ref().ok_or(ForgeError::NotConfigured {
            forge: FORGE,
            what: "repository access",
            hint: "[github] app_id and private_key (or KILN_GITHUB_APP_ID, KILN_GITHUB_PRIVATE_KEY)",
        })?;
        app.installation_token(self, repo).await
    }

    async fn permission(&self, user_token: &Secret<String>, repo: &RepoRef) -> Result<Permission> {
        #[derive(Deserialize)]
        struct Repo {
            #[serde(default)]
            permissions: Option<Permissions>,
        }
        #[derive(Deserialize)]
        struct Permissions {
            #[serde(default)]
            admin: bool,
            #[serde(default)]
            maintain: bool,
            #[serde(default)]
            push: bool,
            #[serde(default)]
            pull: bool,
        }
        let what = format!("repository {repo}");
        let path = format!("/repos/{}/{}", repo.owner, repo.name);
        let response =
            match http::send(FORGE, &what, self.request(Method::GET, &path, user_token)?).await {
                Ok(r) => r,
                // GitHub hides a private repository from those who may not see it.
                Err(ForgeError::NotFound { .. }) => return Ok(Permission::default()),
                Err(e) => return Err(e),
            };
        let repo: Repo = Self::json(&what, response).await?;
        let p = repo.permissions.unwrap_or(Permissions {
            admin: false,
            maintain: false,
            push: false,
            pull: true,
        });
        let write = p.admin || p.maintain || p.push;
        Ok(Permission {
            read: write || p.pull,
            write,
        })
    }

    async fn forget_installations(&self, repos: &[RepoRef]) {
        if let Some(app) = &self.app {
            app.forget(repos).await;
        }
    }

    fn triggers(&self) -> &Triggers {
        &self.triggers
    }

    fn read_delivery(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> std::result::Result<Delivery, WebhookError> {
        let Some(secret) = &self.webhook_secret else {
            return Err(WebhookError::Unauthenticated(
                "this server has no GitHub webhook secret to check deliveries with: an admin \
                 sets [github] webhook_secret (or KILN_GITHUB_WEBHOOK_SECRET)"
                    .into(),
            ));
        };
        webhook::verify(
            secret.expose().as_bytes(),
            body,
            header("x-hub-signature-256").as_deref(),
        )?;
        webhook::read(header, body)
    }

    async fn reply(&self, repo: &RepoRef, thread: &Thread, body: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct Created {
            html_url: String,
        }
        let token = self.installation_token(repo).await?.token;
        let (what, path) = match thread {
            Thread::ReviewComment {
                change, comment_id, ..
            } => (
                format!("a reply on pull request #{} of {repo}", change.number),
                format!(
                    "/repos/{}/{}/pulls/{}/comments/{comment_id}/replies",
                    repo.owner, repo.name, change.number
                ),
            ),
            other => (
                format!("a comment on #{} of {repo}", other.number()),
                format!(
                    "/repos/{}/{}/issues/{}/comments",
                    repo.owner,
                    repo.name,
                    other.number()
                ),
            ),
        };
        let request = self
            .request(Method::POST, &path, &token)?
            .json(&serde_json::json!({ "body": body }));
        let response = http::send(FORGE, &what, request).await?;
        Ok(Self::json::<Created>(&what, response).await?.html_url)
    }

    fn authorize_url(&self, state: &str, redirect_uri: &str) -> Result<String> {
        oauth::authorize_url(self, state, redirect_uri)
    }

    async fn exchange_code(&self, code: &str, redirect_uri: &str) -> Result<UserTokens> {
        oauth::exchange(self, &[("code", code), ("redirect_uri", redirect_uri)]).await
    }

    async fn refresh(&self, refresh_token: &Secret<String>) -> Result<UserTokens> {
        oauth::exchange(
            self,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose()),
            ],
        )
        .await
    }

    async fn current_user(&self, user_token: &Secret<String>) -> Result<ForgeUser> {
        let response = http::send(
            FORGE,
            "the signed-in user",
            self.request(Method::GET, "/user", user_token)?,
        )
        .await?;
        Self::json("the signed-in user", response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_bases_follow_the_api_base() {
        assert_eq!(web_url_for("https://api.github.com"), "https://github.com");
        assert_eq!(
            web_url_for("https://ghe.example/api/v3/"),
            "https://ghe.example"
        );
        assert_eq!(web_url_for("http://127.0.0.1:5"), "http://127.0.0.1:5");
    }
}
