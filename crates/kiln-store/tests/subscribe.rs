//! Subscriptions under pressure: replay-then-live while a writer appends concurrently, and
//! subscribers that fall far behind the broadcast channel. Each must see exactly the contiguous
//! range of seqs after its starting point: no gap, no repeat.

mod common;

use common::{number_of, numbered, session};
use kiln_store::{SessionLog, Subscription};

const TOTAL: u64 = 5_000;
/// The store's broadcast capacity; the tests overflow it on purpose.
const CAPACITY: u64 = 1024;

/// Collects events until seq `last`, checking each is the next one (so a gap fails at once
/// instead of waiting forever) and carries its number. With `stall`, it stops reading at that
/// seq until the log's head is far enough ahead that the broadcast channel has overflowed.
async fn collect_until(
    sub: &mut Subscription,
    from: u64,
    last: u64,
    stall: Option<(u64, &SessionLog)>,
) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.last().copied().unwrap_or(from) < last {
        let event = sub.next().await.unwrap().expect("the log is open");
        let seq = event.envelope.seq;
        assert_eq!(
            seq,
            seqs.last().copied().unwrap_or(from) + 1,
            "after {from}"
        );
        assert_eq!(number_of(&event.envelope.event), seq);
        seqs.push(seq);
        if let Some((at, log)) = stall.filter(|(at, _)| *at == seq) {
            wait_for_head(log, (at + 2 * CAPACITY + 1).min(last)).await;
        }
    }
    seqs
}

/// `collect_until` on its own task, from a fresh subscription.
fn spawn_collect(
    log: &SessionLog,
    from: u64,
    stall_at: Option<u64>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    let (log, mut sub) = (log.clone(), log.subscribe(from));
    tokio::spawn(async move {
        collect_until(&mut sub, from, TOTAL, stall_at.map(|at| (at, &log))).await
    })
}

async fn wait_for_head(log: &SessionLog, at_least: u64) {
    while log.head_seq().await < at_least {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_with_a_concurrent_writer() {
    let (_dir, _store, _, log) = session().await;
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut n = 1;
            while n <= TOTAL {
                // Mostly single appends, sometimes a batch, so live events arrive both one by
                // one and in bursts.
                let batch = if n % 97 == 0 {
                    40.min(TOTAL - n + 1)
                } else {
                    1
                };
                let first = n;
                log.write(move |w| {
                    (first..first + batch).try_for_each(|k| w.event(numbered(k)).map(drop))
                })
                .await
                .unwrap();
                n += batch;
            }
        })
    };
    // One from the start, subscribed while the writer runs; one that joins mid-stream with a
    // backlog to replay; one that starts beyond the head and waits for the future; and one that
    // stops reading for a while, so it lags live and catches up while the writer goes on.
    let from_start = spawn_collect(&log, 0, None);
    let laggard = spawn_collect(&log, 0, Some(600));
    wait_for_head(&log, 1_500).await;
    let mid = spawn_collect(&log, 700, None);
    let future = spawn_collect(&log, 4_000, None);
    writer.await.unwrap();
    for (from, task) in [(0, from_start), (0, laggard), (700, mid), (4_000, future)] {
        let seqs = task.await.unwrap();
        assert_eq!(
            seqs,
            (from + 1..=TOTAL).collect::<Vec<_>>(),
            "subscriber after {from}"
        );
    }
    assert_eq!(log.head_seq().await, TOTAL);
}

#[tokio::test]
async fn a_lagging_subscriber_gets_every_event_exactly_once() {
    let (_dir, _store, _, log) = session().await;
    let mut sub = log.subscribe(0);
    let capacity = CAPACITY;
    // Far more than the channel holds, written while the subscriber is never polled.
    let first_burst = 3 * capacity + 5;
    append_range(&log, 1, first_burst).await;
    let mut seqs = Vec::new();
    for _ in 0..10 {
        seqs.push(sub.next().await.unwrap().unwrap().envelope.seq);
    }
    // Lag again from the middle of a catch-up.
    let second_burst = first_burst + 2 * capacity + 1;
    append_range(&log, first_burst + 1, second_burst).await;
    seqs.extend(collect_until(&mut sub, 10, second_burst, None).await);
    assert_eq!(seqs, (1..=second_burst).collect::<Vec<_>>());
    assert_eq!(sub.last_seq(), second_burst);
    // Caught up, it is live again; the next event is the next seq, nothing repeated before it.
    log.append(numbered(second_burst + 1)).await.unwrap();
    assert_eq!(
        sub.next().await.unwrap().unwrap().envelope.seq,
        second_burst + 1
    );
    assert!(format!("{sub:?}").contains("Subscription"));
}

#[tokio::test]
async fn a_subscriber_of_an_idle_log_sees_its_backlog_then_waits() {
    let (_dir, _store, _, log) = session().await;
    append_range(&log, 1, 300).await;
    let seqs = collect_until(&mut log.subscribe(0), 0, 300, None).await;
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
    let mut sub = log.subscribe(300);
    let pending = tokio::spawn(async move { sub.next().await.unwrap().unwrap().envelope.seq });
    tokio::task::yield_now().await;
    log.append(numbered(301)).await.unwrap();
    assert_eq!(pending.await.unwrap(), 301);
}

/// Appends events numbered `from..=to`, in writes of up to 100.
async fn append_range(log: &SessionLog, from: u64, to: u64) {
    let mut n = from;
    while n <= to {
        let end = (n + 99).min(to);
        log.write(move |w| (n..=end).try_for_each(|k| w.event(numbered(k)).map(drop)))
            .await
            .unwrap();
        n = end + 1;
    }
}
