//! What a sandbox must not be able to do: read the host or another sandbox, signal another
//! sandbox's processes, reach the host's loopback, or take the machine down with forks, memory
//! or disk. Each attack runs for real; the test checks that the host and a neighbour are fine.

mod common;

use common::{Harness, host_spec, ok, run};
use kiln_sandbox::{Limits, Provider, SandboxSpec};
use std::time::{Duration, Instant};

#[tokio::test]
async fn host_files_and_the_data_dir_are_out_of_reach() {
    let h = Harness::new().await;
    let marker = h.data_dir().join("host-secret");
    std::fs::write(&marker, "secret").unwrap();
    let sandbox = h.sandbox().await;
    let script = format!(
        "test ! -e {marker} && test ! -e {data} && test ! -e /root/.cargo && test -z \"$(ls -A /root 2>/dev/null)\" \
         && ! grep -q '^root:[^x*!]' /etc/shadow 2>/dev/null \
         && test \"$(id -u)\" = 1000 && ! cat /proc/1/environ 2>/dev/null | grep -q KILN",
        marker = marker.display(),
        data = h.data_dir().display()
    );
    ok(&sandbox, &script).await;
    // The host's /usr is read-only inside.
    assert!(!run(&sandbox, "touch /usr/bin/evil").await.status.success());
    // Sandboxes do not see the host's processes.
    let procs = ok(&sandbox, "ls /proc | grep -c '^[0-9]'").await;
    assert!(procs.trim().parse::<u32>().unwrap() < 10, "{procs}");
}

#[tokio::test]
async fn sandboxes_cannot_see_or_signal_each_other() {
    let h = Harness::new().await;
    let (a, b) = (h.sandbox().await, h.sandbox().await);
    ok(
        &a,
        "echo mine > /workspace/secret; sleep 1000 >/dev/null 2>&1 &",
    )
    .await;
    let a_root = h
        .data_dir()
        .join("sandboxes")
        .join(a.id().as_str())
        .join("root");
    ok(
        &b,
        &format!(
            "test ! -e /workspace/secret && test ! -e {}",
            a_root.display()
        ),
    )
    .await;
    // B tries every host pid of A's processes; none exists in B's pid namespace.
    let a_pids =
        std::fs::read_to_string(format!("/sys/fs/cgroup/pids/kiln/{}/cgroup.procs", a.id()))
            .unwrap();
    let pids = a_pids.split_whitespace().collect::<Vec<_>>().join(" ");
    ok(
        &b,
        &format!("for p in {pids}; do ! kill -9 $p 2>/dev/null || [ \"$p\" -lt 10 ]; done"),
    )
    .await;
    assert_eq!(ok(&a, "pgrep -c sleep").await.trim(), "1");
}

#[tokio::test]
async fn the_host_loopback_is_unreachable() {
    let h = Harness::new().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let sandbox = h.sandbox().await;
    let outcome = run(
        &sandbox,
        &format!("timeout 2 bash -c 'echo x > /dev/tcp/127.0.0.1/{port}'"),
    )
    .await;
    assert!(!outcome.status.success());
    assert!(
        listener.accept().is_err(),
        "the sandbox reached the host's loopback"
    );
    // Only the loopback interface exists.
    let links = ok(
        &sandbox,
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    )
    .await;
    assert_eq!(links.trim(), "lo");
}

#[tokio::test]
async fn a_fork_bomb_hits_the_pid_limit_only() {
    let h = Harness::new().await;
    let spec = SandboxSpec {
        limits: Limits {
            pids: Some(64),
            ..Limits::default()
        },
        ..host_spec()
    };
    let bomb = h.provider.create(spec).await.unwrap();
    let neighbour = h.sandbox().await;
    let outcome = bomb
        .run(kiln_sandbox::ExecRequest {
            timeout_ms: Some(3000),
            ..common::sh("f() { f | f & }; f; sleep 2")
        })
        .await
        .unwrap();
    let _ = outcome;
    assert!(bomb.resource_events().unwrap().pids_limit_hits > 0);
    // The host and the neighbour still fork freely.
    assert!(
        std::process::Command::new("true")
            .status()
            .unwrap()
            .success()
    );
    ok(&neighbour, "for i in $(seq 1 20); do true & done; wait").await;
    h.provider.destroy(bomb.id()).await.unwrap();
}

#[tokio::test]
async fn a_memory_hog_is_killed_inside_and_reported() {
    let h = Harness::new().await;
    let spec = SandboxSpec {
        limits: Limits {
            memory_bytes: Some(64 << 20),
            ..Limits::default()
        },
        ..host_spec()
    };
    let hog = h.provider.create(spec).await.unwrap();
    let neighbour = h.sandbox().await;
    let outcome = run(
        &hog,
        "python3 -c 'x = bytearray(512 * 1024 * 1024); print(len(x))'",
    )
    .await;
    // The shell reports its child's SIGKILL as 128 + 9.
    assert_eq!(
        outcome.status.shell_code(),
        128 + libc::SIGKILL,
        "{outcome:?}"
    );
    assert!(outcome.oom_killed);
    assert!(hog.resource_events().unwrap().oom_kills >= 1);
    // The sandbox itself lives on, and so does its neighbour.
    ok(&hog, "echo still here").await;
    ok(&neighbour, "python3 -c 'x = bytearray(128 * 1024 * 1024)'").await;
}

#[tokio::test]
async fn filling_the_disk_fails_inside_only() {
    let h = Harness::new().await;
    let spec = SandboxSpec {
        limits: Limits {
            disk_bytes: 16 << 20,
            ..Limits::default()
        },
        ..host_spec()
    };
    let filler = h.provider.create(spec).await.unwrap();
    let start = Instant::now();
    let outcome = run(&filler, "head -c 100000000 /dev/zero > /workspace/big").await;
    assert!(!outcome.status.success());
    assert!(
        String::from_utf8_lossy(&outcome.stderr).contains("No space left"),
        "{outcome:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    let used = ok(&filler, "du -sm /workspace/big | cut -f1").await;
    assert!(used.trim().parse::<u64>().unwrap() <= 16);
    // Freeing space makes the sandbox usable again.
    ok(&filler, "rm /workspace/big && echo ok > /workspace/small").await;
}
