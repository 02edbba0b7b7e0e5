//! Stats over a fixture of sessions with known outcomes, written through the real store, match
//! numbers worked out by hand; the index follows appended events.

use kiln_core::{PromptId, SessionId};
use kiln_protocol::api::{Event, FileChangeKind, PromptOutcome, SandboxState, Usage, UserRef};
use kiln_stats::{Range, StatsIndex, StatsQuery, StatsReport, report};
use kiln_store::{SessionLog, Store};
use time::{Date, Month};

const HOUR: i64 = 3_600_000;

fn day_ms(day: u8) -> i64 {
    Date::from_calendar_date(2026, Month::January, day)
        .unwrap()
        .midnight()
        .assume_utc()
        .unix_timestamp()
        * 1000
}

struct Fixture {
    store: Store,
    ids: Vec<SessionId>,
    bob: UserRef,
    _dir: tempfile::TempDir,
}

async fn write(log: &SessionLog, events: Vec<(i64, Event)>) {
    log.write(move |w| {
        for (at, event) in events {
            w.event_at(event, at)?;
        }
        Ok(())
    })
    .await
    .unwrap();
}

fn created(repo: &str, by: &UserRef) -> Event {
    Event::SessionCreated {
        repo: repo.into(),
        title: "t".into(),
        by: by.clone(),
    }
}

fn sandbox(state: SandboxState, detail: &str) -> Event {
    Event::SandboxStatus {
        state,
        sandbox_id: None,
        detail: Some(detail.into()),
    }
}

/// A prompt by `author` at `at`: started at once, first request after `request`, first text
/// `text` ms after that; then its usage.
fn prompt(
    author: &UserRef,
    at: i64,
    request: i64,
    text: i64,
    usage: (u64, u64, f64),
) -> Vec<(i64, Event)> {
    let p = PromptId::random();
    vec![
        (
            at,
            Event::PromptQueued {
                prompt_id: p.clone(),
                author: author.clone(),
                text: "go".into(),
                delivery: kiln_protocol::api::DeliveryMode::Queue,
                plan: false,
            },
        ),
        (
            at,
            Event::PromptStarted {
                prompt_id: p.clone(),
                author: author.clone(),
            },
        ),
        (
            at + request,
            Event::ModelRequest {
                prompt_id: p.clone(),
                turn: 1,
                model: "m".into(),
            },
        ),
        (
            at + request + text,
            Event::TextDelta {
                prompt_id: p.clone(),
                text: "ok".into(),
            },
        ),
        (
            at + request + text + 1,
            Event::ModelUsage {
                prompt_id: p.clone(),
                turn: 1,
                model: "m".into(),
                input_tokens: usage.0,
                output_tokens: usage.1,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                cost_usd: Some(usage.2),
            },
        ),
        (
            at + request + text + 2,
            Event::PromptFinished {
                prompt_id: p,
                outcome: PromptOutcome::Completed,
                usage: Usage::default(),
            },
        ),
    ]
}

fn lines(author: &UserRef, added: u32) -> Event {
    Event::FileChanged {
        prompt_id: PromptId::random(),
        author: author.clone(),
        path: "src/x.rs".into(),
        kind: FileChangeKind::Modified,
        added,
        removed: 1,
    }
}

fn pr_opened(number: u64, by: &UserRef) -> Event {
    Event::PullRequest {
        forge: "github".into(),
        number,
        url: format!("https://forge.test/pr/{number}"),
        state: "open".into(),
        draft: false,
        created: true,
        by: by.clone(),
    }
}

fn pr_changed(number: u64, merged_at_ms: Option<i64>) -> Event {
    Event::PullRequestChanged {
        forge: "github".into(),
        number,
        url: format!("https://forge.test/pr/{number}"),
        action: if merged_at_ms.is_some() {
            "merged"
        } else {
            "closed"
        }
        .into(),
        state: "closed".into(),
        merged: merged_at_ms.is_some(),
        merged_at_ms,
        head_sha: "abc".into(),
        actor: "someone".into(),
    }
}

fn reviewed(number: u64, verdict: &str) -> Event {
    Event::PullRequestReviewed {
        forge: "github".into(),
        number,
        verdict: verdict.into(),
        reviewer: "carol".into(),
    }
}

fn revised(number: u64, revision: u32) -> Event {
    Event::PullRequestRevised {
        forge: "github".into(),
        number,
        revision,
        head_sha: "def".into(),
    }
}

