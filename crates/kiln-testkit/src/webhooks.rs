//! GitHub webhook deliveries for tests: payloads trimmed from the examples in GitHub's webhook
//! documentation (the fields kiln reads and their neighbours, in GitHub's shapes) and the
//! `X-Hub-Signature-256` GitHub computes over the raw body.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// `sha256=<hex HMAC-SHA256 of body under secret>`, as GitHub signs deliveries.
pub fn sign_webhook(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn owner(login: &str) -> Value {
    json!({"login": login, "id": 1, "type": "User", "site_admin": false,
        "html_url": format!("https://github.com/{login}")})
}

/// The `repository` object of a payload.
pub fn repository(full_name: &str, default_branch: &str) -> Value {
    let (o, name) = full_name.split_once('/').expect("owner/name");
    json!({
        "id": 1296269, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5", "name": name,
        "full_name": full_name, "private": true, "owner": owner(o),
        "html_url": format!("https://github.com/{full_name}"),
        "default_branch": default_branch, "master_branch": default_branch,
    })
}

fn pull_request(full_name: &str, number: u64, head: &str, state: &str, merged: bool) -> Value {
    json!({
        "url": format!("https://api.github.com/repos/{full_name}/pulls/{number}"),
        "id": 1, "number": number, "state": state, "locked": false, "title": "A change",
        "user": owner("octocat"), "body": "Please pull these awesome changes",
        "html_url": format!("https://github.com/{full_name}/pull/{number}"),
        "created_at": "2026-11-30T19:01:12Z", "updated_at": "2026-12-01T19:01:12Z",
        "closed_at": if state == "closed" { json!("2026-12-01T19:01:12Z") } else { Value::Null },
        "merged_at": if merged { json!("2026-12-01T19:01:12Z") } else { Value::Null },
        "merged": merged, "draft": false,
        "head": {"label": format!("octo:{head}"), "ref": head, "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
            "user": owner("octocat")},
        "base": {"label": "octo:main", "ref": "main", "sha": "9049f1265b7d61be4a8904a9a27120d2064dab3b",
            "user": owner("octocat")},
    })
}

/// A `pull_request` delivery: `action` is `opened`, `closed`, `reopened` or `synchronize`.
pub fn pull_request_event(
    action: &str,
    full_name: &str,
    number: u64,
    head: &str,
    merged: bool,
) -> Value {
    let state = if action == "closed" { "closed" } else { "open" };
    json!({
        "action": action, "number": number,
        "pull_request": pull_request(full_name, number, head, state, merged),
        "repository": repository(full_name, "main"), "sender": owner("octocat"),
    })
}

/// A `pull_request_review` `submitted` delivery; `state` is `approved`, `changes_requested` or
/// `commented`.
pub fn review_event(
    full_name: &str,
    number: u64,
    head: &str,
    state: &str,
    reviewer: &str,
) -> Value {
    json!({
        "action": "submitted",
        "review": {"id": 80, "user": owner(reviewer), "body": "Looks good", "state": state,
            "html_url": format!("https://github.com/{full_name}/pull/{number}#pullrequestreview-80"),
            "submitted_at": "2026-12-01T19:01:12Z"},
        "pull_request": pull_request(full_name, number, head, "open", false),
        "repository": repository(full_name, "main"), "sender": owner(reviewer),
    })
}

/// A `pull_request_review_comment` `created` delivery on `path` line 3.
pub fn review_comment_event(
    full_name: &str,
    number: u64,
    head: &str,
    comment_id: u64,
    author: &str,
    body: &str,
) -> Value {
    json!({
        "action": "created",
        "comment": {"id": comment_id, "body": body, "user": owner(author), "path": "README.md",
            "line": 3, "original_line": 3, "side": "RIGHT",
            "diff_hunk": "@@ -1,2 +1,3 @@\n the app\n+a line",
            "html_url": format!("https://github.com/{full_name}/pull/{number}#discussion_r{comment_id}")},
        "pull_request": pull_request(full_name, number, head, "open", false),
        "repository": repository(full_name, "main"), "sender": owner(author),
    })
}

fn issue(full_name: &str, number: u64, title: &str, body: &str, is_pull: bool) -> Value {
    let mut issue = json!({
        "url": format!("https://api.github.com/repos/{full_name}/issues/{number}"),
        "html_url": format!("https://github.com/{full_name}/issues/{number}"),
        "id": 1, "number": number, "title": title, "body": body, "user": owner("octocat"),
        "labels": [], "state": "open", "comments": 0,
    });
    if is_pull {
        issue["pull_request"] = json!({
            "url": format!("https://api.github.com/repos/{full_name}/pulls/{number}"),
            "html_url": format!("https://github.com/{full_name}/pull/{number}")});
    }
    issue
}

/// An `issues` `labeled` delivery: `by` put `label` on the issue.
pub fn issue_labeled_event(
    full_name: &str,
    number: u64,
    title: &str,
    body: &str,
    label: &str,
    by: &str,
) -> Value {
    json!({
        "action": "labeled", "issue": issue(full_name, number, title, body, false),
        "label": {"id": 208045946, "name": label, "color": "f29513", "default": false},
        "repository": repository(full_name, "main"), "sender": owner(by),
    })
}

/// An `issue_comment` `created` delivery, on an issue or (`on_pull`) a pull request.
pub fn issue_comment_event(
    full_name: &str,
    number: u64,
    on_pull: bool,
    author: &str,
    body: &str,
) -> Value {
    json!({
        "action": "created",
        "issue": issue(full_name, number, "An issue", "It is broken", on_pull),
        "comment": {"id": 1362, "body": body, "user": owner(author),
            "html_url": format!("https://github.com/{full_name}/issues/{number}#issuecomment-1362")},
        "repository": repository(full_name, "main"), "sender": owner(author),
    })
}

/// A `push` delivery to `refs/heads/<branch>`.
pub fn push_event(full_name: &str, branch: &str, after: &str) -> Value {
    json!({
        "ref": format!("refs/heads/{branch}"), "before": "0000000000000000000000000000000000000000",
        "after": after, "created": false, "deleted": false, "forced": false,
        "commits": [], "head_commit": Value::Null,
        "repository": repository(full_name, "main"), "pusher": {"name": "octocat", "email": "o@x"},
        "sender": owner("octocat"),
    })
}

/// An `installation_repositories` delivery: repositories added to the app's installation.
pub fn installation_repositories_event(added: &[&str]) -> Value {
    let repos: Vec<Value> = added
        .iter()
        .map(|full| json!({"id": 1, "name": full.split('/').nth(1), "full_name": full, "private": true}))
        .collect();
    json!({
        "action": "added", "installation": {"id": 1, "account": owner("octo")},
        "repository_selection": "selected", "repositories_added": repos, "repositories_removed": [],
        "sender": owner("octocat"),
    })
}
