//! `kiln session plan …`: decide on a plan the agent proposed (approve, with an edited plan from
//! a file, or reject with a reason), or turn plan mode on or off for a session.

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use kiln_client::Client;
use kiln_core::{PlanId, SessionId};
use kiln_protocol::api::{PlanDecision, PlanVerdict, UpdateSession};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(crate) enum PlanCommand {
    /// Approve a proposed plan (collaborators and owners): the agent implements it, as edited
    /// with --edit.
    Approve {
        /// The session's id (`s-…`).
        id: SessionId,
        /// The plan's id (`pl-…`, as its `plan_proposed` event shows it).
        plan: PlanId,
        /// A file holding the plan as you edited it (Markdown), approved instead of the
        /// agent's; `-` reads standard input.
        #[arg(long, value_name = "FILE")]
        edit: Option<PathBuf>,
        /// A note for the agent and the log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a proposed plan (collaborators and owners): nothing runs for it.
    Reject {
        /// The session's id (`s-…`).
        id: SessionId,
        /// The plan's id (`pl-…`).
        plan: PlanId,
        /// Why, for the log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Plan every prompt of a session first (owners), or stop doing so.
    Mode {
        /// The session's id (`s-…`).
        id: SessionId,
        /// `on`: every prompt plans first; `off`: only prompts sent with --plan.
        #[arg(value_enum)]
        mode: OnOff,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum OnOff {
    On,
    Off,
}

pub(crate) async fn run(client: &Client, command: PlanCommand) -> Result<ExitCode> {
    match command {
        PlanCommand::Approve {
            id,
            plan,
            edit,
            reason,
        } => {
            let edited = match edit {
                None => None,
                Some(path) if path.as_os_str() == "-" => Some(
                    std::io::read_to_string(std::io::stdin())
                        .context("cannot read the edited plan from standard input")?,
                ),
                Some(path) => Some(std::fs::read_to_string(&path).with_context(|| {
                    format!("cannot read the edited plan from {}", path.display())
                })?),
            };
            let body = PlanDecision {
                decision: PlanVerdict::Approve,
                plan: edited,
                reason,
            };
            let decided = client.decide_plan(&id, &plan, &body).await?;
            match decided.prompt_id {
                Some(prompt) => eprintln!(
                    "approved plan {plan}; the agent implements it as prompt {prompt} (watch: \
                     kiln session attach {id} --after-seq {})",
                    decided.seq.saturating_sub(1)
                ),
                None => eprintln!("approved plan {plan}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        PlanCommand::Reject { id, plan, reason } => {
            let body = PlanDecision {
                decision: PlanVerdict::Reject,
                plan: None,
                reason,
            };
            client.decide_plan(&id, &plan, &body).await?;
            eprintln!("rejected plan {plan}; nothing runs for it");
            Ok(ExitCode::SUCCESS)
        }
        PlanCommand::Mode { id, mode } => {
            let on = matches!(mode, OnOff::On);
            let body = UpdateSession {
                delivery: None,
                plan_mode: Some(on),
            };
            client.update_session(&id, &body).await?;
            eprintln!(
                "plan mode is {} for {id}",
                if on {
                    "on: every prompt proposes a plan first"
                } else {
                    "off"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
