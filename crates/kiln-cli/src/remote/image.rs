//! `kiln image …`: build a repo's environment image now and look at its builds.

use super::{row, table};
use anyhow::{Context, Result};
use clap::Subcommand;
use kiln_client::Client;
use kiln_protocol::api::{Image, ImageStatus};
use std::collections::HashSet;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Build the repo's image now (admins), wait for it and print its log.
    Build {
        repo: String,
        /// Start the build and return at once.
        #[arg(long)]
        no_wait: bool,
        /// Print the finished image as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the repo's image builds, newest first.
    Ls {
        repo: String,
        #[arg(long)]
        json: bool,
    },
}

/// Longest `kiln image build` waits for the build to end.
const BUILD_WAIT: Duration = Duration::from_secs(3 * 3600);

pub(crate) async fn run(client: &Client, command: ImageCommand) -> Result<ExitCode> {
    match command {
        ImageCommand::Build {
            repo,
            no_wait,
            json,
        } => build(client, &repo, no_wait, json).await,
        ImageCommand::Ls { repo, json } => {
            let images = client.images(&repo).await?;
            if json {
                println!("{}", serde_json::to_string(&images)?);
            } else {
                let mut rows = vec![row(["ID", "STATUS", "COMMIT", "SETUP", "SECONDS", "ERROR"])];
                rows.extend(images.iter().map(|i| {
                    row([
                        &i.id,
                        status(i),
                        &i.commit[..i.commit.len().min(12)],
                        if i.setup_ran { "ran" } else { "reused" },
                        &format!("{:.1}", i.duration_ms as f64 / 1000.0),
                        i.error.as_deref().unwrap_or(""),
                    ])
                }));
                print!("{}", table(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn status(image: &Image) -> &'static str {
    match image.status {
        ImageStatus::Ready => "ready",
        ImageStatus::Failed => "failed",
    }
}

async fn build(client: &Client, repo: &str, no_wait: bool, json: bool) -> Result<ExitCode> {
    let before: HashSet<String> = client
        .images(repo)
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect();
    client.start_image_build(repo).await?;
    if no_wait {
        eprintln!("building an image of {repo}; see `kiln image ls {repo}`");
        return Ok(ExitCode::SUCCESS);
    }
    let spinner = std::io::stderr().is_terminal().then(|| {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.set_message(format!("building an image of {repo}"));
        spinner.enable_steady_tick(Duration::from_millis(100));
        spinner
    });
    let started = Instant::now();
    let built = loop {
        let images = client.images(repo).await?;
        if let Some(image) = images.into_iter().find(|i| !before.contains(&i.id)) {
            break image;
        }
        anyhow::ensure!(
            started.elapsed() < BUILD_WAIT,
            "the build of {repo} did not end within {BUILD_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    let image = client
        .image(repo, &built.id)
        .await
        .context("reading the build log")?;
    if json {
        println!("{}", serde_json::to_string(&image)?);
    } else {
        print!("{}", image.log.as_deref().unwrap_or(""));
        eprintln!(
            "image {} of {repo} at {}: {} in {:.1}s{}",
            image.id,
            &image.commit[..image.commit.len().min(12)],
            status(&image),
            image.duration_ms as f64 / 1000.0,
            image
                .error
                .as_deref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        );
    }
    Ok(match image.status {
        ImageStatus::Ready => ExitCode::SUCCESS,
        ImageStatus::Failed => ExitCode::from(1),
    })
}
