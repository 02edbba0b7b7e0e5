//! A fake GitHub on 127.0.0.1 speaking the REST shapes and statuses of GitHub's documentation
//! for the endpoints kiln uses: the app's installation and its tokens (the app JWT verified
//! with the test key's public half: RS256, `iss` = the app id, at most ten minutes), repository
//! permissions, pull requests (422 "A pull request already exists"), the OAuth web flow (errors
//! as 200 with an `error` field) and `/user`. It records every request — method, path, query,
//! the Authorization header — so a test can assert whose token did what, and can be told to
//! fail the next calls with 401, a 403 rate limit or 404.
//!
//! Repositories' git data is served too, when a test gives the fake a directory of bare
//! repositories ([`FakeGitHub::serve_git`]): `/OWNER/NAME.git/…` through the real `git
//! http-backend`, for HTTP basic authentication with a valid installation token of the
//! repository's installation (`x-access-token:TOKEN`, as GitHub takes it) or a user token of
//! someone who may read it.
//!
//! The web side (`/login/oauth/authorize`) stands in for a person who approves at once: it
//! redirects to `redirect_uri` with a code for the login set by [`FakeGitHub::approve_as`].

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The test-only GitHub App key (never used anywhere but tests): its private half for kiln,
/// its public half for the fake to verify the app JWTs it receives.
pub const TEST_APP_PRIVATE_KEY_PEM: &str = include_str!("test_only_github_app_key.pem");
const TEST_APP_PUBLIC_KEY_PEM: &str = include_str!("test_only_github_app_key.pub.pem");
pub const FAKE_APP_ID: &str = "424242";
pub const FAKE_CLIENT_ID: &str = "Iv1.fakeclient";
pub const FAKE_CLIENT_SECRET: &str = "fake-client-secret";

/// One request the fake answered.
#[derive(Debug, Clone)]
pub struct GitHubRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The full Authorization header (`Bearer …`), if any.
    pub authorization: Option<String>,
    pub body: Value,
}

impl GitHubRequest {
    /// The password of HTTP basic credentials (what git sends: `x-access-token:TOKEN`).
    pub fn basic_password(&self) -> Option<String> {
        use base64::Engine;
        let basic = self.authorization.as_deref()?.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        decoded.split_once(':').map(|(_, p)| p.to_string())
    }

    /// The token after `Bearer `/`token `, if any.
    pub fn token(&self) -> Option<&str> {
        let auth = self.authorization.as_deref()?;
        auth.strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("token "))
    }
}

/// How the next matching request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Unauthorized,
    /// 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` this many seconds ahead.
    RateLimited {
        reset_in_secs: u64,
    },
    NotFound,
}

/// A comment made on the fake (an issue's or pull request's conversation, or a reply in a
/// review comment's thread).
#[derive(Debug, Clone)]
pub struct FakeComment {
    pub repo: String,
    pub number: u64,
    /// The review comment replied to, for a reply in a review thread.
    pub in_reply_to: Option<u64>,
    pub body: String,
    /// `app` for the app's installation token, else the login of the user token.
    pub by: String,
}

/// A pull request on the fake.
#[derive(Debug, Clone)]
pub struct FakePull {
    pub repo: String,
    pub number: u64,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub draft: bool,
    pub state: String,
    pub merged: bool,
    /// The login whose token created it.
    pub author: String,
}

#[derive(Debug)]
struct Repo {
    installation: u64,
    default_branch: String,
    /// login → `admin`, `write` or `read`.
    permissions: HashMap<String, String>,
}

#[derive(Debug)]
struct Token {
    login: String,
    expires_at: SystemTime,
}

