//! Creating, destroying and reattaching: nothing leaks, nothing survives a destroy, everything
//! that should survives a restart of the host process.

mod common;

use common::{Harness, host_spec, ok};
use kiln_sandbox::{Error, LocalConfig, LocalProvider, Provider};
use std::path::Path;

fn mounts_mentioning(path: &Path) -> usize {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter(|l| l.contains(path.to_str().unwrap()))
        .count()
}

fn cgroup_dirs(id: &str) -> Vec<String> {
    ["memory", "pids", "cpu", "freezer", ""]
        .iter()
        .map(|c| format!("/sys/fs/cgroup/{c}/kiln/{id}"))
        .filter(|p| Path::new(p).exists())
        .collect()
}

#[tokio::test]
async fn destroy_leaves_no_process_mount_cgroup_or_file() {
    let h = Harness::new().await;
    let sandbox = h.sandbox().await;
    ok(
        &sandbox,
        "sleep 1000 >/dev/null 2>&1 & sleep 1000 >/dev/null 2>&1 &",
    )
    .await;
    let id = sandbox.id().clone();
    let pids: Vec<i32> =
        std::fs::read_to_string(format!("/sys/fs/cgroup/pids/kiln/{id}/cgroup.procs"))
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
    assert!(pids.len() >= 3, "bwrap, guest and two sleeps: {pids:?}");
    assert!(mounts_mentioning(&h.data_dir().join("sandboxes").join(id.as_str())) >= 2);

    h.provider.destroy(&id).await.unwrap();
    for pid in pids {
        // Gone, or dead and waiting for init to reap it. A killed process leaves its cgroup
        // before it has finished exiting, so it may still show as running for a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            if matches!(state, None | Some("Z") | Some("X")) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "process {pid} survived: {stat}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    assert_eq!(
        mounts_mentioning(&h.data_dir().join("sandboxes").join(id.as_str())),
        0
    );
    assert!(
        cgroup_dirs(id.as_str()).is_empty(),
        "{:?}",
        cgroup_dirs(id.as_str())
    );
    assert!(!h.data_dir().join("sandboxes").join(id.as_str()).exists());
    assert!(h.provider.list().await.unwrap().is_empty());
    assert!(matches!(
        h.provider.destroy(&id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        sandbox.guest().stat("/").await,
        Err(Error::GuestGone(_))
    ));
}

#[tokio::test]
async fn a_restarted_provider_reattaches_live_sandboxes_and_cleans_dead_ones() {
    let h = Harness::new().await;
    let config = LocalConfig {
        data_dir: h.data_dir().join("restart"),
        ..h.provider.config().clone()
    };
    let first = LocalProvider::open(config.clone()).await.unwrap();
    let survivor = first.create(host_spec()).await.unwrap();
    ok(
        &survivor,
        "echo kept > /workspace/state; sleep 1000 >/dev/null 2>&1 &",
    )
    .await;
    let dead = first.create(host_spec()).await.unwrap();
    let (survivor_id, dead_id) = (survivor.id().clone(), dead.id().clone());

    // The first control plane goes away with its handles and locks; one sandbox dies meanwhile.
    drop((first, survivor, dead));
    for pid in std::fs::read_to_string(format!("/sys/fs/cgroup/pids/kiln/{dead_id}/cgroup.procs"))
        .unwrap()
        .lines()
    {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid.parse().unwrap(), libc::SIGKILL) };
    }

    let second = LocalProvider::open(config.clone()).await.unwrap();
    let listed: Vec<_> = second
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(listed, vec![survivor_id.clone()]);
    let again = second.attach(&survivor_id).await.unwrap();
    assert_eq!(
        ok(&again, "cat /workspace/state; pgrep -c sleep").await,
        "kept\n1\n"
    );
    let dead_dir = config.data_dir.join("sandboxes").join(dead_id.as_str());
    assert!(!dead_dir.exists());
    assert!(cgroup_dirs(dead_id.as_str()).is_empty());
    assert_eq!(mounts_mentioning(&dead_dir), 0);

    // While the second provider holds the survivor, a third one on the same data dir leaves it be.
    let third = LocalProvider::open(config).await.unwrap();
    assert!(matches!(
        third.attach(&survivor_id).await,
        Err(Error::NotFound(_))
    ));
    ok(&again, "true").await;
    second.destroy(&survivor_id).await.unwrap();
}

#[tokio::test]
async fn bad_specs_are_refused_with_a_reason_and_leave_nothing_behind() {
    let h = Harness::new().await;
    let mut spec = host_spec();
    spec.limits.disk_bytes = 10;
    let err = h.provider.create(spec).await.unwrap_err();
    assert!(err.to_string().contains("disk_bytes"), "{err}");

    let mut spec = host_spec();
    spec.image.layers.push("/no/such/layer".into());
    let err = h.provider.create(spec).await.unwrap_err();
    assert!(err.to_string().contains("/no/such/layer"), "{err}");

    let mut spec = host_spec();
    spec.network = kiln_sandbox::NetworkPolicy::Proxy {
        dir: "relative".into(),
    };
    let err = h.provider.create(spec).await.unwrap_err();
    assert!(matches!(err, Error::InvalidSpec(_)), "{err}");
    assert!(err.to_string().contains("relative/proxy.sock"), "{err}");

    assert!(
        std::fs::read_dir(h.data_dir().join("sandboxes"))
            .unwrap()
            .next()
            .is_none()
    );
}
