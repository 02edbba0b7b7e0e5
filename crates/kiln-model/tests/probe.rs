//! `ModelClient::probe`: the health check — one `GET …/models` with the key, for both APIs,
//! and what it says when the key is wrong or nobody answers.

mod common;

use common::{client, config};
use kiln_model::{ModelClient, ModelError, ProviderKind};
use kiln_testkit::FakeModel;
use std::time::Duration;

#[tokio::test]
async fn probe_asks_each_api_s_models_endpoint_with_the_key() {
    let fake = FakeModel::start().await;
    for provider in [ProviderKind::Anthropic, ProviderKind::OpenAi] {
        let latency = client(&fake, provider)
            .probe(Duration::from_secs(5))
            .await
            .unwrap();
        assert!(latency < Duration::from_secs(5));
    }
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.path == "/v1/models"));
    assert_eq!(requests[0].header("x-api-key"), Some(fake.api_key()));
    assert!(requests[0].header("anthropic-version").is_some());
    assert_eq!(
        requests[1].header("authorization"),
        Some(format!("Bearer {}", fake.api_key()).as_str())
    );
}

#[tokio::test]
async fn probe_says_what_is_wrong() {
    let fake = FakeModel::start().await;
    let mut wrong = config(&fake, ProviderKind::OpenAi);
    wrong.api_key = Some(kiln_core::Secret::new("sk-nope".into()));
    let error = ModelClient::new(wrong)
        .unwrap()
        .probe(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ModelError::Http { status: 401, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("OPENAI_API_KEY"), "{error}");

    // Nobody listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut gone = config(&fake, ProviderKind::Anthropic);
    gone.base_url = format!("http://127.0.0.1:{port}");
    let error = ModelClient::new(gone)
        .unwrap()
        .probe(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(error, ModelError::Connect(_)), "{error}");
}
