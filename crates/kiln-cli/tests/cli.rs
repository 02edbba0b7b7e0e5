//! The `kiln` binary as a person uses it: exit codes and streams pass through, bad flags get a
//! clear error, and a `kiln` killed with SIGKILL leaves a sandbox that a later `kiln` finds and
//! removes.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kiln(data: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.env("KILN_DATA_DIR", data);
    cmd
}

#[test]
fn run_passes_output_stdin_and_exit_code_through() {
    let data = tempfile::tempdir().unwrap();
    let out = kiln(data.path())
        .args([
            "sandbox",
            "run",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");

    let mut child = kiln(data.path())
        .args(["sandbox", "run", "--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped through\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"PIPED THROUGH\n");

    let out = kiln(data.path())
        .args(["sandbox", "run", "--timeout", "0.3", "--", "sleep", "30"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124));
    // Every sandbox was destroyed on the way out.
    let ls = kiln(data.path()).args(["sandbox", "ls"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ls.stdout), "");
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let data = tempfile::tempdir().unwrap();
    let out = kiln(data.path())
        .args(["sandbox", "run", "--memory", "1", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("memory_bytes"),
        "{out:?}"
    );
    let out = kiln(data.path())
        .args(["sandbox", "rm", "not-an-id"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a sandbox id"),
        "{out:?}"
    );
}

#[test]
fn a_killed_kiln_leaves_a_sandbox_that_a_later_kiln_finds_and_removes() {
    let data = tempfile::tempdir().unwrap();
    let mut child = kiln(data.path())
        .args([
            "sandbox",
            "run",
            "--",
            "sh",
            "-c",
            "echo started; sleep 1000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "started\n");
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();

    let ls = kiln(data.path())
        .args(["sandbox", "ls", "--json"])
        .output()
        .unwrap();
    assert!(ls.status.success(), "{ls:?}");
    let listed = String::from_utf8(ls.stdout).unwrap();
    let info: serde_json::Value =
        serde_json::from_str(listed.lines().next().expect("the sandbox survived")).unwrap();
    let id = info["id"].as_str().unwrap().to_string();
    let sandbox_dir = data.path().join("sandboxes").join(&id);
    assert!(sandbox_dir.exists());

    let start = Instant::now();
    let rm = kiln(data.path())
        .args(["sandbox", "rm", &id])
        .output()
        .unwrap();
    assert!(rm.status.success(), "{rm:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(!sandbox_dir.exists());
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/pids/kiln/{id}")).exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id));
}

/// `--net` puts the command behind kiln's egress proxy: the variables every HTTP client reads
/// point at it, and a name the policy does not allow is refused by the proxy with a reason —
/// before any lookup, so nothing leaves the machine.
#[test]
fn net_routes_http_through_the_egress_proxy_which_refuses_what_it_does_not_allow() {
    let data = tempfile::tempdir().unwrap();
    let run = |net: Option<&str>, script: &str| {
        let mut cmd = kiln(data.path());
        cmd.args(["sandbox", "run"]);
        if let Some(net) = net {
            cmd.args(["--net", net]);
        }
        let out = cmd.args(["--", "sh", "-c", script]).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(Some("allow:only.test"), "echo $HTTPS_PROXY $no_proxy");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "http://127.0.0.1:3128 localhost,127.0.0.1,::1\n");

    let (code, out, err) = run(
        Some("allow:only.test"),
        "curl -s -w '\\n%{http_code}' http://other.test/",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.ends_with("\n403"), "{out}");
    assert!(out.contains("other.test") && out.contains("allow"), "{out}");

    // TLS goes through CONNECT, refused the same way.
    let (_, out, _) = run(
        Some("allow:only.test"),
        "curl -s -o /dev/null -w '%{http_connect}' https://other.test/",
    );
    assert_eq!(out, "403", "{out}");

    // Without --net: its own loopback only, and no proxy to ask.
    let (code, out, err) = run(None, "echo ${HTTP_PROXY:-unset}");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "unset\n");

    let (code, _, err) = run(Some("sometimes"), "true");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--net"), "{err}");
    // The proxy's socket went with the command.
    let sockets = std::fs::read_dir(data.path().join("egress"))
        .unwrap()
        .count();
    assert_eq!(sockets, 0);
}
