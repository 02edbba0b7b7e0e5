//! Exec and file operations through a real sandbox: streaming order, exit codes, timeouts, stdin,
//! processes that outlive their exec, files large and small, ports.

mod common;

use bytes::Bytes;
use common::{Harness, ok, run, sh};
use kiln_sandbox::{CommandLine, Error, ExecEvent, ExecRequest, FileKind, OutputStream};
use std::time::{Duration, Instant};

#[tokio::test]
async fn output_streams_in_order_while_the_command_runs() {
    let h = Harness::new().await;
    let sandbox = h.sandbox().await;
    let mut exec = sandbox
        .exec(sh(
            "for i in $(seq 1 200); do echo out$i; echo err$i >&2; done; sleep 0.3; echo late",
        ))
        .await
        .unwrap();
    assert!(matches!(
        exec.next().await.unwrap(),
        Some(ExecEvent::Started { .. })
    ));
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let mut first_output_at = None;
    let start = Instant::now();
    let status = loop {
        match exec
            .next()
            .await
            .unwrap()
            .expect("stream ends only after Exited")
        {
            ExecEvent::Output { stream, data } => {
                first_output_at.get_or_insert(start.elapsed());
                let text = std::str::from_utf8(&data).unwrap();
                match stream {
                    OutputStream::Stdout => stdout.push_str(text),
                    OutputStream::Stderr => stderr.push_str(text),
                }
            }
            ExecEvent::Exited(status) => break status,
            ExecEvent::Started { .. } => panic!("started twice"),
        }
    };
    assert!(exec.next().await.unwrap().is_none());
    assert!(status.success());
    let expected: String = (1..=200).map(|i| format!("out{i}\n")).collect::<String>() + "late\n";
    assert_eq!(stdout, expected);
    assert_eq!(
        stderr,
        (1..=200).map(|i| format!("err{i}\n")).collect::<String>()
    );
    // Output arrived while the command was still sleeping, not all at the end.
    assert!(
        first_output_at.unwrap() < Duration::from_millis(250),
        "output was buffered: {first_output_at:?}"
    );
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported() {
    let h = Harness::new().await;
    let sandbox = h.sandbox().await;
    assert_eq!(run(&sandbox, "exit 3").await.status.code, Some(3));
    let killed = run(&sandbox, "kill -TERM $$").await.status;
    assert_eq!((killed.code, killed.signal), (None, Some(libc::SIGTERM)));
    assert_eq!(killed.shell_code(), 128 + libc::SIGTERM);

    let missing = sandbox
        .exec(ExecRequest {
            command: CommandLine::Argv {
                argv: vec!["no-such-program".into()],
            },
            ..sh("")
        })
        .await
        .unwrap()
        .collect()
        .await;
    assert!(
        matches!(
            missing,
            Err(Error::Guest {
                kind: kiln_protocol::guest::ErrorKind::NotFound,
                ..
            })
        ),
        "{missing:?}"
    );
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let h = Harness::new().await;
    let sandbox = h.sandbox().await;
    let start = Instant::now();
    let outcome = sandbox
        .run(ExecRequest {
            timeout_ms: Some(300),
            ..sh("sleep 30 & echo $! > /tmp/child; sleep 30")
        })
        .await
        .unwrap();
    assert!(outcome.status.timed_out, "{outcome:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // The backgrounded child was in the same group and died too: it is gone, or a zombie the
    // sandbox's init has not reaped yet (`kill -0` would still succeed on that). Under load the
    // kill may take a moment to land, so look for up to 2 s; a survivor stays `S` throughout.
    ok(
        &sandbox,
        "p=$(cat /tmp/child); for i in $(seq 1 40); do s=$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null); \
         if [ -z \"$s\" ] || [ \"$s\" = Z ]; then exit 0; fi; sleep 0.05; done; exit 1",
    )
    .await;
}

#[tokio::test]
async fn stdin_reaches_the_process_and_signals_stop_it() {
    let h = Harness::new().await;
    let sandbox = h.sandbox().await;
    let mut exec = sandbox
        .exec(ExecRequest {
            stdin: true,
            ..sh("tr a-z A-Z")
        })
        .await
        .unwrap();
    exec.write_stdin(Bytes::from_static(b"hello "), false)
        .await
        .unwrap();
    exec.write_stdin(Bytes::from_static(b"sandbox\n"), true)
        .await
        .unwrap();
    let outcome = exec.collect().await.unwrap();
    assert_eq!(outcome.stdout, b"HELLO SANDBOX\n");

    let mut sleeper = sandbox.exec(sh("sleep 100")).await.unwrap();
    assert!(matches!(
        sleeper.next().await.unwrap(),
        Some(ExecEvent::Started { .. })
    ));
    sleeper.kill().await.unwrap();
    let status = sleeper.collect().await.unwrap().status;
    assert_eq!(status.signal, Some(libc::SIGKILL));
}

#[tokio::test]
async fn a_server_started_in_one_exec_answers_a_later_one() {
    let h = Harness::new().await;
    let sandbox = h.sandbox().await;
    ok(
        &sandbox,
        "mkdir -p /workspace/site && echo hello-from-server > /workspace/site/index.html",
    )
    .await;
    // The server keeps our stdout open; the exec must still finish promptly.
    let start = Instant::now();
    ok(
        &sandbox,
        "cd /workspace/site && python3 -m http.server 8123 --bind 127.0.0.1 &",
    )
    .await;
    assert!(start.elapsed() < Duration::from_secs(3));
    let mut ports = Vec::new();
    for _ in 0..100 {
        ports = sandbox.guest().listening_ports().await.unwrap();
        if ports.iter().any(|p| p.port == 8123) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ports
            .iter()
            .any(|p| p.port == 8123 && p.address == "127.0.0.1"),
        "{ports:?}"
    );
    let page = ok(
        &sandbox,
        "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:8123/\").read().decode(), end=\"\")'",
    )
    .await;
    assert_eq!(page, "hello-from-server\n");
}

#[tokio::test]
async fn files_round_trip_large_and_small() {
    let h = Harness::new().await;
    let sandbox = h.sandbox().await;
    let guest = sandbox.guest();
    let big: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    guest.mkdir("/workspace/a/b", true, None).await.unwrap();
    guest
        .write_file_from("/workspace/a/b/big.bin", &big[..], Some(0o600))
        .await
        .unwrap();
    assert_eq!(
        guest.read_file("/workspace/a/b/big.bin").await.unwrap(),
        big
    );
    let stat = guest.stat("/workspace/a/b/big.bin").await.unwrap();
    assert_eq!(
        (stat.kind, stat.size, stat.mode),
        (FileKind::File, big.len() as u64, 0o600)
    );
    // What the guest wrote is what a process in the sandbox sees.
    let sum = ok(&sandbox, "sha256sum /workspace/a/b/big.bin | cut -d' ' -f1").await;
    assert_eq!(sum.trim(), sha256_hex(&big));

    guest
        .write_file("/workspace/a/small.txt", b"small", None)
        .await
        .unwrap();
    let names: Vec<_> = guest
        .list_dir("/workspace/a")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["b", "small.txt"]);
    let err = guest.remove("/workspace/a", false).await.unwrap_err();
    assert!(matches!(err, Error::Guest { .. }), "{err}");
    guest.remove("/workspace/a", true).await.unwrap();
    let err = guest.stat("/workspace/a").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Guest {
                kind: kiln_protocol::guest::ErrorKind::NotFound,
                ..
            }
        ),
        "{err}"
    );
    // The sandbox user cannot write outside its own directories.
    let err = guest.write_file("/usr/evil", b"x", None).await.unwrap_err();
    assert!(matches!(err, Error::Guest { .. }), "{err}");
}

fn sha256_hex(data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, data).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}
