//! `kiln up`'s configuration: file < environment < flags, secrets redacted, unknown keys refused,
//! and one server per data dir.

use std::process::Command;

fn kiln() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .env_remove("KILN_MODEL")
        .env_remove("KILN_CONFIG")
        .env_remove("KILN_LISTEN")
        .env_remove("KILN_MCP_ALLOW_HOSTS")
        .env_remove("KILN_RETENTION_ARCHIVE_AFTER_DAYS")
        .env_remove("KILN_RETENTION_DELETE_AFTER_DAYS")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY");
    for key in [
        "API_URL",
        "APP_ID",
        "PRIVATE_KEY",
        "CLIENT_ID",
        "CLIENT_SECRET",
        "WEBHOOK_SECRET",
    ] {
        command.env_remove(format!("KILN_GITHUB_{key}"));
    }
    command
}

#[test]
fn print_config_resolves_file_env_and_flags_and_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:9000\"\nmodel = \"openai/gpt-4.1\"\n[limits]\nmax_turns = 7\n",
    )
    .unwrap();
    let output = kiln()
        .args(["up", "--print-config", "--data-dir"])
        .arg(dir.path())
        .env("KILN_MODEL", "anthropic/claude-sonnet-4-5")
        .env("ANTHROPIC_API_KEY", "sk-ant-very-secret")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("listen = \"127.0.0.1:9000\""),
        "the file sets listen: {text}"
    );
    assert!(
        text.contains("anthropic/claude-sonnet-4-5"),
        "env beats the file: {text}"
    );
    assert!(text.contains("max_turns = 7"), "{text}");
    assert!(text.contains("****"), "{text}");
    assert!(!text.contains("very-secret"), "the key leaked: {text}");

    let output = kiln()
        .args([
            "up",
            "--print-config",
            "--listen",
            "127.0.0.1:9100",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("KILN_LISTEN", "127.0.0.1:9050")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("listen = \"127.0.0.1:9100\""),
        "flags beat env: {text}"
    );
    assert!(text.contains("model: none"), "no key, no model: {text}");
}

#[test]
fn spend_keys_are_read_checked_and_printed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kiln.toml"),
        "[limits]\nmax_cost_usd_per_prompt = 2.5\ndaily_budget_usd_per_repo = 40\n\
         context_tokens = 100000\n\
         [[prices]]\nmodel = \"claude-sonnet-*\"\ninput_usd_per_mtok = 3.0\noutput_usd_per_mtok = 15.0\n",
    )
    .unwrap();
    let output = kiln()
        .args(["up", "--print-config", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "max_cost_usd_per_prompt = 2.5",
        "# max_cost_usd_per_session: none",
        "daily_budget_usd_per_repo = 40",
        "context_tokens = 100000",
        "model = \"claude-sonnet-*\"",
        // The documented cache defaults: input × 0.1 and × 1.25.
        "cache_read_usd_per_mtok = 0.3\n",
        "cache_write_usd_per_mtok = 3.75",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    // A negative cap is refused, naming the key.
    std::fs::write(
        dir.path().join("kiln.toml"),
        "[limits]\nmax_cost_usd_per_session = -1\n",
    )
    .unwrap();
    let output = kiln()
        .args(["up", "--print-config", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("max_cost_usd_per_session"), "{stderr}");
}

#[test]
fn github_configuration_comes_from_the_file_and_env_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("app.pem");
    std::fs::write(&key, kiln_testkit::TEST_APP_PRIVATE_KEY_PEM).unwrap();
    std::fs::write(
        dir.path().join("kiln.toml"),
        format!(
            "[github]\napi_url = \"https://ghe.example/api/v3\"\napp_id = 123\n\
             private_key = {:?}\nclient_id = \"Iv1.file\"\nclient_secret = \"file-secret-1\"\n",
            key.display().to_string()
        ),
    )
    .unwrap();
    let output = kiln()
        .args(["up", "--print-config", "--data-dir"])
        .arg(dir.path())
        .env("KILN_GITHUB_CLIENT_ID", "Iv1.env")
        .env("KILN_GITHUB_WEBHOOK_SECRET", "hook-secret-2")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("[github]"), "{text}");
    assert!(
        text.contains("api_url = \"https://ghe.example/api/v3\""),
        "{text}"
    );
    assert!(text.contains("app_id = \"123\""), "{text}");
    assert!(
        text.contains("client_id = \"Iv1.env\""),
        "env beats the file: {text}"
    );
    assert!(text.contains("client_secret = \"****\""), "{text}");
    assert!(text.contains("webhook_secret = \"****\""), "{text}");
    assert!(
        !text.contains("file-secret-1") && !text.contains("hook-secret-2"),
        "{text}"
    );
    assert!(!text.contains("PRIVATE KEY"), "{text}");

    // Half an app is refused, and so is a key that is not there.
    let output = kiln()
        .args(["up", "--print-config", "--data-dir"])
        .arg(dir.path())
        .env("KILN_CONFIG", "/dev/null")
        .env("KILN_GITHUB_APP_ID", "5")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("app_id and private_key go together"),
        "{stderr}"
    );
    let output = kiln()
        .args(["up", "--print-config", "--data-dir"])
        .arg(dir.path())
        .env("KILN_CONFIG", "/dev/null")
        .env("KILN_GITHUB_APP_ID", "5")
        .env("KILN_GITHUB_PRIVATE_KEY", "/nonexistent/key.pem")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("/nonexistent/key.pem"), "{stderr}");
}

