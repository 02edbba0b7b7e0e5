//! `kiln bench stats`: `GET /api/stats` over a generated fixture of 10,000 sessions, written
//! through the store with realistic event mixes (a warm or image start, one to three prompts of
//! streamed text, tool calls and usage, file changes; most open a pull request, most of those
//! merged after reviews and revisions), spread over 60 days, 5 repos and 20 people. Measured
//! against a real server on port 0: the first request after a start (every log folded), then
//! warm requests (only changed logs read again), then the request after 100 sessions got new
//! events.

use crate::DataDirArg;
use crate::bench::{Stats, round2};
use anyhow::{Context, bail};
use kiln_core::{PromptId, SessionId};
use kiln_protocol::api::{
    DeliveryMode, Event, FileChangeKind, PromptOutcome, SandboxState, ToolOutcome, Usage, UserRef,
};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct StatsBenchArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Sessions in the fixture.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Warm requests timed.
    #[arg(long, default_value_t = 50)]
    queries: usize,
}

#[derive(Debug, Serialize)]
struct StatsReport {
    sessions: usize,
    events: u64,
    /// Writing the fixture through the store (not what users wait for).
    fixture_write_s: f64,
    /// The first `GET /api/stats?days=90` after the server started: every log opened and folded.
    cold_ms: f64,
    warm_p50_ms: f64,
    warm_p99_ms: f64,
    /// The request after 100 sessions each got a merged pull request.
    after_100_changed_ms: f64,
}

const DAY_MS: i64 = 86_400_000;
const REPOS: usize = 5;
const PEOPLE: usize = 20;

pub(crate) async fn run(args: StatsBenchArgs) -> anyhow::Result<()> {
    let data_dir = args.data.data_dir.clone();
    crate::bench::report_in_scratch(&data_dir, "bench-stats", async |root| {
        measure(&args, root).await
    })
    .await
}

async fn measure(args: &StatsBenchArgs, root: &Path) -> anyhow::Result<StatsReport> {
    let repo = kiln_testkit::bare_repo(root, "bench", &[("README.md", "bench\n")]);
    let bench = crate::bench_session::start(root.join("data"), &repo, 0).await?;
    let outcome = async {
        let store = bench.engine.store().clone();
        let written = Instant::now();
        let (ids, events) = write_fixture(&store, args.sessions).await?;
        let fixture_write_s = round2(written.elapsed().as_secs_f64());
        eprintln!(
            "fixture: {} sessions, {events} events in {fixture_write_s} s",
            ids.len()
        );
        // As in life, the logs were not all written in the last two seconds: the index looks
        // again at files that changed that recently, whatever their time says.
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        let query = "/api/stats?days=90";
        let cold = timed_get(&bench, query, ids.len()).await?;
        eprintln!("first request (every log folded): {} ms", ms(cold));
        let mut warm = Vec::with_capacity(args.queries);
        for _ in 0..args.queries {
            warm.push(timed_get(&bench, query, ids.len()).await?);
        }
        let warm = Stats::of(warm);
        eprintln!("warm requests: p50 {} ms, p99 {} ms", warm.p50, warm.p99);
        let now = kiln_core::now_ms();
        for (n, id) in ids.iter().take(100).enumerate() {
            let log = store.open_session(id).await?;
            let number = 100_000 + n as u64;
            log.write(move |w| {
                w.event_at(pr_opened(number), now)?;
                w.event_at(pr_merged(number, now), now)?;
                Ok(())
            })
            .await?;
        }
        // The files changed just now: wait past the index's settling time so the request
        // measured is the ordinary incremental one.
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        let changed = timed_get(&bench, query, ids.len()).await?;
        eprintln!("after 100 sessions changed: {} ms", ms(changed));
        anyhow::Ok(StatsReport {
            sessions: ids.len(),
            events,
            fixture_write_s,
            cold_ms: ms(cold),
            warm_p50_ms: warm.p50,
            warm_p99_ms: warm.p99,
            after_100_changed_ms: ms(changed),
        })
    }
    .await;
    bench.stop().await;
    outcome
}

fn ms(d: Duration) -> f64 {
    round2(d.as_secs_f64() * 1000.0)
}

/// One request, timed; its report must count every session of the fixture.
async fn timed_get(
    bench: &crate::bench_session::Bench,
    query: &str,
    sessions: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (status, body) = bench.get(query).await?;
    let took = started.elapsed();
    if status != 200 {
        bail!("GET {query} answered {status}: {body}");
    }
    let counted = body["totals"]["sessions_started"].as_u64().unwrap_or(0);
    if counted < sessions as u64 {
        bail!("the report counts {counted} sessions, not {sessions}: {body}");
    }
    Ok(took)
}

