//! `kill -9` of `kiln up` at a bad moment — a prompt running, another queued — then a restart:
//! every acknowledged event is still there, the running prompt is marked interrupted, the queue
//! goes on, and the session's sandbox is reattached rather than lost.

mod common;

use kiln_testkit::{FakeModel, Script, Turn};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    url: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, model: &FakeModel) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("KILN_MODEL", "anthropic/claude-test")
        .env("ANTHROPIC_BASE_URL", model.url())
        .env("ANTHROPIC_API_KEY", model.api_key())
        .env_remove("KILN_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln up");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("kiln listening on ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("kiln up prints its address");
    let token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    Server { child, url, token }
}

impl Server {
    async fn add_repo(&self, name: &str, url: &str) {
        let body = json!({"name": name, "url": url});
        let (status, reply) = self
            .call(reqwest::Method::POST, "/api/repos", Some(body))
            .await;
        assert_eq!(status, 201, "{reply}");
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Sends a prompt and checks it was accepted.
    async fn send(&self, session: &str, text: &str) {
        let path = format!("/api/sessions/{session}/prompts");
        let (status, body) = self
            .call(reqwest::Method::POST, &path, Some(json!({ "text": text })))
            .await;
        assert_eq!(status, 202, "{body}");
    }

    async fn events(&self, session: &str) -> Vec<Value> {
        let (status, page) = self
            .call(
                reqwest::Method::GET,
                &format!("/api/sessions/{session}/events?limit=5000"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        page["events"].as_array().unwrap().clone()
    }

    async fn wait_for(&self, session: &str, what: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let events = self.events(session).await;
            if what(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "timed out: {events:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// How many prompts finished.
fn finished(events: &[Value]) -> usize {
    events
        .iter()
        .filter(|e| e["event"]["type"] == "prompt_finished")
        .count()
}

/// `kiln sandbox ls` on the data dir, as text (`--json`: one object a line).
fn sandbox_ls(data: &Path, json: bool) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command.args(["sandbox", "ls", "--data-dir"]).arg(data);
    if json {
        command.arg("--json");
    }
    String::from_utf8_lossy(&command.output().unwrap().stdout).into_owned()
}

/// A scratch dir the sandbox uid can traverse, with a bare repo `r` and a data dir whose
/// sandboxes are destroyed when the reaper drops.
fn scratch(
    prefix: &str,
) -> (
    tempfile::TempDir,
    String,
    std::path::PathBuf,
    common::SandboxReaper,
) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let repo = kiln_testkit::bare_repo(dir.path(), "r", &[("README.md", "hello\n")]);
    let data = dir.path().join("data");
    let reaper = common::SandboxReaper(data.clone());
    (dir, repo.to_string_lossy().into_owned(), data, reaper)
}

fn has(events: &[Value], kind: &str) -> bool {
    events.iter().any(|e| e["event"]["type"] == kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged_and_no_session_is_wedged() {
    let (_dir, repo, data, _reaper) = scratch("kd-");
    let model = FakeModel::start().await;
    // The first prompt writes a file, then the model hangs mid-answer.
    model.push(Script::Turn(Turn::tool(
        "write_file",
        json!({"path": "kept.txt", "content": "kept\n"}),
    )));
    model.push(Script::Hang {
        turn: Turn::text("working on it"),
    });

    let mut server = start(&data, &model);
    server.add_repo("r", &repo).await;
    let (status, created) = server
        .call(
            reqwest::Method::POST,
            "/api/sessions",
            Some(json!({"repo": "r", "prompt": "first"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let session = created["session"]["id"].as_str().unwrap().to_string();
    let first = created["prompt_id"].as_str().unwrap().to_string();
    server.wait_for(&session, |e| has(e, "text_delta")).await;
    let (status, accepted) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/sessions/{session}/prompts"),
            Some(json!({"text": "second"})),
        )
        .await;
    assert_eq!(status, 202);
    let second = accepted["prompt_id"].as_str().unwrap().to_string();
    let acknowledged = server.events(&session).await;
    assert!(accepted["seq"].as_u64().unwrap() <= acknowledged.len() as u64);
    let sandbox_before = acknowledged
        .iter()
        .find_map(|e| e["event"]["sandbox_id"].as_str().map(str::to_string))
        .expect("the sandbox was ready");

    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    model.push(Script::Turn(Turn::text("second done")));
    let mut server = start(&data, &model);
    let after = server
        .wait_for(&session, |e| {
            e.iter().any(|x| {
                x["event"]["type"] == "prompt_finished"
                    && x["event"]["prompt_id"] == second.as_str()
            })
        })
        .await;
    // Everything acknowledged before the kill is still there, unchanged, at the same seqs.
    assert_eq!(&after[..acknowledged.len()], &acknowledged[..]);
    assert!(
        after
            .iter()
            .any(|e| e["event"]["type"] == "prompt_interrupted"
                && e["event"]["prompt_id"] == first.as_str())
    );
    // The sandbox was reattached: the file the first prompt wrote is there, no new sandbox.
    assert!(
        !after[acknowledged.len()..]
            .iter()
            .any(|e| e["event"]["type"] == "sandbox_status" && e["event"]["state"] == "starting")
    );
    let listed = sandbox_ls(&data, false);
    assert!(listed.contains(&sandbox_before), "{listed}");

    // The interrupted prompt can be retried.
    model.push(Script::Turn(Turn::tool(
        "read_file",
        json!({"path": "kept.txt"}),
    )));
    model.push(Script::Turn(Turn::text("retried")));
    server.send(&session, "first").await;
    let done = server.wait_for(&session, |e| finished(e) == 2).await;
    let read = done
        .iter()
        .rev()
        .find(|e| e["event"]["type"] == "tool_call_finished")
        .unwrap();
    assert!(
        read["event"]["output"].as_str().unwrap().contains("kept"),
        "{read}"
    );

    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_claimed_from_the_warm_pool_is_reattached_after_kill_9() {
    let (_dir, repo, data, _reaper) = scratch("kp-");
    let model = FakeModel::start().await;
    model.push(Script::Turn(Turn::tool(
        "write_file",
        json!({"path": "kept.txt", "content": "kept\n"}),
    )));
    model.push(Script::Turn(Turn::text("done")));

    let mut server = start(&data, &model);
    server.add_repo("r", &repo).await;
    // An image, then a pool from it (kiln up keeps two warm sandboxes per repo by default).
    let (status, _) = server
        .call(
            reqwest::Method::POST,
            "/api/repos/r/images",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pooled = sandbox_ls(&data, true).matches("kiln.pool").count();
        if pooled >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the pool did not fill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, created) = server
        .call(
            reqwest::Method::POST,
            "/api/sessions",
            Some(json!({"repo": "r", "prompt": "write"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let session = created["session"]["id"].as_str().unwrap().to_string();
    let before = server
        .wait_for(&session, |e| {
            e.iter().any(|x| x["event"]["type"] == "prompt_finished")
        })
        .await;
    let claimed = before
        .iter()
        .find_map(|e| {
            let detail = e["event"]["detail"].as_str().unwrap_or_default();
            detail
                .contains("warm pool")
                .then(|| e["event"]["sandbox_id"].as_str().unwrap().to_string())
        })
        .expect("the session claimed a pooled sandbox");

    server.child.kill().unwrap();
    server.child.wait().unwrap();
    model.push(Script::Turn(Turn::tool(
        "read_file",
        json!({"path": "kept.txt"}),
    )));
    model.push(Script::Turn(Turn::text("still here")));
    server = start(&data, &model);
    server.send(&session, "read").await;
    let after = server.wait_for(&session, |e| finished(e) == 2).await;
    // Reattached: no new sandbox was started or restored for the session.
    assert!(
        !after[before.len()..]
            .iter()
            .any(|e| e["event"]["type"] == "sandbox_status"),
        "{:#?}",
        &after[before.len()..]
    );
    assert!(sandbox_ls(&data, false).contains(&claimed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_interrupted_before_the_model_answered_is_retried_once_not_folded_into_the_next() {
    let (_dir, repo, data, _reaper) = scratch("kr-");
    let model = FakeModel::start().await;
    model.push(Script::Hang {
        turn: Turn::text("thinking"),
    });
    let mut server = start(&data, &model);
    server.add_repo("r", &repo).await;
    let (status, created) = server
        .call(
            reqwest::Method::POST,
            "/api/sessions",
            Some(json!({"repo": "r", "prompt": "rename the crate"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let session = created["session"]["id"].as_str().unwrap().to_string();
    server.wait_for(&session, |e| has(e, "text_delta")).await;
    server.child.kill().unwrap(); // SIGKILL while the model answers
    server.child.wait().unwrap();

    let mut server = start(&data, &model);
    server
        .wait_for(&session, |e| has(e, "prompt_interrupted"))
        .await;
    // A retry from the CLI: the newest interrupted prompt, sent again once.
    model.push(Script::Turn(Turn::text("renamed")));
    let retried = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["session", "retry", &session, "--wait"])
        .env("KILN_URL", &server.url)
        .env("KILN_TOKEN", &server.token)
        .env_remove("KILN_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&retried.stderr);
    assert!(retried.status.success(), "{stderr}");
    assert!(stderr.contains("sent p-"), "{stderr}");
    // And a follow-up: neither carries the interrupted request along a second time.
    model.push(Script::Turn(Turn::text("ok")));
    server.send(&session, "now the docs").await;
    server.wait_for(&session, |e| finished(e) == 2).await;
    let requests = model.requests();
    let last = requests.last().unwrap().body.to_string();
    assert_eq!(last.matches("rename the crate").count(), 1, "{last}");
    assert_eq!(last.matches("now the docs").count(), 1, "{last}");

    // Nothing to retry once it is done: a clear error.
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            &format!(
                "/api/sessions/{session}/prompts/{}/retry",
                created["prompt_id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(
        status, 202,
        "an interrupted prompt can be retried again: {body}"
    );
    server.wait_for(&session, |e| finished(e) == 3).await;
    let detail = server
        .call(
            reqwest::Method::GET,
            &format!("/api/sessions/{session}"),
            None,
        )
        .await
        .1;
    let completed = detail["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["status"] == "completed")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/sessions/{session}/prompts/{completed}/retry"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("completed"),
        "{body}"
    );

    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