#[test]
fn bad_configuration_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kiln.toml"),
        "listen = \"127.0.0.1:9000\"\ncolour = 1\n",
    )
    .unwrap();
    let output = kiln()
        .args(["up", "--print-config", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("colour"), "{stderr}");

    let output = kiln()
        .args(["up", "--print-config", "--listen", "nowhere", "--data-dir"])
        .arg(dir.path())
        .env("KILN_CONFIG", "/dev/null")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("nowhere"), "{stderr}");
}

/// A stop that cannot finish — here a request whose body never comes, which the graceful stop
/// waits for — ends anyway at `shutdown_timeout_secs`, saying why.
#[test]
fn a_stop_that_cannot_finish_ends_at_its_deadline() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("ku-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("kiln.toml"), "shutdown_timeout_secs = 1\n").unwrap();
    let mut child = kiln()
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let url = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "kiln up ended");
        if let Some(url) = line.trim().strip_prefix("kiln listening on http://") {
            break url.to_string();
        }
    };
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let mut stuck = std::net::TcpStream::connect(&url).unwrap();
    write!(
        stuck,
        "POST /api/repos HTTP/1.1\r\nHost: {url}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        token.trim()
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));

    let started = std::time::Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        let _ = tx.send(rest);
    });
    let rest = rx
        .recv_timeout(std::time::Duration::from_secs(15))
        .unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("kiln up was still running 15 s after SIGTERM");
        });
    let status = child.wait().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(!status.success(), "{status:?}");
    assert!(rest.contains("did not finish within 1s"), "{rest}");
    drop(stuck);
}