#[derive(Debug)]
struct St {
    requests: Vec<GitHubRequest>,
    /// Failures to answer with, each for the next request whose path starts with its prefix.
    failures: VecDeque<(String, Failure)>,
    repos: HashMap<String, Repo>,
    users: HashMap<String, u64>,
    user_tokens: HashMap<String, Token>,
    refresh_tokens: HashMap<String, Token>,
    codes: HashMap<String, String>,
    install_tokens: HashMap<String, (u64, SystemTime)>,
    pulls: Vec<FakePull>,
    comments: Vec<FakeComment>,
    approve_as: Option<String>,
    user_token_ttl: Duration,
    install_token_ttl: Duration,
    counter: u64,
    /// Where `OWNER/NAME.git` bare repositories are served from, if anywhere.
    git_root: Option<std::path::PathBuf>,
}

type Shared = Arc<Mutex<St>>;

/// A running fake GitHub; serves until the runtime ends.
#[derive(Debug, Clone)]
pub struct FakeGitHub {
    pub addr: SocketAddr,
    st: Shared,
}

impl FakeGitHub {
    pub async fn start() -> FakeGitHub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("FakeGitHub: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("FakeGitHub: local address");
        let st = Arc::new(Mutex::new(St {
            requests: Vec::new(),
            failures: VecDeque::new(),
            repos: HashMap::new(),
            users: HashMap::new(),
            user_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            codes: HashMap::new(),
            install_tokens: HashMap::new(),
            pulls: Vec::new(),
            comments: Vec::new(),
            approve_as: None,
            user_token_ttl: Duration::from_secs(8 * 3600),
            install_token_ttl: Duration::from_secs(3600),
            counter: 0,
            git_root: None,
        }));
        let router = Router::new()
            .route("/app/installations/{id}/access_tokens", post(access_tokens))
            .route("/repos/{owner}/{repo}/installation", get(installation))
            .route("/repos/{owner}/{repo}", get(repo))
            .route(
                "/repos/{owner}/{repo}/pulls",
                get(list_pulls).post(create_pull),
            )
            .route(
                "/repos/{owner}/{repo}/pulls/{number}",
                get(get_pull).patch(update_pull),
            )
            .route(
                "/repos/{owner}/{repo}/issues/{number}/comments",
                post(create_comment),
            )
            .route(
                "/repos/{owner}/{repo}/pulls/{number}/comments/{comment}/replies",
                post(create_reply),
            )
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(access_token))
            .route("/user", get(user))
            .fallback(fallback)
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
            .with_state(st.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::warn!(%error, "FakeGitHub server failed");
            }
        });
        FakeGitHub { addr, st }
    }

    /// The API base (and, as kiln derives it for a non-GHES base, the web base).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, St> {
        self.st.lock().expect("FakeGitHub state")
    }

    /// A user the fake knows; returns a valid access token for them.
    pub fn add_user(&self, login: &str) -> String {
        let mut st = self.lock();
        let id = 1000 + st.users.len() as u64;
        st.users.entry(login.to_string()).or_insert(id);
        issue_user_tokens(&mut st, login).0
    }

    /// A repository with the app installed (as `installation`); `permissions` maps logins to
    /// `admin`/`write`/`read`.
    pub fn add_repo(&self, full_name: &str, installation: u64, permissions: &[(&str, &str)]) {
        self.lock().repos.insert(
            full_name.to_string(),
            Repo {
                installation,
                default_branch: "main".into(),
                permissions: permissions
                    .iter()
                    .map(|(l, p)| (l.to_string(), p.to_string()))
                    .collect(),
            },
        );
    }

    /// Serves the bare repositories under `root` (`root/OWNER/NAME.git`) as git smart HTTP.
    pub fn serve_git(&self, root: &std::path::Path) {
        self.lock().git_root = Some(root.to_path_buf());
    }

    /// The login the fake authorize page approves as.
    pub fn approve_as(&self, login: &str) {
        self.lock().approve_as = Some(login.to_string());
    }

    /// A code for `login` as the authorize redirect would carry it.
    pub fn code_for(&self, login: &str) -> String {
        let mut st = self.lock();
        st.counter += 1;
        let code = format!("code-{}", st.counter);
        st.codes.insert(code.clone(), login.to_string());
        code
    }

    /// How long the user access tokens it issues live (refresh tokens live six months).
    pub fn set_user_token_ttl(&self, ttl: Duration) {
        self.lock().user_token_ttl = ttl;
    }

    pub fn set_installation_token_ttl(&self, ttl: Duration) {
        self.lock().install_token_ttl = ttl;
    }

    /// The next request (of any kind but the web authorize page) fails this way.
    pub fn fail_next(&self, failure: Failure) {
        self.fail_next_on("/", failure);
    }

    /// The next request whose path starts with `prefix` fails this way (others, such as git
    /// traffic in the background, are served).
    pub fn fail_next_on(&self, prefix: &str, failure: Failure) {
        self.lock()
            .failures
            .push_back((prefix.to_string(), failure));
    }

    pub fn requests(&self) -> Vec<GitHubRequest> {
        self.lock().requests.clone()
    }

    /// Every comment made, oldest first.
    pub fn comments(&self) -> Vec<FakeComment> {
        self.lock().comments.clone()
    }

    pub fn pulls(&self) -> Vec<FakePull> {
        self.lock().pulls.clone()
    }

    /// Marks a pull request merged (as a person clicking "Merge" would).
    pub fn merge(&self, repo: &str, number: u64) {
        let mut st = self.lock();
        if let Some(p) = st
            .pulls
            .iter_mut()
            .find(|p| p.repo == repo && p.number == number)
        {
            p.state = "closed".into();
            p.merged = true;
        }
    }

    /// The login a user token belongs to, if it is valid now.
    pub fn login_of(&self, token: &str) -> Option<String> {
        let st = self.lock();
        st.user_tokens
            .get(token)
            .filter(|t| t.expires_at > SystemTime::now())
            .map(|t| t.login.clone())
    }

    /// Whether `token` is an unexpired installation token for `installation`.
    pub fn is_installation_token(&self, token: &str, installation: u64) -> bool {
        self.lock()
            .install_tokens
            .get(token)
            .is_some_and(|(i, exp)| *i == installation && *exp > SystemTime::now())
    }
}

