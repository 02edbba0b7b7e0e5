//! Snapshot and restore: a restored sandbox sees exactly the files the original had, deletions of
//! image files included.

mod common;

use common::{Harness, host_spec, ok};
use kiln_sandbox::{ImageSpec, Provider, SandboxSpec};

/// Every path under the given roots with its type, mode, owner, size and content hash.
const MANIFEST: &str = "find /workspace /home/kiln /etc -xdev \\( -type f -o -type d -o -type l \\) \
    -printf '%p %y %m %U %l\\n' | sort; \
    find /workspace -xdev -type f -exec sha256sum {} + | sort";

#[tokio::test]
async fn restore_reproduces_files_and_deletions_exactly() {
    let h = Harness::new().await;
    // An image layer with files the sandbox will delete and replace.
    let image = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(image.path().join("workspace/dir")).unwrap();
    std::fs::write(image.path().join("workspace/keep.txt"), "keep").unwrap();
    std::fs::write(image.path().join("workspace/gone.txt"), "gone").unwrap();
    std::fs::write(image.path().join("workspace/dir/old.txt"), "old").unwrap();
    // An image built by kiln holds files owned by the sandbox user.
    let uid = h.provider.config().sandbox_uid;
    for path in [
        "workspace",
        "workspace/dir",
        "workspace/keep.txt",
        "workspace/gone.txt",
        "workspace/dir/old.txt",
    ] {
        std::os::unix::fs::chown(image.path().join(path), Some(uid), Some(uid)).unwrap();
    }
    let spec = SandboxSpec {
        image: ImageSpec {
            layers: vec![image.path().to_path_buf()],
            host_system: true,
        },
        ..host_spec()
    };

    let sandbox = h.provider.create(spec).await.unwrap();
    ok(
        &sandbox,
        "test -f /workspace/gone.txt && test -f /workspace/dir/old.txt",
    )
    .await;
    ok(
        &sandbox,
        "set -e; cd /workspace; rm gone.txt; rm -r dir; mkdir dir; echo new > dir/new.txt; \
         echo changed > keep.txt; chmod 640 keep.txt; ln -s keep.txt link; mkdir -p empty/nested; \
         head -c 300000 /dev/urandom > random.bin; echo hi > /home/kiln/.profile",
    )
    .await;
    let before = ok(&sandbox, MANIFEST).await;
    let snapshot = h.provider.snapshot(sandbox.id()).await.unwrap();
    assert!(snapshot.size_bytes >= 300_000, "{snapshot:?}");

    // The original goes away entirely; the snapshot must stand on its own.
    h.provider.destroy(sandbox.id()).await.unwrap();
    let restored = h
        .provider
        .create(SandboxSpec {
            image: snapshot.image.clone(),
            ..host_spec()
        })
        .await
        .unwrap();
    let after = ok(&restored, MANIFEST).await;
    assert_eq!(before, after);
    ok(&restored, "test ! -e /workspace/gone.txt && test ! -e /workspace/dir/old.txt && test \"$(cat /workspace/dir/new.txt)\" = new").await;

    // A snapshot of the restored sandbox stacks on the first one.
    ok(
        &restored,
        "rm /workspace/random.bin && echo second > /workspace/second.txt",
    )
    .await;
    let second = h.provider.snapshot(restored.id()).await.unwrap();
    assert_eq!(second.image.layers.len(), snapshot.image.layers.len() + 1);
    let third = h
        .provider
        .create(SandboxSpec {
            image: second.image,
            ..host_spec()
        })
        .await
        .unwrap();
    ok(&third, "test ! -e /workspace/random.bin && test -f /workspace/keep.txt && cat /workspace/second.txt").await;
}

#[tokio::test]
async fn a_snapshot_is_consistent_while_the_sandbox_keeps_writing() {
    let h = Harness::new().await;
    let sandbox = h.sandbox().await;
    // A writer that replaces a, then b, atomically and forever: at any instant b <= a <= b + 1.
    // The copy visits a before b, so without the freeze it would find b ahead of a.
    ok(
        &sandbox,
        "cd /workspace && echo 0 > a && echo 0 > b && (i=0; while true; do i=$((i+1)); \
         echo $i > a.new && mv a.new a && echo $i > b.new && mv b.new b; done) >/dev/null 2>&1 &",
    )
    .await;
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let snapshot = h.provider.snapshot(sandbox.id()).await.unwrap();
        let layer = snapshot.image.layers.last().unwrap();
        let read = |name: &str| -> u64 {
            std::fs::read_to_string(layer.join("workspace").join(name))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let (a, b) = (read("a"), read("b"));
        assert!(b <= a && a <= b + 1, "inconsistent snapshot: a={a} b={b}");
    }
    // The sandbox runs on after the freeze.
    ok(&sandbox, "true").await;
}
