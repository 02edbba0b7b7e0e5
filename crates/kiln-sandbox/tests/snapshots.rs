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

#[tokio::test]
async fn merged_snapshots_show_exactly_what_their_stack_showed() {
    let h = Harness::new().await;
    let image = tempfile::tempdir().unwrap();
    let uid = h.provider.config().sandbox_uid;
    for (path, contents) in [
        ("workspace/keep.txt", "keep"),
        ("workspace/gone.txt", "gone"),
        ("workspace/dir/old.txt", "old"),
        ("workspace/dir2/a.txt", "a"),
        ("workspace/dir3/x.txt", "x"),
    ] {
        let path = image.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
    }
    let status = std::process::Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(image.path().join("workspace"))
        .status()
        .unwrap();
    assert!(status.success());
    let base = ImageSpec {
        layers: vec![image.path().to_path_buf()],
        host_system: true,
    };
    // Three rounds of changes, each in a sandbox restored from the one before: deletions of
    // image files and of earlier rounds' files, a directory replaced by a file and back, a
    // directory recreated over a deletion, files recreated over deletions, hard links.
    let rounds = [
        "rm gone.txt; rm -r dir; mkdir dir; echo new > dir/new.txt; echo changed > keep.txt; \
         mkdir fresh; echo f > fresh/f.txt; echo h > hard.txt; ln hard.txt hard2.txt",
        "echo back > gone.txt; rm -r fresh; rm dir2/a.txt; echo b > dir2/b.txt; rm -r dir3; \
         echo file > dir3",
        "rm -r dir; echo file > dir; mkdir fresh; echo again > fresh/g.txt; rm dir3; \
         mkdir dir3; echo y > dir3/y.txt; echo more >> hard.txt",
    ];
    let mut image = base.clone();
    let mut snapshots = Vec::new();
    for round in rounds {
        let sandbox = h
            .provider
            .create(SandboxSpec {
                image: image.clone(),
                ..host_spec()
            })
            .await
            .unwrap();
        ok(&sandbox, &format!("set -e; cd /workspace; {round}")).await;
        let snapshot = h.provider.snapshot(sandbox.id()).await.unwrap();
        h.provider.destroy(sandbox.id()).await.unwrap();
        snapshots.push(snapshot.image.layers.last().unwrap().clone());
        image = snapshot.image;
    }
    let manifest = async |image: ImageSpec| {
        let sandbox = h
            .provider
            .create(SandboxSpec {
                image,
                ..host_spec()
            })
            .await
            .unwrap();
        let listing = ok(&sandbox, MANIFEST).await;
        h.provider.destroy(sandbox.id()).await.unwrap();
        listing
    };
    let stacked = manifest(image.clone()).await;
    assert!(stacked.contains("/workspace/fresh/g.txt"), "{stacked}");
    assert!(!stacked.contains("/workspace/fresh/f.txt"), "{stacked}");
    assert!(!stacked.contains("/workspace/dir2/a.txt"), "{stacked}");

    // All three merged into one, and the last two merged on top of the first.
    let merged = h.provider.merge_snapshots(&snapshots).await.unwrap();
    let mut flat = base.clone();
    flat.layers.push(merged.layer.clone());
    assert_eq!(manifest(flat).await, stacked);
    let top = h.provider.merge_snapshots(&snapshots[1..]).await.unwrap();
    let mut partly = base.clone();
    partly.layers.extend([snapshots[0].clone(), top.layer]);
    assert_eq!(manifest(partly).await, stacked);
    assert!(
        h.provider
            .snapshots()
            .await
            .unwrap()
            .iter()
            .any(|s| s.id == merged.id),
        "the merged snapshot is listed"
    );

    // Only this provider's snapshots can be merged.
    let err = h
        .provider
        .merge_snapshots(&[std::path::PathBuf::from("/etc")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a snapshot"), "{err}");
}
