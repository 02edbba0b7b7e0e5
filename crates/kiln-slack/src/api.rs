//! The Slack Web API client: one `POST {api_url}/{method}` with a JSON body
//! (`application/json; charset=utf-8`) and the bot token as `Authorization: Bearer`. Slack
//! answers HTTP 200 with `ok: false` and an error code for most failures; 429 carries
//! `Retry-After` (seconds), which is honoured — up to [`MAX_RATE_LIMIT_WAITS`] times and
//! [`MAX_RETRY_AFTER`] each — before the call fails.

use crate::SlackError;
use kiln_core::Secret;
use serde_json::Value;
use std::time::Duration;

/// Every request gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many 429s one call waits out before it fails.
const MAX_RATE_LIMIT_WAITS: u32 = 3;
/// The longest `Retry-After` waited for; a longer one fails the call at once.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A Slack Web API client for one bot token. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SlackApi {
    http: reqwest::Client,
    /// `https://slack.com/api`, or a test's fake.
    base: String,
    token: Secret<String>,
}

impl SlackApi {
    pub fn new(base: &str, token: Secret<String>) -> Result<SlackApi, SlackError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if kiln_core::url_host(base)
            .is_some_and(|h| h == "localhost" || h.starts_with("127.") || h == "::1")
        {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| SlackError::Api(format!("cannot make an HTTP client: {e}")))?;
        Ok(SlackApi {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// Calls `method` with `args`; the answer's JSON when `ok` is true.
    pub async fn call(&self, method: &str, args: &Value) -> Result<Value, SlackError> {
        let url = format!("{}/{method}", self.base);
        let mut waits = 0;
        loop {
            let response = self
                .http
                .post(&url)
                .bearer_auth(self.token.expose())
                .header("content-type", "application/json; charset=utf-8")
                .body(args.to_string())
                .send()
                .await
                .map_err(|e| SlackError::Api(format!("Slack's {method} is unreachable: {e}")))?;
            if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                let after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(Duration::from_secs(1));
                if waits >= MAX_RATE_LIMIT_WAITS || after > MAX_RETRY_AFTER {
                    return Err(SlackError::Api(format!(
                        "Slack rate-limits {method}: asked to wait {} s",
                        after.as_secs()
                    )));
                }
                waits += 1;
                tracing::debug!(
                    method,
                    wait_secs = after.as_secs(),
                    "Slack rate limit; waiting"
                );
                tokio::time::sleep(after).await;
                continue;
            }
            let status = response.status();
            let body: Value = response.json().await.map_err(|e| {
                SlackError::Api(format!(
                    "Slack's {method} answered {status} without JSON: {e}"
                ))
            })?;
            if body.get("ok").and_then(Value::as_bool) == Some(true) {
                return Ok(body);
            }
            let code = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown_error");
            return Err(SlackError::Api(format!("Slack's {method} failed: {code}")));
        }
    }

    /// The bot's own user id (`auth.test`).
    pub async fn bot_user_id(&self) -> Result<String, SlackError> {
        let answer = self.call("auth.test", &serde_json::json!({})).await?;
        answer
            .get("user_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| SlackError::Api("Slack's auth.test answered without user_id".into()))
    }

    /// Posts `text` in `channel` (in the thread `thread_ts` if given); the new message's `ts`.
    pub async fn post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        text: &str,
    ) -> Result<String, SlackError> {
        let mut args = serde_json::json!({"channel": channel, "text": text, "unfurl_links": false});
        if let Some(t) = thread_ts {
            args["thread_ts"] = Value::String(t.into());
        }
        let answer = self.call("chat.postMessage", &args).await?;
        answer
            .get("ts")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| SlackError::Api("Slack's chat.postMessage answered without ts".into()))
    }

    /// Replaces the text of the bot's message `ts` in `channel`.
    pub async fn update(&self, channel: &str, ts: &str, text: &str) -> Result<(), SlackError> {
        self.call(
            "chat.update",
            &serde_json::json!({"channel": channel, "ts": ts, "text": text}),
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_testkit::{FAKE_SLACK_BOT_TOKEN, FAKE_SLACK_BOT_USER, FakeSlack};

    #[tokio::test]
    async fn calls_answers_errors_and_rate_limits() {
        let fake = FakeSlack::start().await;
        fake.add_channel("C1", "general", "", false);
        let api = SlackApi::new(&fake.api_url(), Secret::new(FAKE_SLACK_BOT_TOKEN.into())).unwrap();
        assert_eq!(api.bot_user_id().await.unwrap(), FAKE_SLACK_BOT_USER);

        let ts = api.post("C1", None, "hello").await.unwrap();
        api.update("C1", &ts, "hello again").await.unwrap();
        assert_eq!(fake.thread("C1", &ts)[0].versions, ["hello", "hello again"]);
        let call = &fake.calls_of("chat.postMessage")[0];
        assert_eq!(
            call.authorization.as_deref(),
            Some(format!("Bearer {FAKE_SLACK_BOT_TOKEN}").as_str())
        );

        let e = api.post("C404", None, "x").await.unwrap_err().to_string();
        assert!(e.contains("channel_not_found"), "{e}");

        // A 429 is waited out (Retry-After: 1) and the call then succeeds.
        fake.rate_limit_next("chat.postMessage", 1);
        let started = std::time::Instant::now();
        api.post("C1", None, "after the limit").await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(1));
        let statuses: Vec<u16> = fake
            .calls_of("chat.postMessage")
            .iter()
            .map(|c| c.status)
            .collect();
        assert_eq!(statuses, [200, 200, 429, 200]);
        // Too long a wait fails the call rather than holding it.
        fake.rate_limit_next("chat.update", 3600);
        let e = api.update("C1", &ts, "x").await.unwrap_err().to_string();
        assert!(e.contains("rate-limits chat.update"), "{e}");

        let wrong = SlackApi::new(&fake.api_url(), Secret::new("xoxb-wrong".into())).unwrap();
        let e = wrong.bot_user_id().await.unwrap_err().to_string();
        assert!(e.contains("invalid_auth"), "{e}");
    }
}