fn issue_user_tokens(st: &mut St, login: &str) -> (String, String) {
    st.counter += 1;
    let access = format!("ghu_fake{}{}", st.counter, login.len());
    let refresh = format!("ghr_fake{}{}", st.counter, login.len());
    let now = SystemTime::now();
    st.user_tokens.insert(
        access.clone(),
        Token {
            login: login.to_string(),
            expires_at: now + st.user_token_ttl,
        },
    );
    st.refresh_tokens.insert(
        refresh.clone(),
        Token {
            login: login.to_string(),
            expires_at: now + Duration::from_secs(180 * 86_400),
        },
    );
    (access, refresh)
}

fn record(st: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: Value) -> St2 {
    let mut guard = st.lock().expect("FakeGitHub state");
    guard.requests.push(GitHubRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
    });
    let path = uri.path();
    let due = guard
        .failures
        .iter()
        .position(|(prefix, _)| path.starts_with(prefix.as_str()));
    St2(due.and_then(|i| guard.failures.remove(i)).map(|(_, f)| f))
}

/// The failure (if any) queued for this request.
struct St2(Option<Failure>);

fn fail(failure: Failure) -> Response {
    match failure {
        Failure::Unauthorized => error(StatusCode::UNAUTHORIZED, "Bad credentials"),
        Failure::NotFound => error(StatusCode::NOT_FOUND, "Not Found"),
        Failure::RateLimited { reset_in_secs } => {
            let reset = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_secs()
                + reset_in_secs;
            let mut r = error(
                StatusCode::FORBIDDEN,
                "API rate limit exceeded for user ID 1.",
            );
            let h = r.headers_mut();
            h.insert("x-ratelimit-limit", "5000".parse().expect("header"));
            h.insert("x-ratelimit-remaining", "0".parse().expect("header"));
            h.insert(
                "x-ratelimit-reset",
                reset.to_string().parse().expect("header"),
            );
            r
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    auth.strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("token "))
        .map(str::to_string)
}

/// The login behind a valid user token, or the 401 GitHub answers.
// The error is the response the handler answers with at once.
#[allow(clippy::result_large_err)]
fn user_of(st: &St, headers: &HeaderMap) -> Result<String, Response> {
    let token = bearer(headers)
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "Requires authentication"))?;
    st.user_tokens
        .get(&token)
        .filter(|t| t.expires_at > SystemTime::now())
        .map(|t| t.login.clone())
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "Bad credentials"))
}