/// The time of session C's last prompt (ada's): "now" for humans prompting.
fn ada_prompted_at() -> i64 {
    day_ms(11) + 5 * HOUR
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let ada_user = store.create_user("ada", false).await.unwrap();
    let bob_user = store.create_user("bob", false).await.unwrap();
    let ada = UserRef {
        id: ada_user.id.clone(),
        name: "ada".into(),
    };
    let bob = UserRef {
        id: bob_user.id.clone(),
        name: "bob".into(),
    };
    for name in ["web", "api"] {
        let repo = serde_json::from_value(serde_json::json!({
            "name": name,
            "url": format!("https://forge.test/acme/{name}.git"),
        }))
        .unwrap();
        store.create_repo(&repo).await.unwrap();
    }
    let mut ids = Vec::new();
    let mut session = async |repo: &str, by: &UserRef, events: Vec<(i64, Event)>| {
        let id = SessionId::random();
        let log = store.create_session(&id, repo, "t", &by.id).await.unwrap();
        write(&log, events).await;
        ids.push(id);
    };

    // A: ada, web, Jan 10. Pool start, TTFT 500, merged after 1 h with an approval and
    // two revisions; 30 lines; $0.50.
    let t = day_ms(10) + HOUR;
    let mut a = vec![
        (t, created("web", &ada)),
        (
            t + 100,
            sandbox(SandboxState::Ready, "claimed from the warm pool"),
        ),
    ];
    a.extend(prompt(&ada, t + 1_000, 200, 300, (1_000, 200, 0.5)));
    a.extend([
        (t + 2_000, lines(&ada, 30)),
        (t + 10_000, pr_opened(1, &ada)),
        (t + 20_000, reviewed(1, "approved")),
        (t + 30_000, revised(1, 1)),
        (t + 40_000, revised(1, 2)),
        (
            t + 10_000 + 2 * HOUR,
            pr_changed(1, Some(t + 10_000 + HOUR)),
        ),
    ]);
    session("web", &ada, a).await;

    // B: ada, web, Jan 10. Image start (200 + sync 300), TTFT 900, PR closed unmerged;
    // its 10 lines do not count; $1.50.
    let t = day_ms(10) + 2 * HOUR;
    let mut b = vec![
        (t, created("web", &ada)),
        (
            t + 200,
            sandbox(SandboxState::Syncing, "from the repo's image"),
        ),
        (t + 500, sandbox(SandboxState::Ready, "synced")),
    ];
    b.extend(prompt(&ada, t + 1_000, 100, 800, (3_000, 500, 1.5)));
    b.extend([
        (t + 3_000, lines(&ada, 10)),
        (t + 5_000, pr_opened(2, &ada)),
        (t + 6_000, pr_changed(2, None)),
    ]);
    session("web", &ada, b).await;

    // C: bob, api, Jan 11. Pool start, TTFT 200, changes requested, one revision, then
    // approved and merged after 2 h; 50 lines; $1.00. Ada prompts in it later (no text yet).
    let t = day_ms(11) + HOUR;
    let mut c = vec![
        (t, created("api", &bob)),
        (
            t + 50,
            sandbox(SandboxState::Ready, "claimed from the warm pool"),
        ),
    ];
    c.extend(prompt(&bob, t + 100, 50, 200, (2_000, 300, 1.0)));
    c.extend([
        (t + 500, lines(&bob, 50)),
        (t + 1_000, pr_opened(7, &bob)),
        (t + 2_000, reviewed(7, "changes_requested")),
        (t + 3_000, revised(7, 1)),
        (t + 4_000, reviewed(7, "approved")),
        (t + 5_000, pr_changed(7, Some(t + 1_000 + 2 * HOUR))),
    ]);
    let p = PromptId::random();
    c.push((
        ada_prompted_at(),
        Event::PromptQueued {
            prompt_id: p,
            author: ada.clone(),
            text: "more".into(),
            delivery: kiln_protocol::api::DeliveryMode::Queue,
            plan: false,
        },
    ));
    session("api", &bob, c).await;

    // D: bob, api, Jan 11: created, nothing else.
    session(
        "api",
        &bob,
        vec![(day_ms(11) + 3 * HOUR, created("api", &bob))],
    )
    .await;

    // E: ada, Jan 9: outside the range.
    let t = day_ms(9);
    let mut e = vec![(t, created("web", &ada))];
    e.extend(prompt(&ada, t + 10, 10, 10, (5, 5, 9.0)));
    session("web", &ada, e).await;

    Fixture {
        store,
        ids,
        bob,
        _dir: dir,
    }
}

fn range() -> Range {
    Range::parse(Some("2026-01-10"), Some("2026-01-11"), None, 0).unwrap()
}

async fn stats(f: &Fixture, index: &StatsIndex, query: &StatsQuery) -> StatsReport {
    let summaries = index.summaries(&f.store, &f.ids).await.unwrap();
    report(
        summaries.iter().map(|s| &**s),
        range(),
        query,
        ada_prompted_at() + 60_000,
    )
}

