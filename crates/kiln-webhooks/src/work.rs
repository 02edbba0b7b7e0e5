//! Work asked for on the forge: a session started from an issue, a follow-up prompt from a
//! comment on a kiln pull request, and the replies that say what became of it.

use crate::{Intake, Outcome};
use kiln_core::SessionId;
use kiln_engine::{Engine, Error, PromptEnd, Result};
use kiln_forge::{Forge, IssueRef, RepoRef, Thread};
use kiln_protocol::api::{CreateSession, OpenPullRequest, PromptStatus, User, UserRef};
use std::sync::Arc;

/// The most characters of the model's last words quoted in a reply.
const QUOTE_CHARS: usize = 1_500;
/// The most changed files listed in a reply.
const FILES_LISTED: usize = 20;
/// The longest title a session from an issue gets.
const TITLE_CHARS: usize = 200;

fn user_ref(user: &User) -> UserRef {
    UserRef {
        id: user.id.clone(),
        name: user.name.clone(),
    }
}

/// Replies in `thread`, logging (not failing on) a reply the forge refuses: the work itself
/// was handled.
async fn reply(forge: &Arc<dyn Forge>, repo: &RepoRef, thread: &Thread, body: &str) {
    if let Err(e) = forge.reply(repo, thread, body).await {
        tracing::warn!(repo = %repo, number = thread.number(), error = %e, "cannot reply on the forge");
    }
}

impl Intake {
    /// The kiln user linked to `login`, or a polite reply saying how to become one.
    async fn known_user(
        &self,
        forge: &Arc<dyn Forge>,
        base: &str,
        repo: &RepoRef,
        thread: &Thread,
        login: &str,
    ) -> Result<Option<User>> {
        let user = self.inner.engine.user_of_forge_login(login).await?;
        if user.is_none() {
            let text = format!(
                "Hi @{login}, kiln works only for people whose {forge} account is linked to a \
                 kiln user, and yours is not yet. Sign in to kiln and link it \
                 ({base}/api/auth/github/start), then ask again. Nothing was started.",
                forge = forge.name(),
            );
            reply(forge, repo, thread, &text).await;
        }
        Ok(user)
    }
}

/// What to do once the prompt asked for on the forge ends.
enum Then {
    /// Push the branch and open the pull request in the asker's name (work from an issue).
    OpenPullRequest,
    /// Push the new commits to the pull request's branch (a follow-up).
    Push,
}

/// A prompt someone asked for on the forge, and where to answer them.
struct Asked {
    forge: Arc<dyn Forge>,
    repo: RepoRef,
    thread: Thread,
    session: SessionId,
    prompt: kiln_core::PromptId,
    by: UserRef,
    link: String,
    then: Then,
}

impl Intake {
    /// Waits (bounded, holding one of the waiting permits) for the prompt to end, finishes the
    /// work and replies in the thread; stopped by [`Intake::close`].
    fn answer_when_done(&self, permit: tokio::sync::OwnedSemaphorePermit, ask: Asked) {
        let intake = self.clone();
        self.inner.tracker.spawn(async move {
            let _permit = permit;
            let engine = &intake.inner.engine;
            let wait = engine.wait_for_prompt(&ask.session, &ask.prompt, intake.inner.prompt_wait);
            let end = tokio::select! {
                _ = intake.inner.closing.cancelled() => return,
                end = wait => end,
            };
            let text = match (end, &ask.then) {
                (Ok(end), Then::OpenPullRequest) => {
                    finish_issue(engine, &ask.session, &ask.by, &end, &ask.link).await
                }
                (Ok(end), Then::Push) => {
                    finish_follow_up(engine, &ask.session, &ask.by, &end, &ask.link).await
                }
                (Err(e), _) => format!("kiln could not follow the session: {e}"),
            };
            let text = format!("@{}: {text}", ask.by.name);
            reply(&ask.forge, &ask.repo, &ask.thread, &text).await;
        });
    }
}

/// The prompt of a session started from an issue.
fn issue_prompt(issue: &IssueRef, ask: Option<&str>) -> String {
    let mut prompt = format!("Resolve issue #{}: {}\n", issue.number, issue.title);
    if !issue.body.trim().is_empty() {
        prompt.push_str(&format!("\n{}\n", issue.body.trim()));
    }
    if let Some(ask) = ask.filter(|a| !a.is_empty()) {
        prompt.push_str(&format!("\nAsked in a comment: {ask}\n"));
    }
    prompt.push_str(&format!("\n({})", issue.url));
    prompt
}

