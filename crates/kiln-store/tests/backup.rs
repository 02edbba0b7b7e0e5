//! `kiln backup`: a copy taken while sessions are being written opens as a store whose every
//! session log is whole — contiguous seqs from 1, at least what was committed before the backup
//! began — and which no longer points at layers the copy does not hold.

mod common;

use common::{number_of, numbered};
use kiln_core::SessionId;
use kiln_store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_session_s_events() {
    let (dir, store, user, first) = common::session().await;
    let mut logs = vec![first];
    for _ in 0..4 {
        logs.push(
            store
                .create_session(&SessionId::random(), "kiln", "t", &user)
                .await
                .unwrap(),
        );
    }
    for log in &logs {
        for n in 1..=50 {
            log.append(numbered(n)).await.unwrap();
        }
    }
    // Writers keep appending to every session while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = logs
        .iter()
        .cloned()
        .map(|log| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 51;
                while !stop.load(Ordering::Relaxed) {
                    log.append(numbered(n)).await.unwrap();
                    n += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let committed: Vec<u64> = futures_heads(&logs).await;
    let dest = tempfile::tempdir().unwrap();
    let target = dest.path().join("backup");
    let (data, to) = (dir.path().to_path_buf(), target.clone());
    let report = tokio::task::spawn_blocking(move || kiln_store::backup(&data, &to))
        .await
        .unwrap()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(report.sessions, logs.len());
    assert_eq!(report.missing, 0);
    assert!(report.bytes > 0);

    let restored = Store::open(&target).await.unwrap();
    for (log, before) in logs.iter().zip(committed) {
        let copy = restored.open_session(log.id()).await.unwrap();
        let events = copy.read_after(0, 1_000_000).await.unwrap();
        assert!(events.len() as u64 >= before, "{} < {before}", events.len());
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            assert_eq!(number_of(&e.event), e.seq);
        }
        // The copy goes on where it stopped.
        copy.append(numbered(events.len() as u64 + 1))
            .await
            .unwrap();
    }
    // A second backup into a directory that is not empty is refused, not merged.
    let error = kiln_store::backup(dir.path(), &target).unwrap_err();
    assert!(error.to_string().contains("not empty"), "{error}");
}

async fn futures_heads(logs: &[kiln_store::SessionLog]) -> Vec<u64> {
    let mut heads = Vec::new();
    for log in logs {
        heads.push(log.head_seq().await);
    }
    heads
}
