//! The engine's side of forges: linking a kiln user to their GitHub account (the sign-in
//! flow's `state` and tokens, sealed by the vault), the user's token kept fresh (refreshed
//! before it expires), and a session's pull request opened with the token of the person who
//! asked for it — never the app's. The forge itself sits behind [`kiln_forge::Forge`]; nothing
//! here speaks HTTP.

use super::Engine;
use crate::{Error, Result};
use kiln_core::{Secret, SessionId, UserId, now_ms, random_hex};
use kiln_forge::{ChangeRequest, Forge, UserTokens};
use kiln_protocol::api::{Event, GitHubAccount, OpenPullRequest, PullRequest, UserRef};
use kiln_store::SealedGitHubLink;
use std::sync::Arc;

/// A user token this close to expiry is refreshed before use: a PR request that starts with it
/// never meets an expired one.
pub const REFRESH_BEFORE_MS: i64 = 5 * 60 * 1000;
/// The most prompts a PR body lists (the newest are kept; the session page has them all).
const PROMPTS_IN_BODY: usize = 30;
/// A prompt's text in a PR body is cut at this many characters.
const PROMPT_CHARS_IN_BODY: usize = 600;

fn token_context(user: &UserId, which: &str) -> String {
    format!("github-token:{}:{which}", user.as_str())
}

/// The branch a session's work is pushed to (the fleet's checkout names it the same).
pub fn session_branch(session: &SessionId) -> String {
    format!("kiln/{session}")
}

/// The host's git credentials for repos on the forge: the app's installation token (cached by
/// the forge until shortly before it expires), asked at each fetch and never stored.
#[derive(Debug)]
pub(crate) struct ForgeCredentials {
    pub(crate) forge: Arc<dyn Forge>,
}

