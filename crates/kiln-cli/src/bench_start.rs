//! `kiln bench start`: how fast a session starts — prompt accepted to the first model request —
//! from the warm pool, from the image without a pool, and from a 50 MB session snapshot, against
//! the naive way (a fresh clone plus the repo's setup), all measured in one run on a repo whose
//! setup does real work offline (python3 generates sources and a SQLite database).

use crate::DataDirArg;
use crate::bench::{Stats, round2};
use crate::bench_session::{Bench, start};
use anyhow::{Context, bail};
use kiln_protocol::api::{Event, SandboxState};
use kiln_testkit::{Script, Turn};
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct StartBenchArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Sessions started from the warm pool (and half as many from the image alone).
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Restores from a 50 MB snapshot.
    #[arg(long, default_value_t = 5)]
    restores: usize,
    /// Naive starts: fresh clone and setup.
    #[arg(long, default_value_t = 3)]
    naive: usize,
}

#[derive(Debug, Serialize)]
struct StartReport {
    pool_hit_p50_ms: f64,
    pool_hit_p99_ms: f64,
    pool_miss_p50_ms: f64,
    pool_miss_p99_ms: f64,
    restore_p50_ms: f64,
    write_ready_p50_ms: f64,
    write_ready_typed_p50_ms: f64,
    naive_p50_ms: f64,
    speedup: f64,
    runs: usize,
}

/// Real setup work, offline: sources generated and a SQLite database filled.
const ENVIRONMENT: &str = r#"
manifests = ["requirements.lock"]
[[setup]]
run = "python3 -c \"import sqlite3; c = sqlite3.connect('/home/kiln/app.db'); c.execute('create table t (id integer primary key, v text)'); c.executemany('insert into t (v) values (?)', [(str(i) * 8,) for i in range(200000)]); c.commit()\""
[[build]]
run = "python3 -c \"import os; os.makedirs('gen', exist_ok=True); [open(f'gen/m{i}.py', 'w').write(f'X = {i}\\n' * 50) for i in range(2000)]\" && python3 -m compileall -q gen"
"#;

pub(crate) async fn run(args: StartBenchArgs) -> anyhow::Result<()> {
    let data_dir = args.data.data_dir.clone();
    crate::bench::report_in_scratch(&data_dir, "bench-start", async |root| {
        measure(&args, root).await
    })
    .await
}

async fn measure(args: &StartBenchArgs, root: &Path) -> anyhow::Result<StartReport> {
    let files = [
        (".kiln/environment.toml", ENVIRONMENT),
        ("requirements.lock", "sqlite\n"),
        ("app.py", "print('hello')\n"),
    ];
    let repo = kiln_testkit::bare_repo(root, "bench", &files);

    // Warm pool on: pool hits, the naive way, and restores.
    let bench = start(root.join("pool"), &repo, 2).await?;
    let outcome = async {
        let naive = naive_starts(&bench, &repo, args.naive).await?;
        eprintln!("naive (fresh clone + setup): p50 {} ms", naive.p50);
        let image = bench.engine.build_image("bench").await?;
        anyhow::ensure!(image.is_ready(), "the image build failed: {}", image.log);
        let hits = starts(&bench, args.runs, true).await?;
        eprintln!("pool hit: p50 {} ms, p99 {} ms", hits.p50, hits.p99);
        let restore = restores(&bench, args.restores).await?;
        eprintln!("restore from a 50 MB snapshot: p50 {} ms", restore.p50);
        let behind = write_ready(&bench, &repo, args.restores, false).await?;
        eprintln!("writes allowed, branch moved: p50 {} ms", behind.p50);
        let typed = write_ready(&bench, &repo, args.restores, true).await?;
        eprintln!(
            "writes allowed, branch moved, after warm-up while typing: p50 {} ms",
            typed.p50
        );
        anyhow::Ok((naive, hits, restore, behind, typed))
    }
    .await;
    bench.stop().await;
    let (naive, hits, restore, behind, typed) = outcome?;

    // Warm pool off: every session starts from the image.
    let bench = start(root.join("nopool"), &repo, 0).await?;
    let outcome = async {
        let image = bench.engine.build_image("bench").await?;
        anyhow::ensure!(image.is_ready(), "the image build failed: {}", image.log);
        starts(&bench, (args.runs / 2).max(1), false).await
    }
    .await;
    bench.stop().await;
    let misses = outcome?;
    eprintln!("pool miss: p50 {} ms, p99 {} ms", misses.p50, misses.p99);

    Ok(StartReport {
        pool_hit_p50_ms: hits.p50,
        pool_hit_p99_ms: hits.p99,
        pool_miss_p50_ms: misses.p50,
        pool_miss_p99_ms: misses.p99,
        restore_p50_ms: restore.p50,
        write_ready_p50_ms: behind.p50,
        write_ready_typed_p50_ms: typed.p50,
        naive_p50_ms: naive.p50,
        speedup: round2(naive.p50 / hits.p50.max(0.01)),
        runs: args.runs,
    })
}

