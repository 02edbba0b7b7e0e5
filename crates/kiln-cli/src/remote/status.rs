//! `kiln status`: the server at a glance — version, whether the model answers, the sandboxes
//! it runs (admins), and each repo's newest image and warm pool.

use super::{config, connect, report, row, table};
use kiln_protocol::api::{ImageStatus, ModelHealth, ServerStatus};
use std::process::ExitCode;

/// `kiln status`
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Print the status as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: config::ServerArgs,
}

/// Exits 0 when the server answers and its model is reachable, 1 otherwise.
pub(crate) async fn status(args: StatusArgs) -> ExitCode {
    report(async {
        let client = connect(&args.server)?;
        let status = client.status().await?;
        if args.json {
            out!("{}", serde_json::to_string(&status)?)?;
        } else {
            out_text!("{}", render(&status, client.base_url()))?;
        }
        Ok(match status.model.reachable {
            Some(true) => ExitCode::SUCCESS,
            _ => ExitCode::from(1),
        })
    })
    .await
}

fn render(status: &ServerStatus, url: &str) -> String {
    let mut out = format!("kiln {} at {url}\n", status.version);
    out.push_str(&format!("model: {}\n", model_line(&status.model)));
    if let Some(s) = &status.sandboxes {
        out.push_str(&format!(
            "sandboxes: {} for sessions, {} warm in pools, {} building images, {} other\n",
            s.sessions, s.pooled, s.builds, s.other
        ));
    }
    if status.repos.is_empty() {
        out.push_str("repos: none yet (kiln repo add NAME URL)\n");
        return out;
    }
    let mut rows = vec![row(["REPO", "IMAGE", "STATUS", "COMMIT", "POOL"])];
    for repo in &status.repos {
        let (id, state, commit) = match &repo.image {
            Some(image) => (
                image.id.as_str(),
                match image.status {
                    ImageStatus::Building => "building",
                    ImageStatus::Ready => "ready",
                    ImageStatus::Failed => "failed",
                    ImageStatus::Collected => "collected",
                },
                &image.commit[..image.commit.len().min(12)],
            ),
            None => ("-", "no image", ""),
        };
        let pool = format!(
            "{} ready, {} reserved (target {})",
            repo.pool.ready, repo.pool.reserved, repo.pool.target
        );
        rows.push(row([&repo.name, id, state, commit, &pool]));
    }
    out.push_str(&table(&rows));
    out
}

fn model_line(model: &ModelHealth) -> String {
    let name = model.name.as_deref().unwrap_or("?");
    match (model.configured, model.reachable) {
        (false, _) => format!("not configured — {}", model.hint.as_deref().unwrap_or("")),
        (true, Some(true)) => format!(
            "{name}, reachable ({} ms)",
            model.latency_ms.unwrap_or_default()
        ),
        (true, _) => format!(
            "{name}, NOT reachable: {}",
            model.error.as_deref().unwrap_or("no answer")
        ),
    }
}