#[async_trait::async_trait]
impl kiln_fleet::CredentialSource for ForgeCredentials {
    async fn credentials(&self, url: &str) -> std::result::Result<Option<Secret<String>>, String> {
        let Some(repo) = self.forge.repo_of_url(url) else {
            return Ok(None);
        };
        match self.forge.installation_token(&repo).await {
            Ok(t) => Ok(Some(Secret::new(format!(
                "{}:{}",
                t.username,
                t.token.expose()
            )))),
            // Without an app, fetch as before (a public repository needs nothing).
            Err(kiln_forge::ForgeError::NotConfigured { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Where a sign-in goes next: the kiln user it signed in or linked.
#[derive(Debug, Clone)]
pub struct GitHubSignIn {
    pub user: UserId,
    pub login: String,
    /// True when a signed-in user linked their account (rather than signing in with it).
    pub linked: bool,
}

impl Engine {
    /// The configured forge, or an error that says how to configure one.
    pub fn forge(&self) -> Result<&Arc<dyn Forge>> {
        self.inner.forge.as_ref().ok_or_else(|| {
            Error::Invalid(
                "GitHub is not configured on this server: an admin sets [github] in kiln.toml \
                 (or KILN_GITHUB_* variables)"
                    .into(),
            )
        })
    }

    /// A repo url as given to `kiln repo add`: `owner/name` names a repository on the
    /// configured forge (its HTTPS clone URL; the host's fetches get the app's installation
    /// token); anything else is kept as it is.
    pub fn resolve_repo_url(&self, url: &str) -> String {
        let short = !url.contains("://")
            && !url.contains(':')
            && !url.starts_with(['/', '.', '~'])
            && url.matches('/').count() == 1;
        match (&self.inner.forge, short) {
            (Some(forge), true) => match kiln_forge::RepoRef::parse(url) {
                Ok(repo) => forge.clone_url(&repo),
                Err(_) => url.to_string(),
            },
            _ => url.to_string(),
        }
    }

    /// Starts a GitHub sign-in: a fresh `state`, remembered once for ten minutes (bound to
    /// `linking` when a signed-in user links their account), and the URL to send the browser to.
    pub async fn github_sign_in_url(
        &self,
        linking: Option<&UserId>,
        redirect_uri: &str,
    ) -> Result<String> {
        let forge = self.forge()?;
        let state = random_hex(32);
        let url = forge.authorize_url(&state, redirect_uri)?;
        self.inner.store.add_oauth_state(&state, linking).await?;
        Ok(url)
    }

    /// Finishes a sign-in: the `state` must be one kiln issued, unused and unexpired; then the
    /// code is exchanged and the GitHub account linked (when linking) or looked up (when
    /// signing in: only a login already linked to a kiln user signs in).
    pub async fn github_sign_in(
        &self,
        code: &str,
        state: &str,
        redirect_uri: &str,
    ) -> Result<GitHubSignIn> {
        let forge = self.forge()?;
        let Some(linking) = self.inner.store.take_oauth_state(state).await? else {
            return Err(Error::Invalid(
                "this GitHub sign-in is not one kiln started, was already used or took longer \
                 than 10 minutes; start again"
                    .into(),
            ));
        };
        let tokens = forge.exchange_code(code, redirect_uri).await?;
        let account = forge.current_user(&tokens.access).await?;
        let (user, linked) = match linking {
            Some(user) => (user, true),
            None => match self
                .inner
                .store
                .user_by_github_login(&account.login)
                .await?
            {
                Some(user) => (user, false),
                None => {
                    return Err(Error::Invalid(format!(
                        "GitHub account {} is not linked to a kiln user: sign in to kiln with a \
                         sign-in link (`kiln login-link`) and link it from there",
                        account.login
                    )));
                }
            },
        };
        self.store_github_tokens(&user, &account.login, account.id, &tokens)
            .await?;
        tracing::info!(user = %user, login = %account.login, linked, "GitHub account signed in");
        Ok(GitHubSignIn {
            user,
            login: account.login,
            linked,
        })
    }

    async fn store_github_tokens(
        &self,
        user: &UserId,
        login: &str,
        github_id: u64,
        tokens: &UserTokens,
    ) -> Result<()> {
        let vault = &self.inner.vault;
        let link = SealedGitHubLink {
            login: login.to_string(),
            github_id,
            access_ciphertext: vault.seal(
                &token_context(user, "access"),
                tokens.access.expose().as_bytes(),
            ),
            refresh_ciphertext: tokens
                .refresh
                .as_ref()
                .map(|r| vault.seal(&token_context(user, "refresh"), r.expose().as_bytes())),
            expires_at_ms: tokens.expires_at_ms,
            refresh_expires_at_ms: tokens.refresh_expires_at_ms,
        };
        self.inner.store.set_github_link(user, link).await?;
        self.inner.access.forget_user(user);
        Ok(())
    }

    fn unseal_token(&self, user: &UserId, which: &str, sealed: &[u8]) -> Result<Secret<String>> {
        let bytes = self
            .inner
            .vault
            .unseal(&token_context(user, which), sealed)?;
        String::from_utf8(bytes.expose().clone())
            .map(Secret::new)
            .map_err(|_| {
                Error::Invalid("a stored GitHub token is not text; link GitHub again".into())
            })
    }

    /// The GitHub account linked to `user`, if any.
    pub async fn github_account(&self, user: &UserId) -> Result<Option<GitHubAccount>> {
        Ok(self
            .inner
            .store
            .github_link(user)
            .await?
            .map(|l| GitHubAccount { login: l.login }))
    }

    /// Unlinks `user`'s GitHub account; false when there was none. (The token is not revoked
    /// at GitHub: the user can do that in their settings.)
    pub async fn unlink_github(&self, user: &UserId) -> Result<bool> {
        let unlinked = self.inner.store.delete_github_link(user).await?;
        self.inner.access.forget_user(user);
        Ok(unlinked)
    }

    /// `user`'s GitHub token, refreshed first when it expires within [`REFRESH_BEFORE_MS`];
    /// `None` when the user has no linked account.
    pub async fn github_token(&self, user: &UserId) -> Result<Option<Secret<String>>> {
        let Some(link) = self.inner.store.github_link(user).await? else {
            return Ok(None);
        };
        let fresh = link
            .expires_at_ms
            .is_none_or(|at| at - REFRESH_BEFORE_MS > now_ms());
        if fresh {
            return self
                .unseal_token(user, "access", &link.access_ciphertext)
                .map(Some);
        }
        let Some(sealed_refresh) = &link.refresh_ciphertext else {
            return Err(Error::Invalid(
                "your GitHub sign-in expired; sign in with GitHub again".into(),
            ));
        };
        let refresh = self.unseal_token(user, "refresh", sealed_refresh)?;
        let tokens = self.forge()?.refresh(&refresh).await?;
        self.store_github_tokens(user, &link.login, link.github_id, &tokens)
            .await?;
        tracing::debug!(user = %user, "GitHub token refreshed");
        Ok(Some(tokens.access))
    }

    /// Opens or updates the pull request of a session's branch, as `by` with their own GitHub
    /// token; records it in the session's log. The branch must be on the forge already
    /// (pushed). `link` is the session's page, for the body.
    pub async fn open_pull_request(
        &self,
        session: &SessionId,
        by: &UserRef,
        request: &OpenPullRequest,
        link: &str,
    ) -> Result<PullRequest> {
        kiln_protocol::api::Validate::validate(request).map_err(|e| Error::Invalid(e.0))?;
        let forge = self.forge()?.clone();
        let row = self.inner.store.session_row(session).await?;
        let repo = self.inner.store.repo(&row.repo).await?;
        let Some(repo_ref) = forge.repo_of_url(&repo.url) else {
            return Err(Error::Invalid(format!(
                "repo {} is not on the configured forge ({}); push the branch and open the \
                 change by hand",
                repo.name,
                kiln_core::redact_urls(&repo.url)
            )));
        };
        let head = session_branch(session);
        let base = repo.default_branch.clone();
        let Some(token) = self.github_token(&by.id).await? else {
            return Err(Error::NoForgeAccount {
                forge: forge.name(),
                compare_url: forge.compare_url(&repo_ref, &base, &head),
            });
        };
        self.check_forge_write_with(&by.id, &repo, Some(&token))
            .await?;
        let actor = self.actor(session).await?;
        let prompts = actor.log.prompts().await?;
        let change = ChangeRequest {
            title: request.title.clone().unwrap_or_else(|| row.title.clone()),
            body: pr_body(&row.title, &prompts, link),
            head: head.clone(),
            base: base.clone(),
            draft: request.draft,
        };
        let opened = forge.open_or_update(&token, &repo_ref, &change).await?;
        let c = opened.change;
        let event = Event::PullRequest {
            forge: forge.kind().to_string(),
            number: c.number,
            url: c.url.clone(),
            state: c.state.clone(),
            draft: c.draft,
            created: opened.created,
            by: by.clone(),
        };
        actor.log.append(event).await?;
        self.inner
            .store
            .set_forge_change(
                &repo_ref.full_name(),
                c.number,
                session,
                &c.url,
                if c.merged { "merged" } else { &c.state },
            )
            .await?;
        Ok(PullRequest {
            forge: forge.kind().to_string(),
            number: c.number,
            url: c.url,
            state: c.state,
            draft: c.draft,
            merged: c.merged,
            created: opened.created,
            head,
            base,
        })
    }
}

/// The body of a session's PR: what it is, the prompts with their authors (newest kept when
/// there are many), and the way back to the session.
fn pr_body(title: &str, prompts: &[kiln_protocol::api::PromptInfo], link: &str) -> String {
    let mut body = format!("{title}\n\nMade in kiln session {link}\n\n### Prompts\n");
    let skip = prompts.len().saturating_sub(PROMPTS_IN_BODY);
    if skip > 0 {
        body.push_str(&format!(
            "\n_({skip} earlier prompts are in the session)_\n"
        ));
    }
    for p in &prompts[skip..] {
        let mut text: String = p.text.chars().take(PROMPT_CHARS_IN_BODY).collect();
        if text.len() < p.text.len() || p.text_truncated {
            text.push('…');
        }
        let quoted = text
            .lines()
            .map(|l| format!("> {l}"))
            .collect::<Vec<_>>()
            .join("\n");
        body.push_str(&format!("\n**@{}**:\n{quoted}\n", p.author.name));
    }
    body
}
