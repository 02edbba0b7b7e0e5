//! The web UI in a real browser (issue 14): the real `kiln up` binary, with the UI embedded,
//! real sandboxes and the fake model; Debian's Chromium driven by playwright-core from
//! `web/e2e/run.mjs`. This test starts kiln and the script, answers the script's requests
//! (sign-in links, model scripts, a server restart, a long session; see `web/e2e/host.mjs`)
//! and fails unless every browser scenario passed. Screenshots go to `docs/screenshots/`,
//! measurements to `target/web-bench.json` (see docs/benchmarks.md).
//!
//! Needs the web UI built into the binary (`scripts/build-web`, which `scripts/test` runs
//! first), node with `web/node_modules` and `/usr/bin/chromium` (`scripts/install-deps`).

mod common;

use common::server::{self, Server};
use kiln_testkit::{FakeModel, FakeToolCall, Script, Turn};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The whole browser run may take this long (it builds an image and streams a long session).
const RUN_LIMIT: Duration = Duration::from_secs(900);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Kiln {
    server: Server,
    http: reqwest::Client,
    tokens: Vec<(String, String)>,
}

impl Kiln {
    async fn call(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.server.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("kiln answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    fn token(&self, user: &str) -> &str {
        &self
            .tokens
            .iter()
            .find(|(name, _)| name == user)
            .unwrap_or_else(|| panic!("no user {user}"))
            .1
    }

    async fn add_user(&mut self, name: &str) {
        let admin = self.server.token.clone();
        let user = self
            .call(
                reqwest::Method::POST,
                &admin,
                "/api/users",
                Some(json!({"name": name})),
            )
            .await;
        let token = self
            .call(
                reqwest::Method::POST,
                &admin,
                "/api/tokens",
                Some(json!({"name": "web", "user_id": user["id"]})),
            )
            .await;
        self.tokens.push((
            name.to_string(),
            token["token"].as_str().unwrap().to_string(),
        ));
    }

    async fn head_seq(&self, session: &str) -> u64 {
        let detail = self
            .call(
                reqwest::Method::GET,
                &self.server.token,
                &format!("/api/sessions/{session}"),
                None,
            )
            .await;
        detail["head_seq"].as_u64().unwrap()
    }

    async fn idle(&self, session: &str) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let detail = self
                .call(
                    reqwest::Method::GET,
                    &self.server.token,
                    &format!("/api/sessions/{session}"),
                    None,
                )
                .await;
            if detail["state"] == "idle" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "session {session} never became idle"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A fake model turn from the script's JSON: `{text: [chunks], tools: [{name, input}],
/// chunk_delay_ms, hang}`.
fn turn(spec: &Value) -> Script {
    let mut turn = Turn::text("");
    turn.text = spec["text"]
        .as_array()
        .map(|chunks| {
            chunks
                .iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for tool in spec["tools"].as_array().into_iter().flatten() {
        turn.tool_calls.push(FakeToolCall::new(
            tool["name"].as_str().unwrap(),
            tool["input"].clone(),
        ));
    }
    if let Some(ms) = spec["chunk_delay_ms"].as_u64() {
        turn.chunk_delay = Duration::from_millis(ms);
    }
    if spec["hang"].as_bool() == Some(true) {
        Script::Hang { turn }
    } else {
        Script::Turn(turn)
    }
}

/// What the browser script asked for, answered.
async fn answer(kiln: &mut Kiln, model: &FakeModel, request: &Value) -> Value {
    match request["cmd"].as_str().unwrap_or("") {
        "login" => {
            let user = request["user"].as_str().unwrap();
            let token = if user == "admin" {
                kiln.server.token.clone()
            } else {
                kiln.token(user).to_string()
            };
            let link = kiln
                .call(reqwest::Method::POST, &token, "/api/login-links", None)
                .await;
            json!({ "url": link["url"] })
        }
        "model" => {
            for spec in request["turns"].as_array().into_iter().flatten() {
                model.push(turn(spec));
            }
            json!({ "ok": true })
        }
        "restart" => {
            kiln.server.crash_and_restart(model).await;
            json!({ "ok": true })
        }
        "events" => {
            let session = request["session"].as_str().unwrap();
            let page = kiln
                .call(
                    reqwest::Method::GET,
                    &kiln.server.token.clone(),
                    &format!("/api/sessions/{session}/events?limit=5000"),
                    None,
                )
                .await;
            let events = page["events"].as_array().cloned().unwrap_or_default();
            let prompts = events
                .iter()
                .filter(|e| e["event"]["type"] == "prompt_queued")
                .count();
            json!({ "head_seq": page["head_seq"], "prompts": prompts })
        }
        "big_session" => {
            big_session(kiln, model, request["events"].as_u64().unwrap_or(10_000)).await
        }
        other => json!({ "error": format!("unknown request {other:?}") }),
    }
}

/// A session of at least `events` events made the real way: prompts whose model turns stream
/// text (Markdown) and call a tool, each turn about 40 events.
async fn big_session(kiln: &mut Kiln, model: &FakeModel, events: u64) -> Value {
    let admin = kiln.server.token.clone();
    const TURNS_PER_PROMPT: usize = 40;
    let script = |model: &FakeModel| {
        for t in 0..TURNS_PER_PROMPT {
            let mut turn = Turn::text("");
            turn.text = (0..36)
                .map(|i| match i {
                    0 => format!("## Step {t}\n\n"),
                    10 => "\n\n```rust\nfn step() -> u32 { 42 }\n```\n\n".to_string(),
                    20 => "- a **list** item with `code`\n".to_string(),
                    _ => format!("word{i} "),
                })
                .collect();
            turn.tool_calls
                .push(FakeToolCall::new("list_files", json!({"path": "."})));
            model.push(Script::Turn(turn));
        }
        model.push(Script::Turn(Turn::text("All steps done.")));
    };
    script(model);
    let created = kiln
        .call(
            reqwest::Method::POST,
            &admin,
            "/api/sessions",
            Some(json!({"repo": "web", "prompt": "a long session", "title": "10,000 events"})),
        )
        .await;
    let session = created["session"]["id"].as_str().unwrap().to_string();
    kiln.idle(&session).await;
    while kiln.head_seq(&session).await < events {
        script(model);
        kiln.call(
            reqwest::Method::POST,
            &admin,
            &format!("/api/sessions/{session}/prompts"),
            Some(json!({"text": "keep going"})),
        )
        .await;
        // The prompt is queued: wait until it ran.
        tokio::time::sleep(Duration::from_millis(300)).await;
        kiln.idle(&session).await;
    }
    let head_seq = kiln.head_seq(&session).await;
    json!({ "session": session, "head_seq": head_seq })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_in_a_real_browser() {
    assert!(
        kiln_server::web_ui_built(),
        "the kiln binary was built without its web UI: run scripts/build-web, then the tests again"
    );
    let root = workspace();
    assert!(
        root.join("web/node_modules/playwright-core").is_dir(),
        "web/node_modules is missing: run scripts/build-web (npm ci)"
    );
    let model = FakeModel::start().await;
    let server = server::start(&model).await;
    let _reaper = common::SandboxReaper(server.dir.path().join("data"));
    server.add_repo().await;
    let mut kiln = Kiln {
        server,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
        tokens: Vec::new(),
    };
    kiln.add_user("bob").await;
    kiln.add_user("carol").await;
    // An image, so the repo has a warm pool for typing to hold from.
    let admin = kiln.server.token.clone();
    kiln.call(reqwest::Method::POST, &admin, "/api/repos/web/images", None)
        .await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let pool = kiln
            .call(reqwest::Method::GET, &admin, "/api/repos/web/pool", None)
            .await;
        if pool["ready"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the warm pool never filled: {pool}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let bench = root.join("target/web-bench.json");
    let mut child = tokio::process::Command::new("node")
        .arg(root.join("web/e2e/run.mjs"))
        .env("KILN_URL", &kiln.server.url)
        .env("SCREENSHOTS", root.join("docs/screenshots"))
        .env("BENCH_OUT", &bench)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (scripts/install-deps installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut report = Vec::new();
    let run = async {
        while let Some(line) = lines.next_line().await.expect("the script's output") {
            if let Some(request) = line.strip_prefix("@@kiln ") {
                let request: Value = serde_json::from_str(request).expect("a JSON request");
                let reply = answer(&mut kiln, &model, &request).await;
                stdin
                    .write_all(format!("{reply}\n").as_bytes())
                    .await
                    .expect("the script reads its answers");
            } else {
                println!("{line}");
                report.push(line);
            }
        }
        child.wait().await.expect("the script ends")
    };
    let status = tokio::time::timeout(RUN_LIMIT, run)
        .await
        .expect("the browser tests finish within 15 minutes");
    let failed: Vec<&String> = report.iter().filter(|l| l.starts_with("not ok")).collect();
    assert!(
        status.success() && failed.is_empty(),
        "browser scenarios failed ({status}):\n{}",
        report.join("\n")
    );
    assert!(
        report.iter().filter(|l| l.starts_with("ok - ")).count() >= 10,
        "fewer scenarios ran than there are: {report:#?}"
    );
}
