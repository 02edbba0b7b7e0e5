//! Forge webhooks in. A delivery's signature is checked and its payload read by the forge
//! ([`kiln_forge::Forge::read_delivery`]); here it is de-duplicated by its delivery id (a
//! redelivery changes nothing twice) and turned into kiln's work, through the engine's API only:
//!
//! - a session's change request opened, closed, merged, reopened, pushed to, reviewed → events
//!   in that session's log ([`kiln_engine::Engine::record_change_event`]);
//! - an issue labelled with the trigger label, or a comment on an issue mentioning the app
//!   (`@kiln …`) → a session on the repo with the issue as its prompt, as the kiln user linked
//!   to the person who asked (someone kiln does not know gets a polite reply and nothing runs);
//!   when the prompt ends its branch is pushed and a pull request opened in their name;
//! - a comment mentioning the app on a kiln pull request (its conversation or a review thread)
//!   → a follow-up prompt in that pull request's session; its commits are pushed to the same
//!   branch and kiln replies in the thread with what changed;
//! - a push to a default branch → the repo's image rebuilt at once rather than at the next
//!   cadence;
//! - the app's installation changing → cached installation lookups forgotten.
//!
//! Work from the forge outlives the delivery (GitHub waits 10 s for an answer): each waits for
//! its prompt in a task of its own, bounded in number and in time, and stopped by [`Intake::close`].

mod work;

use kiln_engine::Engine;
use kiln_forge::{Forge, ForgeEvent, WebhookError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The most pieces of work from the forge waiting for their prompts at once; past it a new one
/// is answered with a reply saying kiln is busy.
const MAX_WAITING: usize = 64;
/// How long work from the forge waits for its prompt before it replies without the result.
const PROMPT_WAIT: Duration = Duration::from_secs(2 * 3600);

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acted on; the text says how.
    Handled(String),
    /// Seen before (the same delivery id): nothing done again.
    Duplicate,
    /// Nothing for kiln to do; the text says why.
    Ignored(String),
}

