//! The client against the fake server, for both wire formats: text and tool calls stream through,
//! a whole tool round trip passes the fake's request checks, and broken streams end in the right
//! error.

mod common;

use std::time::{Duration, Instant};

use common::{PROVIDERS, assistant_message, client, drain, request, text_of};
use kiln_model::{
    ContentBlock, Message, MessageRole, ModelError, ProviderKind, StopReason, StreamEvent, Usage,
};
use kiln_testkit::{FakeModel, Script, Turn};
use serde_json::json;

#[tokio::test]
async fn text_streams_in_chunks_and_finishes_with_usage() {
    for provider in PROVIDERS {
        let fake = FakeModel::start().await;
        fake.push(Turn::text("Hello there, general Kenobi").with_usage(42, 7));
        let mut stream = client(&fake, provider)
            .stream(&request("hi"))
            .await
            .unwrap();
        let (events, error) = drain(&mut stream).await;
        assert_eq!(error, None, "{provider}");
        assert!(
            events.len() >= 5,
            "{provider}: several deltas, got {events:?}"
        );
        assert_eq!(
            text_of(&events),
            "Hello there, general Kenobi",
            "{provider}"
        );
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Finished {
                stop_reason: StopReason::EndTurn,
                usage: Usage {
                    input_tokens: 42,
                    output_tokens: 7,
                    ..Default::default()
                }
            }),
            "{provider}"
        );
    }
}

#[tokio::test]
async fn a_tool_call_streamed_in_fragments_arrives_whole() {
    let input =
        json!({"path": "crates/kiln-model/src/lib.rs", "lines": [1, 40], "note": "ünïcode ✓"});
    for provider in PROVIDERS {
        let fake = FakeModel::start().await;
        let turn = Turn::tool("read_file", input.clone())
            .with_text("Let me look.")
            .with_tool("list_dir", json!({}));
        let ids: Vec<String> = turn.tool_calls.iter().map(|c| c.id.clone()).collect();
        fake.push(turn);
        let mut stream = client(&fake, provider)
            .stream(&request("read it"))
            .await
            .unwrap();
        let (events, error) = drain(&mut stream).await;
        assert_eq!(error, None, "{provider}");
        assert_eq!(text_of(&events), "Let me look.");
        let calls: Vec<&StreamEvent> = events
            .iter()
            .filter(|e| matches!(e, StreamEvent::ToolUse { .. }))
            .collect();
        assert_eq!(
            calls,
            [
                &StreamEvent::ToolUse {
                    id: ids[0].clone(),
                    name: "read_file".into(),
                    input: input.clone()
                },
                &StreamEvent::ToolUse {
                    id: ids[1].clone(),
                    name: "list_dir".into(),
                    input: json!({})
                },
            ],
            "{provider}"
        );
        assert!(
            matches!(
                events.last(),
                Some(StreamEvent::Finished {
                    stop_reason: StopReason::ToolUse,
                    ..
                })
            ),
            "{provider}: {events:?}"
        );
    }
}

#[tokio::test]
async fn requests_carry_auth_headers_and_the_documented_body() {
    let fake = FakeModel::start().await;
    let anthropic = client(&fake, ProviderKind::Anthropic);
    let openai = client(&fake, ProviderKind::OpenAi);
    drain(&mut anthropic.stream(&request("one")).await.unwrap()).await;
    drain(&mut openai.stream(&request("two")).await.unwrap()).await;
    let requests = fake.wait_for_requests(2, Duration::from_secs(5)).await;

    let a = &requests[0];
    assert_eq!(a.path, "/v1/messages");
    assert_eq!(a.header("x-api-key"), Some(fake.api_key()));
    assert_eq!(a.header("anthropic-version"), Some("2023-06-01"));
    assert!(a.header("user-agent").unwrap().starts_with("kiln/"));
    assert_eq!(a.body["model"], "claude-sonnet-4-5");
    assert_eq!(a.body["max_tokens"], 8192);
    assert_eq!(a.body["system"], "You are a careful coding agent.");
    assert_eq!(
        a.body["tools"][0]["input_schema"]["required"],
        json!(["path"])
    );

    let o = &requests[1];
    assert_eq!(o.path, "/v1/chat/completions");
    assert_eq!(
        o.header("authorization"),
        Some(format!("Bearer {}", fake.api_key()).as_str())
    );
    assert_eq!(
        o.body["messages"][0],
        json!({"role": "system", "content": "You are a careful coding agent."})
    );
    assert_eq!(o.body["stream_options"], json!({"include_usage": true}));
    assert_eq!(o.body["max_tokens"], 8192);
    assert_eq!(o.body["tools"][0]["function"]["name"], "read_file");
}

