//! GitHub's webhook deliveries: the `X-Hub-Signature-256` check (HMAC-SHA256 of the raw body
//! under the app's webhook secret, compared in constant time) and the documented payloads of
//! the events kiln acts on, read into [`ForgeEvent`]s. Both content types GitHub sends are
//! read (`application/json`, and `application/x-www-form-urlencoded` with a `payload` field).

use crate::events::{
    ChangeAction, ChangeRef, Delivery, ForgeEvent, IssueRef, ReviewVerdict, Thread, WebhookError,
};
use crate::types::RepoRef;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;

/// The longest delivery id kept (GitHub's are UUIDs).
const MAX_DELIVERY_ID: usize = 100;

/// Checks `signature` (`sha256=<hex>`) against `body` under `secret`, in constant time.
pub(crate) fn verify(
    secret: &[u8],
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), WebhookError> {
    let Some(signature) = signature else {
        return Err(WebhookError::Unauthenticated(
            "the delivery has no X-Hub-Signature-256 header".into(),
        ));
    };
    let hex = signature.trim().strip_prefix("sha256=").ok_or_else(|| {
        WebhookError::Unauthenticated("X-Hub-Signature-256 is not `sha256=<hex>`".into())
    })?;
    let expected = decode_hex(hex).ok_or_else(|| {
        WebhookError::Unauthenticated("X-Hub-Signature-256 is not `sha256=<hex>`".into())
    })?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| {
        WebhookError::Unauthenticated(
            "X-Hub-Signature-256 does not match the body under the webhook secret".into(),
        )
    })
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Reads a verified delivery. `header` looks up a request header by name.
pub(crate) fn read(
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
) -> Result<Delivery, WebhookError> {
    let event = header("x-github-event")
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            WebhookError::Malformed("the delivery has no X-GitHub-Event header".into())
        })?;
    let id = header("x-github-delivery")
        .filter(|d| !d.is_empty() && d.len() <= MAX_DELIVERY_ID)
        .ok_or_else(|| {
            WebhookError::Malformed("the delivery has no usable X-GitHub-Delivery header".into())
        })?;
    let form =
        header("content-type").is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let json = if form {
        form_payload(body)?
    } else {
        body.to_vec()
    };
    let what = parse(&event, &json)?;
    Ok(Delivery { id, event, what })
}

/// The `payload` field of a form-encoded delivery.
fn form_payload(body: &[u8]) -> Result<Vec<u8>, WebhookError> {
    let missing =
        || WebhookError::Malformed("the form-encoded delivery has no `payload` field".into());
    let field = body
        .split(|b| *b == b'&')
        .find_map(|pair| pair.strip_prefix(b"payload="))
        .ok_or_else(missing)?;
    let plus_as_space: Vec<u8> = field
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    Ok(percent_encoding::percent_decode(&plus_as_space).collect())
}

#[derive(Deserialize)]
struct Account {
    login: String,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    #[serde(default)]
    default_branch: Option<String>,
}

impl Repository {
    fn repo(&self) -> Result<RepoRef, WebhookError> {
        RepoRef::parse(&self.full_name).map_err(|_| {
            WebhookError::Malformed(format!(
                "repository.full_name {:?} is not owner/name",
                self.full_name.chars().take(100).collect::<String>()
            ))
        })
    }
}

#[derive(Deserialize)]
struct Branch {
    #[serde(rename = "ref")]
    name: String,
    sha: String,
}

#[derive(Deserialize)]
struct PullRequest {
    number: u64,
    html_url: String,
    head: Branch,
    #[serde(default)]
    merged: Option<bool>,
    #[serde(default)]
    merged_at: Option<String>,
}

