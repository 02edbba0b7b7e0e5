//! The REST half of the client: one method per endpoint, each taking and returning the protocol
//! types, so a change to the API is a compile error here and in every caller, not a runtime
//! surprise. All requests go through [`Client::call`], the one place that adds the token,
//! sends, and maps statuses to [`Error`].

use crate::error::{Error, Result};
use crate::stream::{EventStream, SubscribeOptions};
use kiln_core::{PromptId, Role, Secret, SessionId, TokenId};
use kiln_protocol::api::{
    CreateRepo, CreateSession, CreateShare, CreateToken, CreateUser, EventsPage, GcReport, Image,
    ImageBuildStarted, LoginLink, Me, PromptAccepted, Repo, RepoAccess, SendPrompt, SessionCreated,
    SessionDetail, SessionPushed, SessionSummary, SetRepoAccess, ShareCreated, StopReport,
    StopSession, TokenCreated, TokenInfo, UpdateRepo, UpdateSession, User,
};
use reqwest::{Method, Url, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// How long to wait for a TCP (and TLS) connection before calling the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for one whole request (a streamed build log sets its own); generous.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a push, a diff or a patch: the server's git may take minutes on a large change
/// (its own git timeout is 5 min).
const GIT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// A handle on one kiln server as one caller. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Always ends in `/`, so that joining `api/...` keeps any path prefix (a reverse proxy's).
    base: Url,
    /// Sent as `Authorization: Bearer`; `None` reaches only the unauthenticated endpoints.
    token: Option<Secret<String>>,
}

impl Client {
    /// A client for the server at `base_url` (`http://host:port`, optionally with a path prefix).
    pub fn new(base_url: &str, token: Option<Secret<String>>) -> Result<Client> {
        let base = parse_base(base_url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(user_agent())
            .build()
            .map_err(|e| Error::InvalidUrl {
                url: base_url.to_string(),
                reason: crate::error::root_cause(&e),
            })?;
        Ok(Client { http, base, token })
    }

    /// The server's address as given, without a trailing slash; for messages.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `GET /api/health`: whether a kiln server answers and reaches its model (no token
    /// needed).
    pub async fn health(&self) -> Result<kiln_protocol::api::Health> {
        self.call(Method::GET, &["health"], NO_BODY).await
    }

    /// `GET /api/status`: version, model, sandboxes (admins), each repo's image and pool.
    pub async fn status(&self) -> Result<kiln_protocol::api::ServerStatus> {
        self.call(Method::GET, &["status"], NO_BODY).await
    }

    /// `GET /api/stats` for the last `days` days (default 30), of `repo` if given.
    pub async fn stats(
        &self,
        days: Option<u32>,
        repo: Option<&str>,
    ) -> Result<kiln_protocol::api::StatsReport> {
        let mut url = self.url(&["stats"]);
        if let Some(days) = days {
            url.query_pairs_mut().append_pair("days", &days.to_string());
        }
        if let Some(repo) = repo {
            url.query_pairs_mut().append_pair("repo", repo);
        }
        let response = self.send(Method::GET, url, NO_BODY).await?;
        decode(self.base_url(), response).await
    }

    pub async fn me(&self) -> Result<Me> {
        self.call(Method::GET, &["me"], NO_BODY).await
    }

    pub async fn create_user(&self, body: &CreateUser) -> Result<User> {
        self.call(Method::POST, &["users"], Some(body)).await
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        self.call(Method::GET, &["users"], NO_BODY).await
    }

    pub async fn create_token(&self, body: &CreateToken) -> Result<TokenCreated> {
        self.call(Method::POST, &["tokens"], Some(body)).await
    }

    pub async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        self.call(Method::GET, &["tokens"], NO_BODY).await
    }

    pub async fn delete_token(&self, id: &TokenId) -> Result<()> {
        self.call_empty(Method::DELETE, &["tokens", id.as_str()], NO_BODY)
            .await
    }