/// An issue labelled for kiln, or a comment on one mentioning it: a session on the repo with the
/// issue as its prompt, as the kiln user linked to `login`.
pub(crate) async fn from_issue(
    intake: &Intake,
    forge: &Arc<dyn Forge>,
    base: &str,
    repo: &RepoRef,
    issue: &IssueRef,
    login: &str,
    ask: Option<&str>,
) -> Result<Outcome> {
    let engine = &intake.inner.engine;
    let thread = Thread::Issue(issue.clone());
    let Some(kiln_repo) = engine.repos_on_forge(repo).await?.into_iter().next() else {
        let text = format!(
            "Hi @{login}, {repo} is not set up in kiln yet: an admin adds it with \
             `kiln repo add {repo}`. Nothing was started."
        );
        reply(forge, repo, &thread, &text).await;
        return Ok(Outcome::Ignored(format!("{repo} is not a kiln repo")));
    };
    let Some(user) = intake.known_user(forge, base, repo, &thread, login).await? else {
        return Ok(Outcome::Handled(format!(
            "{login} is not a kiln user; replied"
        )));
    };
    let allowed = engine.store().may_use_repo(&kiln_repo.name, &user).await?
        && engine.forge_allows_read(&user.id, &kiln_repo).await?;
    if !allowed {
        let text = format!(
            "Hi @{login}, your kiln user may not start sessions on {repo}. Nothing was started."
        );
        reply(forge, repo, &thread, &text).await;
        return Ok(Outcome::Handled(format!(
            "{login} may not use {repo}; replied"
        )));
    }
    let Ok(permit) = intake.inner.waiting.clone().try_acquire_owned() else {
        let text = format!(
            "Hi @{login}, kiln is busy with many requests from {} right now; ask again in a \
             few minutes. Nothing was started.",
            forge.name()
        );
        reply(forge, repo, &thread, &text).await;
        return Ok(Outcome::Handled("busy; replied".into()));
    };
    let by = user_ref(&user);
    let title: String = format!("#{} {}", issue.number, issue.title)
        .chars()
        .take(TITLE_CHARS)
        .collect();
    let request = CreateSession {
        repo: kiln_repo.name.clone(),
        prompt: issue_prompt(issue, ask),
        title: Some(title),
        plan: false,
    };
    let created = match engine.create_session(&by, &request).await {
        Ok(c) => c,
        Err(e @ (Error::LimitReached(_) | Error::Invalid(_))) => {
            reply(
                forge,
                repo,
                &thread,
                &format!("Hi @{login}, kiln could not start: {e}"),
            )
            .await;
            return Ok(Outcome::Handled(format!("not started: {e}")));
        }
        Err(e) => return Err(e),
    };
    let session = created.session.id.clone();
    let link = format!("{base}/sessions/{session}");
    reply(
        forge,
        repo,
        &thread,
        &format!("@{login} is on it with kiln: [session]({link}). I will open a pull request here when it is done."),
    )
    .await;
    let outcome = Outcome::Handled(format!("session {session} started"));
    let ask = Asked {
        forge: forge.clone(),
        repo: repo.clone(),
        thread,
        session,
        prompt: created.prompt_id.clone(),
        by,
        link,
        then: Then::OpenPullRequest,
    };
    intake.answer_when_done(permit, ask);
    Ok(outcome)
}

/// When an issue's prompt ended: pushed and opened as a pull request in the asker's name, or
/// why not. The reply's text.
async fn finish_issue(
    engine: &Engine,
    session: &SessionId,
    by: &UserRef,
    end: &PromptEnd,
    link: &str,
) -> String {
    if end.status != PromptStatus::Completed {
        return ended_otherwise(end, link);
    }
    if end.files.is_empty() {
        return format!(
            "the [session]({link}) changed no files.\n\n{}",
            quote(&end.last_text)
        );
    }
    if let Err(e) = engine.push_session(session, by).await {
        return format!("the [session]({link}) finished but its branch could not be pushed: {e}");
    }
    match engine
        .open_pull_request(session, by, &OpenPullRequest::default(), link)
        .await
    {
        Ok(pr) => format!(
            "opened pull request #{} ({}).\n\n{}{}",
            pr.number,
            pr.url,
            files(end),
            quote(&end.last_text)
        ),
        Err(e) => format!("the branch is pushed but the pull request could not be opened: {e}"),
    }
}

