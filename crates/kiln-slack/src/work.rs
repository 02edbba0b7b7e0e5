//! The work an event asks for: which kiln user and which session or repo it is, the prompt
//! sent through the engine, and the thread kept up to date until the prompt ends.

use crate::events::Message;
use crate::{Configured, PROGRESS_EVERY, PROMPT_WAIT, Slack};
use kiln_core::{PromptId, SessionId, human_duration};
use kiln_engine::{Error, PromptEnd};
use kiln_protocol::api::{CreateSession, PromptStatus, User, UserRef};
use std::time::Instant;

/// The most characters of the model's last words quoted in a reply.
const QUOTE_CHARS: usize = 1_500;
/// The most changed files listed in a reply.
const FILES_LISTED: usize = 20;
/// The longest title a session from Slack gets.
const TITLE_CHARS: usize = 80;

/// Where to answer: a channel and the thread in it.
struct Thread<'a> {
    channel: &'a str,
    ts: &'a str,
    /// Who asked: their Slack user id, to mention them.
    asker: &'a str,
}

impl Slack {
    fn configured(&self) -> &Configured {
        self.inner
            .configured
            .as_ref()
            .expect("work is only taken when Slack is configured")
    }

    /// Posts `text` in the thread, logging (not failing on) what Slack refuses.
    async fn say(&self, thread: &Thread<'_>, text: &str) -> Option<String> {
        match self
            .configured()
            .api
            .post(thread.channel, Some(thread.ts), text)
            .await
        {
            Ok(ts) => Some(ts),
            Err(e) => {
                tracing::warn!(channel = thread.channel, error = %e, "cannot post in Slack");
                None
            }
        }
    }

    /// One message or mention: everything it leads to. Failures are told in the thread.
    pub(crate) async fn work(&self, message: Message, mention: bool, base: &str) {
        if let Err(e) = self.try_work(&message, mention, base).await {
            tracing::warn!(channel = %message.channel, ts = %message.ts, error = %e, "Slack work failed");
            let thread = Thread {
                channel: &message.channel,
                ts: message.thread(),
                asker: message.user.as_deref().unwrap_or_default(),
            };
            self.say(&thread, &format!("kiln failed handling this: {e}"))
                .await;
        }
    }

    async fn try_work(
        &self,
        message: &Message,
        mention: bool,
        base: &str,
    ) -> Result<(), crate::SlackError> {
        let configured = self.configured();
        let engine = &self.inner.engine;
        let store = engine.store();
        let Some(author) = message.user.as_deref() else {
            return Ok(());
        };
        if message.subtype.is_some() || message.bot_id.is_some() {
            return Ok(());
        }
        let bot = configured
            .bot
            .get_or_try_init(|| configured.api.bot_user_id())
            .await?;
        if author == bot {
            return Ok(());
        }
        let dm = message.channel_type.as_deref() == Some("im") || message.channel.starts_with('D');
        let thread = Thread {
            channel: &message.channel,
            ts: message.thread(),
            asker: author,
        };
        let session = store
            .slack_thread(thread.channel, thread.ts)
            .await
            .map_err(Error::from)?;
        if !mention && !dm {
            // A channel message: an ask only as a reply in a session's thread. One that
            // mentions kiln also comes as an `app_mention`, handled as such.
            if session.is_none() || message.text.contains(&format!("<@{bot}>")) {
                return Ok(());
            }
        }
        // The same message can come as two events (an `app_mention` and a `message`).
        if !store
            .first_delivery(
                &format!("slack-message:{}:{}", message.channel, message.ts),
                "slack",
            )
            .await
            .map_err(Error::from)?
        {
            return Ok(());
        }
        let Some(user) = store.user_of_slack(author).await.map_err(Error::from)? else {
            if store
                .first_slack_telling(author)
                .await
                .map_err(Error::from)?
            {
                let text = format!(
                    "Hi <@{author}>, kiln works only for people whose Slack account is linked to \
                     a kiln user, and yours is not yet. Sign in to kiln ({base}) and link your \
                     Slack member id `{author}` to it: `PUT {base}/api/me/slack` with \
                     `{{\"slack_user\": \"{author}\"}}` (see kiln's docs/slack.md). Then ask \
                     again. Nothing was started."
                );
                self.say(&thread, &text).await;
            }
            return Ok(());
        };
        let by = UserRef {
            id: user.id.clone(),
            name: user.name.clone(),
        };
        let ask = message.ask(bot);
        match session {
            Some(session) => {
                self.follow_up(&thread, &session, &user, &by, &ask, base)
                    .await
            }
            None => self.start(&thread, &user, &by, &ask, base).await,
        }
    }

