//! Running processes: output streaming, exit reports, timeouts, stdin, signals, and processes
//! that outlive the exec that started them.

mod common;

use common::{Guest, argv, error_kind, exited, is_alive, kill_group, read_pid, shell, with_stdin};
use kiln_protocol::guest::{ErrorKind, ExecRequest, ExitStatus, GuestMessage, HostMessage};
use std::time::{Duration, Instant};

#[tokio::test]
async fn output_streams_in_order_between_started_and_exited() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let script = "i=1; while [ $i -le 300 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done";
    // `exec` asserts that ExecStarted comes first, only Output follows, and ExecExited ends it.
    let run = conn.exec(shell(script)).await;
    assert_eq!(run.status, exited(0));
    let expected = |prefix: &str| {
        (1..=300)
            .map(|i| format!("{prefix}{i}\n"))
            .collect::<String>()
    };
    assert_eq!(run.stdout(), expected("out"));
    assert_eq!(String::from_utf8_lossy(&run.stderr), expected("err"));

    // Nothing else arrives for that exec: the next frame answers the next request.
    let reply = conn.request(HostMessage::ListPorts).await;
    assert!(matches!(reply, GuestMessage::Ports { .. }), "{reply:?}");
}

#[tokio::test]
async fn large_output_arrives_whole_in_bounded_chunks() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let run = conn
        .exec(shell("head -c 1000000 /dev/zero | tr '\\0' x"))
        .await;
    assert_eq!(run.status, exited(0));
    assert_eq!(run.stdout.len(), 1_000_000);
    assert!(run.stdout.iter().all(|&b| b == b'x'));
    assert!(
        run.chunk_sizes.iter().all(|&n| n > 0 && n <= 64 * 1024),
        "{:?}",
        run.chunk_sizes
    );
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    assert_eq!(conn.exec(shell("exit 3")).await.status, exited(3));
    assert_eq!(conn.exec(argv(&["false"])).await.status, exited(1));
    let killed = conn.exec(shell("kill -TERM $$")).await.status;
    assert_eq!(
        killed,
        ExitStatus {
            code: None,
            signal: Some(libc::SIGTERM),
            timed_out: false
        }
    );
}

#[tokio::test]
async fn env_and_cwd_apply_to_the_process() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    std::fs::create_dir(guest.dir().join("sub")).expect("mkdir");
    let request = ExecRequest {
        cwd: Some(guest.path("sub")),
        env: [("KILN_TEST".to_string(), "hello".to_string())].into(),
        ..shell("printf '%s|' \"$KILN_TEST\"; pwd")
    };
    let run = conn.exec(request).await;
    assert_eq!(run.stdout(), format!("hello|{}\n", guest.path("sub")));

    // Without a cwd the process starts where the guest runs.
    let run = conn.exec(argv(&["pwd"])).await;
    assert_eq!(run.stdout(), format!("{}\n", guest.dir().display()));
}

#[tokio::test]
async fn spawn_failures_are_errors_and_the_connection_goes_on() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let missing = conn
        .request(HostMessage::Exec(argv(&["/nonexistent/program"])))
        .await;
    assert_eq!(error_kind(&missing), ErrorKind::NotFound);
    let empty = conn.request(HostMessage::Exec(argv(&[]))).await;
    assert_eq!(error_kind(&empty), ErrorKind::InvalidRequest);
    let bad_cwd = ExecRequest {
        cwd: Some("/nonexistent/dir".into()),
        ..argv(&["true"])
    };
    let reply = conn.request(HostMessage::Exec(bad_cwd)).await;
    assert_eq!(error_kind(&reply), ErrorKind::NotFound);
    assert_eq!(conn.exec(argv(&["true"])).await.status, exited(0));
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let pid_file = guest.dir().join("child.pid");
    let script = format!("sleep 30 & echo $! > {}; sleep 30", pid_file.display());
    let started = Instant::now();
    let run = conn
        .exec(ExecRequest {
            timeout_ms: Some(300),
            ..shell(&script)
        })
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        run.status,
        ExitStatus {
            code: None,
            signal: Some(libc::SIGKILL),
            timed_out: true
        }
    );

    let child = read_pid(&pid_file).await;
    common::wait_until("the shell's child is dead too", || !is_alive(child)).await;
}

