//! Credentials as an operator handles them, through the real `kiln` binary: `kiln up` keeps the
//! admin token out of its stderr (service logs), `kiln admin token` recovers admin access from
//! the data dir while the server runs, and `kiln login-link` prints a single-use sign-in URL.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `kiln ARGS` with nothing inherited that could pick a server, token or data dir.
fn kiln(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .args(args)
        .env_remove("KILN_TOKEN")
        .env_remove("KILN_URL")
        .env_remove("KILN_DATA_DIR")
        .env_remove("KILN_CONFIG")
        .env_remove("KILN_MODEL")
        .env_remove("KILN_PUBLIC_URL")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn run(command: &mut Command) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("kiln finishes within a minute")
        .unwrap()
}

/// Starts `kiln up` on `data` (with `env` set) and returns it, its URL and every stderr line
/// up to the one about the admin token.
async fn up(data: &Path, env: &[(&str, &str)]) -> (Child, String, Vec<String>) {
    let mut child = kiln(&["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln up starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (url, seen) = tokio::time::timeout(Duration::from_secs(60), async {
        let (mut url, mut seen) = (None, Vec::new());
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(u) = line.strip_prefix("kiln listening on ") {
                url = Some(u.trim().to_string());
            }
            let done = line.contains("admin token");
            seen.push(line);
            if done {
                return (url.expect("the address comes first"), seen);
            }
        }
        panic!("kiln up exited early: {seen:?}");
    })
    .await
    .expect("kiln up starts within a minute");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url, seen)
}

async fn me(url: &str, token: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(format!("{url}/api/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_access_is_recovered_from_the_data_dir_while_kiln_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let data = dir.path().join("data");
    let (server, url, stderr) = up(&data, &[]).await;
    let first = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let first = first.trim().to_string();
    let stderr = stderr.join("\n");
    // Not a terminal: neither the token nor a sign-in link goes to stderr (a service's log).
    assert!(!stderr.contains(&first), "{stderr}");
    assert!(!stderr.contains("login?"), "{stderr}");

    // The token file is lost; the token in it is the last admin credential.
    std::fs::remove_file(data.join("admin.token")).unwrap();
    let out = run(kiln(&["admin", "token", "--data-dir"]).arg(&data)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("kiln_") && token != first, "{token}");
    let file = data.join("admin.token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (status, body) = me(&url, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["user"]["name"].as_str(),
            body["user"]["admin"].as_bool()
        ),
        (Some("admin"), Some(true))
    );

    // --user: a new admin of that name; an existing non-admin is not made one.
    let out = run(kiln(&["admin", "token", "--user", "ops", "--data-dir"]).arg(&data)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ops = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (_, body) = me(&url, &ops).await;
    assert_eq!(
        (
            body["user"]["name"].as_str(),
            body["user"]["admin"].as_bool()
        ),
        (Some("ops"), Some(true))
    );
    let created = reqwest::Client::new()
        .post(format!("{url}/api/users"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let out = run(kiln(&["admin", "token", "--user", "bob", "--data-dir"]).arg(&data)).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an admin"), "{err}");

    // A directory that is no kiln's data dir is refused, not initialised.
    let empty = dir.path().join("empty");
    let out = run(kiln(&["admin", "token", "--data-dir"]).arg(&empty)).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data-dir"));
    assert!(!empty.join("control.db").exists());

    // `kiln login-link` prints a single-use sign-in URL for the caller.
    let out = run(&mut kiln(&["login-link", "--url", &url, "--token", &token])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(link.starts_with(&format!("{url}/login?code=")), "{link}");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let statuses = [
        browser.get(&link).send().await.unwrap().status().as_u16(),
        browser.get(&link).send().await.unwrap().status().as_u16(),
    ];
    assert_eq!(statuses, [303, 400]);

    // A share link never makes an owner, from the CLI either.
    let out = run(&mut kiln(&[
        "session",
        "share",
        "s-0000000000000000",
        "--role",
        "owner",
        "--url",
        &url,
        "--token",
        &token,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("collaborator"));

    stop(server, &data);
}

fn stop(mut server: Child, data: &Path) {
    server.start_kill().unwrap();
    if let Some(pid) = server.id() {
        common::wait_until_dead(pid);
    }
    common::destroy_all(data);
}

/// Behind a TLS-terminating proxy: links use the public URL, the cookie is `Secure`, and the
/// public origin passes the Origin check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_https_url_makes_links_and_a_secure_cookie() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let data = dir.path().join("data");
    let public = "https://kiln.example.invalid";
    let (server, url, _) = up(&data, &[("KILN_PUBLIC_URL", public)]).await;
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let out = run(&mut kiln(&[
        "login-link",
        "--url",
        &url,
        "--token",
        token.trim(),
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let code = link
        .strip_prefix(&format!("{public}/login?code="))
        .unwrap_or_else(|| panic!("{link}"));
    // The proxy forwards to the local address.
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{url}/login?code={code}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap();
    let post = |origin: &str| {
        reqwest::Client::new()
            .post(format!("{url}/api/login-links"))
            .header("cookie", cookie)
            .header("origin", origin)
            .send()
    };
    assert_eq!(post(public).await.unwrap().status().as_u16(), 201);
    assert_eq!(
        post("https://evil.example.invalid")
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    stop(server, &data);
}

/// On a terminal (`script` gives `kiln up` one), `kiln up` prints a single-use sign-in link,
/// still never the admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_kiln_up_prints_a_sign_in_link_and_not_the_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let data = dir.path().join("data");
    let command = format!(
        "{} up --listen 127.0.0.1:0 --data-dir {}",
        env!("CARGO_BIN_EXE_kiln"),
        data.display()
    );
    let mut script = Command::new("script");
    script
        .args(["-qec", &command, "/dev/null"])
        .env_remove("KILN_PUBLIC_URL")
        .env_remove("KILN_CONFIG")
        .env_remove("KILN_MODEL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = script.spawn().expect("script(1) runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let seen = tokio::time::timeout(Duration::from_secs(60), async {
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains("admin token");
            seen.push(line);
            if done {
                return seen;
            }
        }
        panic!("kiln up exited early: {seen:?}");
    })
    .await
    .expect("kiln up starts within a minute");
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let text = seen.join("\n");
    assert!(!text.contains(token.trim()), "{text}");
    let link = seen
        .iter()
        .find_map(|line| {
            line.trim()
                .strip_prefix("sign in (single use, 10 minutes): ")
        })
        .unwrap_or_else(|| panic!("no sign-in link: {text}"));
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(link)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    // SIGTERM to script(1) ends the session it runs, kiln with it.
    let pid = child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("script exits after SIGTERM")
        .unwrap();
    let lock = std::fs::File::open(data.join("kiln.lock")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lock.try_lock().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "kiln up is still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    common::destroy_all(&data);
}
