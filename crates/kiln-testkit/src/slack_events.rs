//! Slack Events API requests for tests: envelopes and events in the shapes of Slack's
//! documentation (`url_verification`, `event_callback` with `app_mention` and `message`), and
//! the `X-Slack-Signature` Slack computes: `v0=` + hex HMAC-SHA256 of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}` under the app's signing secret.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// The `X-Slack-Signature` of `body` sent at `timestamp` (Unix seconds).
pub fn sign_slack(signing_secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(signing_secret.as_bytes()).expect("any key length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v0={hex}")
}

/// The request Slack sends when the app's Request URL is set.
pub fn url_verification(challenge: &str) -> Value {
    json!({
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        "challenge": challenge,
        "type": "url_verification",
    })
}

/// An `event_callback` envelope around `event`.
pub fn event_callback(event_id: &str, event: Value) -> Value {
    json!({
        "token": "XXYYZZ",
        "team_id": "T0FAKE",
        "api_app_id": "A0FAKE",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1_700_000_000,
        "authorizations": [{"enterprise_id": null, "team_id": "T0FAKE", "user_id": crate::FAKE_SLACK_BOT_USER, "is_bot": true, "is_enterprise_install": false}],
        "is_ext_shared_channel": false,
        "event_context": "4-eyJldCI6ImFwcF9tZW50aW9uIn0",
    })
}

/// `app_mention`: `user` mentioned the app in `channel` (`text` carries `<@BOT>`), at `ts`,
/// in the thread `thread_ts` if a reply.
pub fn app_mention(
    user: &str,
    channel: &str,
    text: &str,
    ts: &str,
    thread_ts: Option<&str>,
) -> Value {
    let mut event = json!({
        "type": "app_mention",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "team": "T0FAKE",
    });
    if let Some(t) = thread_ts {
        event["thread_ts"] = json!(t);
    }
    event
}

/// `message`: a person's message in `channel` of `channel_type` (`im` for a DM, `channel`
/// for a public channel), in the thread `thread_ts` if a reply.
pub fn message(
    user: &str,
    channel: &str,
    channel_type: &str,
    text: &str,
    ts: &str,
    thread_ts: Option<&str>,
) -> Value {
    let mut event = json!({
        "type": "message",
        "channel": channel,
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "channel_type": channel_type,
    });
    if let Some(t) = thread_ts {
        event["thread_ts"] = json!(t);
    }
    event
}

/// A bot's `message` (`subtype: bot_message`, `bot_id`), which kiln must not answer.
pub fn bot_message(channel: &str, channel_type: &str, text: &str, ts: &str) -> Value {
    json!({
        "type": "message",
        "subtype": "bot_message",
        "bot_id": "B0OTHER",
        "channel": channel,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "channel_type": channel_type,
    })
}
