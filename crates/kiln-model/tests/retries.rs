//! Retries and error answers against the fake server: what is retried, how long the client waits,
//! and what a person reads when a request fails for good.

mod common;

use std::time::{Duration, Instant};

use common::{PROVIDERS, client, drain, request, text_of};
use kiln_model::{ModelClient, ModelError, ProviderKind};
use kiln_testkit::{FakeModel, Script, Turn};

fn status(status: u16, retry_after: Option<Duration>, message: &str) -> Script {
    Script::Status {
        status,
        retry_after,
        message: message.into(),
    }
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after_seconds() {
    for provider in PROVIDERS {
        let fake = FakeModel::start().await;
        fake.push(status(
            429,
            Some(Duration::from_secs(1)),
            "Number of request tokens has exceeded your rate limit",
        ));
        fake.push(Turn::text("made it"));
        let started = Instant::now();
        let mut stream = client(&fake, provider)
            .stream(&request("hi"))
            .await
            .unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{provider}: waited {:?}",
            started.elapsed()
        );
        assert_eq!(text_of(&drain(&mut stream).await.0), "made it");
        let requests = fake.requests();
        assert_eq!(requests.len(), 2);
        assert!(requests[1].received_at - requests[0].received_at >= Duration::from_secs(1));
    }
}

#[tokio::test]
async fn retry_after_ms_is_preferred_and_overloaded_529_is_retried() {
    let fake = FakeModel::start().await;
    fake.push(status(529, Some(Duration::from_millis(300)), "Overloaded"));
    fake.push(Turn::text("ok"));
    let mut stream = client(&fake, ProviderKind::Anthropic)
        .stream(&request("hi"))
        .await
        .unwrap();
    assert_eq!(drain(&mut stream).await.1, None);
    let requests = fake.requests();
    let waited = requests[1].received_at - requests[0].received_at;
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1000),
        "{waited:?}"
    );
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_until_success() {
    for provider in PROVIDERS {
        let fake = FakeModel::start().await;
        fake.push(status(500, None, "Internal server error"));
        fake.push(status(503, None, "Service unavailable"));
        fake.push(Turn::text("third time lucky"));
        let mut stream = client(&fake, provider)
            .stream(&request("hi"))
            .await
            .unwrap();
        assert_eq!(
            text_of(&drain(&mut stream).await.0),
            "third time lucky",
            "{provider}"
        );
        assert_eq!(fake.requests().len(), 3);
    }
}

#[tokio::test]
async fn retries_stop_at_max_retries_with_the_last_error() {
    for provider in PROVIDERS {
        let fake = FakeModel::start().await;
        for _ in 0..10 {
            fake.push(status(500, None, "still broken"));
        }
        let error = client(&fake, provider)
            .stream(&request("hi"))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            ModelError::Http {
                status: 500,
                message: "still broken".into()
            },
            "{provider}"
        );
        assert_eq!(
            fake.requests().len(),
            4,
            "{provider}: one attempt and max_retries = 3 retries"
        );
    }
}

#[tokio::test]
async fn a_400_fails_at_once_with_the_providers_message() {
    for provider in PROVIDERS {
        let fake = FakeModel::start().await;
        fake.push(status(
            400,
            None,
            "prompt is too long: 210000 tokens > 200000 maximum",
        ));
        let error = client(&fake, provider)
            .stream(&request("hi"))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            ModelError::Http {
                status: 400,
                message: "prompt is too long: 210000 tokens > 200000 maximum".into()
            }
        );
        assert!(!error.is_retryable());
        assert!(
            error.to_string().contains("HTTP 400: prompt is too long"),
            "{error}"
        );
        assert_eq!(fake.requests().len(), 1, "{provider}: not retried");
    }
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_a_clear_401() {
    for provider in PROVIDERS {
        let fake = FakeModel::start().await;
        let var = provider.api_key_var();

        let mut config = common::config(&fake, provider);
        config.api_key = None;
        let error = ModelClient::new(config)
            .unwrap()
            .stream(&request("hi"))
            .await
            .unwrap_err();
        let ModelError::Http {
            status: 401,
            message,
        } = &error
        else {
            panic!("{provider}: {error:?}")
        };
        assert!(
            message.contains(&format!("no API key was sent; set {var}")),
            "{message}"
        );

        let mut config = common::config(&fake, provider);
        config.api_key = Some("sk-wrong-1234".to_string().into());
        let error = ModelClient::new(config)
            .unwrap()
            .stream(&request("hi"))
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("the API key was rejected; check {var}")),
            "{error}"
        );
        assert!(
            !error.to_string().contains("sk-wrong"),
            "the key is not echoed: {error}"
        );
        assert_eq!(fake.requests().len(), 2, "{provider}: 401 is not retried");
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error_after_retries() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let fake = FakeModel::start().await;
    let mut config = common::config(&fake, ProviderKind::OpenAi);
    config.base_url = format!("http://127.0.0.1:{port}/v1");
    let started = Instant::now();
    let error = ModelClient::new(config)
        .unwrap()
        .stream(&request("hi"))
        .await
        .unwrap_err();
    let ModelError::Connect(message) = &error else {
        panic!("{error:?}")
    };
    assert!(
        message.starts_with(&format!("http://127.0.0.1:{port}")),
        "{message}"
    );
    assert!(error.is_retryable());
    // Three backoffs of at least 75 % of 10, 20 and 40 ms.
    assert!(started.elapsed() >= Duration::from_millis(52));
}
