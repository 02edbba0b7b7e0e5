//! WebSocket frames. One socket follows one session
//! (`GET /api/sessions/{id}/ws?after_seq=N`): the server first replays every event after `N`,
//! then streams live ones, each exactly once and in `seq` order. Frames are JSON text messages.

use super::event::{Ephemeral, EventEnvelope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Bumped when a frame's meaning changes; sent in [`ServerFrame::Hello`].
pub const WS_PROTOCOL_VERSION: u32 = 1;

/// What a client may send on a session socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// The user is typing a prompt; shown to the other participants.
    Typing,
    /// Application-level keep-alive for clients that cannot send WebSocket pings.
    Ping { nonce: u64 },
}

/// What the server sends on a session socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame. `head_seq` is the last event in the log when the socket opened; replay ends
    /// there and live events follow.
    Hello {
        protocol_version: u32,
        event_version: u32,
        head_seq: u64,
    },
    Event(EventEnvelope),
    Ephemeral {
        event: Ephemeral,
    },
    Pong {
        nonce: u64,
    },
    /// A frame the server could not take; the socket stays open.
    Error {
        message: String,
    },
}

/// What a client may send on its user socket (`GET /api/ws`), which belongs to no session: the
/// place to say what the user is about to do before a session exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum UserClientFrame {
    /// The user started typing a prompt for a new session on `repo`: a warm sandbox is held for
    /// them (and brought to the branch head) until their session takes it or it expires. Send
    /// it again while they type to keep it.
    Typing {
        repo: String,
    },
    Ping {
        nonce: u64,
    },
}

/// What the server sends on a user socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UserServerFrame {
    Hello {
        protocol_version: u32,
    },
    /// The answer to [`UserClientFrame::Typing`]: whether a warm sandbox is held.
    Warm {
        repo: String,
        reserved: bool,
    },
    Pong {
        nonce: u64,
    },
    /// A frame the server could not take (bad JSON, unknown repo); the socket stays open.
    Error {
        message: String,
    },
}

impl UserClientFrame {
    /// Decodes one text message, with an error that says what is wrong.
    pub fn decode(text: &str) -> Result<UserClientFrame, String> {
        serde_json::from_str(text).map_err(|e| format!("bad frame: {e}"))
    }
}

impl ClientFrame {
    /// Decodes one text message, with an error that says what is wrong.
    pub fn decode(text: &str) -> Result<ClientFrame, String> {
        serde_json::from_str(text).map_err(|e| format!("bad frame: {e}"))
    }
}

/// The text of [`ServerFrame::Event`] for an envelope already serialized (the store does it
/// once per event): the envelope's object with `"type":"event"` in front, so no subscriber
/// serializes the event again.
pub fn event_frame_text(envelope_json: &str) -> String {
    let body = envelope_json
        .strip_prefix('{')
        .expect("an envelope is a JSON object");
    let mut text = String::with_capacity(envelope_json.len() + 16);
    text.push_str(r#"{"type":"event","#);
    text.push_str(body);
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_event_frame_decodes_as_the_envelope() {
        let envelope = EventEnvelope {
            seq: 3,
            at_ms: 9,
            event: crate::api::Event::TextDelta {
                prompt_id: kiln_core::PromptId::random(),
                text: "hé \"quoted\"".into(),
            },
        };
        let json = serde_json::to_string(&envelope).unwrap();
        let frame: ServerFrame = serde_json::from_str(&event_frame_text(&json)).unwrap();
        assert_eq!(frame, ServerFrame::Event(envelope));
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_frames_decode() {
        assert_eq!(
            ClientFrame::decode(r#"{"type":"typing"}"#),
            Ok(ClientFrame::Typing)
        );
        assert_eq!(
            ClientFrame::decode(r#"{"type":"ping","nonce":3}"#),
            Ok(ClientFrame::Ping { nonce: 3 })
        );
        let err = ClientFrame::decode(r#"{"type":"shout"}"#).unwrap_err();
        assert!(err.contains("shout"), "{err}");
        assert!(ClientFrame::decode(r#"{"type":"ping","nonce":3,"x":1}"#).is_err());
    }

    #[test]
    fn user_frames_decode() {
        assert_eq!(
            UserClientFrame::decode(r#"{"type":"typing","repo":"kiln"}"#),
            Ok(UserClientFrame::Typing {
                repo: "kiln".into()
            })
        );
        let err = UserClientFrame::decode(r#"{"type":"typing"}"#).unwrap_err();
        assert!(err.contains("repo"), "{err}");
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = ClientFrame::decode(&text);
        }

        #[test]
        fn frames_round_trip(nonce in any::<u64>(), typing in any::<bool>()) {
            let frame = if typing { ClientFrame::Typing } else { ClientFrame::Ping { nonce } };
            let text = serde_json::to_string(&frame).unwrap();
            prop_assert_eq!(ClientFrame::decode(&text), Ok(frame));
        }

        #[test]
        fn json_shaped_garbage_is_an_error_not_a_panic(
            key in "[a-z_]{0,12}", value in any::<i64>(), ty in "[a-z_]{0,12}",
        ) {
            let text = format!(r#"{{"type":"{ty}","{key}":{value}}}"#);
            if let Ok(frame) = ClientFrame::decode(&text) {
                // Only a real frame may decode: re-encoding gives back a frame of the same type.
                let again = serde_json::to_value(&frame).unwrap();
                prop_assert_eq!(again["type"].as_str(), Some(ty.as_str()));
            }
        }
    }
}