impl PullRequest {
    fn change(&self) -> ChangeRef {
        ChangeRef {
            number: self.number,
            url: self.html_url.clone(),
            head: self.head.name.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Issue {
    number: u64,
    html_url: String,
    title: String,
    #[serde(default)]
    body: Option<String>,
    /// Present when the "issue" is a pull request's conversation.
    #[serde(default)]
    pull_request: Option<serde_json::Value>,
}

impl Issue {
    fn issue(&self) -> IssueRef {
        IssueRef {
            number: self.number,
            url: self.html_url.clone(),
            title: self.title.clone(),
            body: self.body.clone().unwrap_or_default(),
        }
    }
}

#[derive(Deserialize)]
struct Comment {
    id: u64,
    #[serde(default)]
    body: Option<String>,
    user: Account,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    line: Option<u64>,
    #[serde(default)]
    original_line: Option<u64>,
    #[serde(default)]
    diff_hunk: Option<String>,
}

#[derive(Deserialize)]
struct Named {
    full_name: String,
}

fn payload<T: DeserializeOwned>(event: &str, json: &[u8]) -> Result<T, WebhookError> {
    serde_json::from_slice(json).map_err(|e| {
        WebhookError::Malformed(format!(
            "the {event} payload is not what GitHub documents: {e}"
        ))
    })
}

fn repos(named: &[Named]) -> Vec<RepoRef> {
    named
        .iter()
        .filter_map(|n| RepoRef::parse(&n.full_name).ok())
        .collect()
}

/// The event kiln acts on in a payload, if any. Unknown events are `None` without a look at
/// the body; a known event's body must be JSON of its documented shape.
pub(crate) fn parse(event: &str, json: &[u8]) -> Result<Option<ForgeEvent>, WebhookError> {
    match event {
        "pull_request" => {
            #[derive(Deserialize)]
            struct P {
                action: String,
                pull_request: PullRequest,
                repository: Repository,
                sender: Account,
            }
            let p: P = payload(event, json)?;
            let action = match p.action.as_str() {
                "opened" => ChangeAction::Opened,
                "reopened" => ChangeAction::Reopened,
                "synchronize" => ChangeAction::Synchronized,
                "closed" if p.pull_request.merged == Some(true) => ChangeAction::Merged,
                "closed" => ChangeAction::Closed,
                _ => return Ok(None),
            };
            let merged_at_ms = match &p.pull_request.merged_at {
                Some(at) if action == ChangeAction::Merged => {
                    Some(crate::time::parse_rfc3339_utc(at).ok_or_else(|| {
                        WebhookError::Malformed(format!("merged_at {at:?} is not a timestamp"))
                    })?)
                }
                _ => None,
            };
            Ok(Some(ForgeEvent::Change {
                repo: p.repository.repo()?,
                change: p.pull_request.change(),
                action,
                head_sha: p.pull_request.head.sha.clone(),
                merged_at_ms,
                actor: p.sender.login,
            }))
        }
        "pull_request_review" => {
            #[derive(Deserialize)]
            struct Review {
                state: String,
                user: Account,
            }
            #[derive(Deserialize)]
            struct P {
                action: String,
                review: Review,
                pull_request: PullRequest,
                repository: Repository,
            }
            let p: P = payload(event, json)?;
            if p.action != "submitted" {
                return Ok(None);
            }
            let verdict = match p.review.state.to_ascii_lowercase().as_str() {
                "approved" => ReviewVerdict::Approved,
                "changes_requested" => ReviewVerdict::ChangesRequested,
                "commented" => ReviewVerdict::Commented,
                _ => return Ok(None),
            };
            Ok(Some(ForgeEvent::Review {
                repo: p.repository.repo()?,
                change: p.pull_request.change(),
                verdict,
                reviewer: p.review.user.login,
            }))
        }
        "pull_request_review_comment" => {
            #[derive(Deserialize)]
            struct P {
                action: String,
                comment: Comment,
                pull_request: PullRequest,
                repository: Repository,
            }
            let p: P = payload(event, json)?;
            if p.action != "created" {
                return Ok(None);
            }
            let c = p.comment;
            let line = c.line.or(c.original_line);
            let mut context = c.path.clone().unwrap_or_default();
            if let Some(line) = line {
                context.push_str(&format!(":{line}"));
            }
            if let Some(hunk) = &c.diff_hunk {
                context.push_str(&format!("\n```diff\n{hunk}\n```"));
            }
            Ok(Some(ForgeEvent::Comment {
                repo: p.repository.repo()?,
                thread: Thread::ReviewComment {
                    change: p.pull_request.change(),
                    comment_id: c.id,
                    context,
                },
                author: c.user.login,
                body: c.body.unwrap_or_default(),
            }))
        }
        "issue_comment" => {
            #[derive(Deserialize)]
            struct P {
                action: String,
                issue: Issue,
                comment: Comment,
                repository: Repository,
            }
            let p: P = payload(event, json)?;
            if p.action != "created" {
                return Ok(None);
            }
            let thread = if p.issue.pull_request.is_some() {
                Thread::Change {
                    number: p.issue.number,
                    url: p.issue.html_url.clone(),
                }
            } else {
                Thread::Issue(p.issue.issue())
            };
            Ok(Some(ForgeEvent::Comment {
                repo: p.repository.repo()?,
                thread,
                author: p.comment.user.login,
                body: p.comment.body.unwrap_or_default(),
            }))
        }
        "issues" => {
            #[derive(Deserialize)]
            struct Label {
                name: String,
            }
            #[derive(Deserialize)]
            struct P {
                action: String,
                issue: Issue,
                #[serde(default)]
                label: Option<Label>,
                repository: Repository,
                sender: Account,
            }
            let p: P = payload(event, json)?;
            match (p.action.as_str(), p.label) {
                ("labeled", Some(label)) if p.issue.pull_request.is_none() => {
                    Ok(Some(ForgeEvent::IssueLabeled {
                        repo: p.repository.repo()?,
                        issue: p.issue.issue(),
                        label: label.name,
                        by: p.sender.login,
                    }))
                }
                _ => Ok(None),
            }
        }
        "push" => {
            #[derive(Deserialize)]
            struct P {
                #[serde(rename = "ref")]
                reference: String,
                after: String,
                repository: Repository,
            }
            let p: P = payload(event, json)?;
            let Some(branch) = p.reference.strip_prefix("refs/heads/") else {
                return Ok(None); // a tag
            };
            let Some(default_branch) = p.repository.default_branch.clone() else {
                return Err(WebhookError::Malformed(
                    "the push payload's repository has no default_branch".into(),
                ));
            };
            Ok(Some(ForgeEvent::Push {
                repo: p.repository.repo()?,
                branch: branch.to_string(),
                default_branch,
                after: p.after,
            }))
        }
        "installation" => {
            #[derive(Deserialize)]
            struct P {
                #[serde(default)]
                repositories: Option<Vec<Named>>,
            }
            let p: P = payload(event, json)?;
            Ok(Some(ForgeEvent::AccessChanged {
                repos: repos(p.repositories.as_deref().unwrap_or_default()),
            }))
        }
        "installation_repositories" => {
            #[derive(Deserialize)]
            struct P {
                #[serde(default)]
                repositories_added: Vec<Named>,
                #[serde(default)]
                repositories_removed: Vec<Named>,
            }
            let p: P = payload(event, json)?;
            let mut changed = repos(&p.repositories_added);
            changed.extend(repos(&p.repositories_removed));
            Ok(Some(ForgeEvent::AccessChanged { repos: changed }))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        let bytes = mac.finalize().into_bytes();
        format!(
            "sha256={}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    #[test]
    fn signatures_are_checked() {
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
        let documented = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            verify(
                b"It's a Secret to Everybody",
                b"Hello, World!",
                Some(documented)
            ),
            Ok(())
        );
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            documented
        );
        let body = br#"{"zen":"hi"}"#;
        let good = sign(b"s3cret", body);
        assert!(verify(b"s3cret", body, Some(&good)).is_ok());
        assert!(verify(b"other", body, Some(&good)).is_err());
        assert!(verify(b"s3cret", b"{}", Some(&good)).is_err());
        assert!(verify(b"s3cret", body, None).is_err());
        assert!(verify(b"s3cret", body, Some("sha1=abc")).is_err());
        assert!(verify(b"s3cret", body, Some("sha256=zz")).is_err());
    }

    #[test]
    fn form_payloads_are_read() {
        let body = b"payload=%7B%22zen%22%3A%22a+b%22%7D";
        assert_eq!(form_payload(body).unwrap(), br#"{"zen":"a b"}"#);
        assert!(form_payload(b"other=1").is_err());
    }

    #[test]
    fn unknown_events_and_actions_are_nothing() {
        assert_eq!(parse("ping", b"not json at all"), Ok(None));
        assert_eq!(parse("star", b"{}"), Ok(None));
        let edited = br#"{"action":"edited","issue":{"number":1,"html_url":"u","title":"t"},
            "comment":{"id":1,"body":"@kiln x","user":{"login":"a"}},
            "repository":{"full_name":"o/r"}}"#;
        assert_eq!(parse("issue_comment", edited), Ok(None));
    }

    #[test]
    fn malformed_known_events_are_refused() {
        assert!(matches!(
            parse("pull_request", b"{"),
            Err(WebhookError::Malformed(_))
        ));
        assert!(matches!(
            parse("pull_request", br#"{"action":"opened"}"#),
            Err(WebhookError::Malformed(_))
        ));
    }
}
