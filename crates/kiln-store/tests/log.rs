//! A session's log through the public API: seqs, transactional writes, prompts and messages,
//! the shared handle cache, and a property test of `read_after`.

mod common;

use common::{number_of, numbered, session};
use kiln_core::PromptId;
use kiln_protocol::api::{DeliveryMode, PromptStatus, UserRef};
use kiln_store::{Error, Store};
use proptest::prelude::*;

#[tokio::test]
async fn seqs_are_gapless_and_continue_after_reopen() {
    let (dir, store, _, log) = session().await;
    let id = log.id().clone();
    assert_eq!(log.head_seq().await, 0);
    for n in 1..=10 {
        let stored = log.append(numbered(n)).await.unwrap();
        assert_eq!(stored.envelope.seq, n);
        assert_eq!(
            *stored.json,
            *serde_json::to_string(&stored.envelope).unwrap()
        );
    }
    let ((), events) = log
        .write(|w| {
            for n in 11..=13 {
                assert_eq!(w.event(numbered(n))?, n);
            }
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.envelope.seq).collect::<Vec<_>>(),
        [11, 12, 13]
    );
    drop((log, store));

    let store = Store::open(dir.path()).await.unwrap();
    let log = store.open_session(&id).await.unwrap();
    assert_eq!(log.head_seq().await, 13);
    assert_eq!(log.append(numbered(14)).await.unwrap().envelope.seq, 14);
    let all = log.read_after(0, 1000).await.unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=14).collect::<Vec<_>>());
    assert!(all.iter().all(|e| number_of(&e.event) == e.seq));
    assert_eq!(log.read_after(10, 2).await.unwrap().len(), 2);
    assert!(log.read_after(14, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_write_broadcasts_nothing_and_consumes_no_seq() {
    let (_dir, _store, _, log) = session().await;
    log.append(numbered(1)).await.unwrap();
    let mut sub = log.subscribe(1);
    let prompt = PromptId::random();
    let result = log
        .write(move |w| {
            w.event(numbered(99))?;
            w.set_delivery_mode(DeliveryMode::Insert)?;
            w.set_prompt_status(&prompt, PromptStatus::Running)?; // no such prompt: fails
            Ok(())
        })
        .await;
    assert!(matches!(result, Err(Error::NotFound(_))), "{result:?}");
    assert_eq!(log.head_seq().await, 1);
    assert_eq!(
        log.delivery_mode().await.unwrap(),
        DeliveryMode::Queue,
        "rolled back"
    );
    assert!(log.read_after(1, 10).await.unwrap().is_empty());
    // A closure's own error rolls back the same way.
    let result: Result<((), _), _> = log
        .write(|w| {
            w.event(numbered(98))?;
            Err(Error::Invalid("changed my mind".into()))
        })
        .await;
    assert!(matches!(result, Err(Error::Invalid(_))));
    // The next event gets seq 2, and the subscriber's first event is that one.
    assert_eq!(log.append(numbered(2)).await.unwrap().envelope.seq, 2);
    let first = sub.next().await.unwrap().unwrap();
    assert_eq!(
        (first.envelope.seq, number_of(&first.envelope.event)),
        (2, 2)
    );
}

#[tokio::test]
async fn prompts_messages_and_settings() {
    let (_dir, _store, user, log) = session().await;
    let author = UserRef {
        id: user,
        name: "ada".into(),
    };
    let (p1, p2) = (PromptId::random(), PromptId::random());
    let (a, ids) = (author.clone(), (p1.clone(), p2.clone()));
    log.write(move |w| {
        w.insert_prompt(&ids.0, &a, "first", PromptStatus::Queued)?;
        w.insert_prompt(&ids.1, &a, "second", PromptStatus::Queued)?;
        let queued = w.prompts_with_status(PromptStatus::Queued)?;
        assert_eq!(
            queued.iter().map(|p| &p.text).collect::<Vec<_>>(),
            ["first", "second"]
        );
        let dup = w.insert_prompt(&ids.0, &a, "again", PromptStatus::Queued);
        assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");
        w.set_prompt_status(&ids.0, PromptStatus::Running)?;
        w.push_message(
            &ids.0,
            &serde_json::json!({"role": "user", "content": "first"}),
        )?;
        w.push_message(
            &ids.0,
            &serde_json::json!({"role": "assistant", "content": "ok"}),
        )?;
        w.set_delivery_mode(DeliveryMode::Insert)?;
        Ok(())
    })
    .await
    .unwrap();
    let prompts = log.prompts().await.unwrap();
    assert_eq!(prompts.len(), 2);
    assert_eq!(
        (prompts[0].id.clone(), prompts[0].status),
        (p1.clone(), PromptStatus::Running)
    );
    assert_eq!(prompts[1].author, author);
    assert_eq!(log.prompt(&p2).await.unwrap().status, PromptStatus::Queued);
    assert!(matches!(
        log.prompt(&PromptId::random()).await,
        Err(Error::NotFound(_))
    ));
    let messages = log.messages().await.unwrap();
    assert_eq!(messages[1]["content"], "ok");
    assert_eq!(log.delivery_mode().await.unwrap(), DeliveryMode::Insert);
    // A message must belong to a prompt of this session.
    let orphan = log
        .write(|w| w.push_message(&PromptId::random(), &serde_json::json!({})))
        .await;
    assert!(orphan.is_err());
    assert_eq!(log.messages().await.unwrap().len(), 2);
}

/// The conversation as SQLite has it, through a connection of its own.
fn messages_on_disk(dir: &std::path::Path, id: &kiln_core::SessionId) -> Vec<serde_json::Value> {
    let path = dir.join("sessions").join(id.as_str()).join("session.db");
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT message FROM messages ORDER BY pos")
        .unwrap();
    stmt.query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .map(|text| serde_json::from_str(&text.unwrap()).unwrap())
        .collect()
}

#[tokio::test]
async fn the_conversation_in_memory_follows_every_kind_of_write() {
    use serde_json::json;
    let (dir, store, user, log) = session().await;
    let id = log.id().clone();
    let author = UserRef {
        id: user,
        name: "ada".into(),
    };
    let prompt = PromptId::random();
    let (a, p) = (author.clone(), prompt.clone());
    // Pushed before the first read: the first read takes it from SQLite.
    log.write(move |w| {
        w.insert_prompt(&p, &a, "first", PromptStatus::Running)?;
        w.push_message(&p, &json!({"n": 1}))
    })
    .await
    .unwrap();
    let check = async |what: &str| {
        let in_memory = log.messages().await.unwrap();
        assert_eq!(
            *in_memory,
            messages_on_disk(dir.path(), &id),
            "after {what}"
        );
        in_memory.len()
    };
    assert_eq!(check("a push before any read").await, 1);
    for n in 2..=4 {
        let p = prompt.clone();
        log.write(move |w| w.push_message(&p, &json!({"n": n})))
            .await
            .unwrap();
    }
    assert_eq!(check("pushes").await, 4);
    log.write(|w| w.replace_last_message(&json!({"n": 4, "more": true})))
        .await
        .unwrap();
    assert_eq!(check("a replacement").await, 4);
    // A write that fails rolls back, in memory too.
    let p = prompt.clone();
    let failed = log
        .write(move |w| {
            w.push_message(&p, &json!({"n": "rolled back"}))?;
            Err::<(), _>(Error::Conflict("on purpose".into()))
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(check("a rolled back push").await, 4);
    let (p, kept) = (prompt.clone(), vec![json!({"n": 3}), json!({"n": 4})]);
    log.write(move |w| w.compact_messages(&p, 2, &json!({"summary": true}), &kept))
        .await
        .unwrap();
    assert_eq!(check("a compaction").await, 3);
    let other = PromptId::random();
    let (a, o) = (author.clone(), other.clone());
    log.write(move |w| {
        w.insert_prompt(&o, &a, "second", PromptStatus::Running)?;
        w.push_message(&o, &json!({"n": "unanswered"}))
    })
    .await
    .unwrap();
    assert_eq!(check("a push of another prompt").await, 4);
    let o = other.clone();
    assert!(log.write(move |w| w.forget_unanswered(&o)).await.unwrap().0);
    assert_eq!(check("forgetting an unanswered request").await, 3);
    drop(store);
}

#[tokio::test]
async fn open_session_shares_one_handle_and_closing_ends_subscriptions() {
    let (_dir, store, _, log) = session().await;
    let id = log.id().clone();
    let again = store.open_session(&id).await.unwrap();
    let mut sub = again.subscribe(0);
    log.append(numbered(1)).await.unwrap();
    // Same channel: an append through one handle reaches a subscriber of the other at once.
    assert_eq!(sub.next().await.unwrap().unwrap().envelope.seq, 1);
    assert_eq!(again.head_seq().await, 1);
    drop((log, again));
    assert!(
        sub.next().await.unwrap().is_none(),
        "closed log ends the subscription"
    );
    // Reopened later by many tasks at once, it is still one log: appends through all the
    // handles get distinct, gapless seqs (two connections would race for the same seq).
    let mut tasks = Vec::new();
    for n in 0..8 {
        let (store, id) = (store.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let log = store.open_session(&id).await.unwrap();
            log.append(numbered(n)).await.unwrap().envelope.seq
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=9).collect::<Vec<_>>());
}

#[derive(Debug, Clone)]
enum Op {
    /// One write of this many events (0 is a write with no event).
    Append(u8),
    /// A write that fails after pushing this many events.
    FailedAppend(u8),
    /// `read_after(n)` for n = head minus this (saturating), and past the head.
    Read(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..20).prop_map(Op::Append),
        1 => (1u8..5).prop_map(Op::FailedAppend),
        3 => any::<u8>().prop_map(Op::Read),
        1 => Just(Op::Reopen),
    ]
}

/// `read_after(n, big)` returns exactly seqs n+1..=head, whatever the history of appends,
/// failed writes and reopens was.
async fn check_reads(ops: Vec<Op>) {
    let (dir, mut store, _, mut log) = session().await;
    let id = log.id().clone();
    let mut head = 0u64;
    for op in ops {
        match op {
            Op::Append(k) => {
                let ((), events) = log
                    .write(move |w| (0..k).try_for_each(|_| w.event(numbered(0)).map(drop)))
                    .await
                    .unwrap();
                assert_eq!(events.len(), usize::from(k));
                head += u64::from(k);
            }
            Op::FailedAppend(k) => {
                let result: Result<((), _), _> = log
                    .write(move |w| {
                        (0..k).try_for_each(|_| w.event(numbered(0)).map(drop))?;
                        Err(Error::Invalid("no".into()))
                    })
                    .await;
                assert!(result.is_err());
            }
            Op::Read(back) => {
                for n in [head.saturating_sub(u64::from(back)), head + u64::from(back)] {
                    let seqs: Vec<u64> = log
                        .read_after(n, 100_000)
                        .await
                        .unwrap()
                        .iter()
                        .map(|e| e.seq)
                        .collect();
                    assert_eq!(seqs, (n + 1..=head).collect::<Vec<_>>(), "after {n}");
                }
            }
            Op::Reopen => {
                drop((log, store));
                store = Store::open(dir.path()).await.unwrap();
                log = store.open_session(&id).await.unwrap();
            }
        }
        assert_eq!(log.head_seq().await, head);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn read_after_returns_exactly_the_tail(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(check_reads(ops));
    }
}
