//! What a sandbox must not be able to do: read the host or another sandbox, signal another
//! sandbox's processes, reach the host's loopback, or take the machine down with forks, memory
//! or disk. Each attack runs for real; the test checks that the host and a neighbour are fine.

mod common;

use common::{Harness, host_spec, ok, run};
use kiln_sandbox::{ImageSpec, Limits, Provider, SandboxSpec, SandboxUser};
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
    // All sandboxes together (what `GET /metrics` reports): the kill, and memory in use.
    let usage = h
        .provider
        .usage()
        .unwrap()
        .expect("the local provider reads its cgroups");
    assert!(usage.oom_kills >= 1, "{usage:?}");
    assert!(usage.memory_bytes > 0, "{usage:?}");
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

/// Runs a python3 program in the sandbox; it prints one JSON object of `name: [rc, errno]`.
async fn probe(sandbox: &kiln_sandbox::Sandbox, program: &str) -> serde_json::Value {
    let script = format!("python3 - <<'PY'\n{PROBE_PRELUDE}\n{program}\nPY");
    let out = ok(sandbox, &script).await;
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `call(nr, *args)` makes a raw system call and returns `[rc, errno]`.
const PROBE_PRELUDE: &str = r#"
import ctypes, errno, json, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return [rc, ctypes.get_errno()]
SYS_ptrace, SYS_pidfd_getfd, SYS_process_vm_readv = 101, 438, 310
PTRACE_ATTACH, PTRACE_SEIZE = 16, 0x4206
"#;

#[tokio::test]
async fn the_guest_cannot_be_traced_read_or_robbed_of_its_descriptors() {
    let h = Harness::new().await;
    let sandbox = h.sandbox().await;
    let guest = sandbox.guest().guest_pid();
    assert!(guest > 0);
    let results = probe(
        &sandbox,
        &format!(
            r#"
guest = {guest}
pidfd = os.pidfd_open(guest)
out = {{
    "getfd_stderr": call(SYS_pidfd_getfd, pidfd, 2, 0),
    "getfd_listener": call(SYS_pidfd_getfd, pidfd, 3, 0),
    "attach": call(SYS_ptrace, PTRACE_ATTACH, guest, 0, 0),
    "seize": call(SYS_ptrace, PTRACE_SEIZE, guest, 0, 0),
}}
# Same-uid processes may read each other's /proc entries unless the owner is undumpable.
for name in ["environ", "fd/3"]:
    try:
        os.stat(f"/proc/{{guest}}/{{name}}")
        open(f"/proc/{{guest}}/{{name}}", "rb").close()
        out[name] = [0, 0]
    except OSError as e:
        out[name] = [-1, e.errno]
print(json.dumps(out))
"#
        ),
    )
    .await;
    for name in ["getfd_stderr", "getfd_listener", "attach", "seize"] {
        assert_eq!(
            results[name],
            serde_json::json!([-1, libc::EPERM]),
            "{name}: {results}"
        );
    }
    for name in ["environ", "fd/3"] {
        assert_eq!(results[name][0], -1, "{name} was readable: {results}");
    }
    // The guest still serves.
    ok(&sandbox, "true").await;
}

#[tokio::test]
async fn seccomp_refuses_tracing_mounts_and_namespaces_but_threads_work() {
    let h = Harness::new().await;
    let sandbox = h.sandbox().await;
    let results = probe(
        &sandbox,
        r#"
# A child of our own (same uid, dumpable): only the filter stands between us and it.
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
pidfd = os.pidfd_open(child)
buf = ctypes.create_string_buffer(8)
local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)
out = {
    "getfd_child": call(SYS_pidfd_getfd, pidfd, 0, 0),
    "attach_child": call(SYS_ptrace, PTRACE_ATTACH, child, 0, 0),
    "vm_readv_child": call(SYS_process_vm_readv, child, ctypes.addressof(local), 1, ctypes.addressof(local), 1, 0),
    # Without the filter: ENOSPC (user namespaces are disabled) and ENOENT (the path is checked first).
    "unshare_user": call(272, 0x10000000),
    "mount": call(165, ctypes.addressof(ctypes.create_string_buffer(b"none")), ctypes.addressof(ctypes.create_string_buffer(b"/no/such/dir")), ctypes.addressof(ctypes.create_string_buffer(b"tmpfs")), 0, 0),
    "clone_newuser": call(56, 0x10000000 | signal.SIGCHLD, 0, 0, 0, 0),
    "clone3": call(435, 0, 0),
}
if out["clone_newuser"][0] == 0:
    os._exit(0)
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
import threading
t = threading.Thread(target=lambda: None)
t.start()
t.join()
out["thread"] = [0, 0]
print(json.dumps(out))
"#,
    )
    .await;
    for name in [
        "getfd_child",
        "attach_child",
        "vm_readv_child",
        "unshare_user",
        "mount",
        "clone_newuser",
    ] {
        assert_eq!(
            results[name],
            serde_json::json!([-1, libc::EPERM]),
            "{name}: {results}"
        );
    }
    // clone3 says "not implemented", so glibc falls back to clone, whose flags are checked.
    assert_eq!(results["clone3"], serde_json::json!([-1, libc::ENOSYS]));
    assert_eq!(results["thread"], serde_json::json!([0, 0]));
    // Ordinary process creation works: subshells, pipes, git.
    assert_eq!(
        ok(
            &sandbox,
            "echo $(echo a | tr a b) && git --version >/dev/null && echo ok"
        )
        .await,
        "b\nok\n"
    );
}

