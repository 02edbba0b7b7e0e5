//! Slack in. A request to `POST /api/slack/events` is checked (the v0 signature under the app's
//! signing secret, a timestamp within five minutes: [`verify`]), de-duplicated by its
//! `event_id` (Slack retries, with `X-Slack-Retry-Num`, an event it thinks was not acknowledged)
//! and acknowledged at once — Slack waits three seconds — while the work runs in a task of its
//! own, bounded in number and in time, and stopped by [`Slack::close`]. The work, through the
//! engine's API only:
//!
//! - an @mention in a channel or a direct message starts a session on the repo asked for
//!   (`repo:NAME` in the message), the channel's default (`[slack] channels`), or the only repo;
//!   when none of those decides, kiln asks in the thread, listing the repos;
//! - a message in a thread that drives a session (the thread ↔ session map in control.db) is a
//!   follow-up prompt, authored by the kiln user linked to its Slack author;
//! - a Slack user with no link is told once how to link (`PUT /api/me/slack`), and nothing runs;
//! - while a prompt runs, one message in the thread shows its status and elapsed time, updated
//!   in place at most every [`PROGRESS_EVERY`]; when it ends, a reply says what was done.

mod api;
mod events;
mod verify;
mod work;

pub use api::SlackApi;

use events::{Envelope, Event};
use kiln_core::Secret;
use kiln_engine::Engine;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Slack's public Web API.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";
/// The most events being worked on (and prompts followed) at once; past it an event is
/// acknowledged and dropped, with a warning in the log.
const MAX_WORKING: usize = 64;
/// How long a thread's prompt is followed before kiln stops updating the thread.
const PROMPT_WAIT: Duration = Duration::from_secs(2 * 3600);
/// The least time between two updates of a thread's progress message (Slack allows about one
/// `chat.update` per second per channel; this leaves room for the rest).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// `[slack]` of kiln.toml, resolved.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// The bot's OAuth token (`xoxb-…`).
    pub bot_token: Secret<String>,
    /// The app's signing secret: every request is checked against it.
    pub signing_secret: Secret<String>,
    /// The app-level token (`xapp-…`) for Socket Mode; kept for when Socket Mode is supported.
    pub app_token: Option<Secret<String>>,
    /// The Web API base ([`DEFAULT_API_URL`]; a proxy's or a test's otherwise).
    pub api_url: String,
    /// Channel id (`C…`) → the repo a session started there is on, unless the message names
    /// another.
    pub channels: BTreeMap<String, String>,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// The signature is missing, wrong or too old (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The body is not a Slack Events API payload (400).
    #[error("{0}")]
    Malformed(String),
    /// Slack is not configured on this server (503).
    #[error("Slack is not configured on this server: an admin sets [slack] in kiln.toml")]
    NotConfigured,
    /// A call to Slack's Web API failed.
    #[error("{0}")]
    Api(String),
    /// kiln failed doing the work.
    #[error(transparent)]
    Engine(#[from] kiln_engine::Error),
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// `url_verification`: answer with this challenge.
    Challenge(String),
    /// Taken: the work runs on (the text says what it is).
    Accepted(String),
    /// This event id was seen before: nothing done again.
    Duplicate,
    /// Nothing for kiln to do; the text says why.
    Ignored(String),
}

/// Slack's intake. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Slack {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    /// None: Slack is not configured, and every request gets [`SlackError::NotConfigured`].
    configured: Option<Configured>,
    working: Arc<Semaphore>,
    tracker: TaskTracker,
    closing: CancellationToken,
}

#[derive(Debug)]
struct Configured {
    config: SlackConfig,
    api: SlackApi,
    /// The bot's user id, asked of `auth.test` once: its mentions are taken out of asks and
    /// its own messages ignored.
    bot: OnceCell<String>,
}

impl Slack {
    /// Slack's intake for `engine`; with `config` None every request is refused as not
    /// configured.
    pub fn new(engine: Engine, config: Option<SlackConfig>) -> Result<Slack, SlackError> {
        let configured = match config {
            Some(config) => Some(Configured {
                api: SlackApi::new(&config.api_url, config.bot_token.clone())?,
                config,
                bot: OnceCell::new(),
            }),
            None => None,
        };
        Ok(Slack {
            inner: Arc::new(Inner {
                engine,
                configured,
                working: Arc::new(Semaphore::new(MAX_WORKING)),
                tracker: TaskTracker::new(),
                closing: CancellationToken::new(),
            }),
        })
    }

    /// Stops the work in progress (threads are no longer updated) and waits for it.
    pub async fn close(&self) {
        self.inner.closing.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    /// Handles one Events API request: `header` looks up its headers, `body` is the raw body,
    /// `base_url` is kiln's address as people reach it (for links), `now_secs` the Unix time.
    pub async fn handle(
        &self,
        header: &(dyn Fn(&str) -> Option<String> + Sync),
        body: &[u8],
        base_url: &str,
        now_secs: i64,
    ) -> Result<Receipt, SlackError> {
        let Some(configured) = &self.inner.configured else {
            return Err(SlackError::NotConfigured);
        };
        verify::verify(
            configured.config.signing_secret.expose().as_bytes(),
            header("x-slack-request-timestamp").as_deref(),
            header("x-slack-signature").as_deref(),
            body,
            now_secs,
        )?;
        let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
            SlackError::Malformed(format!("the body is not a Slack Events API payload: {e}"))
        })?;
        let (event_id, event) = match envelope {
            Envelope::UrlVerification { challenge } => return Ok(Receipt::Challenge(challenge)),
            Envelope::Other => return Ok(Receipt::Ignored("not an event kiln acts on".into())),
            Envelope::EventCallback { event_id, event } => (event_id, event),
        };
        let (message, mention) = match event {
            Event::AppMention(m) => (m, true),
            Event::Message(m) => (m, false),
            Event::Other => return Ok(Receipt::Ignored("not an event kiln acts on".into())),
        };
        let store = self.inner.engine.store();
        if !store
            .first_delivery(&format!("slack:{event_id}"), "slack")
            .await
            .map_err(kiln_engine::Error::from)?
        {
            tracing::debug!(event = %event_id, retry = ?header("x-slack-retry-num"), "Slack event seen before");
            return Ok(Receipt::Duplicate);
        }
        let Ok(permit) = self.inner.working.clone().try_acquire_owned() else {
            tracing::warn!(event = %event_id, "too much Slack work at once; event dropped");
            return Ok(Receipt::Ignored("kiln is busy; event dropped".into()));
        };
        let slack = self.clone();
        let base = base_url.trim_end_matches('/').to_string();
        let detail = format!("event {event_id} taken");
        self.inner.tracker.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = slack.inner.closing.cancelled() => {}
                () = slack.work(message, mention, &base) => {}
            }
        });
        Ok(Receipt::Accepted(detail))
    }
}