    /// `POST /api/login-links`: a single-use sign-in link for a browser, as the caller.
    pub async fn create_login_link(&self) -> Result<LoginLink> {
        self.call(Method::POST, &["login-links"], NO_BODY).await
    }

    pub async fn create_repo(&self, body: &CreateRepo) -> Result<Repo> {
        self.call(Method::POST, &["repos"], Some(body)).await
    }

    pub async fn repos(&self) -> Result<Vec<Repo>> {
        self.call(Method::GET, &["repos"], NO_BODY).await
    }

    pub async fn repo(&self, name: &str) -> Result<Repo> {
        self.call(Method::GET, &["repos", name], NO_BODY).await
    }

    /// Who may start sessions on the repo (admins).
    pub async fn repo_access(&self, name: &str) -> Result<RepoAccess> {
        self.call(Method::GET, &["repos", name, "access"], NO_BODY)
            .await
    }

    /// Sets who may start sessions on the repo (admins).
    pub async fn set_repo_access(&self, name: &str, body: &SetRepoAccess) -> Result<RepoAccess> {
        self.call(Method::PUT, &["repos", name, "access"], Some(body))
            .await
    }

    /// Collects images and snapshot layers nothing uses any more, now (admins).
    pub async fn collect_garbage(&self) -> Result<GcReport> {
        self.call(Method::POST, &["admin", "gc"], NO_BODY).await
    }

    /// The audit log after `after`, oldest first, at most `limit` entries (admins).
    pub async fn audit(&self, after: i64, limit: u32) -> Result<kiln_protocol::api::AuditPage> {
        let mut url = self.url(&["admin", "audit"]);
        url.query_pairs_mut()
            .append_pair("after", &after.to_string())
            .append_pair("limit", &limit.to_string());
        let response = self.send(Method::GET, url, NO_BODY).await?;
        decode(self.base_url(), response).await
    }

    /// Changes what `body` names (admins).
    pub async fn update_repo(&self, name: &str, body: &UpdateRepo) -> Result<Repo> {
        self.call(Method::PATCH, &["repos", name], Some(body)).await
    }

    /// Starts building the repo's image; follow it with [`Client::image_log`]. It shows up in
    /// [`Client::images`] when it ends.
    pub async fn start_image_build(&self, repo: &str) -> Result<ImageBuildStarted> {
        self.call(Method::POST, &["repos", repo, "images"], NO_BODY)
            .await
    }

    /// An image build's log: while the build runs, what it wrote so far and then each new line
    /// until it ends; after, the stored log. `timeout` bounds the whole stream (the client's
    /// usual request timeout would cut a long build short).
    pub async fn image_log(&self, repo: &str, id: &str, timeout: Duration) -> Result<ImageLog> {
        self.image_log_with(repo, id, true, timeout).await
    }

    /// [`Client::image_log`], or with `follow` false only what a running build wrote so far.
    pub async fn image_log_with(
        &self,
        repo: &str,
        id: &str,
        follow: bool,
        timeout: Duration,
    ) -> Result<ImageLog> {
        let url = self.url(&["repos", repo, "images", id, "log"]);
        tracing::debug!(%url, "kiln api request");
        let request = self
            .http
            .get(url)
            .query(&[("follow", follow)])
            .timeout(timeout);
        let response = self.send_request(request).await?;
        Ok(ImageLog {
            response,
            base_url: self.base_url().to_string(),
            pending: Vec::new(),
        })
    }

    /// The repo's image builds, newest first, without their logs.
    pub async fn images(&self, repo: &str) -> Result<Vec<Image>> {
        self.call(Method::GET, &["repos", repo, "images"], NO_BODY)
            .await
    }

    /// One image build, with its log.
    pub async fn image(&self, repo: &str, id: &str) -> Result<Image> {
        self.call(Method::GET, &["repos", repo, "images", id], NO_BODY)
            .await
    }

    /// Creates a session; it starts working on `body.prompt` at once.
    pub async fn create_session(&self, body: &CreateSession) -> Result<SessionCreated> {
        self.call(Method::POST, &["sessions"], Some(body)).await
    }

