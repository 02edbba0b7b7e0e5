//! `kiln bench push`: a finished prompt's branch → pushed to the repo's remote, for a 1-file
//! and a 1,000-file change, against `git push` of the same change from the host. The remote is
//! a bare repo served over smart HTTP by `git http-backend` behind basic auth on 127.0.0.1
//! (kiln-testkit's `GitHttpServer`), so both pushes pay the same protocol and credential check.
//! `kiln bench pr` (bench_pr.rs) uses its parts for the same push to the fake GitHub, then the
//! pull request. Prints readable lines, then one JSON object as the last line.

use crate::DataDirArg;
use crate::bench::{Stats, round2};
use crate::bench_session::Bench;
use anyhow::{Context, bail};
use kiln_core::SessionId;
use kiln_testkit::{GitHttpServer, Script, Turn};
use serde::Serialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct PushBenchArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Pushes timed per change size.
    #[arg(long, default_value_t = 10)]
    runs: usize,
}

#[derive(Debug, Serialize)]
struct PushReport {
    push_p50_ms: f64,
    push_p99_ms: f64,
    push_1000_files_p50_ms: f64,
    push_1000_files_p99_ms: f64,
    git_push_p50_ms: f64,
    git_push_1000_files_p50_ms: f64,
    /// kiln's push of a 1-file change over `git push` of the same change from the host (p50s).
    push_vs_git_ratio: f64,
    push_vs_git_ratio_1000_files: f64,
    runs: usize,
}

const USER: &str = "bench";
const PASSWORD: &str = "bench-push-credential";

pub(crate) async fn run(args: PushBenchArgs) -> anyhow::Result<()> {
    let data_dir = args.data.data_dir.clone();
    crate::bench::report_in_scratch(&data_dir, "bench-push", async |root| {
        measure(&args, root).await
    })
    .await
}

async fn measure(args: &PushBenchArgs, root: &Path) -> anyhow::Result<PushReport> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let served = root.join("served");
    std::fs::create_dir_all(&served)?;
    let bare = kiln_testkit::bare_repo(&served, "app", &[("README.md", "bench\n")]);
    let server = GitHttpServer::start(&served, USER, PASSWORD).await;
    let bench = crate::bench_session::start(root.join("data"), &bare, 0).await?;
    let outcome = async {
        let url = server
            .url("app")
            .replace("http://", &format!("http://{USER}:{PASSWORD}@"));
        let (status, body) = bench
            .post("/api/repos", json!({"name": "remote", "url": url}))
            .await?;
        if status != 201 {
            bail!("adding the served repo failed: {body}");
        }
        let host = host_clone(root, &url);
        let mut report = Vec::new();
        for files in [1usize, 1000] {
            let mut kiln = Vec::new();
            let mut plain = Vec::new();
            for run in 0..args.runs {
                kiln.push(kiln_push(&bench, files, run).await?);
                plain.push(git_push(&host, files, run)?);
            }
            let (kiln, plain) = (Stats::of(kiln), Stats::of(plain));
            eprintln!(
                "{files} file(s): kiln push p50 {} ms, p99 {} ms; git push p50 {} ms ({} runs)",
                kiln.p50, kiln.p99, plain.p50, args.runs
            );
            report.push((kiln, plain));
        }
        let ratio = |(kiln, plain): &(Stats, Stats)| round2(kiln.p50 / plain.p50.max(0.01));
        anyhow::Ok(PushReport {
            push_p50_ms: report[0].0.p50,
            push_p99_ms: report[0].0.p99,
            push_1000_files_p50_ms: report[1].0.p50,
            push_1000_files_p99_ms: report[1].0.p99,
            git_push_p50_ms: report[0].1.p50,
            git_push_1000_files_p50_ms: report[1].1.p50,
            push_vs_git_ratio: ratio(&report[0]),
            push_vs_git_ratio_1000_files: ratio(&report[1]),
            runs: args.runs,
        })
    }
    .await;
    bench.stop().await;
    outcome
}

/// A session whose prompt committed `files` new files; the time from its end to the branch
/// being on the remote (`POST /api/sessions/{id}/push`).
async fn kiln_push(bench: &Bench, files: usize, run: usize) -> anyhow::Result<Duration> {
    let session = session_with_change(bench, "remote", files, run).await?;
    let (took, _) = timed_post(bench, &format!("/api/sessions/{session}/push")).await?;
    bench.archive(&session).await;
    Ok(took)
}

/// A new session on `repo` whose prompt committed `files` new files (`change/f<i>.txt`, their
/// text naming `run`), once that prompt has finished.
pub(crate) async fn session_with_change(
    bench: &Bench,
    repo: &str,
    files: usize,
    run: usize,
) -> anyhow::Result<SessionId> {
    let command = format!(
        "mkdir -p change && for i in $(seq 1 {files}); do echo \"{run} $i\" > change/f$i.txt; done \
         && git add change && git commit -qm 'change {run}'"
    );
    bench.model.push(Script::Turn(Turn::tool(
        "bash",
        json!({ "command": command }),
    )));
    bench.model.push(Script::Turn(Turn::text("done")));
    let (status, body) = bench
        .post("/api/sessions", json!({"repo": repo, "prompt": "change"}))
        .await?;
    if status != 201 {
        bail!("creating a session failed: {body}");
    }
    let session: SessionId = body["session"]["id"]
        .as_str()
        .context("session id")?
        .parse()
        .map_err(anyhow::Error::msg)?;
    bench.wait_finished(&session).await?;
    Ok(session)
}

/// POSTs `{}` to `path`, which must answer 200: how long it took, and the answer.
pub(crate) async fn timed_post(bench: &Bench, path: &str) -> anyhow::Result<(Duration, Value)> {
    let started = Instant::now();
    let (status, body) = bench.post(path, json!({})).await?;
    let took = started.elapsed();
    if status != 200 {
        bail!("POST {path} failed ({status}): {body}");
    }
    Ok((took, body))
}

/// A clone on the host of the repository at `url` (credentials in it), in `root/host-clone`.
pub(crate) fn host_clone(root: &Path, url: &str) -> PathBuf {
    let dir = root.join("host-clone");
    kiln_testkit::git(root, &["clone", "-q", url, &dir.to_string_lossy()]);
    dir
}

/// `git push` from the host of the same change as [`session_with_change`]'s, to a branch of
/// its own; the time of the push alone.
pub(crate) fn git_push(clone: &Path, files: usize, run: usize) -> anyhow::Result<Duration> {
    let branch = format!("host-{files}-{run}");
    kiln_testkit::git(clone, &["checkout", "-q", "-B", &branch, "origin/main"]);
    let dir = clone.join("change");
    std::fs::create_dir_all(&dir)?;
    for i in 1..=files {
        std::fs::write(dir.join(format!("f{i}.txt")), format!("{run} {i}\n"))?;
    }
    kiln_testkit::git(clone, &["add", "change"]);
    kiln_testkit::git(clone, &["commit", "-qm", &format!("change {run}")]);
    let started = Instant::now();
    kiln_testkit::git(clone, &["push", "-q", "origin", &branch]);
    Ok(started.elapsed())
}