/// Why a delivery was not handled.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The signature is missing or wrong (401), or the payload malformed (400).
    #[error(transparent)]
    Refused(#[from] WebhookError),
    /// No forge is configured to check deliveries with.
    #[error("GitHub is not configured on this server: an admin sets [github] in kiln.toml")]
    NotConfigured,
    /// kiln failed handling it; the delivery is forgotten so that a redelivery is handled.
    #[error(transparent)]
    Engine(#[from] kiln_engine::Error),
}

/// The webhook intake: cheap to clone.
#[derive(Debug, Clone)]
pub struct Intake {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    waiting: Arc<Semaphore>,
    tracker: TaskTracker,
    closing: CancellationToken,
    prompt_wait: Duration,
}

impl Intake {
    pub fn new(engine: Engine) -> Intake {
        Intake {
            inner: Arc::new(Inner {
                engine,
                waiting: Arc::new(Semaphore::new(MAX_WAITING)),
                tracker: TaskTracker::new(),
                closing: CancellationToken::new(),
                prompt_wait: PROMPT_WAIT,
            }),
        }
    }

    /// Stops the work waiting for prompts (their replies are not sent) and waits for it.
    pub async fn close(&self) {
        self.inner.closing.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    /// Handles one delivery: `header` looks up its request headers, `body` is the raw body;
    /// `base_url` is kiln's address as people reach it (`https://kiln.example`), for the links
    /// in replies.
    pub async fn handle(
        &self,
        header: &(dyn Fn(&str) -> Option<String> + Sync),
        body: &[u8],
        base_url: &str,
    ) -> Result<Outcome, IntakeError> {
        let engine = &self.inner.engine;
        let forge = engine
            .forge()
            .map_err(|_| IntakeError::NotConfigured)?
            .clone();
        let delivery = forge.read_delivery(header, body)?;
        let store = engine.store();
        if !store
            .first_delivery(&delivery.id, &delivery.event)
            .await
            .map_err(kiln_engine::Error::from)?
        {
            tracing::debug!(delivery = %delivery.id, event = %delivery.event, "webhook redelivered; already handled");
            return Ok(Outcome::Duplicate);
        }
        let Some(what) = delivery.what else {
            return Ok(Outcome::Ignored(format!(
                "kiln does not act on this {} event",
                delivery.event
            )));
        };
        match self
            .dispatch(&forge, what, base_url.trim_end_matches('/'))
            .await
        {
            Ok(outcome) => {
                tracing::info!(delivery = %delivery.id, event = %delivery.event, outcome = ?outcome, "webhook");
                Ok(outcome)
            }
            Err(e) => {
                tracing::warn!(delivery = %delivery.id, event = %delivery.event, error = %e, "webhook failed; a redelivery will be handled");
                if let Err(forget) = store.forget_delivery(&delivery.id).await {
                    tracing::warn!(error = %forget, "cannot forget a failed delivery");
                }
                Err(e.into())
            }
        }
    }

    async fn dispatch(
        &self,
        forge: &Arc<dyn Forge>,
        what: ForgeEvent,
        base: &str,
    ) -> Result<Outcome, kiln_engine::Error> {
        let engine = &self.inner.engine;
        match &what {
            ForgeEvent::Change { repo, change, .. } | ForgeEvent::Review { repo, change, .. } => {
                match engine
                    .session_of_change(repo, change.number, Some(&change.head))
                    .await?
                {
                    Some(session) => {
                        engine.record_change_event(&session, &what).await?;
                        Ok(Outcome::Handled(format!("recorded in session {session}")))
                    }
                    None => Ok(Outcome::Ignored(format!(
                        "#{} of {repo} is not a kiln session's pull request",
                        change.number
                    ))),
                }
            }
            ForgeEvent::Push {
                repo,
                branch,
                default_branch,
                ..
            } => {
                if branch != default_branch {
                    return Ok(Outcome::Ignored(format!(
                        "a push to {branch}, not the default branch"
                    )));
                }
                let mut started = Vec::new();
                for r in engine.repos_on_forge(repo).await? {
                    match engine.start_image_build(&r.name).await {
                        Ok(image) => started.push(format!("{} ({image})", r.name)),
                        // A build running now: the push's commit is in the next one.
                        Err(kiln_engine::Error::Fleet(kiln_engine::FleetError::BuildRunning {
                            ..
                        })) => {}
                        Err(e) => {
                            tracing::warn!(repo = %r.name, error = %e, "cannot start the image build a push asked for")
                        }
                    }
                }
                Ok(if started.is_empty() {
                    Outcome::Ignored(format!("no image build started for {repo}"))
                } else {
                    Outcome::Handled(format!("image builds started: {}", started.join(", ")))
                })
            }
            ForgeEvent::AccessChanged { repos } => {
                forge.forget_installations(repos).await;
                Ok(Outcome::Handled(format!(
                    "installation changed for {} repositories",
                    repos.len()
                )))
            }
            ForgeEvent::IssueLabeled {
                repo,
                issue,
                label,
                by,
            } => {
                if !label.eq_ignore_ascii_case(&forge.triggers().label) {
                    return Ok(Outcome::Ignored(format!("label {label:?} is not kiln's")));
                }
                work::from_issue(self, forge, base, repo, issue, by, None).await
            }
            ForgeEvent::Comment {
                repo,
                thread,
                author,
                body,
            } => {
                if author.ends_with("[bot]") {
                    return Ok(Outcome::Ignored("a bot's comment".into()));
                }
                let Some(ask) = forge.triggers().mentioned(body) else {
                    return Ok(Outcome::Ignored("the comment does not mention kiln".into()));
                };
                match thread {
                    kiln_forge::Thread::Issue(issue) => {
                        work::from_issue(self, forge, base, repo, issue, author, Some(ask)).await
                    }
                    _ => work::follow_up(self, forge, base, repo, thread, author, ask).await,
                }
            }
        }
    }
}