/// Verifies an app JWT as GitHub does: RS256 under the app's public key, `iss` the app id,
/// unexpired, and living at most ten minutes.
// The error is the response the handler answers with at once.
#[allow(clippy::result_large_err)]
fn check_app_jwt(headers: &HeaderMap) -> Result<(), Response> {
    #[derive(Deserialize)]
    struct Claims {
        iat: i64,
        exp: i64,
        iss: Value,
    }
    let bad = |why: &str| {
        error(
            StatusCode::UNAUTHORIZED,
            &format!("A JSON web token could not be decoded ({why})"),
        )
    };
    let token = bearer(headers).ok_or_else(|| bad("missing"))?;
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(TEST_APP_PUBLIC_KEY_PEM.as_bytes())
        .expect("the test public key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.required_spec_claims = ["exp", "iat", "iss"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let data = jsonwebtoken::decode::<Claims>(&token, &key, &validation)
        .map_err(|e| bad(&e.to_string()))?;
    let iss = match &data.claims.iss {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if iss != FAKE_APP_ID {
        return Err(bad("wrong issuer"));
    }
    if data.claims.exp - data.claims.iat > 600 {
        return Err(bad(
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    Ok(())
}

async fn access_tokens(
    State(st): State<Shared>,
    Path(id): Path<u64>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let St2(Some(f)) = record(&st, &method, &uri, &headers, Value::Null) {
        return fail(f);
    }
    if let Err(r) = check_app_jwt(&headers) {
        return r;
    }
    let mut st = st.lock().expect("state");
    if !st.repos.values().any(|r| r.installation == id) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    st.counter += 1;
    let token = format!("ghs_fakeinstall{}", st.counter);
    let expires = SystemTime::now() + st.install_token_ttl;
    st.install_tokens.insert(token.clone(), (id, expires));
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "token": token,
            "expires_at": rfc3339(expires),
            "permissions": {"contents": "write", "pull_requests": "write"},
            "repository_selection": "selected",
        })),
    )
        .into_response()
}

async fn installation(
    State(st): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let St2(Some(f)) = record(&st, &method, &uri, &headers, Value::Null) {
        return fail(f);
    }
    if let Err(r) = check_app_jwt(&headers) {
        return r;
    }
    let st = st.lock().expect("state");
    match st.repos.get(&format!("{owner}/{name}")) {
        Some(r) => axum::Json(json!({
            "id": r.installation,
            "account": {"login": owner, "type": "Organization"},
            "app_id": FAKE_APP_ID.parse::<u64>().unwrap_or(0),
            "target_type": "Organization",
        }))
        .into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn repo(
    State(st): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let St2(Some(f)) = record(&st, &method, &uri, &headers, Value::Null) {
        return fail(f);
    }
    let st = st.lock().expect("state");
    let login = match user_of(&st, &headers) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let full = format!("{owner}/{name}");
    let Some(repo) = st.repos.get(&full) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let Some(perm) = repo.permissions.get(&login) else {
        // A private repository the user cannot see is a 404 on GitHub.
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let (admin, push) = (perm == "admin", perm == "admin" || perm == "write");
    axum::Json(json!({
        "id": 1,
        "name": name,
        "full_name": full,
        "private": true,
        "default_branch": repo.default_branch,
        "permissions": {"admin": admin, "maintain": admin, "push": push, "triage": push, "pull": true},
    }))
    .into_response()
}

fn pull_json(p: &FakePull, base_url: &str) -> Value {
    json!({
        "number": p.number,
        "html_url": format!("{base_url}/{}/pull/{}", p.repo, p.number),
        "state": p.state,
        "title": p.title,
        "body": p.body,
        "draft": p.draft,
        "merged": p.merged,
        "merged_at": if p.merged { Value::String("2026-01-01T00:00:00Z".into()) } else { Value::Null },
        "head": {"ref": p.head, "label": format!("{}:{}", p.repo.split('/').next().unwrap_or(""), p.head)},
        "base": {"ref": p.base},
        "user": {"login": p.author},
    })
}

fn host_of(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// A user who may write to the repository, or the status GitHub answers.
// The error is the response the handler answers with at once.
#[allow(clippy::result_large_err)]
fn writer(st: &St, headers: &HeaderMap, full: &str) -> Result<String, Response> {
    let login = user_of(st, headers)?;
    let repo = st
        .repos
        .get(full)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Not Found"))?;
    match repo.permissions.get(&login).map(String::as_str) {
        Some("admin" | "write") => Ok(login),
        Some(_) => Err(error(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        )),
        None => Err(error(StatusCode::NOT_FOUND, "Not Found")),
    }
}

async fn create_pull(
    State(st): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let St2(Some(f)) = record(&st, &method, &uri, &headers, body.clone()) {
        return fail(f);
    }
    let mut st = st.lock().expect("state");
    let full = format!("{owner}/{name}");
    let author = match writer(&st, &headers, &full) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(title), Some(head), Some(base)) = (s("title"), s("head"), s("base")) else {
        return validation_failed("Invalid request: title, head and base are required");
    };
    let head = head.rsplit(':').next().unwrap_or(&head).to_string();
    if st
        .pulls
        .iter()
        .any(|p| p.repo == full && p.head == head && p.state == "open")
    {
        return validation_failed(&format!(
            "A pull request already exists for {owner}:{head}."
        ));
    }
    let number = st.pulls.iter().filter(|p| p.repo == full).count() as u64 + 1;
    let pull = FakePull {
        repo: full,
        number,
        head,
        base,
        title,
        body: s("body").unwrap_or_default(),
        draft: body.get("draft").and_then(Value::as_bool).unwrap_or(false),
        state: "open".into(),
        merged: false,
        author,
    };
    let json = pull_json(&pull, &host_of(&headers));
    st.pulls.push(pull);
    (StatusCode::CREATED, axum::Json(json)).into_response()
}

/// Who may comment on the repository: the app with a valid installation token of its
/// installation (`app`), or a user who may read it.
// The error is the response the handler answers with at once.
#[allow(clippy::result_large_err)]
fn commenter(st: &St, headers: &HeaderMap, full: &str) -> Result<String, Response> {
    let repo = st
        .repos
        .get(full)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Not Found"))?;
    if let Some(token) = bearer(headers)
        && let Some((installation, expires)) = st.install_tokens.get(&token)
    {
        return if *installation == repo.installation && *expires > SystemTime::now() {
            Ok("app".into())
        } else {
            Err(error(StatusCode::UNAUTHORIZED, "Bad credentials"))
        };
    }
    let login = user_of(st, headers)?;
    if repo.permissions.contains_key(&login) {
        Ok(login)
    } else {
        Err(error(StatusCode::NOT_FOUND, "Not Found"))
    }
}

async fn comment(
    st: Shared,
    full: String,
    number: u64,
    in_reply_to: Option<u64>,
    (method, uri, headers, body): (Method, Uri, HeaderMap, axum::body::Bytes),
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let St2(Some(f)) = record(&st, &method, &uri, &headers, body.clone()) {
        return fail(f);
    }
    let mut st = st.lock().expect("state");
    let by = match commenter(&st, &headers, &full) {
        Ok(by) => by,
        Err(r) => return r,
    };
    let Some(text) = body.get("body").and_then(Value::as_str) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"message": "Invalid request.\n\n\"body\" wasn't supplied.",
                "documentation_url": "https://docs.github.com/rest/issues/comments#create-an-issue-comment",
                "status": "422"})),
        )
            .into_response();
    };
    st.counter += 1;
    let id = st.counter;
    st.comments.push(FakeComment {
        repo: full.clone(),
        number,
        in_reply_to,
        body: text.to_string(),
        by: by.clone(),
    });
    let host = host_of(&headers);
    let html_url = match in_reply_to {
        Some(_) => format!("{host}/{full}/pull/{number}#discussion_r{id}"),
        None => format!("{host}/{full}/issues/{number}#issuecomment-{id}"),
    };
    let login = if by == "app" {
        "kiln[bot]".to_string()
    } else {
        by
    };
    (
        StatusCode::CREATED,
        axum::Json(json!({"id": id, "html_url": html_url, "body": text,
            "user": {"login": login}})),
    )
        .into_response()
}