    /// Every session of the caller's, newest first (fetched a page at a time).
    pub async fn sessions(&self) -> Result<Vec<SessionSummary>> {
        const PAGE: usize = 500;
        let mut all: Vec<SessionSummary> = Vec::new();
        loop {
            let page = self.sessions_page(PAGE, all.last().map(|s| &s.id)).await?;
            let last_page = page.len() < PAGE;
            all.extend(page);
            if last_page {
                return Ok(all);
            }
        }
    }

    /// One page of the caller's sessions, newest first: at most `limit` (the server takes up
    /// to 500), listed after the session `after`.
    pub async fn sessions_page(
        &self,
        limit: usize,
        after: Option<&SessionId>,
    ) -> Result<Vec<SessionSummary>> {
        let mut url = self.url(&["sessions"]);
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        if let Some(after) = after {
            url.query_pairs_mut().append_pair("after", after.as_str());
        }
        let response = self.send(Method::GET, url, NO_BODY).await?;
        decode(self.base_url(), response).await
    }

    pub async fn session(&self, id: &SessionId) -> Result<SessionDetail> {
        self.call(Method::GET, &["sessions", id.as_str()], NO_BODY)
            .await
    }

    /// The session's place among sub-sessions (`GET /api/sessions/{id}/tree`).
    pub async fn session_tree(&self, id: &SessionId) -> Result<kiln_protocol::api::SessionTree> {
        self.call(Method::GET, &["sessions", id.as_str(), "tree"], NO_BODY)
            .await
    }

    pub async fn update_session(
        &self,
        id: &SessionId,
        body: &UpdateSession,
    ) -> Result<SessionDetail> {
        self.call(Method::PATCH, &["sessions", id.as_str()], Some(body))
            .await
    }

    pub async fn send_prompt(&self, id: &SessionId, text: &str) -> Result<PromptAccepted> {
        let body = SendPrompt {
            text: text.to_string(),
            plan: false,
        };
        self.send_prompt_with(id, &body).await
    }

    /// Sends a prompt with its options (`plan`: plan first).
    pub async fn send_prompt_with(
        &self,
        id: &SessionId,
        body: &SendPrompt,
    ) -> Result<PromptAccepted> {
        let path = ["sessions", id.as_str(), "prompts"];
        self.call(Method::POST, &path, Some(body)).await
    }

    /// Approves or rejects a plan the agent proposed (collaborators and owners).
    pub async fn decide_plan(
        &self,
        id: &SessionId,
        plan: &kiln_core::PlanId,
        body: &kiln_protocol::api::PlanDecision,
    ) -> Result<kiln_protocol::api::PlanDecided> {
        let path = ["sessions", id.as_str(), "plan", plan.as_str()];
        self.call(Method::POST, &path, Some(body)).await
    }

    /// Sends an interrupted, failed or cancelled prompt again, as a new prompt.
    pub async fn retry_prompt(&self, id: &SessionId, prompt: &PromptId) -> Result<PromptAccepted> {
        let path = ["sessions", id.as_str(), "prompts", prompt.as_str(), "retry"];
        self.call(Method::POST, &path, NO_BODY).await
    }

    /// Stops the running prompt and, with `clear_queue`, cancels the queued ones too; says
    /// what that stopped.
    pub async fn stop(&self, id: &SessionId, clear_queue: bool) -> Result<StopReport> {
        let body = StopSession { clear_queue };
        let path = ["sessions", id.as_str(), "stop"];
        self.call(Method::POST, &path, Some(&body)).await
    }

    /// Pushes the session's branch `kiln/<session>` to the repo's remote (collaborators and
    /// owners).
    pub async fn push(&self, id: &SessionId) -> Result<SessionPushed> {
        let url = self.url(&["sessions", id.as_str(), "push"]);
        tracing::debug!(%url, "kiln api request");
        let request = self.http.post(url).timeout(GIT_REQUEST_TIMEOUT);
        let response = self.send_request(request).await?;
        response
            .json()
            .await
            .map_err(|e| Error::transport(self.base_url(), &e))
    }

