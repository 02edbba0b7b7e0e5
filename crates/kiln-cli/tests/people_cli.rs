//! `kiln user`, `kiln token`, taking sessions and repos apart, and the messages a new user
//! tripped over: the real `kiln` binary against a real `kiln up` (see `common::server`).

mod common;

use common::server::{Server, start, text};
use kiln_testkit::{FakeModel, Script, Turn};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// `kiln ARGS` with no token anywhere but what `--data-dir`/`KILN_DATA_DIR` lead to.
async fn without_token(server: &Server, args: &[&str], env_data_dir: Option<&str>) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args)
        .env("KILN_URL", &server.url)
        .env("XDG_CONFIG_HOME", server.dir.path())
        .env_remove("KILN_TOKEN")
        .env_remove("KILN_DATA_DIR")
        .env_remove("KILN_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = env_data_dir {
        cmd.env("KILN_DATA_DIR", dir);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("kiln finishes")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_tokens_are_managed_from_the_cli() {
    let model = FakeModel::start().await;
    let server = start(&model).await;

    let out = server.run(&["user", "add", "bob smith!"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = text(&out.stderr);
    assert!(
        said.contains("not a handle") && said.contains("display name"),
        "{said}"
    );

    let args = [
        "user",
        "add",
        "bob.smith",
        "--display-name",
        "Bob Smith",
        "--email",
        "bob@example.com",
    ];
    let out = server.run(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let bob = text(&out.stdout).trim().to_string();
    assert!(bob.starts_with("kiln_"), "the token is printed: {bob}");
    assert!(text(&out.stderr).contains("shown this once"), "{out:?}");

    let out = server.run(&["user", "ls"]).await;
    let listed = text(&out.stdout);
    assert!(listed.contains("Bob Smith <bob@example.com>"), "{listed}");
    assert!(
        !listed.contains("kiln_"),
        "no token is ever listed: {listed}"
    );
    let args = ["user", "set", "bob.smith", "--email", "bob@example"];
    let out = server.run(&args).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("alice@example.com"), "{out:?}");
    let args = ["user", "set", "bob.smith", "--email", "bob@example.org"];
    let out = server.kiln_as(&bob, &args).output().await.unwrap();
    assert_eq!(
        text(&out.stdout),
        "bob.smith: commits as Bob Smith <bob@example.org>\n",
        "{out:?}"
    );

    // Bob makes a token of his own, lists and revokes it.
    let run_as = |token: &str, args: &[&str]| server.kiln_as(token, args).output();
    let out = run_as(&bob, &["token", "create", "ci", "--expires-in-days", "7"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ci = text(&out.stdout).trim().to_string();
    assert!(text(&out.stderr).contains("for 7 days"), "{out:?}");
    let out = run_as(&ci, &["token", "ls", "--json"]).await.unwrap();
    let tokens: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .and_then(|t| t["id"].as_str())
        .unwrap()
        .to_string();
    assert!(!text(&out.stdout).contains(&ci));
    let out = run_as(&bob, &["token", "revoke", &id]).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run_as(&ci, &["session", "ls"]).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "a revoked token is refused: {out:?}"
    );

    // A read-only token reads, and is told plainly when it tries more.
    let out = server
        .run(&["token", "create", "dashboard", "--read-only"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("(read-only)"), "{out:?}");
    let reader = text(&out.stdout).trim().to_string();
    let out = run_as(&reader, &["user", "ls"]).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = run_as(&reader, &["user", "add", "eve"]).await.unwrap();
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stderr).contains("read-only"), "{out:?}");

    // Deactivated: bob's token stops working.
    let out = server.run(&["user", "rm", "bob.smith"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run_as(&bob, &["session", "ls"]).await.unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    // The audit log says who did all that, as a table and as JSON lines.
    let out = server.run(&["audit"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("user_deactivated"), "{table}");
    assert!(table.contains("token_revoked"), "{table}");
    let out = server.run(&["audit", "--jsonl"]).await;
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let revoked = lines
        .iter()
        .find(|e| e["action"] == "token_revoked")
        .unwrap();
    assert_eq!(revoked["actor"]["name"], "bob.smith", "{revoked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_say_what_happened_once_and_what_to_do() {
    let model = FakeModel::start().await;
    let server = start(&model).await;

    let out = server.run(&["repo", "rm", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stderr);
    assert!(said.contains("repo \"nope\" not found"), "{said}");
    assert_eq!(said.matches("not found").count(), 1, "said once: {said}");

    let missing = server.dir.path().join("missing.git");
    let out = server
        .run(&["repo", "add", "gone", missing.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("no such path"), "{out:?}");

    server.add_repo().await;
    let out = server
        .run(&["session", "new", "--repo", "web", "hello", "--detach"])
        .await;
    let id = text(&out.stdout).trim().to_string();
    // Idle once the first prompt is done.
    let out = server.run(&["session", "attach", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = server.run(&["session", "stop", &id]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("nothing to stop"), "{out:?}");

    let out = server
        .run(&["session", "attach", &id, "--after-seq", "999"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = text(&out.stderr);
    assert!(said.contains("log ends at event"), "{said}");

    let out = server.run(&["session", "send", &id, "again"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).trim().starts_with("p-"), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!("kiln session attach {id} --after-seq")),
        "{out:?}"
    );

    // Every client command takes --data-dir (or KILN_DATA_DIR) to find the admin token.
    let data = server.dir.path().join("data");
    let out = without_token(
        &server,
        &["session", "ls", "--data-dir", data.to_str().unwrap()],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&id));
    let out = without_token(&server, &["repo", "ls"], Some(data.to_str().unwrap())).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = without_token(&server, &["repo", "ls", "--data-dir", "/nonexistent"], None).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let said = text(&out.stderr);
    assert!(
        said.contains("--data-dir DIR or KILN_DATA_DIR=DIR") && said.contains("/nonexistent"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_shared_archived_and_deleted_from_the_cli() {
    let model = FakeModel::start().await;
    let server = start(&model).await;
    server.add_repo().await;
    let out = server
        .run(&["session", "new", "--repo", "web", "hello", "--detach"])
        .await;
    let id = text(&out.stdout).trim().to_string();
    server.run(&["session", "attach", &id]).await;

    let out = server.run(&["user", "add", "ann"]).await;
    let ann = text(&out.stdout).trim().to_string();
    let args = ["session", "share", &id, "--role", "viewer", "--single-use"];
    let out = server.run(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let code = text(&out.stdout).trim().to_string();
    let out = server.run(&["session", "shares", &id, "--json"]).await;
    let shares: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shares[0]["single_use"], true, "{shares}");
    let out = server
        .kiln_as(&ann, &["session", "join", &code])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = server.run(&["session", "shares", &id, "--json"]).await;
    assert_eq!(text(&out.stdout).trim(), "[]", "used up");

    let out = server
        .run(&["session", "role", &id, "ann", "collaborator"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = server.run(&["session", "kick", &id, "ann"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = server
        .kiln_as(&ann, &["session", "show", &id])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "removed: {out:?}");

    let out = server.run(&["session", "archive", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = server.run(&["session", "ls"]).await;
    assert!(!text(&out.stdout).contains(&id), "{out:?}");
    let out = server.run(&["session", "ls", "--archived"]).await;
    assert!(text(&out.stdout).contains("archived"), "{out:?}");
    let out = server.run(&["session", "ls", "--all"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = server.run(&["session", "rm", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = server.run(&["session", "show", &id]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not found"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_ends_quietly_when_its_reader_goes_away() {
    let model = FakeModel::start().await;
    let server = start(&model).await;
    server.add_repo().await;
    let out = server
        .run(&["session", "new", "--repo", "web", "hello", "--detach"])
        .await;
    let id = text(&out.stdout).trim().to_string();
    server.run(&["session", "attach", &id]).await;

    // `kiln session attach ID --follow | head -1`: the reader takes one line and leaves.
    let mut attach = server.kiln(&["session", "attach", &id, "--follow"]);
    let mut child = attach
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    lines.next_line().await.unwrap().expect("a first line");
    drop(lines);
    // More output comes: writing it finds the pipe closed.
    model.push(Script::Turn(Turn::text(
        "a long answer\n".repeat(200).as_str(),
    )));
    let out = server.run(&["session", "send", &id, "more"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("attach ends when its reader is gone")
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.to_lowercase().contains("broken pipe"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_says_when_it_reconnects_and_sandboxes_go_once_kiln_is_stopped() {
    let model = FakeModel::start().await;
    let mut server = start(&model).await;
    server.add_repo().await;
    let out = server
        .run(&["session", "new", "--repo", "web", "hello", "--detach"])
        .await;
    let id = text(&out.stdout).trim().to_string();
    server.run(&["session", "attach", &id]).await;

    let mut child = server
        .kiln(&["session", "attach", &id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    // Connected once the replay shows: only a connection that was up is regained.
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    stdout.next_line().await.unwrap().expect("the replay");
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
    server.crash_and_restart(&model).await;
    let said = tokio::time::timeout(Duration::from_secs(60), async {
        let mut said = Vec::new();
        while let Some(line) = stderr.next_line().await.unwrap() {
            let done = line == "reconnected";
            said.push(line);
            if done {
                return said;
            }
        }
        panic!("attach ended without reconnecting: {said:?}");
    })
    .await
    .expect("attach reconnects within a minute");
    assert!(said[0].starts_with("reconnecting… ("), "{said:?}");
    child.kill().await.unwrap();

    // All sandboxes go only once kiln is stopped.
    let data = server.dir.path().join("data");
    let data = data.to_str().unwrap();
    let out = server
        .run(&["sandbox", "rm", "--all", "--data-dir", data])
        .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("stop it first"), "{out:?}");
    let listed = server
        .run(&["sandbox", "ls", "--json", "--data-dir", data])
        .await;
    assert!(
        !text(&listed.stdout).trim().is_empty(),
        "the session's sandbox stayed"
    );
    server.child.kill().await.unwrap();
    let out = server
        .run(&["sandbox", "rm", "--all", "--data-dir", data])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed = server
        .run(&["sandbox", "ls", "--json", "--data-dir", data])
        .await;
    assert_eq!(text(&listed.stdout).trim(), "", "every sandbox is gone");
}

/// `kiln repo secret set|ls|rm`: the value comes from standard input (one trailing newline
/// dropped) and is never printed; an empty input or a bad name is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_secrets_are_set_from_stdin_listed_and_removed() {
    use tokio::io::AsyncWriteExt;
    let model = FakeModel::start().await;
    let server = start(&model).await;
    server.add_repo().await;
    let set = |args: &'static [&'static str], input: &'static str| {
        let mut cmd = server.kiln(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        async move {
            let mut child = cmd.spawn().unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input.as_bytes()).await.unwrap();
            drop(stdin);
            tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
                .await
                .expect("kiln finishes")
                .unwrap()
        }
    };
    let out = set(
        &["repo", "secret", "set", "web", "NPM_TOKEN"],
        "npm-secret-value-42\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("set secret NPM_TOKEN of web: image builds get it, sessions do not"),
        "{out:?}"
    );
    let out = set(
        &["repo", "secret", "set", "web", "SHARED", "--agent"],
        "shared-value-42",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for (args, input, says) in [
        (
            &["repo", "secret", "set", "web", "EMPTY"][..],
            "\n",
            "no value on standard input",
        ),
        (
            &["repo", "secret", "set", "web", "HOME"][..],
            "abcdefgh",
            "kiln sets itself",
        ),
        (
            &["repo", "secret", "set", "web", "SHORT"][..],
            "ab1",
            "at least 4 bytes",
        ),
    ] {
        let out = set(args, input).await;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(text(&out.stderr).contains(says), "{args:?}: {out:?}");
    }

    let out = server.run(&["repo", "secret", "ls", "web"]).await;
    let listed = text(&out.stdout);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("SESSIONS"),
        "{listed}"
    );
    assert!(
        lines[1].starts_with("NPM_TOKEN") && lines[1].contains(" no "),
        "{listed}"
    );
    assert!(
        lines[2].starts_with("SHARED") && lines[2].contains(" yes "),
        "{listed}"
    );
    let out = server.run(&["repo", "secret", "ls", "web", "--json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["name"], "NPM_TOKEN");
    assert_eq!(json[1]["agent"], true);
    for out in [&listed, &text(&out.stdout)] {
        assert!(!out.contains("npm-secret-value-42") && !out.contains("shared-value-42"));
    }
    assert_eq!(server.client().secrets("web").await.unwrap().len(), 2);

    let out = server
        .run(&["repo", "secret", "rm", "web", "NPM_TOKEN"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = server
        .run(&["repo", "secret", "rm", "web", "NPM_TOKEN"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("not found"), "{out:?}");
    let out = server.run(&["repo", "secret", "ls", "web", "--json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_end_quietly_when_their_reader_is_gone() {
    let model = FakeModel::start().await;
    let server = start(&model).await;
    for args in [
        &["user", "ls"][..],
        &["repo", "ls"],
        &["session", "ls"],
        &["token", "ls"],
        &["status"],
    ] {
        // `kiln user ls | true`: the reader is gone before the first line is written.
        let mut child = server
            .kiln(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("the command ends")
            .unwrap();
        let mut stderr = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
            .await
            .unwrap();
        assert_eq!(status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// `kiln repo mcp ls`: a table of the repo's MCP servers (a remote one on a refused address says
/// how to allow it) and the same as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_mcp_ls_shows_servers_and_their_state() {
    let model = FakeModel::start().await;
    let server = start(&model).await;
    server.add_repo().await;
    let out = server.run(&["repo", "mcp", "ls", "web"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("web has no MCP servers"),
        "{out:?}"
    );

    let environment = "[[mcp]]\nname = \"db\"\ncommand = [\"node\", \"db.js\"]\n\
                       [[mcp]]\nname = \"inside\"\nurl = \"http://127.0.0.2:9/mcp\"\n";
    let body = kiln_protocol::api::UpdateRepo {
        environment: Some(environment.into()),
        ..Default::default()
    };
    server.client().update_repo("web", &body).await.unwrap();
    let out = server.run(&["repo", "mcp", "ls", "web"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("SERVER"), "{table}");
    assert!(
        table.contains("db") && table.contains("local") && table.contains("not checked"),
        "{table}"
    );
    assert!(
        table.contains("inside") && table.contains("remote"),
        "{table}"
    );
    assert!(table.contains("error: MCP server \"inside\""), "{table}");
    assert!(table.contains("allow_hosts = [\"127.0.0.2:9\"]"), "{table}");

    let out = server.run(&["repo", "mcp", "ls", "web", "--json"]).await;
    let servers: Vec<kiln_protocol::api::McpServer> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[1].kind, kiln_protocol::api::McpKind::Remote);
    assert!(matches!(
        servers[1].state,
        kiln_protocol::api::McpState::Error { .. }
    ));
}