#[tokio::test]
async fn no_process_of_a_sandbox_writes_to_a_host_file() {
    let h = Harness::new().await;
    let sandbox = h.sandbox().await;
    let dir = h.data_dir().join("sandboxes").join(sandbox.id().as_str());
    let procs = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/pids/kiln/{}/cgroup.procs",
        sandbox.id()
    ))
    .unwrap();
    let pids: Vec<&str> = procs.split_whitespace().collect();
    assert!(!pids.is_empty());
    for pid in &pids {
        for fd in 0..=2 {
            let path = format!("/proc/{pid}/fd/{fd}");
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let target = std::fs::read_link(&path).unwrap_or_default();
            assert!(
                !meta.is_file(),
                "pid {pid} fd {fd} is the host file {}",
                target.display()
            );
            if fd == 0 || fd == 1 {
                continue;
            }
            // stderr is the start-up pipe, closed by the host since: writing lots goes nowhere.
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut written = 0usize;
            if let Ok(mut pipe) = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
            {
                let chunk = vec![b'x'; 1 << 20];
                for _ in 0..64 {
                    match pipe.write(&chunk) {
                        Ok(n) => written += n,
                        Err(_) => break,
                    }
                }
            }
            assert!(written <= 1 << 20, "{written} bytes went into {path}");
        }
    }
    assert!(!dir.join("bwrap.log").exists());
    ok(&sandbox, "true").await;
}

#[tokio::test]
async fn the_sandbox_learns_no_host_path_from_proc() {
    let h = Harness::new().await;
    let sandbox = h.sandbox().await;
    let data = h.data_dir().display().to_string();
    // bubblewrap (pid 1) took its options from a descriptor; the overlay names its layers by
    // descriptor. Only the guest binary's bind mount still shows where it comes from.
    let leaks = ok(
        &sandbox,
        &format!(
            "tr '\\0' ' ' < /proc/1/cmdline; echo; grep -F {data} /proc/self/mountinfo | grep -v ' /.kiln/guest ' || true"
        ),
    )
    .await;
    assert!(!leaks.contains(&data), "{leaks}");
    assert!(
        leaks.starts_with("bwrap --args 6 -- /.kiln/guest"),
        "{leaks}"
    );
}

#[tokio::test]
async fn root_inside_is_the_sandbox_uid_outside_without_capabilities_under_the_same_filter() {
    let h = Harness::new().await;
    // A layer host root made, as a base's installer does: nobody's inside until adopted.
    let layer = h.data_dir().join("system-layer");
    std::fs::create_dir_all(layer.join("opt/tool")).unwrap();
    std::fs::write(layer.join("opt/tool/version"), "1\n").unwrap();
    let spec = |user| SandboxSpec {
        image: ImageSpec {
            layers: vec![layer.clone()],
            host_system: true,
        },
        user,
        ..SandboxSpec::default()
    };
    let root = h.provider.create(spec(SandboxUser::Root)).await.unwrap();
    assert_eq!(
        ok(&root, "id -u; id -g; echo $HOME $USER").await,
        "0\n0\n/root root\n"
    );
    let refused = run(&root, "echo 2 > /opt/tool/version").await;
    assert!(!refused.status.success(), "{refused:?}");
    h.provider.destroy(root.id()).await.unwrap();

    h.provider.adopt_system_layer(&layer).await.unwrap();
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(layer.join("opt/tool/version")).unwrap();
    assert_eq!((owner.uid(), owner.gid()), (900_000, 900_000));
    // Adopting again is a no-op.
    h.provider.adopt_system_layer(&layer).await.unwrap();

    let root = h.provider.create(spec(SandboxUser::Root)).await.unwrap();
    assert_eq!(
        ok(
            &root,
            "echo 2 > /opt/tool/version && stat -c %U /opt/tool/version && \
             grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status"
        )
        .await,
        "root\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n"
    );
    // The layer itself is untouched: the write went to the sandbox's writable layer.
    assert_eq!(
        std::fs::read_to_string(layer.join("opt/tool/version")).unwrap(),
        "1\n"
    );
    let results = probe(
        &root,
        r#"
print(json.dumps({
    "unshare_user": call(272, 0x10000000),
    "mount": call(165, ctypes.addressof(ctypes.create_string_buffer(b"none")), ctypes.addressof(ctypes.create_string_buffer(b"/tmp")), ctypes.addressof(ctypes.create_string_buffer(b"tmpfs")), 0, 0),
    "setuid_other": [libc.setuid(1000), ctypes.get_errno()],
}))
"#,
    )
    .await;
    assert_eq!(
        results["unshare_user"],
        serde_json::json!([-1, libc::EPERM])
    );
    assert_eq!(results["mount"], serde_json::json!([-1, libc::EPERM]));
    assert_eq!(results["setuid_other"][0], serde_json::json!(-1));
    // On the host, every process of it is the unprivileged sandbox uid.
    let procs = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/pids/kiln/{}/cgroup.procs",
        root.id()
    ))
    .unwrap();
    for pid in procs.split_whitespace() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert_eq!(
            uids.split_whitespace().skip(1).collect::<Vec<_>>(),
            ["900000"; 4],
            "pid {pid}"
        );
    }

    // The default user sees the same files as its own, and the system's TLS roots.
    let kiln = h.provider.create(spec(SandboxUser::Kiln)).await.unwrap();
    assert_eq!(
        ok(
            &kiln,
            "id -u; stat -c %u /opt/tool/version; echo $HOME; \
             test -r \"$SSL_CERT_FILE\" && echo $SSL_CERT_FILE $REQUESTS_CA_BUNDLE $NODE_EXTRA_CA_CERTS"
        )
        .await,
        "1000\n1000\n/home/kiln\n/etc/ssl/certs/ca-certificates.crt \
         /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
    );
}