/// Writes the fixture; returns the sessions and the number of events.
async fn write_fixture(
    store: &kiln_store::Store,
    sessions: usize,
) -> anyhow::Result<(Vec<SessionId>, u64)> {
    let mut people = Vec::new();
    for i in 0..PEOPLE {
        let user = store.create_user(&format!("person{i}"), false).await?;
        people.push(UserRef {
            id: user.id,
            name: format!("person{i}"),
        });
    }
    for r in 0..REPOS {
        let repo = serde_json::from_value(serde_json::json!({
            "name": format!("repo{r}"),
            "url": format!("https://forge.test/acme/repo{r}.git"),
        }))?;
        store.create_repo(&repo).await?;
    }
    let now = kiln_core::now_ms();
    let mut ids = Vec::with_capacity(sessions);
    let mut events = 0;
    for n in 0..sessions {
        let by = &people[n % PEOPLE];
        let repo = format!("repo{}", n % REPOS);
        let at = now - 60 * DAY_MS + (n as i64 * 60 * DAY_MS) / sessions as i64;
        let id = SessionId::random();
        let log = store
            .create_session(&id, &repo, "bench", &by.id)
            .await
            .with_context(|| format!("creating fixture session {n}"))?;
        let batch = session_events(n, &repo, by, at);
        events += batch.len() as u64;
        log.write(move |w| {
            for (at, event) in batch {
                w.event_at(event, at)?;
            }
            Ok(())
        })
        .await?;
        ids.push(id);
    }
    Ok((ids, events))
}

/// One session's events, varied by `n`.
fn session_events(n: usize, repo: &str, by: &UserRef, start: i64) -> Vec<(i64, Event)> {
    let mut out = vec![(
        start,
        Event::SessionCreated {
            repo: repo.to_string(),
            title: format!("task {n}"),
            by: by.clone(),
        },
    )];
    let detail = if n.is_multiple_of(5) {
        "started from image"
    } else {
        "claimed from the warm pool"
    };
    out.push((
        start + 15,
        Event::SandboxStatus {
            state: SandboxState::Ready,
            sandbox_id: None,
            detail: Some(detail.into()),
        },
    ));
    let mut t = start + 20;
    for _ in 0..1 + n % 3 {
        let p = PromptId::random();
        out.push((
            t,
            Event::PromptQueued {
                prompt_id: p.clone(),
                author: by.clone(),
                text: "fix the flaky test".into(),
                delivery: DeliveryMode::Queue,
                plan: false,
            },
        ));
        out.push((
            t + 1,
            Event::PromptStarted {
                prompt_id: p.clone(),
                author: by.clone(),
            },
        ));
        for turn in 1..=3 {
            t += 500;
            out.push((
                t,
                Event::ModelRequest {
                    prompt_id: p.clone(),
                    turn,
                    model: "claude".into(),
                },
            ));
            for _ in 0..8 {
                t += 30;
                out.push((
                    t,
                    Event::TextDelta {
                        prompt_id: p.clone(),
                        text: "some words ".into(),
                    },
                ));
            }
            let call = format!("call-{turn}");
            out.push((
                t,
                Event::ToolCallStarted {
                    prompt_id: p.clone(),
                    call_id: call.clone(),
                    tool: "bash".into(),
                    input: serde_json::json!({"command": "cargo test"}),
                },
            ));
            t += 2_000;
            out.push((
                t,
                Event::ToolCallFinished {
                    call_id: call,
                    outcome: ToolOutcome::Ok,
                    output: "test result: ok".into(),
                    duration_ms: 2_000,
                },
            ));
            out.push((
                t,
                Event::ModelUsage {
                    prompt_id: p.clone(),
                    turn,
                    model: "claude".into(),
                    input_tokens: 4_000,
                    output_tokens: 300,
                    cache_read_tokens: 3_000,
                    cache_write_tokens: 0,
                    cost_usd: Some(0.02),
                },
            ));
        }
        out.push((
            t,
            Event::FileChanged {
                prompt_id: p.clone(),
                author: by.clone(),
                path: "src/lib.rs".into(),
                kind: FileChangeKind::Modified,
                added: 12,
                removed: 3,
            },
        ));
        out.push((
            t + 5,
            Event::PromptFinished {
                prompt_id: p,
                outcome: PromptOutcome::Completed,
                usage: Usage::default(),
            },
        ));
        t += 60_000;
    }
    // Six in ten open a pull request; of those, most are reviewed, some revised, most merged.
    if n % 10 < 6 {
        let number = n as u64 + 1;
        out.push((t, pr_opened(number)));
        out.push((
            t + 3_600_000,
            Event::PullRequestReviewed {
                forge: "github".into(),
                number,
                verdict: if n.is_multiple_of(4) {
                    "changes_requested"
                } else {
                    "approved"
                }
                .into(),
                reviewer: "reviewer".into(),
            },
        ));
        if n.is_multiple_of(4) {
            out.push((
                t + 7_200_000,
                Event::PullRequestRevised {
                    forge: "github".into(),
                    number,
                    revision: 1,
                    head_sha: "def".into(),
                },
            ));
        }
        if n % 10 < 5 {
            let merged = t + 10_800_000;
            out.push((merged, pr_merged(number, merged)));
        }
    }
    out
}

fn pr_opened(number: u64) -> Event {
    Event::PullRequest {
        forge: "github".into(),
        number,
        url: format!("https://forge.test/pr/{number}"),
        state: "open".into(),
        draft: false,
        created: true,
        by: UserRef {
            id: kiln_core::UserId::random(),
            name: "bench".into(),
        },
    }
}

fn pr_merged(number: u64, at: i64) -> Event {
    Event::PullRequestChanged {
        forge: "github".into(),
        number,
        url: format!("https://forge.test/pr/{number}"),
        action: "merged".into(),
        state: "closed".into(),
        merged: true,
        merged_at_ms: Some(at),
        head_sha: "abc".into(),
        actor: "reviewer".into(),
    }
}
