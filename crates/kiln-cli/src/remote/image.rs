//! `kiln image …`: build a repo's environment image now and look at its builds.

use super::{row, table};
use anyhow::{Context, Result};
use clap::Subcommand;
use kiln_client::Client;
use kiln_protocol::api::{GcReport, Image, ImageStatus};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Build the repo's image now (admins), streaming its log, and print the result.
    Build {
        /// The repo's name.
        repo: String,
        /// Start the build and return at once.
        #[arg(long)]
        no_wait: bool,
        /// Print the finished image as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print an image build's log (by default the repo's newest build, running or not).
    Logs {
        /// The repository (as named by `kiln repo add`).
        repo: String,
        /// The image's id (from `kiln image ls`); by default the newest.
        id: Option<String>,
        /// While the build runs, keep printing its log until it ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// List the repo's image builds, newest first (a running build first, as `building`).
    Ls {
        /// The repo's name.
        repo: String,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Collect images and snapshot layers nothing uses any more, now (admins; kiln also does
    /// it every 10 minutes).
    Gc {
        /// Print what was collected as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// How `kiln image build` shows a build as it runs, on stderr: with a terminal, each log line
/// above a spinner naming the current step (the latest `== ` line) and the time so far;
/// without one, just the lines.
struct Progress {
    spinner: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(repo: &str) -> Progress {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let spinner = indicatif::ProgressBar::new_spinner();
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
            {
                spinner.set_style(style);
            }
            spinner.set_message(format!("building an image of {repo}"));
            spinner.enable_steady_tick(Duration::from_millis(100));
            spinner
        });
        Progress { spinner }
    }

    fn line(&self, line: &str) {
        match &self.spinner {
            Some(spinner) => {
                if let Some(step) = line.strip_prefix("== ") {
                    spinner.set_message(step.to_string());
                }
                spinner.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(spinner) = &self.spinner {
            spinner.finish_and_clear();
        }
    }
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
        ImageCommand::Logs { repo, id, follow } => logs(client, &repo, id, follow).await,
        ImageCommand::Ls { repo, json } => {
            let images = client.images(&repo).await?;
            if json {
                out!("{}", serde_json::to_string(&images)?)?;
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
                out_text!("{}", table(&rows))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Gc { json } => {
            let report = client.collect_garbage().await?;
            if json {
                out!("{}", serde_json::to_string(&report)?)?;
            } else {
                out!("{}", gc_summary(&report))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One line saying what a collection did, or that there was nothing to collect.
fn gc_summary(report: &GcReport) -> String {
    let mut parts = Vec::new();
    match report.images_collected.as_slice() {
        [] => {}
        ids => parts.push(format!("{} image(s) ({})", ids.len(), ids.join(", "))),
    }
    if report.snapshots_deleted > 0 {
        parts.push(format!("{} snapshot layer(s)", report.snapshots_deleted));
    }
    if report.repo_layers_removed > 0 {
        parts.push(format!("{} build layer(s)", report.repo_layers_removed));
    }
    if report.bases_removed > 0 {
        parts.push(format!("{} base(s)", report.bases_removed));
    }
    if parts.is_empty() {
        "nothing to collect: every image and layer is in use or recent".into()
    } else {
        format!("collected {}", parts.join(", "))
    }
}

fn status(image: &Image) -> &'static str {
    match image.status {
        ImageStatus::Ready => "ready",
        ImageStatus::Failed => "failed",
        ImageStatus::Collected => "collected",
        ImageStatus::Building => "building",
    }
}

async fn logs(client: &Client, repo: &str, id: Option<String>, follow: bool) -> Result<ExitCode> {
    let id = match id {
        Some(id) => id,
        None => match client.images(repo).await?.into_iter().next() {
            Some(image) => image.id,
            None => anyhow::bail!(
                "{repo} has no image builds yet; start one with: kiln image build {repo}"
            ),
        },
    };
    let mut log = client
        .image_log_with(repo, &id, follow, BUILD_WAIT + Duration::from_secs(60))
        .await?;
    let mut out = std::io::stdout().lock();
    while let Some(line) = log.next_line().await? {
        use std::io::Write;
        if let Err(e) = writeln!(out, "{line}") {
            // `| head` closed the pipe: the reader has what it wanted.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(e.into());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn build(client: &Client, repo: &str, no_wait: bool, json: bool) -> Result<ExitCode> {
    let id = client.start_image_build(repo).await?.id;
    if no_wait {
        eprintln!(
            "building image {id} of {repo}; follow it with: kiln image logs {repo} {id} --follow"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let progress = Progress::new(repo);
    let followed = async {
        let mut log = client
            .image_log(repo, &id, BUILD_WAIT + Duration::from_secs(60))
            .await
            .context("following the build log")?;
        while let Some(line) = log.next_line().await? {
            progress.line(&line);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(BUILD_WAIT, followed)
        .await
        .map_err(|_| anyhow::anyhow!("the build of {repo} did not end within {BUILD_WAIT:?}"))??;
    drop(progress);
    // The log ends when the build does, after its image was recorded.
    let image = client.image(repo, &id).await.map_err(|e| match e {
        kiln_client::Error::NotFound { .. } => anyhow::anyhow!(
            "the build log ended but image {id} of {repo} was not recorded: the build could \
             not run (see the log above) or was cancelled (did the server stop?)"
        ),
        e => e.into(),
    })?;
    if json {
        out!("{}", serde_json::to_string(&image)?)?;
    } else {
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
        ImageStatus::Failed | ImageStatus::Collected | ImageStatus::Building => ExitCode::from(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collection_says_what_it_did_or_that_there_was_nothing() {
        assert_eq!(
            gc_summary(&GcReport::default()),
            "nothing to collect: every image and layer is in use or recent"
        );
        let report = GcReport {
            images_collected: vec!["i-1".into(), "i-2".into()],
            snapshots_deleted: 3,
            repo_layers_removed: 0,
            bases_removed: 0,
        };
        assert_eq!(
            gc_summary(&report),
            "collected 2 image(s) (i-1, i-2), 3 snapshot layer(s)"
        );
    }
}
