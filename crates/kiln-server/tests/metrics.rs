//! `GET /metrics`: Prometheus text that a real parser reads, moving when things happen, and
//! only for admins and read-only tokens.

mod common;

use common::TestApp;
use kiln_testkit::FakeModel;
use serde_json::{Value, json};

fn parse(body: &Value) -> prometheus_parse::Scrape {
    let text = body.as_str().expect("metrics are text");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the exposition parses")
}

/// The count of requests to `route` answered with `status` (a class like `2xx`).
fn requests(scrape: &prometheus_parse::Scrape, route: &str, status: &str) -> u64 {
    scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "kiln_http_request_duration_seconds"
                && s.labels.get("route") == Some(route)
                && s.labels.get("status") == Some(status)
        })
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count as u64).max().unwrap_or(0)
            }
            other => panic!("not a histogram: {other:?}"),
        })
        .sum()
}

fn gauge(scrape: &prometheus_parse::Scrape, name: &str, label: (&str, &str)) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("not a gauge: {other:?}"),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_when_requests_and_sessions_happen() {
    let model = FakeModel::start().await;
    model.set_default(kiln_testkit::Turn::text("done"));
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();

    let (status, before) = app.get(&admin, "/metrics").await;
    assert_eq!(status, 200, "{before}");
    let before = parse(&before);
    assert_eq!(requests(&before, "/api/sessions/{id}", "2xx"), 0);

    let session = app.new_session(&admin, "hello").await;
    app.wait_for(&admin, &session, common::is_finished).await;
    for _ in 0..3 {
        let (status, _) = app.get(&admin, &format!("/api/sessions/{session}")).await;
        assert_eq!(status, 200);
    }
    let mut ws = app.ws(&admin, &session, 0).await;

    let (_, after) = app.get(&admin, "/metrics").await;
    // prometheus-parse cannot read braces inside label values, so the templated route is
    // checked on the exposition's own line.
    let text = after.as_str().unwrap().to_string();
    assert!(
        text.lines().any(
            |l| l.starts_with("kiln_http_request_duration_seconds_count{")
                && l.contains("route=\"/api/sessions/{id}\"")
                && l.contains("status=\"2xx\"")
                && l.ends_with(" 3")
        ),
        "{text}"
    );
    let after = parse(&after);
    assert!(
        !after.samples.iter().any(|s| s
            .labels
            .get("route")
            .is_some_and(|r| r.contains(&session.to_string()))),
        "a raw path became a label"
    );
    assert_eq!(requests(&after, "/api/sessions", "2xx"), 1);
    assert_eq!(requests(&after, "/metrics", "2xx"), 1);
    assert_eq!(
        gauge(&after, "kiln_sessions", ("state", "idle")),
        Some(1.0),
        "the session is open and idle"
    );
    assert!(gauge(&after, "kiln_sandboxes", ("kind", "session")).unwrap() >= 1.0);
    let clients = after
        .samples
        .iter()
        .find(|s| s.metric == "kiln_websocket_clients")
        .map(|s| s.value.clone());
    assert_eq!(clients, Some(prometheus_parse::Value::Gauge(1.0)));
    ws.json().await;
    ws.close().await;
    app.stop().await;
}

/// The sample count of histogram `name` in the series whose `label` is as given (0 if none).
fn observations(scrape: &prometheus_parse::Scrape, name: &str, label: (&str, &str)) -> u64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count as u64).max().unwrap_or(0)
            }
            other => panic!("not a histogram: {other:?}"),
        })
        .sum()
}

/// The value of counter `name` in the series whose labels include all of `labels` (0 if none).
fn counter(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            // prometheus-parse types a counter's `_total` sample as untyped.
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("not a counter: {other:?}"),
        })
        .sum()
}

async fn scrape(app: &TestApp) -> prometheus_parse::Scrape {
    let (status, body) = app.get(&app.admin_token, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_requests_sandbox_starts_and_builds_are_counted() {
    let model = FakeModel::start().await;
    model.set_default(kiln_testkit::Turn::text("done").with_usage(120, 7));
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let anthropic = ("provider", "anthropic");

    let before = scrape(&app).await;
    assert_eq!(
        observations(&before, "kiln_model_request_duration_seconds", anthropic),
        0
    );

    let session = app.new_session(&admin, "hello").await;
    app.wait_for(&admin, &session, common::is_finished).await;
    let after = scrape(&app).await;
    assert_eq!(
        observations(&after, "kiln_model_request_duration_seconds", anthropic),
        1
    );
    assert_eq!(
        observations(&after, "kiln_model_time_to_first_token_seconds", anthropic),
        1
    );
    let tokens = |s, direction| {
        counter(
            s,
            "kiln_model_tokens_total",
            &[anthropic, ("direction", direction)],
        )
    };
    assert_eq!(tokens(&after, "input"), 120.0);
    assert_eq!(tokens(&after, "output"), 7.0);
    // No image yet: the session's sandbox was a fresh clone.
    assert_eq!(
        counter(
            &after,
            "kiln_session_sandbox_starts_total",
            &[("source", "clone")]
        ),
        1.0
    );
    assert_eq!(
        counter(&after, "kiln_model_errors_total", &[anthropic]),
        0.0
    );

    // A refused request (400 is not retried) counts as an error of its status class.
    model.push(kiln_testkit::Script::Status {
        status: 400,
        retry_after: None,
        message: "prompt is too long".into(),
    });
    app.send(&admin, &session, "again").await;
    app.wait_until(&admin, &session, |events| {
        events
            .iter()
            .filter(|e| common::is_finished(&e.event))
            .count()
            == 2
    })
    .await;
    let failed = scrape(&app).await;
    assert_eq!(
        counter(
            &failed,
            "kiln_model_errors_total",
            &[anthropic, ("kind", "http_4xx")]
        ),
        1.0
    );
    assert_eq!(
        observations(&failed, "kiln_model_request_duration_seconds", anthropic),
        1,
        "a refused request has no response to time"
    );

    // An image build records its duration when it ends.
    let (status, started) = app.post(&admin, "/api/repos/demo/images", json!({})).await;
    assert_eq!(status, 202, "{started}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let built = loop {
        let scrape = scrape(&app).await;
        if observations(
            &scrape,
            "kiln_image_build_duration_seconds",
            ("outcome", "ready"),
        ) > 0
        {
            break scrape;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no build was recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        observations(
            &built,
            "kiln_image_build_duration_seconds",
            ("outcome", "ready")
        ),
        1
    );
    assert_eq!(
        observations(
            &built,
            "kiln_image_build_duration_seconds",
            ("outcome", "failed")
        ),
        0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_for_admins_and_read_only_tokens() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let (status, body) = app.get("", "/metrics").await;
    assert_eq!(status, 401, "{body}");
    let (_, user) = app.user("pat").await;
    let (status, body) = app.get(&user, "/metrics").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("read-only"),
        "{body}"
    );
    let (status, created) = app
        .post(
            &user,
            "/api/tokens",
            json!({"name": "prometheus", "scope": "read_only"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let reader = created["token"].as_str().unwrap();
    let (status, body) = app.get(reader, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    parse(&body);
    app.stop().await;
}