/// Session created → its first model request arrives at the model server.
async fn starts(bench: &Bench, runs: usize, pooled: bool) -> anyhow::Result<Stats> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        if pooled {
            wait_until(
                || bench.engine.pool_ready("bench") == 2,
                "the pool to refill",
            )
            .await?;
        }
        let before = bench.model.request_count();
        let started = Instant::now();
        bench.new_session(&format!("start {i}")).await?;
        samples.push(bench.model_request_after(before, started).await);
    }
    Ok(Stats::of(samples))
}

/// The naive start: a repo without an image, so a fresh clone and the whole setup; measured
/// as its first image build (clone, setup, build; plus a snapshot).
async fn naive_starts(bench: &Bench, repo: &Path, runs: usize) -> anyhow::Result<Stats> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let name = format!("naive{i}");
        let (status, body) = bench
            .post(
                "/api/repos",
                json!({"name": name, "url": repo.to_string_lossy()}),
            )
            .await?;
        if status != 201 {
            bail!("adding a repo failed: {body}");
        }
        let started = Instant::now();
        let image = bench.engine.build_image(&name).await?;
        anyhow::ensure!(image.is_ready(), "the naive build failed: {}", image.log);
        samples.push(started.elapsed());
    }
    Ok(Stats::of(samples))
}

/// A session writes 50 MB, its sandbox goes away, a follow-up restores the snapshot.
async fn restores(bench: &Bench, runs: usize) -> anyhow::Result<Stats> {
    bench.model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": "head -c 50000000 /dev/urandom > big.bin"}),
    )));
    bench.model.push(Script::Turn(Turn::text("written")));
    let session = bench.new_session("write 50 MB").await?;
    let log = bench.engine.store().open_session(&session).await?;
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        // Wait for the snapshot taken after the last prompt (prompt i + 1).
        let want = i + 1;
        wait_until_async(
            || async { snapshotted_prompts(&log).await == want },
            "the prompt and its snapshot",
        )
        .await?;
        let sandbox = sandbox_of(&log).await?;
        bench.provider_destroy(&sandbox).await?;
        let before = bench.model.request_count();
        let started = Instant::now();
        bench.prompt(&session, &format!("follow-up {i}")).await?;
        samples.push(bench.model_request_after(before, started).await);
    }
    Ok(Stats::of(samples))
}

/// Session created → its sandbox synced (writes allowed), from the warm pool, with the branch a
/// commit ahead of the image each time. `typed`: the client said the user was typing a second
/// before (`POST /api/repos/bench/warm`), so the held sandbox synced meanwhile.
async fn write_ready(
    bench: &Bench,
    repo: &Path,
    runs: usize,
    typed: bool,
) -> anyhow::Result<Stats> {
    // `bare_repo` made the bare repo from this working copy, beside it.
    let work = repo.with_file_name("bench-work");
    let work = work.as_path();
    let bare = repo.to_string_lossy();
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let file = format!("moved-{typed}-{i}.txt");
        std::fs::write(work.join(&file), format!("{i}\n"))?;
        kiln_testkit::git(work, &["add", &file]);
        kiln_testkit::git(work, &["commit", "-qm", &file]);
        kiln_testkit::git(work, &["push", "-q", &bare, "HEAD:main"]);
        wait_until(
            || bench.engine.pool_ready("bench") == 2,
            "the pool to refill",
        )
        .await?;
        if typed {
            let (status, body) = bench.post("/api/repos/bench/warm", json!({})).await?;
            anyhow::ensure!(
                status == 200 && body["reserved"] == true,
                "no warm-up: {body}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let started = Instant::now();
        let session = bench.new_session(&format!("write {typed} {i}")).await?;
        // Polled every millisecond: the sync takes tens of them.
        while bench.engine.sandbox_state(&session) != Some(SandboxState::Ready) {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "timed out waiting for the sync"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(started.elapsed());
    }
    Ok(Stats::of(samples))
}

/// How many prompts have finished, when the newest snapshot is of the last one (else 0).
async fn snapshotted_prompts(log: &kiln_store::SessionLog) -> usize {
    let Ok(events) = log.read_after(0, 100_000).await else {
        return 0;
    };
    let finished: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::PromptFinished { prompt_id, .. } => Some(prompt_id.clone()),
            _ => None,
        })
        .collect();
    let snapshot = log.latest_snapshot().await.ok().flatten();
    match (finished.last(), snapshot.and_then(|s| s.prompt_id)) {
        (Some(last), Some(snapped)) if *last == snapped => finished.len(),
        _ => 0,
    }
}

/// The id of the sandbox the session's last status named.
async fn sandbox_of(log: &kiln_store::SessionLog) -> anyhow::Result<String> {
    let events = log.read_after(0, 100_000).await?;
    events
        .iter()
        .rev()
        .find_map(|e| match &e.event {
            Event::SandboxStatus {
                sandbox_id: Some(id),
                ..
            } => Some(id.clone()),
            _ => None,
        })
        .context("the session has no sandbox")
}

async fn wait_until(done: impl Fn() -> bool, what: &str) -> anyhow::Result<()> {
    wait_until_async(|| std::future::ready(done()), what).await
}

async fn wait_until_async<F: Future<Output = bool>>(
    done: impl Fn() -> F,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done().await {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