#[tokio::test]
async fn stats_match_hand_computed_numbers() {
    let f = fixture().await;
    let index = StatsIndex::new();
    let r = stats(&f, &index, &StatsQuery::default()).await;
    let t = &r.totals;
    assert_eq!(
        (r.from.as_str(), r.to.as_str()),
        ("2026-01-10", "2026-01-11")
    );
    assert_eq!(t.sessions_started, 4, "E is outside the range");
    assert_eq!(t.sessions_merged, 2);
    assert_eq!(t.merge_rate, Some(0.5));
    assert_eq!((t.prs_opened, t.prs_merged, t.prs_closed), (3, 2, 1));
    assert_eq!(t.approval_rate, Some(2.0 / 3.0));
    assert_eq!(t.revisions_per_pr, Some(1.0));
    assert_eq!(t.time_to_merge_ms.n, 2);
    assert_eq!(t.time_to_merge_ms.p50, Some(HOUR as u64));
    assert_eq!(t.time_to_merge_ms.p95, Some(2 * HOUR as u64));
    assert_eq!(t.time_to_first_token_ms.n, 3);
    assert_eq!(t.time_to_first_token_ms.p50, Some(500));
    assert_eq!(t.time_to_first_token_ms.p95, Some(900));
    assert_eq!(t.start_sandbox_ms.n, 3);
    assert_eq!(t.start_sandbox_ms.p50, Some(100));
    assert_eq!(t.start_sandbox_ms.p95, Some(200));
    assert_eq!(t.start_sync_ms.p50, Some(300));
    assert_eq!(t.start_first_model_request_ms.p50, Some(100));
    assert_eq!(t.start_model_ttft_ms.p50, Some(300));
    assert_eq!(t.pool_hit_rate, Some(2.0 / 3.0));
    assert_eq!(t.agent_lines_merged, 80);
    assert_eq!((t.input_tokens, t.output_tokens), (6_000, 1_000));
    assert_eq!(t.cost_usd, 3.0);
    assert_eq!(t.cost_per_merged_pr_usd, Some(1.5));
    assert_eq!(
        r.humans_prompting, 1,
        "ada prompted a minute ago; bob a day before"
    );

    let days: Vec<_> = r
        .by_day
        .iter()
        .map(|d| {
            (
                d.key.as_str(),
                d.sessions_started,
                d.sessions_merged,
                d.cost_usd,
            )
        })
        .collect();
    assert_eq!(days, [("2026-01-10", 2, 1, 2.0), ("2026-01-11", 2, 1, 1.0)]);
    let users: Vec<_> = r
        .by_user
        .iter()
        .map(|u| (u.key.as_str(), u.sessions_started, u.cost_per_merged_pr_usd))
        .collect();
    assert_eq!(users, [("ada", 2, Some(2.0)), ("bob", 2, Some(1.0))]);
    let web = r.by_repo.iter().find(|x| x.key == "web").unwrap();
    assert_eq!((web.prs_opened, web.prs_merged, web.prs_closed), (2, 1, 1));

    let api = stats(
        &f,
        &index,
        &StatsQuery {
            repo: Some("api".into()),
            user: None,
        },
    )
    .await;
    assert_eq!(api.totals.sessions_started, 2);
    assert_eq!(api.totals.merge_rate, Some(0.5));
    assert_eq!(api.totals.time_to_merge_ms.p50, Some(2 * HOUR as u64));
    let by_bob = stats(
        &f,
        &index,
        &StatsQuery {
            repo: None,
            user: Some(f.bob.name.clone()),
        },
    )
    .await;
    assert_eq!(by_bob.by_user.len(), 1);
    assert_eq!(by_bob.totals.agent_lines_merged, 50);
}

#[tokio::test]
async fn appended_events_move_the_stats() {
    let f = fixture().await;
    let index = StatsIndex::new();
    assert_eq!(
        stats(&f, &index, &StatsQuery::default())
            .await
            .totals
            .sessions_merged,
        2
    );
    // D's PR is opened and merged after the first report was folded.
    let d = f.store.open_session(&f.ids[3]).await.unwrap();
    let t = day_ms(11) + 4 * HOUR;
    write(
        &d,
        vec![
            (t, pr_opened(9, &f.bob)),
            (t + HOUR, pr_changed(9, Some(t + HOUR))),
        ],
    )
    .await;
    let r = stats(&f, &index, &StatsQuery::default()).await;
    assert_eq!(r.totals.sessions_merged, 3);
    assert_eq!(r.totals.prs_merged, 3);
    assert_eq!(r.totals.time_to_merge_ms.n, 3);
    // A fresh index (a restart) reads the same from the logs.
    let fresh = stats(&f, &StatsIndex::new(), &StatsQuery::default()).await;
    assert_eq!(fresh, r);
}

#[test]
fn ranges_are_checked() {
    assert!(Range::parse(Some("2026-02-30"), None, None, 0).is_err());
    assert!(Range::parse(Some("2026-01-11"), Some("2026-01-10"), None, 0).is_err());
    assert!(Range::parse(Some("2024-01-01"), Some("2026-01-10"), None, 0).is_err());
    let r = Range::parse(None, Some("2026-01-31"), Some(7), 0).unwrap();
    assert_eq!(r.from.to_string(), "2026-01-25");
    assert!(Range::parse(None, None, Some(0), 0).is_err());
    let r = Range::parse(None, None, None, day_ms(31)).unwrap();
    assert_eq!(
        (r.from.to_string(), r.to.to_string()),
        ("2026-01-02".into(), "2026-01-31".into())
    );
}