async fn create_comment(
    State(st): State<Shared>,
    Path((owner, name, number)): Path<(String, String, u64)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let full = format!("{owner}/{name}");
    comment(st, full, number, None, (method, uri, headers, body)).await
}

async fn create_reply(
    State(st): State<Shared>,
    Path((owner, name, number, reply_to)): Path<(String, String, u64, u64)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let full = format!("{owner}/{name}");
    comment(
        st,
        full,
        number,
        Some(reply_to),
        (method, uri, headers, body),
    )
    .await
}

fn validation_failed(message: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({
            "message": "Validation Failed",
            "errors": [{"resource": "PullRequest", "code": "custom", "message": message}],
            "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
            "status": "422",
        })),
    )
        .into_response()
}

async fn list_pulls(
    State(st): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let St2(Some(f)) = record(&st, &method, &uri, &headers, Value::Null) {
        return fail(f);
    }
    let st = st.lock().expect("state");
    if let Err(r) = user_of(&st, &headers) {
        return r;
    }
    let full = format!("{owner}/{name}");
    let state = q.get("state").cloned().unwrap_or_else(|| "open".into());
    let head = q
        .get("head")
        .map(|h| h.rsplit(':').next().unwrap_or(h).to_string());
    let base = host_of(&headers);
    let list: Vec<Value> = st
        .pulls
        .iter()
        .filter(|p| p.repo == full)
        .filter(|p| state == "all" || p.state == state)
        .filter(|p| head.as_ref().is_none_or(|h| &p.head == h))
        .map(|p| {
            let mut v = pull_json(p, &base);
            // List items carry no `merged` field, only `merged_at`.
            v.as_object_mut().map(|o| o.remove("merged"));
            v
        })
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

async fn get_pull(
    State(st): State<Shared>,
    Path((owner, name, number)): Path<(String, String, u64)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let St2(Some(f)) = record(&st, &method, &uri, &headers, Value::Null) {
        return fail(f);
    }
    let st = st.lock().expect("state");
    if let Err(r) = user_of(&st, &headers) {
        return r;
    }
    let full = format!("{owner}/{name}");
    match st
        .pulls
        .iter()
        .find(|p| p.repo == full && p.number == number)
    {
        Some(p) => axum::Json(pull_json(p, &host_of(&headers))).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn update_pull(
    State(st): State<Shared>,
    Path((owner, name, number)): Path<(String, String, u64)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let St2(Some(f)) = record(&st, &method, &uri, &headers, body.clone()) {
        return fail(f);
    }
    let mut st = st.lock().expect("state");
    let full = format!("{owner}/{name}");
    if let Err(r) = writer(&st, &headers, &full) {
        return r;
    }
    let base = host_of(&headers);
    match st
        .pulls
        .iter_mut()
        .find(|p| p.repo == full && p.number == number)
    {
        Some(p) => {
            if let Some(t) = body.get("title").and_then(Value::as_str) {
                p.title = t.to_string();
            }
            if let Some(b) = body.get("body").and_then(Value::as_str) {
                p.body = b.to_string();
            }
            axum::Json(pull_json(p, &base)).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn authorize(
    State(st): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let mut st = st.lock().expect("state");
    let (Some(redirect), Some(state)) = (q.get("redirect_uri"), q.get("state")) else {
        return (
            StatusCode::BAD_REQUEST,
            "redirect_uri and state are required",
        )
            .into_response();
    };
    if q.get("client_id").map(String::as_str) != Some(FAKE_CLIENT_ID) {
        return (StatusCode::NOT_FOUND, "unknown client_id").into_response();
    }
    let Some(login) = st.approve_as.clone() else {
        return (StatusCode::FORBIDDEN, "nobody is set to approve").into_response();
    };
    st.counter += 1;
    let code = format!("code-{}", st.counter);
    st.codes.insert(code.clone(), login);
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let location = format!("{redirect}{sep}code={}&state={}", enc(&code), enc(state));
    (StatusCode::FOUND, [("location", location)]).into_response()
}

async fn access_token(
    State(st): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form: BTreeMap<String, String> =
        if headers.get("content-type").and_then(|v| v.to_str().ok()) == Some("application/json") {
            serde_json::from_slice(&body).unwrap_or_default()
        } else {
            serde_urlencoded_pairs(&body)
        };
    let recorded = serde_json::to_value(
        form.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if k.contains("secret") || k.contains("token") || k == "code" {
                        "****".to_string()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
    )
    .unwrap_or(Value::Null);
    if let St2(Some(f)) = record(&st, &method, &uri, &headers, recorded) {
        return fail(f);
    }
    let mut st = st.lock().expect("state");
    let err = |code: &str, desc: &str| {
        axum::Json(json!({"error": code, "error_description": desc, "error_uri": "https://docs.github.com"}))
            .into_response()
    };
    if form.get("client_id").map(String::as_str) != Some(FAKE_CLIENT_ID)
        || form.get("client_secret").map(String::as_str) != Some(FAKE_CLIENT_SECRET)
    {
        return err(
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        );
    }
    let login = if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
        let Some(old) = form.get("refresh_token") else {
            return err(
                "bad_refresh_token",
                "The refresh token passed is incorrect or expired.",
            );
        };
        match st.refresh_tokens.remove(old) {
            Some(t) if t.expires_at > SystemTime::now() => t.login,
            _ => {
                return err(
                    "bad_refresh_token",
                    "The refresh token passed is incorrect or expired.",
                );
            }
        }
    } else {
        match form.get("code").and_then(|c| st.codes.remove(c)) {
            Some(login) => login,
            None => {
                return err(
                    "bad_verification_code",
                    "The code passed is incorrect or expired.",
                );
            }
        }
    };
    let (access, refresh) = issue_user_tokens(&mut st, &login);
    axum::Json(json!({
        "access_token": access,
        "expires_in": st.user_token_ttl.as_secs(),
        "refresh_token": refresh,
        "refresh_token_expires_in": 180 * 86_400,
        "scope": "",
        "token_type": "bearer",
    }))
    .into_response()
}

fn serde_urlencoded_pairs(body: &[u8]) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && i + 2 < bytes.len()
                && let Some(b) = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

async fn user(State(st): State<Shared>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if let St2(Some(f)) = record(&st, &method, &uri, &headers, Value::Null) {
        return fail(f);
    }
    let st = st.lock().expect("state");
    match user_of(&st, &headers) {
        Ok(login) => axum::Json(json!({
            "login": login,
            "id": st.users.get(&login).copied().unwrap_or(1),
            "name": format!("{login} (fake)"),
            "email": format!("{login}@users.noreply.github.test"),
            "type": "User",
        }))
        .into_response(),
        Err(r) => r,
    }
}

async fn fallback(
    State(st): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let St2(Some(f)) = record(&st, &method, &uri, &headers, Value::Null) {
        return fail(f);
    }
    let Some(full) = git_repo_of(uri.path()) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let root = {
        let st = st.lock().expect("state");
        let Some(root) = st.git_root.clone() else {
            return error(StatusCode::NOT_FOUND, "Not Found");
        };
        let Some(repo) = st.repos.get(&full) else {
            return error(StatusCode::NOT_FOUND, "Not Found");
        };
        let push = uri.path().ends_with("/git-receive-pack")
            || uri
                .query()
                .is_some_and(|q| q.contains("service=git-receive-pack"));
        if !git_allowed(&st, &headers, repo, push) {
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Basic realm=\"GitHub\"")],
            )
                .into_response();
        }
        root
    };
    match crate::git_http::cgi(&root, &method, &uri, &headers, body).await {
        Ok(response) => response,
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// `OWNER/NAME` of a git path `/OWNER/NAME.git/…`.
fn git_repo_of(path: &str) -> Option<String> {
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let owner = parts.next()?;
    let name = parts.next()?.strip_suffix(".git")?;
    (!owner.is_empty() && !name.is_empty()).then(|| format!("{owner}/{name}"))
}

/// Whether basic credentials name an unexpired installation token of the repository's
/// installation, or a user token of someone with a permission on it (to push: `write` or
/// `admin`).
fn git_allowed(st: &St, headers: &HeaderMap, repo: &Repo, push: bool) -> bool {
    use base64::Engine;
    let Some(basic) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
        return false;
    };
    let decoded = String::from_utf8_lossy(&decoded);
    let Some((_, password)) = decoded.split_once(':') else {
        return false;
    };
    let now = SystemTime::now();
    let installation = st
        .install_tokens
        .get(password)
        .is_some_and(|(i, exp)| *i == repo.installation && *exp > now);
    let user = st
        .user_tokens
        .get(password)
        .filter(|t| t.expires_at > now)
        .is_some_and(
            |t| match repo.permissions.get(&t.login).map(String::as_str) {
                Some("admin" | "write") => true,
                Some(_) => !push,
                None => false,
            },
        );
    installation || user
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a time (civil from days, Howard Hinnant's algorithm).
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_timestamps() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_468_275_250);
        assert_eq!(super::rfc3339(t), "2016-07-11T22:14:10Z");
    }
}

#[cfg(test)]
mod git_tests {
    use super::*;

    #[tokio::test]
    async fn git_is_served_to_an_installation_token_only() {
        let fake = FakeGitHub::start().await;
        fake.add_repo("octo/hw", 7, &[]);
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("octo")).unwrap();
        crate::bare_repo(&root.path().join("octo"), "hw", &[("README.md", "# hw\n")]);
        fake.serve_git(root.path());
        let token = {
            let mut st = fake.lock();
            st.install_tokens.insert(
                "ghs_t".into(),
                (7, SystemTime::now() + Duration::from_secs(60)),
            );
            "ghs_t"
        };
        let url = format!(
            "{}/octo/hw.git/info/refs?service=git-upload-pack",
            fake.url()
        );
        let client = reqwest::Client::new();
        let ok = client
            .get(&url)
            .basic_auth("x-access-token", Some(token))
            .send()
            .await
            .unwrap();
        let status = ok.status().as_u16();
        assert_eq!(status, 200, "{}", ok.text().await.unwrap());
        let refused = client
            .get(&url)
            .basic_auth("x-access-token", Some("ghs_wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 401);
    }
}
