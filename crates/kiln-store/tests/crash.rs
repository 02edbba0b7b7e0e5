//! Crash durability: what `append` reported as done survives `kill -9`. A child process (this
//! test binary again, switched by an environment variable) appends as fast as it can and prints
//! each committed seq; the parent SIGKILLs it mid-stream, reopens the data dir and checks that
//! every reported event is there, in order, and that the log goes on at head + 1.

mod common;

use common::{number_of, numbered};
use kiln_core::SessionId;
use kiln_store::Store;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// Set (to the data dir) only in the child process.
const CHILD_DIR: &str = "KILN_STORE_CRASH_CHILD_DIR";
const CHILD_SESSION: &str = "KILN_STORE_CRASH_CHILD_SESSION";
/// Events appended before the crash starts, and how many the child must report before the kill.
const BEFORE: u64 = 10;
const REPORTED_BEFORE_KILL: u64 = 2_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The child's side: this test binary again, running [`kill_9_loses_no_reported_event`] with
/// the child's environment, appends until it is killed.
fn crash_child(dir: String, session: String) -> ! {
    runtime().block_on(async move {
        let store = Store::open(dir.as_ref()).await.unwrap();
        let log = store
            .open_session(&SessionId::parse(&session).unwrap())
            .await
            .unwrap();
        let mut out = std::io::stdout().lock();
        let mut n = log.head_seq().await + 1;
        loop {
            // Single appends and small batches, so the kill can land inside either.
            let batch = 1 + n % 3;
            let first = n;
            let ((), events) = log
                .write(move |w| {
                    (first..first + batch).try_for_each(|k| w.event(numbered(k)).map(drop))
                })
                .await
                .unwrap();
            n += batch;
            // Printed only after `write` returned: the claim under test is about these.
            writeln!(out, "appended {}", events.last().unwrap().envelope.seq).unwrap();
            out.flush().unwrap();
        }
    })
}

#[test]
fn kill_9_loses_no_reported_event() {
    if let (Ok(dir), Ok(session)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_SESSION)) {
        crash_child(dir, session);
    }
    let dir = tempfile::tempdir().unwrap();
    let id = SessionId::random();
    runtime().block_on(async {
        let store = Store::open(dir.path()).await.unwrap();
        let user = store.create_user("ada", false).await.unwrap();
        common::repo(&store, "kiln").await;
        let log = store
            .create_session(&id, "kiln", "crash", &user.id)
            .await
            .unwrap();
        for n in 1..=BEFORE {
            log.append(numbered(n)).await.unwrap();
        }
    });

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "kill_9_loses_no_reported_event",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_SESSION, id.as_str())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut reported = BEFORE;
    let mut killed = false;
    // After the kill, lines the child wrote before it died are still in the pipe: they count.
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Some(seq) = line
            .unwrap()
            .strip_prefix("appended ")
            .map(|s| s.parse::<u64>().unwrap())
        else {
            continue; // libtest's own chatter
        };
        assert!(seq > reported, "seqs are reported in order");
        reported = seq;
        if !killed && reported >= BEFORE + REPORTED_BEFORE_KILL {
            child.kill().unwrap(); // SIGKILL: no destructor, no flush, no checkpoint
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed,
        "the child stopped on its own ({status}) after reporting seq {reported}"
    );

    runtime().block_on(async {
        let store = Store::open(dir.path()).await.unwrap();
        let log = store.open_session(&id).await.unwrap();
        let head = log.head_seq().await;
        eprintln!("reported {reported}, head after reopen {head}");
        // The child may have committed a write it did not live to report, never the reverse.
        assert!(head >= reported, "head {head} < reported {reported}");
        let events = log.read_after(0, usize::MAX).await.unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
        assert!(events.iter().all(|e| number_of(&e.event) == e.seq));
        assert_eq!(
            log.append(numbered(head + 1)).await.unwrap().envelope.seq,
            head + 1
        );
    });
}
