//! `kiln bench pr`: from a finished prompt to a pull request open on GitHub — the session's
//! branch pushed (`POST /api/sessions/{id}/push`), then the PR opened in the asking user's name
//! (`POST /api/sessions/{id}/pr`) — for a 1-file and a 1,000-file change, and the push against
//! `git push` of the same change from the host. GitHub is kiln-testkit's fake on 127.0.0.1: the
//! forge is configured with its API URL and the test app key, the repo's URL is on its host, so
//! kiln's pushes carry the app's installation token and the PR the user's own token; the host's
//! `git push` goes to the same git server with a user token (the same protocol and check).
//! The push and the host clone are `kiln bench push`'s. Prints readable lines, then one JSON
//! object as the last line.

use crate::DataDirArg;
use crate::bench::{Stats, round2};
use crate::bench_push::{git_push, host_clone, session_with_change, timed_post};
use crate::bench_session::Bench;
use anyhow::{Context, bail};
use kiln_core::{Secret, UserId};
use kiln_engine::{EngineConfig, GitHubConfig};
use kiln_testkit::{FAKE_APP_ID, FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, FakeGitHub};
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct PrBenchArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Pull requests opened per change size.
    #[arg(long, default_value_t = 10)]
    runs: usize,
}

#[derive(Debug, Serialize)]
struct PrReport {
    /// Prompt finished → branch pushed → PR open, a 1-file change.
    pr_open_p50_ms: f64,
    pr_open_p99_ms: f64,
    pr_open_1000_files_p50_ms: f64,
    pr_open_1000_files_p99_ms: f64,
    /// The push alone.
    push_p50_ms: f64,
    push_1000_files_p50_ms: f64,
    /// The PR request alone (after the push).
    open_pr_p50_ms: f64,
    git_push_p50_ms: f64,
    git_push_1000_files_p50_ms: f64,
    /// kiln's push of a 1-file change over `git push` of the same change from the host (p50s).
    push_vs_git_ratio: f64,
    push_vs_git_ratio_1000_files: f64,
    runs: usize,
}

/// The GitHub account the bench's user links, and the repository (the app installed on it).
const LOGIN: &str = "bench-gh";
const OWNER: &str = "octo";
const NAME: &str = "bench";
const INSTALLATION: u64 = 7;

pub(crate) async fn run(args: PrBenchArgs) -> anyhow::Result<()> {
    let data_dir = args.data.data_dir.clone();
    crate::bench::report_in_scratch(&data_dir, "bench-pr", async |root| {
        measure(&args, root).await
    })
    .await
}

/// The times of one change size's runs.
#[derive(Default)]
struct Runs {
    pr_open: Vec<Duration>,
    push: Vec<Duration>,
    open_pr: Vec<Duration>,
    git_push: Vec<Duration>,
}

