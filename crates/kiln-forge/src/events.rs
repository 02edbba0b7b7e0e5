//! What a forge tells kiln through its webhooks, in the forge-neutral vocabulary: a change
//! request's life (opened, pushed to, reviewed, merged), comments and labels that ask kiln for
//! work, pushes to a default branch, and the app's access changing. GitHub's payloads are read
//! in `github/webhook.rs`; GitLab's would be read into the same types.

use crate::types::RepoRef;

/// A delivery whose signature checked out and whose payload was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The forge's id of the delivery (GitHub's `X-GitHub-Delivery`): the same on a redelivery.
    pub id: String,
    /// The forge's name of the event (`pull_request`, `issue_comment`, …), for logs.
    pub event: String,
    /// What kiln acts on; `None` for an event or action kiln has nothing to do with.
    pub what: Option<ForgeEvent>,
}

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    /// Missing, malformed or wrong signature, or no secret configured to check it: 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// The payload is not what the forge documents for its event: 400.
    #[error("{0}")]
    Malformed(String),
}

/// A change request's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeAction {
    Opened,
    Reopened,
    /// Closed without merging.
    Closed,
    Merged,
    /// New commits on its head branch.
    Synchronized,
}

/// A review's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewVerdict {
    Approved,
    ChangesRequested,
    Commented,
}

/// A change request as a webhook describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRef {
    pub number: u64,
    pub url: String,
    /// The head branch (`kiln/<session>` for kiln's own).
    pub head: String,
}

/// An issue as a webhook describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRef {
    pub number: u64,
    pub url: String,
    pub title: String,
    pub body: String,
}

/// Where a comment was made, and so where a reply goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Thread {
    /// An issue's conversation.
    Issue(IssueRef),
    /// A change request's conversation (GitHub: an issue comment on a pull request). The head
    /// branch is not in GitHub's payload: kiln finds the session by the number.
    Change { number: u64, url: String },
    /// A review comment on a line of a change request's diff; replies go to its thread.
    ReviewComment {
        change: ChangeRef,
        comment_id: u64,
        /// `path:line` and the diff hunk the comment is on.
        context: String,
    },
}

impl Thread {
    /// The issue or change request number the thread is on.
    pub fn number(&self) -> u64 {
        match self {
            Thread::Issue(issue) => issue.number,
            Thread::Change { number, .. } => *number,
            Thread::ReviewComment { change, .. } => change.number,
        }
    }
}

/// What kiln acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgeEvent {
    /// A change request opened, reopened, closed, merged or pushed to.
    Change {
        repo: RepoRef,
        change: ChangeRef,
        action: ChangeAction,
        /// The head commit after the event.
        head_sha: String,
        merged_at_ms: Option<i64>,
        /// The forge login of who did it.
        actor: String,
    },
    /// A review submitted on a change request.
    Review {
        repo: RepoRef,
        change: ChangeRef,
        verdict: ReviewVerdict,
        reviewer: String,
    },
    /// A new comment (not an edit or deletion).
    Comment {
        repo: RepoRef,
        thread: Thread,
        author: String,
        body: String,
    },
    /// A label put on an issue.
    IssueLabeled {
        repo: RepoRef,
        issue: IssueRef,
        label: String,
        /// Who put it there.
        by: String,
    },
    /// A push to a branch.
    Push {
        repo: RepoRef,
        branch: String,
        default_branch: String,
        after: String,
    },
    /// The app's access changed: installed, uninstalled, suspended, repositories added or
    /// removed. Cached installation lookups of these repositories are stale.
    AccessChanged { repos: Vec<RepoRef> },
}

/// How people ask kiln for work on the forge: the label that turns an issue into a session,
/// and the handle a comment mentions (`@kiln`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triggers {
    pub label: String,
    pub mention: String,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            label: "kiln".into(),
            mention: "kiln".into(),
        }
    }
}

impl Triggers {
    /// The text after the first `@mention` of the handle (a whole word, case-insensitive),
    /// trimmed; `None` when the handle is not mentioned. `@kiln-bot` and `x@kiln` are not
    /// mentions of `kiln`.
    pub fn mentioned<'a>(&self, body: &'a str) -> Option<&'a str> {
        let handle = format!("@{}", self.mention.to_ascii_lowercase());
        let lower = body.to_ascii_lowercase();
        let mut from = 0;
        while let Some(at) = lower[from..].find(&handle) {
            let start = from + at;
            let end = start + handle.len();
            let before_ok = start == 0
                || !lower[..start]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '@');
            let after_ok = !lower[end..]
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '/');
            if before_ok && after_ok {
                return Some(body[end..].trim());
            }
            from = end;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_whole_words() {
        let t = Triggers::default();
        assert_eq!(t.mentioned("@kiln fix the test"), Some("fix the test"));
        assert_eq!(t.mentioned("hey @Kiln, please"), Some(", please"));
        assert_eq!(t.mentioned("@kiln-bot do it"), None);
        assert_eq!(t.mentioned("mail me@kiln.dev"), None);
        assert_eq!(t.mentioned("no mention"), None);
        assert_eq!(t.mentioned("@kilns @kiln go"), Some("go"));
    }
}