#[tokio::test]
async fn stdin_round_trips_through_cat() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let (id, pid) = conn.start_exec(with_stdin(argv(&["cat"]))).await;
    conn.send_data(id, HostMessage::Stdin { eof: false }, &b"hello "[..])
        .await;
    conn.send_data(id, HostMessage::Stdin { eof: true }, &b"world"[..])
        .await;
    let run = conn.finish_exec(id, pid).await;
    assert_eq!(run.stdout(), "hello world");
    assert_eq!(run.status, exited(0));

    // The exec is over; its id no longer takes stdin.
    conn.send(id, HostMessage::Stdin { eof: true }).await;
    assert_eq!(
        error_kind(&conn.recv_for(id).await),
        ErrorKind::UnknownRequest
    );
}

#[tokio::test]
async fn a_signal_request_ends_the_process() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let (id, pid) = conn.start_exec(argv(&["sleep", "100"])).await;

    // Stdin was not requested, so there is none to write to; the complaint comes under id 0
    // (an error on the exec's own id would end it) and the exec keeps running.
    conn.send(id, HostMessage::Stdin { eof: true }).await;
    assert_eq!(
        error_kind(&conn.recv_for(0).await),
        ErrorKind::InvalidRequest
    );

    let started = Instant::now();
    conn.send(
        id,
        HostMessage::Signal {
            signal: libc::SIGTERM,
        },
    )
    .await;
    let run = conn.finish_exec(id, pid).await;
    assert_eq!(run.status.signal, Some(libc::SIGTERM));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_live_id_cannot_start_another_request() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let (id, pid) = conn.start_exec(argv(&["sleep", "100"])).await;
    conn.send(id, HostMessage::Exec(argv(&["true"]))).await;
    assert_eq!(
        error_kind(&conn.recv_for(0).await),
        ErrorKind::InvalidRequest
    );
    let write = HostMessage::WriteFile {
        path: guest.path("f"),
        mode: None,
        eof: true,
    };
    conn.send(id, write).await;
    assert_eq!(
        error_kind(&conn.recv_for(0).await),
        ErrorKind::InvalidRequest
    );
    assert!(!guest.dir().join("f").exists());

    conn.send(
        id,
        HostMessage::Signal {
            signal: libc::SIGKILL,
        },
    )
    .await;
    assert_eq!(
        conn.finish_exec(id, pid).await.status.signal,
        Some(libc::SIGKILL)
    );
    // Once it exited the id is free again.
    let again = conn.start_exec_as(id, argv(&["true"])).await;
    assert_eq!(conn.finish_exec(id, again).await.status, exited(0));
}

#[tokio::test]
async fn a_background_server_outlives_its_exec() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let pid_file = guest.dir().join("server.pid");
    let script = format!(
        "sleep 30 > /dev/null 2>&1 & echo $! > {}",
        pid_file.display()
    );
    let run = conn.exec(shell(&script)).await;
    assert_eq!(run.status, exited(0));

    let check = format!("kill -0 $(cat {}) && echo alive", pid_file.display());
    let later = conn.exec(shell(&check)).await;
    kill_group(run.pid);
    assert_eq!(later.stdout(), "alive\n");
}

#[tokio::test]
async fn a_background_child_holding_the_pipes_does_not_hold_the_exec() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let pid_file = guest.dir().join("bg.pid");
    // The subshell inherits stdout and stderr, writes to them after the exec ended, and then
    // stays alive: the guest must report the exit promptly and must not break the pipe under it.
    let script = format!(
        "(sleep 0.3; echo late; echo late >&2; exec sleep 30) & echo $! > {}; echo started",
        pid_file.display()
    );
    let started = Instant::now();
    let run = conn.exec(shell(&script)).await;
    let took = started.elapsed();
    let background = read_pid(&pid_file).await;

    tokio::time::sleep(Duration::from_millis(600)).await;
    let survived = is_alive(background);
    kill_group(run.pid);
    assert_eq!(run.status, exited(0));
    assert_eq!(run.stdout(), "started\n");
    assert!(
        took < Duration::from_secs(1),
        "the exit report took {took:?}"
    );
    assert!(survived, "the background process died after the exec ended");
}