async fn measure(args: &PrBenchArgs, root: &Path) -> anyhow::Result<PrReport> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let served = root.join("served");
    std::fs::create_dir_all(served.join(OWNER))?;
    let bare = kiln_testkit::bare_repo(&served.join(OWNER), NAME, &[("README.md", "bench\n")]);
    let fake = FakeGitHub::start().await;
    let user_token = fake.add_user(LOGIN);
    fake.add_repo(
        &format!("{OWNER}/{NAME}"),
        INSTALLATION,
        &[(LOGIN, "write")],
    );
    fake.serve_git(&served);
    let config = EngineConfig {
        github: Some(GitHubConfig {
            api_url: fake.url(),
            app_id: Some(FAKE_APP_ID.into()),
            private_key_pem: Some(Secret::new(
                kiln_testkit::TEST_APP_PRIVATE_KEY_PEM.as_bytes().to_vec(),
            )),
            client_id: Some(FAKE_CLIENT_ID.into()),
            client_secret: Some(Secret::new(FAKE_CLIENT_SECRET.into())),
            ..GitHubConfig::default()
        }),
        ..EngineConfig::default()
    };
    let bench = crate::bench_session::start_with(root.join("data"), &bare, config).await?;
    let outcome = async {
        link(&bench, &fake).await?;
        let url = format!("{}/{OWNER}/{NAME}.git", fake.url());
        let (status, body) = bench
            .post("/api/repos", json!({"name": "gh", "url": url}))
            .await?;
        if status != 201 {
            bail!("adding the repository on the fake GitHub failed: {body}");
        }
        let host = host_clone(
            root,
            &url.replace("http://", &format!("http://{LOGIN}:{user_token}@")),
        );
        let mut sizes = Vec::new();
        for files in [1usize, 1000] {
            let mut runs = Runs::default();
            for run in 0..args.runs {
                pr_open(&bench, files, run, &mut runs).await?;
                runs.git_push.push(git_push(&host, files, run)?);
            }
            let stats = [runs.pr_open, runs.push, runs.open_pr, runs.git_push].map(Stats::of);
            eprintln!(
                "{files} file(s): PR open p50 {} ms, p99 {} ms (push p50 {} ms, PR request p50 \
                 {} ms); git push p50 {} ms ({} runs)",
                stats[0].p50, stats[0].p99, stats[1].p50, stats[2].p50, stats[3].p50, args.runs
            );
            sizes.push(stats);
        }
        let pulls = fake.pulls();
        anyhow::ensure!(
            pulls.len() == 2 * args.runs && pulls.iter().all(|p| p.author == LOGIN),
            "the fake GitHub should hold one pull request per run, each by {LOGIN}"
        );
        let ratio = |s: &[Stats; 4]| round2(s[1].p50 / s[3].p50.max(0.01));
        anyhow::Ok(PrReport {
            pr_open_p50_ms: sizes[0][0].p50,
            pr_open_p99_ms: sizes[0][0].p99,
            pr_open_1000_files_p50_ms: sizes[1][0].p50,
            pr_open_1000_files_p99_ms: sizes[1][0].p99,
            push_p50_ms: sizes[0][1].p50,
            push_1000_files_p50_ms: sizes[1][1].p50,
            open_pr_p50_ms: sizes[0][2].p50,
            git_push_p50_ms: sizes[0][3].p50,
            git_push_1000_files_p50_ms: sizes[1][3].p50,
            push_vs_git_ratio: ratio(&sizes[0]),
            push_vs_git_ratio_1000_files: ratio(&sizes[1]),
            runs: args.runs,
        })
    }
    .await;
    bench.stop().await;
    outcome
}

/// One session's change from its finished prompt to its pull request open on the fake.
async fn pr_open(bench: &Bench, files: usize, run: usize, runs: &mut Runs) -> anyhow::Result<()> {
    let session = session_with_change(bench, "gh", files, run).await?;
    let started = Instant::now();
    let (push, _) = timed_post(bench, &format!("/api/sessions/{session}/push")).await?;
    let (open_pr, pr) = timed_post(bench, &format!("/api/sessions/{session}/pr")).await?;
    runs.pr_open.push(started.elapsed());
    runs.push.push(push);
    runs.open_pr.push(open_pr);
    if pr["created"] != true {
        bail!("the pull request of session {session} was not created: {pr}");
    }
    bench.archive(&session).await;
    Ok(())
}

/// Links the bench's user to GitHub account [`LOGIN`] through the engine's sign-in (the state
/// kiln issues, the fake's code exchanged for the user's tokens), as the browser flow's
/// callback does.
async fn link(bench: &Bench, fake: &FakeGitHub) -> anyhow::Result<()> {
    let (status, me) = bench.get("/api/me").await?;
    if status != 200 {
        bail!("reading the bench user failed: {me}");
    }
    let user: UserId = me["user"]["id"]
        .as_str()
        .context("the user's id")?
        .parse()
        .map_err(anyhow::Error::msg)?;
    let redirect = format!("{}/api/auth/github/callback", bench.url);
    let authorize = bench
        .engine
        .github_sign_in_url(Some(&user), &redirect)
        .await?;
    let state = authorize
        .split(['?', '&'])
        .find_map(|pair| pair.strip_prefix("state="))
        .context("the sign-in URL's state")?;
    let code = fake.code_for(LOGIN);
    bench.engine.github_sign_in(&code, state, &redirect).await?;
    Ok(())
}