    /// The session's branch against the default branch: a unified diff (`patch` false) or a
    /// `format-patch` mbox (`patch` true).
    pub async fn changes(&self, id: &SessionId, patch: bool) -> Result<String> {
        let what = if patch { "patch" } else { "diff" };
        let url = self.url(&["sessions", id.as_str(), what]);
        tracing::debug!(%url, "kiln api request");
        let request = self.http.get(url).timeout(GIT_REQUEST_TIMEOUT);
        let response = self.send_request(request).await?;
        response
            .text()
            .await
            .map_err(|e| Error::transport(self.base_url(), &e))
    }

    /// Opens (or updates) the session branch's pull request with the caller's own GitHub
    /// account. Without a linked account the error (409) says so and carries the compare URL.
    pub async fn open_pull_request(
        &self,
        id: &SessionId,
        body: &kiln_protocol::api::OpenPullRequest,
    ) -> Result<kiln_protocol::api::PullRequest> {
        let path = ["sessions", id.as_str(), "pr"];
        self.call(Method::POST, &path, Some(body)).await
    }

    /// A share link with the default expiry; see [`Client::create_share_with`].
    pub async fn create_share(&self, id: &SessionId, role: Role) -> Result<ShareCreated> {
        let body = CreateShare {
            role,
            expires_in_hours: None,
            single_use: false,
        };
        self.create_share_with(id, &body).await
    }

    pub async fn create_share_with(
        &self,
        id: &SessionId,
        body: &CreateShare,
    ) -> Result<ShareCreated> {
        let path = ["sessions", id.as_str(), "shares"];
        self.call(Method::POST, &path, Some(body)).await
    }

    /// Redeems a share code: the caller gets the share's role in its session.
    pub async fn join(&self, code: &str) -> Result<SessionSummary> {
        self.call(Method::POST, &["join", code], NO_BODY).await
    }

    /// One page of a session's log: events with `seq > after_seq`, at most `limit` of them.
    pub async fn events(
        &self,
        id: &SessionId,
        after_seq: u64,
        limit: Option<u32>,
    ) -> Result<EventsPage> {
        let mut url = self.url(&["sessions", id.as_str(), "events"]);
        url.query_pairs_mut()
            .append_pair("after_seq", &after_seq.to_string());
        if let Some(limit) = limit {
            url.query_pairs_mut()
                .append_pair("limit", &limit.to_string());
        }
        let response = self.send(Method::GET, url, NO_BODY).await?;
        decode(self.base_url(), response).await
    }

    /// Follows a session's log over a WebSocket from `after_seq`, reconnecting by itself; see
    /// [`EventStream`]. Connects lazily, on the first [`EventStream::next`].
    pub fn subscribe(&self, id: &SessionId, after_seq: u64) -> EventStream {
        self.subscribe_with(id, after_seq, SubscribeOptions::default())
    }

    pub fn subscribe_with(
        &self,
        id: &SessionId,
        after_seq: u64,
        options: SubscribeOptions,
    ) -> EventStream {
        let url = self.url(&["sessions", id.as_str(), "ws"]);
        let server = self.base_url().to_string();
        EventStream::new(url, server, self.token.clone(), after_seq, options)
    }

    /// `base` + `api/` + the segments, each percent-encoded as one path segment.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("the base URL was checked to be http(s)")
            .pop_if_empty()
            .push("api")
            .extend(segments);
        url
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let response = self.send(method, self.url(segments), body).await?;
        decode(self.base_url(), response).await
    }

    pub(crate) async fn call_empty(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&impl Serialize>,
    ) -> Result<()> {
        self.send(method, self.url(segments), body).await?;
        Ok(())
    }

    /// Sends one request; a response is returned only when its status is a success.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&impl Serialize>,
    ) -> Result<reqwest::Response> {
        tracing::debug!(%method, %url, "kiln api request");
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send_request(request).await
    }

    /// Adds the token, sends, and turns an error status into an [`Error`].
    async fn send_request(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, bearer(token)?);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::transport(self.base_url(), &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(Error::from_status(self.base_url(), status.as_u16(), &body))
    }
}

