//! The Events API payloads kiln reads, in Slack's documented shapes: the `url_verification`
//! handshake and `event_callback` envelopes carrying `app_mention` or `message`. Everything
//! else parses as [`Envelope::Other`]/[`Event::Other`] and is ignored, so a new event type Slack
//! adds never fails a request.

use serde::Deserialize;

/// One request's body.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Envelope {
    UrlVerification {
        challenge: String,
    },
    EventCallback {
        /// Unique per event; a retry of the same event has the same.
        event_id: String,
        event: Event,
    },
    #[serde(other)]
    Other,
}

/// The event inside an `event_callback`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Event {
    AppMention(Message),
    Message(Message),
    #[serde(other)]
    Other,
}

/// What kiln reads of an `app_mention` or `message` event.
#[derive(Debug, Deserialize)]
pub(crate) struct Message {
    /// The author; absent for some bot messages.
    #[serde(default)]
    pub(crate) user: Option<String>,
    #[serde(default)]
    pub(crate) text: String,
    pub(crate) channel: String,
    pub(crate) ts: String,
    /// The thread's parent, for a reply (or the message itself, for a thread's parent).
    #[serde(default)]
    pub(crate) thread_ts: Option<String>,
    /// `im` for a direct message; `channel`, `group`, `mpim` otherwise (`message` only).
    #[serde(default)]
    pub(crate) channel_type: Option<String>,
    /// Edits, deletions, joins, bot messages… (`message_changed`, `bot_message`): not asks.
    #[serde(default)]
    pub(crate) subtype: Option<String>,
    /// Set on a bot's message.
    #[serde(default)]
    pub(crate) bot_id: Option<String>,
}

impl Message {
    /// The thread this message belongs to, or starts.
    pub(crate) fn thread(&self) -> &str {
        self.thread_ts.as_deref().unwrap_or(&self.ts)
    }

    /// The ask: the text with mentions of `bot` taken out and whitespace trimmed.
    pub(crate) fn ask(&self, bot: &str) -> String {
        self.text
            .replace(&format!("<@{bot}>"), " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_testkit::slack_events;

    fn parse(v: serde_json::Value) -> Envelope {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn documented_payloads_parse() {
        assert!(matches!(
            parse(slack_events::url_verification("abc")),
            Envelope::UrlVerification { challenge } if challenge == "abc"
        ));
        let mention = slack_events::app_mention("U1", "C1", "<@UB> fix   the build", "1.2", None);
        let Envelope::EventCallback {
            event_id,
            event: Event::AppMention(m),
        } = parse(slack_events::event_callback("Ev1", mention))
        else {
            panic!("an app_mention")
        };
        assert_eq!(event_id, "Ev1");
        assert_eq!(m.ask("UB"), "fix the build");
        assert_eq!(m.thread(), "1.2");
        let dm = slack_events::message("U1", "D1", "im", "hi", "1.3", Some("1.1"));
        let Envelope::EventCallback {
            event: Event::Message(m),
            ..
        } = parse(slack_events::event_callback("Ev2", dm))
        else {
            panic!("a message")
        };
        assert_eq!((m.channel_type.as_deref(), m.thread()), (Some("im"), "1.1"));
        let bot = slack_events::bot_message("C1", "channel", "beep", "1.4");
        let Envelope::EventCallback {
            event: Event::Message(m),
            ..
        } = parse(slack_events::event_callback("Ev3", bot))
        else {
            panic!("a message")
        };
        assert!(m.bot_id.is_some() && m.user.is_none());
        let other = serde_json::json!({"type": "event_callback", "event_id": "Ev4",
            "event": {"type": "reaction_added", "user": "U1"}});
        assert!(matches!(
            parse(other),
            Envelope::EventCallback {
                event: Event::Other,
                ..
            }
        ));
        assert!(matches!(
            parse(serde_json::json!({"type": "app_rate_limited"})),
            Envelope::Other
        ));
    }
}
