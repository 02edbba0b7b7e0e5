//! `kiln session retry`: send an interrupted, failed or stopped prompt again — by default the
//! session's newest such prompt — and, with `--wait`, watch it run.

use super::follow::{Until, follow};
use anyhow::{Result, bail};
use kiln_client::Client;
use kiln_core::{PromptId, SessionId};
use kiln_protocol::api::PromptStatus;
use std::process::ExitCode;

pub(crate) async fn run(
    client: &Client,
    id: &SessionId,
    prompt: Option<PromptId>,
    wait: bool,
    json: bool,
) -> Result<ExitCode> {
    let prompt = match prompt {
        Some(prompt) => prompt,
        None => {
            let detail = client.session(id).await?;
            let retryable = detail.prompts.iter().rev().find(|p| {
                matches!(
                    p.status,
                    PromptStatus::Interrupted | PromptStatus::Failed | PromptStatus::Cancelled
                )
            });
            match retryable {
                Some(p) => p.id.clone(),
                None => bail!(
                    "session {id} has no interrupted, failed or stopped prompt to retry \
                     (see `kiln session show {id}`)"
                ),
            }
        }
    };
    let accepted = client.retry_prompt(id, &prompt).await?;
    if json {
        out!("{}", serde_json::to_string(&accepted)?)?;
    } else {
        eprintln!(
            "sent {prompt} again as prompt {}; follow it with: kiln session attach {id}",
            accepted.prompt_id
        );
    }
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    let after = accepted.seq.saturating_sub(1);
    follow(client, id, after, Until::Prompt(accepted.prompt_id), json).await
}