/// The engine's loop in miniature: the tool call goes back as a tool_use / tool_calls message and
/// its result as a tool_result / tool message, which the fake checks like the real APIs.
#[tokio::test]
async fn a_tool_round_trip_passes_the_providers_checks() {
    for provider in PROVIDERS {
        let fake = FakeModel::start().await;
        let client = client(&fake, provider);
        fake.push(Turn::tool("read_file", json!({"path": "README.md"})));
        fake.push(Turn::text("The README says hello."));
        let mut request = request("what does the README say?");
        for _ in 0..2 {
            let (events, error) = drain(&mut client.stream(&request).await.unwrap()).await;
            assert_eq!(error, None, "{provider}");
            let assistant = assistant_message(&events);
            let results: Vec<ContentBlock> = assistant
                .content
                .iter()
                .filter_map(|block| match block {
                    ContentBlock::ToolUse { id, .. } => Some(ContentBlock::ToolResult {
                        tool_use_id: id.clone(),
                        content: "# hello".into(),
                        is_error: false,
                    }),
                    _ => None,
                })
                .collect();
            request.messages.push(assistant);
            if !results.is_empty() {
                request.messages.push(Message {
                    role: MessageRole::User,
                    content: results,
                });
            }
        }
        assert_eq!(
            fake.requests().len(),
            2,
            "{provider}: no request was rejected or retried"
        );
        let last = request.messages.last().unwrap();
        assert_eq!(
            last.content,
            [ContentBlock::Text {
                text: "The README says hello.".into()
            }]
        );

        // Leaving the result out is the classic bug; the fake refuses it as the APIs do.
        request.messages.pop();
        request.messages.pop();
        let error = client.stream(&request).await.unwrap_err();
        assert!(
            matches!(&error, ModelError::Http { status: 400, message } if message.contains("tool")),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_cut_stream_ends_in_stream_cut() {
    for provider in PROVIDERS {
        let fake = FakeModel::start().await;
        fake.push(Script::CutAfter {
            turn: Turn::text("one two three four"),
            events: 4,
        });
        let (events, error) = drain(
            &mut client(&fake, provider)
                .stream(&request("hi"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(error, Some(ModelError::StreamCut), "{provider}: {events:?}");
        assert!(error.unwrap().is_retryable());
        let text = text_of(&events);
        assert!(
            !text.is_empty() && "one two three four".starts_with(&text),
            "{provider}: the events before the cut arrived: {text:?}"
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, StreamEvent::Finished { .. }))
        );
        assert_eq!(
            fake.requests().len(),
            1,
            "{provider}: the cut came after the headers: no retry"
        );
    }
}

#[tokio::test]
async fn a_malformed_chunk_ends_in_malformed() {
    for provider in PROVIDERS {
        let fake = FakeModel::start().await;
        fake.push(Script::Malformed);
        let (_, error) = drain(
            &mut client(&fake, provider)
                .stream(&request("hi"))
                .await
                .unwrap(),
        )
        .await;
        assert!(
            matches!(error, Some(ModelError::Malformed(_))),
            "{provider}: {error:?}"
        );
    }
}

#[tokio::test]
async fn an_error_event_mid_stream_is_an_api_error() {
    for provider in PROVIDERS {
        let fake = FakeModel::start().await;
        fake.push(Script::StreamError {
            kind: "overloaded_error".into(),
            message: "Overloaded".into(),
        });
        let (_, error) = drain(
            &mut client(&fake, provider)
                .stream(&request("hi"))
                .await
                .unwrap(),
        )
        .await;
        let error = error.unwrap();
        assert_eq!(
            error,
            ModelError::Api {
                kind: "overloaded_error".into(),
                message: "Overloaded".into()
            }
        );
        assert!(error.is_retryable());
        assert_eq!(
            fake.requests().len(),
            1,
            "errors inside a 2xx stream are left to the caller"
        );
    }
}

#[tokio::test]
async fn a_silent_stream_hits_the_idle_timeout() {
    for provider in PROVIDERS {
        let fake = FakeModel::start().await;
        fake.push(Script::Hang {
            turn: Turn::text("thinking about it"),
        });
        let mut config = common::config(&fake, provider);
        config.idle_timeout = Duration::from_millis(300);
        let client = kiln_model::ModelClient::new(config).unwrap();
        let started = Instant::now();
        let (events, error) = drain(&mut client.stream(&request("hi")).await.unwrap()).await;
        assert_eq!(text_of(&events), "thinking about it", "{provider}");
        assert_eq!(error, Some(ModelError::IdleTimeout), "{provider}");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}

#[tokio::test]
async fn slow_chunks_within_the_idle_timeout_are_fine() {
    for provider in PROVIDERS {
        let fake = FakeModel::start().await;
        let turn = Turn::text("a b c")
            .with_ttft(Duration::from_millis(150))
            .with_chunk_delay(Duration::from_millis(50));
        fake.push(turn);
        let mut config = common::config(&fake, provider);
        config.idle_timeout = Duration::from_millis(1000);
        let started = Instant::now();
        let (events, error) = drain(
            &mut kiln_model::ModelClient::new(config)
                .unwrap()
                .stream(&request("hi"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (text_of(&events).as_str(), error),
            ("a b c", None),
            "{provider}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{provider}: the fake paced the chunks"
        );
    }
}

/// Reading the body to its end after the last event lets the next turn reuse the connection.
#[tokio::test]
async fn consecutive_turns_reuse_the_connection() {
    for provider in PROVIDERS {
        let fake = FakeModel::start().await;
        let client = client(&fake, provider);
        for _ in 0..3 {
            let (_, error) = drain(&mut client.stream(&request("hi")).await.unwrap()).await;
            assert_eq!(error, None);
        }
        let peers: Vec<_> = fake.requests().iter().map(|r| r.peer).collect();
        assert!(
            peers.iter().all(|p| *p == peers[0]),
            "{provider}: {peers:?}"
        );
    }
}
