//! Forges behind one trait: where a session's branch becomes a pull request (GitHub) or, later,
//! a merge request (GitLab). The engine and the server speak only [`Forge`]; a forge's own
//! vocabulary (pulls, installations, OAuth apps) stays in its module.
//!
//! What a forge does for kiln:
//! - change requests: [`Forge::open_or_update`] opens the PR for a head branch, or updates the
//!   one already open for it, always with the *requesting user's* token, never the app's, so the
//!   person is its author;
//! - repository access for the host (mirror fetches, image builds, pushes):
//!   [`Forge::installation_token`], short-lived and cached until shortly before it expires;
//! - sign-in: [`Forge::authorize_url`], [`Forge::exchange_code`], [`Forge::refresh`] and
//!   [`Forge::current_user`] (an OAuth web flow; the caller keeps `state` and the tokens);
//! - checks: [`Forge::permission`] (what a user may do to a repository, as the forge sees it);
//! - webhooks: [`Forge::read_delivery`] checks a delivery's signature and reads it into a
//!   forge-neutral [`ForgeEvent`]; [`Forge::reply`] answers in an issue's or a change request's
//!   thread as the app.
//!
//! Tokens are [`Secret`]s; no message of this crate ever holds one.

mod error;
mod events;
mod github;
mod http;
mod time;
mod types;

pub use error::{ForgeError, Result};
pub use events::{
    ChangeAction, ChangeRef, Delivery, ForgeEvent, IssueRef, ReviewVerdict, Thread, Triggers,
    WebhookError,
};
pub use github::{GitHub, GitHubConfig};
pub use types::{
    ChangeRequest, ChangeState, ForgeUser, OpenedChange, Permission, RepoAccessToken, RepoRef,
    UserTokens,
};

use async_trait::async_trait;
use kiln_core::Secret;

/// One forge (GitHub, GitHub Enterprise Server; GitLab fits the same shape: a merge request is a
/// change request, a project access token an installation token, its OAuth app the sign-in).
#[async_trait]
pub trait Forge: Send + Sync + std::fmt::Debug {
    /// `github`, later `gitlab`: names the forge in messages and records.
    fn kind(&self) -> &'static str;

    /// `GitHub`, later `GitLab`: the forge's name in messages for people.
    fn name(&self) -> &'static str;

    /// The web page comparing `head` with `base`, where a person can open the change by hand.
    fn compare_url(&self, repo: &RepoRef, base: &str, head: &str) -> String;

    /// The repository a git URL names, when it is on this forge.
    fn repo_of_url(&self, url: &str) -> Option<RepoRef>;

    /// The HTTPS clone URL of a repository (no credential in it).
    fn clone_url(&self, repo: &RepoRef) -> String;

    /// Opens the change request for `change.head`, or updates the one open for it (title and
    /// body), with the user's own token.
    async fn open_or_update(
        &self,
        user_token: &Secret<String>,
        repo: &RepoRef,
        change: &ChangeRequest,
    ) -> Result<OpenedChange>;

    /// One change request by number, as `token` sees it.
    async fn change_request(
        &self,
        token: &Secret<String>,
        repo: &RepoRef,
        number: u64,
    ) -> Result<ChangeState>;

    /// A short-lived token for the host to fetch and push `repo` (the app's installation),
    /// cached until shortly before it expires.
    async fn installation_token(&self, repo: &RepoRef) -> Result<RepoAccessToken>;

    /// What the user may do to `repo` (none when the forge does not show it to them).
    async fn permission(&self, user_token: &Secret<String>, repo: &RepoRef) -> Result<Permission>;

    /// Forgets cached installation lookups and tokens of `repos` (the app's access changed).
    async fn forget_installations(&self, repos: &[RepoRef]);

    /// The label and mention that ask kiln for work.
    fn triggers(&self) -> &Triggers;

    /// Checks a webhook delivery's signature and reads it. `header` looks up a request header
    /// (case-insensitive name).
    fn read_delivery(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> std::result::Result<Delivery, WebhookError>;

    /// Comments in `thread` as the app (its installation's token); returns the comment's page.
    async fn reply(&self, repo: &RepoRef, thread: &Thread, body: &str) -> Result<String>;

    /// Where to send a browser to sign in; `state` comes back with the code.
    fn authorize_url(&self, state: &str, redirect_uri: &str) -> Result<String>;

    /// Trades the code of a sign-in for the user's tokens.
    async fn exchange_code(&self, code: &str, redirect_uri: &str) -> Result<UserTokens>;

    /// New tokens for old: called before the access token expires.
    async fn refresh(&self, refresh_token: &Secret<String>) -> Result<UserTokens>;

    /// Who a user token belongs to.
    async fn current_user(&self, user_token: &Secret<String>) -> Result<ForgeUser>;
}