/// An image build's log as it arrives, line by line; see [`Client::image_log`].
#[derive(Debug)]
pub struct ImageLog {
    response: reqwest::Response,
    base_url: String,
    /// Bytes of a line not yet complete (a chunk may end anywhere, even inside a character).
    pending: Vec<u8>,
}

impl ImageLog {
    /// The next line, without its newline; `None` when the log ended.
    pub async fn next_line(&mut self) -> Result<Option<String>> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..end]).into_owned()));
            }
            match self
                .response
                .chunk()
                .await
                .map_err(|e| Error::transport(&self.base_url, &e))?
            {
                Some(chunk) => self.pending.extend_from_slice(&chunk),
                None if self.pending.is_empty() => return Ok(None),
                None => {
                    let line = String::from_utf8_lossy(&self.pending).into_owned();
                    self.pending.clear();
                    return Ok(Some(line));
                }
            }
        }
    }
}

/// Shared by [`Client`] and the WebSocket handshake: the header value, marked sensitive so that
/// HTTP libraries leave it out of their debug output.
pub(crate) fn bearer(token: &Secret<String>) -> Result<header::HeaderValue> {
    let mut value =
        header::HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
            Error::Protocol("the token contains characters not allowed in a header".into())
        })?;
    value.set_sensitive(true);
    Ok(value)
}

pub(crate) fn user_agent() -> String {
    format!("kiln/{}", env!("CARGO_PKG_VERSION"))
}

/// `None` for requests without a body, typed so the generic parameter can be inferred.
pub(crate) const NO_BODY: Option<&()> = None;

pub(crate) async fn decode<T: DeserializeOwned>(
    base_url: &str,
    response: reqwest::Response,
) -> Result<T> {
    let url = response.url().path().to_string();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Error::transport(base_url, &e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Protocol(format!("{url}: {e}")))
}

fn parse_base(base_url: &str) -> Result<Url> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: base_url.to_string(),
        reason: reason.to_string(),
    };
    // `--url 127.0.0.1:7800` means plain http, as the default URL does.
    let with_scheme;
    let full = if base_url.contains("://") {
        base_url
    } else {
        with_scheme = format!("http://{base_url}");
        &with_scheme
    };
    let mut url = Url::parse(full).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in the URL would end up in messages; tokens go in KILN_TOKEN.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        return Err(Error::InvalidUrl {
            url: url.to_string(),
            reason: "put the token in KILN_TOKEN or --token, not in the URL".into(),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("the URL must not have a query or fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_prefix_and_encode_segments() {
        let client = Client::new("127.0.0.1:7800", None).unwrap();
        assert_eq!(client.base_url(), "http://127.0.0.1:7800");
        assert_eq!(
            client.url(&["repos", "web.app"]).as_str(),
            "http://127.0.0.1:7800/api/repos/web.app"
        );
        for base in ["https://example.com/kiln", "https://example.com/kiln/"] {
            let client = Client::new(base, None).unwrap();
            assert_eq!(client.base_url(), "https://example.com/kiln");
            assert_eq!(
                client.url(&["join", "a/b?c"]).as_str(),
                "https://example.com/kiln/api/join/a%2Fb%3Fc"
            );
        }
    }

    #[test]
    fn unusable_base_urls_are_refused_with_a_reason() {
        for (base, reason) in [
            ("ftp://host", "http or https"),
            ("http://user:pw@host", "KILN_TOKEN"),
            ("http://host/?x=1", "query"),
            ("http://", "empty host"),
        ] {
            let err = Client::new(base, None).unwrap_err().to_string();
            assert!(err.contains(reason), "{base}: {err}");
            assert!(!err.contains("pw@"), "{err}");
        }
    }
}
