//! Agent-time egress: a session's sandbox reaches allowed hosts through its own proxy, refused
//! ones answer with the reason in the tool output, the kiln API is never reachable, and what
//! went out is recorded as events per host per tool call.
//!
//! Every server here is on this machine's loopback: the test's upstream (reached through the
//! proxy's resolve table, which only tests can set) and kiln itself.

mod common;

use common::{TestApp, fake_model_config, is_finished};
use kiln_engine::{EgressSettings, EngineConfig};
use kiln_protocol::api::{Event, EventEnvelope};
use kiln_testkit::{FakeModel, Script, Turn};
use serde_json::json;
use std::collections::HashMap;

/// The tool calls' ids and outputs, in order.
fn calls(events: &[EventEnvelope]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::ToolCallFinished {
                call_id, output, ..
            } => Some((call_id.clone(), output.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_sandbox_reaches_allowed_hosts_only_and_its_traffic_is_recorded() {
    let upstream = kiln_testkit::http_upstream("hello from the registry").await;
    let model = FakeModel::start().await;
    // A name on the allowlist that resolves to a loopback server the test runs, not one of the
    // test's upstreams (as a rebinding DNS name would): refused by address.
    let model_addr: std::net::SocketAddr = model
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("the fake model listens on an address");
    let config = EngineConfig {
        model: Some(fake_model_config(&model)),
        egress: EgressSettings {
            // The server-wide allowlist additions; the repo itself sets nothing.
            allow: vec!["pkg.test".parse().unwrap(), "rebound.test".parse().unwrap()],
            test_resolve: Some(kiln_egress::TestResolve {
                names: HashMap::from([
                    ("pkg.test".to_string(), upstream),
                    ("rebound.test".to_string(), model_addr),
                ]),
                allow_addresses: vec![upstream],
            }),
            ..EgressSettings::default()
        },
        ..EngineConfig::default()
    };
    let app = TestApp::with_config(config.clone()).await;
    let token = app.admin_token.clone();
    let port = upstream.port();
    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": format!("curl -sS --max-time 10 http://pkg.test:{port}/index")}),
    )));
    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": "curl -sS --max-time 10 https://elsewhere.test/ 2>&1; curl -sS --max-time 10 http://elsewhere.test/"}),
    )));
    // Straight to the host's loopback, proxy bypassed: the sandbox has no route there.
    let api = app.url.trim_start_matches("http://").to_string();
    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": format!("curl -sS --noproxy '*' --max-time 5 http://{api}/api/health 2>&1; echo exit=$?")}),
    )));
    // Through the proxy, by address: refused (and were it allowed, loopback is refused
    // under every policy, as the next call shows).
    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": format!("curl -sS --max-time 5 -x http://127.0.0.1:3128 --noproxy '' http://{api}/api/health")}),
    )));
    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": "curl -sS --max-time 5 http://rebound.test/v1/messages"}),
    )));
    model.push(Script::Turn(Turn::text("done")));
    let session = app.new_session(&token, "fetch the index").await;
    let events = app.wait_for(&token, &session, is_finished).await;
    let calls = calls(&events);
    assert_eq!(calls.len(), 5, "{events:#?}");

    assert!(
        calls[0].1.contains("hello from the registry"),
        "{}",
        calls[0].1
    );
    // A refused host: the reason and the way to allow it reach the agent.
    assert!(calls[1].1.contains("elsewhere.test"), "{}", calls[1].1);
    assert!(calls[1].1.contains("403"), "{}", calls[1].1);
    assert!(calls[1].1.contains("allow"), "{}", calls[1].1);
    assert!(!calls[2].1.contains("\"ok\""), "{}", calls[2].1);
    assert!(!calls[2].1.contains("exit=0"), "{}", calls[2].1);
    assert!(calls[3].1.contains("kiln egress"), "{}", calls[3].1);
    assert!(calls[3].1.contains("127.0.0.1 is not in"), "{}", calls[3].1);
    assert!(
        calls[4].1.contains("rebound.test resolves to 127.0.0.1"),
        "{}",
        calls[4].1
    );

    // One event per host and outcome, tied to the call that made the connections.
    let egress: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Egress {
                call_id,
                host,
                allowed,
                connections,
                bytes_down,
                ..
            } => Some((
                call_id.clone(),
                host.clone(),
                *allowed,
                *connections,
                *bytes_down,
            )),
            _ => None,
        })
        .collect();
    let allowed = egress
        .iter()
        .find(|e| e.1 == "pkg.test")
        .expect("the allowed download is recorded");
    assert_eq!(allowed.0.as_deref(), Some(calls[0].0.as_str()));
    assert!(allowed.2 && allowed.3 == 1 && allowed.4 > 0, "{allowed:?}");
    // CONNECT to :443 and a plain request to :80: one event each.
    let refused: Vec<_> = egress.iter().filter(|e| e.1 == "elsewhere.test").collect();
    assert_eq!(refused.len(), 2, "{egress:?}");
    for r in refused {
        assert_eq!(r.0.as_deref(), Some(calls[1].0.as_str()));
        assert!(!r.2 && r.3 == 1 && r.4 == 0, "{r:?}");
    }
    // The same events through the API (what every client reads).
    let (status, body) = app
        .get(&token, &format!("/api/sessions/{session}/events"))
        .await;
    assert_eq!(status, 200);
    assert!(body.to_string().contains("\"type\":\"egress\""), "{body}");
    // And in the metrics: the bytes that went out and came back, and the refusals.
    let (status, metrics) = app.get(&token, "/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    let text = metrics.as_str().expect("metrics are text");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the exposition parses");
    let total = |name: &str, direction: Option<&str>| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == name && direction.is_none_or(|d| s.labels.get("direction") == Some(d))
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("not a counter: {other:?}"),
            })
            .sum()
    };
    assert!(total("kiln_egress_bytes_total", Some("up")) > 0.0, "{text}");
    assert!(
        total("kiln_egress_bytes_total", Some("down")) > 0.0,
        "{text}"
    );
    assert!(
        total("kiln_egress_denied_connections_total", None) >= 2.0,
        "{text}"
    );

    // A restart: the sandbox outlives the process; the next one serves its proxy again at the
    // same path, before the session next uses it.
    let fetch = format!("curl -sS --max-time 10 http://pkg.test:{port}/again");
    app.engine.shutdown().await;
    let down = app.sandbox_sh(&session, &format!("{fetch} 2>&1")).await;
    assert!(!down.contains("hello from the registry"), "{down}");
    let data = app.data_dir();
    let store = kiln_store::Store::open(&data).await.unwrap();
    let provider = std::sync::Arc::new(app.provider.clone());
    let engine = kiln_engine::Engine::start(store, provider, data, config)
        .await
        .unwrap();
    let up = app.sandbox_sh(&session, &fetch).await;
    assert_eq!(up, "hello from the registry");
    engine.shutdown().await;
    app.stop().await;
}