#[test]
fn the_sandboxes_memory_and_pids_budget_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let print = |config: &str| {
        std::fs::write(dir.path().join("kiln.toml"), config).unwrap();
        let output = kiln()
            .args(["up", "--print-config", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let text = print("sandbox_memory_mb = 2048\nsandbox_pids = 5000\n");
    assert!(text.contains("sandbox_memory_mb = 2048\n"), "{text}");
    assert!(text.contains("sandbox_pids = 5000\n"), "{text}");
    // By default: the machine's memory less a reserve for kiln and the host.
    let text = print("");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("sandbox_memory_mb = "))
        .expect("the budget is shown");
    let mb: u64 = line.parse().unwrap();
    assert!(mb > 0, "{text}");
    let text = print("sandbox_memory_mb = 0\n");
    assert!(
        text.contains("sandbox_memory_mb = 0\n"),
        "0 means no bound: {text}"
    );
}

/// With debug logs on, every request has its span — method and path — and no credential
/// reaches the log, not even a token in a WebSocket upgrade's query.
#[test]
fn debug_logs_trace_requests_without_credentials() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("kl-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let data = dir.path().join("data");
    let mut child = kiln()
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("KILN_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let url = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "kiln up ended: {log}"
        );
        log.push_str(&line);
        if let Some(url) = line.trim().strip_prefix("kiln listening on http://") {
            break url.to_string();
        }
    };
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let token = token.trim();
    for request in [
        format!(
            "GET /api/me HTTP/1.1\r\nHost: {url}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET /api/ws?token={token} HTTP/1.1\r\nHost: {url}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
    ] {
        let mut stream = std::net::TcpStream::connect(&url).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        let head = String::from_utf8_lossy(&head).to_string();
        assert!(head.ends_with("200") || head.ends_with("101"), "{head}");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = stderr.read_to_string(&mut log);
    let _ = child.wait();
    assert!(log.contains("path=/api/me"), "{log}");
    assert!(log.contains("path=/api/ws"), "{log}");
    assert!(!log.contains(token), "a token reached the log:\n{log}");
    assert!(
        !log.contains(&token[5..]),
        "a token reached the log:\n{log}"
    );
}

#[test]
fn subsession_limits_come_from_the_file_with_per_repo_replacements() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kiln.toml"),
        "[subsessions]\nmax_depth = 3\n[subsessions.repos.big]\nmax_concurrent_per_parent = 8\n",
    )
    .unwrap();
    let output = kiln()
        .args(["up", "--print-config", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = "[subsessions]\nmax_depth = 3\nmax_concurrent_per_parent = 4\nmax_total_per_parent = 16\n\
                    [subsessions.repos.\"big\"]\nmax_depth = 3\nmax_concurrent_per_parent = 8\nmax_total_per_parent = 16\n";
    assert!(text.contains(expected), "{text}");

    std::fs::write(
        dir.path().join("kiln.toml"),
        "[subsessions]\nmax_children = 3\n",
    )
    .unwrap();
    let output = kiln()
        .args(["up", "--print-config", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("max_children"), "{err}");
}

#[test]
fn mcp_allow_hosts_come_from_the_file_or_the_environment_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    std::fs::write(&config, "[mcp]\nallow_hosts = [\"127.0.0.1:3011\"]\n").unwrap();
    let run = |env: Option<&str>| {
        let mut command = kiln();
        command
            .args(["up", "--print-config", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path());
        if let Some(env) = env {
            command.env("KILN_MCP_ALLOW_HOSTS", env);
        }
        let output = command.output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, text) = run(None);
    assert!(ok, "{text}");
    assert!(
        text.contains("allow_hosts = [\"127.0.0.1:3011\"]"),
        "{text}"
    );
    let (ok, text) = run(Some("mcp.internal:443, 10.0.0.5:80"));
    assert!(ok, "{text}");
    assert!(
        text.contains("allow_hosts = [\"mcp.internal:443\", \"10.0.0.5:80\"]"),
        "{text}"
    );
    let (ok, text) = run(Some("mcp.internal"));
    assert!(!ok);
    assert!(text.contains("must be host:port"), "{text}");
}

#[test]
fn retention_comes_from_the_file_or_the_environment_and_deletes_after_archiving() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    let run = |file: &str, env: &[(&str, &str)]| {
        std::fs::write(&config, file).unwrap();
        let mut command = kiln();
        command
            .args(["up", "--print-config", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path());
        for (k, v) in env {
            command.env(k, v);
        }
        let output = command.output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, text) = run("", &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("[retention]\narchive_after_days = 0\ndelete_after_days = 0\n"),
        "off unless asked: {text}"
    );
    let file = "[retention]\narchive_after_days = 30\ndelete_after_days = 180\n";
    let (ok, text) = run(file, &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("archive_after_days = 30\ndelete_after_days = 180\n"),
        "{text}"
    );
    let (ok, text) = run(file, &[("KILN_RETENTION_DELETE_AFTER_DAYS", "90")]);
    assert!(ok, "{text}");
    assert!(text.contains("delete_after_days = 90\n"), "{text}");

    let (ok, text) = run(file, &[("KILN_RETENTION_DELETE_AFTER_DAYS", "10")]);
    assert!(!ok);
    assert!(
        text.contains("delete_after_days (10) must be more than archive_after_days (30)"),
        "{text}"
    );
    let (ok, text) = run(file, &[("KILN_RETENTION_ARCHIVE_AFTER_DAYS", "a month")]);
    assert!(!ok);
    assert!(text.contains("must be a whole number of days"), "{text}");
    let (ok, text) = run("[retention]\nkeep_days = 3\n", &[]);
    assert!(!ok);
    assert!(text.contains("keep_days"), "{text}");
}

/// `--log-format json`: every line kiln writes to stderr is a JSON object, its own
/// announcements included; `metrics_listen` serves `/metrics` without a token, and nothing
/// else, while the API port still asks for one.
#[test]
fn json_logs_and_metrics_on_their_own_address() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("kj-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let data = dir.path().join("data");
    let mut child = kiln()
        .args([
            "up",
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .env("KILN_LOG", "debug")
        .env("KILN_METRICS_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let (mut api, mut metrics) = (None, None);
    while api.is_none() || metrics.is_none() {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "kiln up ended: {log}"
        );
        log.push_str(&line);
        let object: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let message = object["message"].as_str().unwrap_or_default();
        if let Some(url) = message.strip_prefix("kiln listening on http://") {
            api = Some(url.to_string());
        }
        if let Some(rest) = message.strip_prefix("metrics (no token) on http://") {
            metrics = Some(rest.trim_end_matches("/metrics").to_string());
        }
    }
    let get = |addr: &str, path: &str| {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let (api, metrics) = (api.unwrap(), metrics.unwrap());
    let scraped = get(&metrics, "/metrics");
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    assert!(scraped.contains("# TYPE"), "{scraped}");
    assert!(get(&metrics, "/api/me").starts_with("HTTP/1.1 404"));
    assert!(get(&api, "/metrics").starts_with("HTTP/1.1 401"));
    assert!(get(&api, "/api/me").starts_with("HTTP/1.1 401"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = stderr.read_to_string(&mut log);
    let _ = child.wait();
    let mut requests = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(object["level"].is_string(), "{line}");
        if object["span"]["path"] == "/api/me" {
            requests += 1;
        }
    }
    assert!(requests > 0, "the request's span is in its lines:\n{log}");
}