/// A comment mentioning kiln on one of its pull requests: a follow-up prompt in that pull
/// request's session, as the kiln user linked to `login`; its commits pushed to the same
/// branch, and a reply in the thread.
pub(crate) async fn follow_up(
    intake: &Intake,
    forge: &Arc<dyn Forge>,
    base: &str,
    repo: &RepoRef,
    thread: &Thread,
    login: &str,
    ask: &str,
) -> Result<Outcome> {
    let engine = &intake.inner.engine;
    let (number, head, context) = match thread {
        Thread::ReviewComment {
            change, context, ..
        } => (
            change.number,
            Some(change.head.as_str()),
            Some(context.as_str()),
        ),
        other => (other.number(), None, None),
    };
    let Some(session) = engine.session_of_change(repo, number, head).await? else {
        return Ok(Outcome::Ignored(format!(
            "#{number} of {repo} is not a kiln session's pull request"
        )));
    };
    let Some(user) = intake.known_user(forge, base, repo, thread, login).await? else {
        return Ok(Outcome::Handled(format!(
            "{login} is not a kiln user; replied"
        )));
    };
    let row = engine.store().session_row(&session).await?;
    let kiln_repo = engine.store().repo(&row.repo).await?;
    // kiln's own repo access first (a members-only repo stays so), then GitHub's word; a
    // GitHub that cannot be asked is an error, not a yes.
    if !engine.store().may_use_repo(&kiln_repo.name, &user).await? {
        let text =
            format!("Hi @{login}, your kiln user may not work on {repo}. Nothing was changed.");
        reply(forge, repo, thread, &text).await;
        return Ok(Outcome::Handled(format!(
            "{login} may not use {repo}; replied"
        )));
    }
    match engine.check_forge_write(&user.id, &kiln_repo).await {
        Ok(()) => {}
        Err(Error::Forbidden(why)) => {
            reply(
                forge,
                repo,
                thread,
                &format!("Hi @{login}, {why}. Nothing was changed."),
            )
            .await;
            return Ok(Outcome::Handled(format!(
                "{login} may not write to {repo}; replied"
            )));
        }
        Err(e) => return Err(e),
    }
    let by = user_ref(&user);
    let role = engine.ensure_collaborator(&session, &by).await?;
    if !role.can_prompt() {
        let text = format!(
            "Hi @{login}, you are a viewer of this pull request's kiln session, so you cannot \
             prompt it. Nothing was changed."
        );
        reply(forge, repo, thread, &text).await;
        return Ok(Outcome::Handled(format!("{login} is a viewer; replied")));
    }
    let Ok(permit) = intake.inner.waiting.clone().try_acquire_owned() else {
        let text = format!(
            "Hi @{login}, kiln is busy with many requests right now; ask again in a few minutes."
        );
        reply(forge, repo, thread, &text).await;
        return Ok(Outcome::Handled("busy; replied".into()));
    };
    let mut text = ask.to_string();
    if let Some(context) = context {
        text.push_str(&format!("\n\n(A review comment on {context})"));
    }
    let accepted = match engine.send_prompt(&session, &by, &text).await {
        Ok(a) => a,
        Err(e @ (Error::LimitReached(_) | Error::Invalid(_))) => {
            reply(
                forge,
                repo,
                thread,
                &format!("Hi @{login}, kiln could not take this: {e}"),
            )
            .await;
            return Ok(Outcome::Handled(format!("not taken: {e}")));
        }
        Err(e) => return Err(e),
    };
    let outcome = Outcome::Handled(format!("follow-up prompt in session {session}"));
    let ask = Asked {
        forge: forge.clone(),
        repo: repo.clone(),
        thread: thread.clone(),
        link: format!("{base}/sessions/{session}"),
        session,
        prompt: accepted.prompt_id,
        by,
        then: Then::Push,
    };
    intake.answer_when_done(permit, ask);
    Ok(outcome)
}

/// When a follow-up ended: its commits pushed to the pull request's branch, or why not.
async fn finish_follow_up(
    engine: &Engine,
    session: &SessionId,
    by: &UserRef,
    end: &PromptEnd,
    link: &str,
) -> String {
    if end.status != PromptStatus::Completed {
        return ended_otherwise(end, link);
    }
    if end.files.is_empty() {
        return format!("no files changed.\n\n{}", quote(&end.last_text));
    }
    match engine.push_session(session, by).await {
        Ok(pushed) => format!(
            "pushed {} to `{}`.\n\n{}{}",
            &pushed.commit[..pushed.commit.len().min(12)],
            pushed.branch,
            files(end),
            quote(&end.last_text)
        ),
        Err(e) => {
            format!("the changes are made in the [session]({link}) but could not be pushed: {e}")
        }
    }
}

fn ended_otherwise(end: &PromptEnd, link: &str) -> String {
    match end.status {
        PromptStatus::Queued | PromptStatus::Running => {
            format!("the [session]({link}) is still working; follow it there.")
        }
        status => format!(
            "the prompt ended {} in the [session]({link}); nothing was pushed.",
            status.as_str()
        ),
    }
}

fn files(end: &PromptEnd) -> String {
    let mut out = String::from("Changed:\n");
    for (path, (added, removed)) in end.files.iter().take(FILES_LISTED) {
        out.push_str(&format!("- `{path}` (+{added} −{removed})\n"));
    }
    if end.files.len() > FILES_LISTED {
        out.push_str(&format!("- and {} more\n", end.files.len() - FILES_LISTED));
    }
    out.push('\n');
    out
}

fn quote(text: &str) -> String {
    kiln_core::block_quote(text, QUOTE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_prompts_carry_the_issue() {
        let issue = IssueRef {
            number: 7,
            url: "https://github.com/o/r/issues/7".into(),
            title: "Crash on start".into(),
            body: "It crashes.".into(),
        };
        let p = issue_prompt(&issue, Some("use the new API"));
        assert!(p.starts_with("Resolve issue #7: Crash on start"), "{p}");
        assert!(
            p.contains("It crashes.") && p.contains("use the new API"),
            "{p}"
        );
        assert!(p.ends_with("(https://github.com/o/r/issues/7)"), "{p}");
    }

    #[test]
    fn quotes_are_cut() {
        assert_eq!(quote(""), "");
        assert_eq!(quote("a\nb"), "> a\n> b");
        assert!(quote(&"x".repeat(QUOTE_CHARS + 10)).ends_with('…'));
    }
}
