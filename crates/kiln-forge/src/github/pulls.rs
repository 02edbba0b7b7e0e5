//! Pull requests: open one for a branch, or — when GitHub answers 422 "A pull request already
//! exists" — find the open one for `owner:branch` and update its title and body. (GitHub's REST
//! API cannot turn a PR into a draft or back; that stays as it was.)

use super::{FORGE, GitHub};
use crate::error::{ForgeError, Result};
use crate::http;
use crate::types::{ChangeRequest, ChangeState, OpenedChange, RepoRef};
use kiln_core::Secret;
use reqwest::Method;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Pull {
    number: u64,
    html_url: String,
    state: String,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    merged: bool,
    merged_at: Option<String>,
}

impl From<Pull> for ChangeState {
    fn from(p: Pull) -> ChangeState {
        let merged_at_ms = p
            .merged_at
            .as_deref()
            .and_then(crate::time::parse_rfc3339_utc);
        ChangeState {
            number: p.number,
            url: p.html_url,
            state: p.state,
            draft: p.draft,
            merged: p.merged || merged_at_ms.is_some(),
            merged_at_ms,
        }
    }
}

#[derive(Serialize)]
struct Create<'a> {
    title: &'a str,
    head: &'a str,
    base: &'a str,
    body: &'a str,
    draft: bool,
}

#[derive(Serialize)]
struct Update<'a> {
    title: &'a str,
    body: &'a str,
}

pub(crate) async fn open_or_update(
    gh: &GitHub,
    token: &Secret<String>,
    repo: &RepoRef,
    change: &ChangeRequest,
) -> Result<OpenedChange> {
    let what = format!("the pull request for {} on {repo}", change.head);
    let path = format!("/repos/{}/{}/pulls", repo.owner, repo.name);
    let create = Create {
        title: &change.title,
        head: &change.head,
        base: &change.base,
        body: &change.body,
        draft: change.draft,
    };
    let result = http::send(
        FORGE,
        &what,
        gh.request(Method::POST, &path, token)?.json(&create),
    )
    .await;
    match result {
        Ok(response) => {
            let pull: Pull = GitHub::json(&what, response).await?;
            Ok(OpenedChange {
                change: pull.into(),
                created: true,
            })
        }
        Err(ForgeError::Invalid { message, .. })
            if message.contains("A pull request already exists") =>
        {
            let open = find_open(gh, token, repo, &change.head, &what).await?;
            let path = format!("/repos/{}/{}/pulls/{}", repo.owner, repo.name, open);
            let update = Update {
                title: &change.title,
                body: &change.body,
            };
            let response = http::send(
                FORGE,
                &what,
                gh.request(Method::PATCH, &path, token)?.json(&update),
            )
            .await?;
            let pull: Pull = GitHub::json(&what, response).await?;
            Ok(OpenedChange {
                change: pull.into(),
                created: false,
            })
        }
        Err(e) => Err(e),
    }
}

async fn find_open(
    gh: &GitHub,
    token: &Secret<String>,
    repo: &RepoRef,
    head: &str,
    what: &str,
) -> Result<u64> {
    let path = format!("/repos/{}/{}/pulls", repo.owner, repo.name);
    let head = format!("{}:{head}", repo.owner);
    let request = gh
        .request(Method::GET, &path, token)?
        .query(&[("head", head.as_str()), ("state", "open")]);
    let response = http::send(FORGE, what, request).await?;
    let pulls: Vec<Pull> = GitHub::json(what, response).await?;
    pulls
        .first()
        .map(|p| p.number)
        .ok_or_else(|| ForgeError::Protocol {
            forge: FORGE,
            what: what.to_string(),
            message: "it said a pull request exists but lists none open for the branch".into(),
        })
}

pub(crate) async fn get(
    gh: &GitHub,
    token: &Secret<String>,
    repo: &RepoRef,
    number: u64,
) -> Result<ChangeState> {
    let what = format!("pull request #{number} on {repo}");
    let path = format!("/repos/{}/{}/pulls/{number}", repo.owner, repo.name);
    let response = http::send(FORGE, &what, gh.request(Method::GET, &path, token)?).await?;
    Ok(GitHub::json::<Pull>(&what, response).await?.into())
}
