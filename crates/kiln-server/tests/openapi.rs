//! The OpenAPI document is exact (issue 9, item 8). Every response the other tests get is
//! checked against it ([`common::conformance`]); here the document itself is walked (path
//! parameters, query parameters, security, error responses, limits), and the check is shown
//! to catch a response the document does not describe.

mod common;

use common::TestApp;
use common::conformance::Conformance;
use kiln_testkit::FakeModel;
use serde_json::{Value, json};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                all.push((method.to_string(), path.clone(), operation.clone()));
            }
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_the_server() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let document = app.api.document().clone();
    let schemes = document["components"]["securitySchemes"].clone();
    assert_eq!(schemes["bearer"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["cookie"]["in"], "cookie", "{schemes}");
    assert_eq!(schemes["token"]["in"], "query", "{schemes}");

    let mut problems = Vec::new();
    for (method, path, operation) in operations(&document) {
        let name = format!("{method} {path}");
        let template_params: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let params = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for param in &params {
            let (pname, location) = (
                param["name"].as_str().unwrap(),
                param["in"].as_str().unwrap(),
            );
            match location {
                "path" if !template_params.contains(&pname) => {
                    problems.push(format!("{name}: path parameter {pname} is not in the path"))
                }
                "path" | "query" => {}
                // GitHub's delivery headers and Slack's signature headers are their inputs.
                "header" if path == "/api/github/webhook" || path == "/api/slack/events" => {}
                other => problems.push(format!("{name}: parameter {pname} in {other}")),
            }
        }
        for tp in &template_params {
            if !params.iter().any(|p| p["name"] == *tp && p["in"] == "path") {
                problems.push(format!("{name}: {{{tp}}} is not declared"));
            }
        }
        // Open: health and this document. Everything else needs a token and says 401.
        let security = operation.get("security").or(document.get("security"));
        let open = security.and_then(Value::as_array).is_none_or(|s| {
            s.iter()
                .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
        });
        // Signing in (with GitHub; the sign-in page asking what it may offer) starts before
        // anyone is signed in; GitHub's webhook deliveries are authenticated by their
        // signature, not a kiln credential, and so are Slack's events.
        let should_be_open = path == "/api/health"
            || path == "/api/openapi.json"
            || path == "/api/auth/github/start"
            || path == "/api/auth/methods"
            || path == "/api/github/webhook"
            || path == "/api/slack/events";
        if open != should_be_open {
            problems.push(format!("{name}: open is {open}"));
        }
        let responses = operation["responses"].as_object().unwrap();
        if !open && !responses.contains_key("401") {
            problems.push(format!("{name}: no 401"));
        }
        let queried = params.iter().any(|p| p["in"] == "query");
        if (operation.get("requestBody").is_some() || queried) && !responses.contains_key("400") {
            problems.push(format!("{name}: a body or query but no 400"));
        }
        if operation.get("requestBody").is_some() && !responses.contains_key("413") {
            problems.push(format!("{name}: a body but no 413"));
        }
        let upgrade = path.ends_with("/ws");
        let uses_token = security
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|r| r.get("token").is_some()));
        if uses_token != upgrade {
            problems.push(format!("{name}: `?token=` accepted is {uses_token}"));
        }
        for (status, response) in responses {
            let content = &response["content"]["application/json"]["schema"];
            // `NoForgeAccount` is an ApiError with the compare URL beside its `error`.
            if (status.starts_with('4') || status.starts_with('5'))
                && content["$ref"] != "#/components/schemas/ApiError"
                && content["$ref"] != "#/components/schemas/NoForgeAccount"
            {
                problems.push(format!("{name} {status}: not an ApiError: {content}"));
            }
        }
    }
    // The query parameters the handlers read are query parameters.
    for (path, method, param) in [
        ("/api/sessions/{id}/events", "get", "after_seq"),
        ("/api/sessions/{id}/events", "get", "limit"),
        ("/api/sessions/{id}/ws", "get", "after_seq"),
        ("/api/sessions", "get", "limit"),
        ("/api/sessions", "get", "after"),
    ] {
        let params = document["paths"][path][method]["parameters"]
            .as_array()
            .cloned();
        let found = params
            .unwrap_or_default()
            .into_iter()
            .find(|p| p["name"] == param);
        match found {
            Some(p) if p["in"] == "query" => {}
            other => problems.push(format!("{method} {path}: {param} is {other:?}")),
        }
    }
    // The stop body is optional; the others are required.
    let stop = &document["paths"]["/api/sessions/{id}/stop"]["post"]["requestBody"];
    if stop["required"] == true {
        problems.push(format!("the stop body is marked required: {stop}"));
    }
    let create = &document["paths"]["/api/sessions"]["post"]["requestBody"];
    if create["required"] != true {
        problems.push(format!("the create-session body is not required: {create}"));
    }
    // Limits are stated.
    let schemas = &document["components"]["schemas"];
    for (schema, field, limit) in [
        ("CreateSession", "title", 200),
        ("CreateSession", "prompt", 100_000),
        ("SendPrompt", "text", 100_000),
        ("CreateUser", "name", 64),
        ("CreateToken", "name", 64),
        ("CreateRepo", "default_branch", 200),
    ] {
        if schemas[schema]["properties"][field]["maxLength"] != limit {
            problems.push(format!("{schema}.{field}: no maxLength {limit}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    app.stop().await;
}

/// The conformance check is not a rubber stamp: a status or a body the document does not
/// describe is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_catches_a_wrong_response() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let check: &Conformance = &app.api;
    let (_, me) = app.get(&app.admin_token, "/api/me").await;
    assert_eq!(check.check("GET", "/api/me", 200, &me), Ok(()));
    // A status the operation does not list.
    let error = check.check("GET", "/api/me", 418, &json!({"error": "teapot"}));
    assert!(error.is_err_and(|e| e.contains("418")));
    // A body that is not the documented shape.
    let error = check.check("GET", "/api/me", 200, &json!({"user": 5}));
    assert!(error.is_err_and(|e| e.contains("does not match")));
    let error = check.check(
        "GET",
        "/api/sessions/s-0123456789abcdef",
        404,
        &json!({"oops": 1}),
    );
    assert!(error.is_err());
    // An error that is not an ApiError, on a path the document does not have.
    let error = check.check("GET", "/api/nothing", 404, &json!("plain text"));
    assert!(error.is_err());
    let error = check.check("GET", "/api/nothing", 200, &json!({"error": "x"}));
    assert!(error.is_err());
    // A literal segment wins over a parameter.
    assert_eq!(
        check.template_of("/api/stats/starts").as_deref(),
        Some("/api/stats/starts")
    );
    assert_eq!(
        check
            .template_of("/api/sessions/s-1/events?after_seq=3")
            .as_deref(),
        Some("/api/sessions/{id}/events")
    );
    app.stop().await;
}