    /// A new session from a mention or a DM.
    async fn start(
        &self,
        thread: &Thread<'_>,
        user: &User,
        by: &UserRef,
        ask: &str,
        base: &str,
    ) -> Result<(), crate::SlackError> {
        let engine = &self.inner.engine;
        let store = engine.store();
        let (named, ask) = split_repo(ask);
        if ask.is_empty() {
            self.say(
                thread,
                "What should kiln do? Mention me again with the request.",
            )
            .await;
            return Ok(());
        }
        let repos = store.list_repos().await.map_err(Error::from)?;
        let names: Vec<&str> = repos.iter().map(|r| r.name.as_str()).collect();
        let chosen = match named {
            Some(name) if names.contains(&name.as_str()) => Some(name),
            Some(name) => {
                self.say(
                    thread,
                    &format!("kiln has no repo `{name}`. {}", list_repos(&names)),
                )
                .await;
                return Ok(());
            }
            None => self
                .configured()
                .config
                .channels
                .get(thread.channel)
                .cloned()
                .or_else(|| (names.len() == 1).then(|| names[0].to_string())),
        };
        let Some(repo) = chosen else {
            let text = if names.is_empty() {
                "kiln has no repositories yet: an admin adds one with `kiln repo add`. Nothing was started.".to_string()
            } else {
                format!("Which repository is this about? {}", list_repos(&names))
            };
            self.say(thread, &text).await;
            return Ok(());
        };
        if !store.may_use_repo(&repo, user).await.map_err(Error::from)? {
            self.say(
                thread,
                &format!("Your kiln user may not start sessions on `{repo}`. Nothing was started."),
            )
            .await;
            return Ok(());
        }
        let title: String = ask
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(TITLE_CHARS)
            .collect();
        let request = CreateSession {
            repo: repo.clone(),
            prompt: ask.clone(),
            title: Some(title),
            plan: false,
        };
        let created = match engine.create_session(by, &request).await {
            Ok(c) => c,
            Err(e @ (Error::LimitReached(_) | Error::Invalid(_))) => {
                self.say(thread, &format!("kiln could not start: {e}"))
                    .await;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let session = created.session.id;
        store
            .set_slack_thread(thread.channel, thread.ts, &session)
            .await
            .map_err(Error::from)?;
        self.follow(thread, &session, &created.prompt_id, by, &repo, base)
            .await;
        Ok(())
    }

    /// A follow-up prompt in the thread's session, as `user`.
    async fn follow_up(
        &self,
        thread: &Thread<'_>,
        session: &SessionId,
        user: &User,
        by: &UserRef,
        ask: &str,
        base: &str,
    ) -> Result<(), crate::SlackError> {
        let engine = &self.inner.engine;
        let store = engine.store();
        if ask.is_empty() {
            return Ok(());
        }
        let row = store.session_row(session).await.map_err(Error::from)?;
        if !store
            .may_use_repo(&row.repo, user)
            .await
            .map_err(Error::from)?
        {
            self.say(
                thread,
                &format!(
                    "<@{}>'s kiln user may not work on `{}`. Nothing was sent.",
                    thread.asker, row.repo
                ),
            )
            .await;
            return Ok(());
        }
        let role = engine.ensure_collaborator(session, by).await?;
        if !role.can_prompt() {
            self.say(
                thread,
                "You are a viewer of this thread's kiln session, so you cannot prompt it.",
            )
            .await;
            return Ok(());
        }
        let accepted = match engine.send_prompt(session, by, ask).await {
            Ok(a) => a,
            Err(e @ (Error::LimitReached(_) | Error::Invalid(_))) => {
                self.say(thread, &format!("kiln could not take this: {e}"))
                    .await;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.follow(thread, session, &accepted.prompt_id, by, &row.repo, base)
            .await;
        Ok(())
    }

    /// Keeps one progress message up to date while the prompt runs (at most one update per
    /// [`PROGRESS_EVERY`]), then replies with how it ended.
    async fn follow(
        &self,
        thread: &Thread<'_>,
        session: &SessionId,
        prompt: &PromptId,
        by: &UserRef,
        repo: &str,
        base: &str,
    ) {
        let engine = &self.inner.engine;
        let link = format!("{base}/sessions/{session}");
        let started = Instant::now();
        let head = format!(
            "{} asked kiln on `{repo}` · <{link}|open the session>",
            by.name
        );
        let progress =
            |status: &str| format!("{head}\n{status} · {}", human_duration(started.elapsed()));
        let Some(progress_ts) = self.say(thread, &progress("⏳ queued")).await else {
            return;
        };
        let wait = engine.wait_for_prompt(session, prompt, PROMPT_WAIT);
        tokio::pin!(wait);
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let api = &self.configured().api;
        let end = loop {
            tokio::select! {
                end = &mut wait => break end,
                _ = tick.tick() => {
                    let status = match engine.running_prompt(session).await {
                        Ok(Some(p)) if &p == prompt => "⚙️ working",
                        _ => "⏳ queued",
                    };
                    if let Err(e) = api.update(thread.channel, &progress_ts, &progress(status)).await {
                        tracing::debug!(error = %e, "cannot update the Slack progress message");
                    }
                }
            }
        };
        let (status, text) = match end {
            Ok(end) => (
                match end.status {
                    PromptStatus::Completed => "✅ done".to_string(),
                    PromptStatus::Queued | PromptStatus::Running => "⏳ still working".to_string(),
                    other => format!("⚠️ {}", other.as_str()),
                },
                self.summary(session, &end, &link).await,
            ),
            Err(e) => (
                "⚠️ not followed".into(),
                format!("kiln could not follow the session: {e}"),
            ),
        };
        if let Err(e) = api
            .update(thread.channel, &progress_ts, &progress(&status))
            .await
        {
            tracing::debug!(error = %e, "cannot update the Slack progress message");
        }
        self.say(thread, &format!("<@{}>: {text}", thread.asker))
            .await;
    }

    /// The final reply: how the prompt ended, the files it changed, the pull request if the
    /// session has one, and the model's last words.
    async fn summary(&self, session: &SessionId, end: &PromptEnd, link: &str) -> String {
        let mut out = match end.status {
            PromptStatus::Completed => "done.".to_string(),
            PromptStatus::Queued | PromptStatus::Running => {
                format!("still working after a long time; follow it in <{link}|the session>.")
            }
            status => format!(
                "the prompt ended {} in <{link}|the session>.",
                status.as_str()
            ),
        };
        out.push('\n');
        if !end.files.is_empty() {
            out.push_str("Changed:\n");
            for (path, (added, removed)) in end.files.iter().take(FILES_LISTED) {
                out.push_str(&format!("• `{path}` (+{added} −{removed})\n"));
            }
            if end.files.len() > FILES_LISTED {
                out.push_str(&format!("• and {} more\n", end.files.len() - FILES_LISTED));
            }
        }
        let engine = &self.inner.engine;
        if let Ok(row) = engine.store().session_row(session).await
            && let Some(pr) = engine.summary(&row, None).pull_request
        {
            out.push_str(&format!(
                "Pull request: <{}|#{}> ({})\n",
                pr.url, pr.number, pr.state
            ));
        }
        out.push_str(&quote(&end.last_text));
        out
    }
}

/// `repo:NAME` taken out of an ask: the repo named, and the rest.
fn split_repo(ask: &str) -> (Option<String>, String) {
    let mut named = None;
    let rest: Vec<&str> = ask
        .split_whitespace()
        .filter(|w| match w.strip_prefix("repo:") {
            Some(name) if named.is_none() && !name.is_empty() => {
                named = Some(name.to_string());
                false
            }
            _ => true,
        })
        .collect();
    (named, rest.join(" "))
}

fn list_repos(names: &[&str]) -> String {
    let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    format!(
        "Mention me again in this thread with `repo:NAME` in the message. The repos: {}.",
        list.join(", ")
    )
}

fn quote(text: &str) -> String {
    kiln_core::block_quote(text, QUOTE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repos_are_named_in_asks() {
        assert_eq!(
            split_repo("fix it repo:web now"),
            (Some("web".into()), "fix it now".into())
        );
        assert_eq!(split_repo("fix it"), (None, "fix it".into()));
        assert_eq!(split_repo("repo: x"), (None, "repo: x".into()));
    }

    #[test]
    fn quotes_are_cut() {
        assert_eq!(quote(""), "");
        assert_eq!(quote("a\nb"), "> a\n> b");
        assert!(quote(&"x".repeat(QUOTE_CHARS + 10)).ends_with('…'));
    }
}
