//! `kiln session …`: start sessions, watch them, talk to them, share them. Each command is one
//! or two API calls; the ones that watch hand over to [`super::follow`].

use super::follow::{Until, follow};
use super::{row, table};
use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use kiln_client::Client;
use kiln_core::{Role, SessionId, ShareId};
use kiln_protocol::api::{CreateSession, CreateShare, SessionDetail, SessionState, SessionSummary};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(crate) enum SessionCommand {
    /// Start a session on a repository and watch it work on the prompt.
    New {
        /// The repository (as named by `kiln repo add`).
        #[arg(long)]
        repo: String,
        /// What the agent should do: the first prompt.
        prompt: String,
        /// A title for listings (default: the prompt's first line).
        #[arg(long)]
        title: Option<String>,
        /// Plan first: the agent explores read-only and proposes a plan to approve
        /// (`kiln session plan approve`).
        #[arg(long)]
        plan: bool,
        /// Print each event as one JSON line instead of a transcript.
        #[arg(long)]
        json: bool,
        /// Print the session id and return at once instead of watching.
        #[arg(long)]
        detach: bool,
    },
    /// Show a session's events so far, then follow it until it is idle.
    ///
    /// Exit codes: 0 when the last prompt that ended while watching completed (or none ended),
    /// 1 when it failed, was cancelled or interrupted, 3 when the server cannot be reached or
    /// refuses the token, 130 when you detached with Ctrl-C. A closed output pipe (`| head`)
    /// ends it quietly with 0.
    Attach {
        /// The session's id (`s-…`, as `kiln session ls` shows it).
        id: SessionId,
        /// Only events after this one (as printed when detaching).
        #[arg(long, value_name = "N", default_value_t = 0)]
        after_seq: u64,
        /// Print each event as one JSON line instead of a transcript.
        #[arg(long)]
        json: bool,
        /// Keep following after the session is idle, until Ctrl-C.
        #[arg(long)]
        follow: bool,
    },
    /// Send a prompt; it waits its turn if the agent is busy. Prints the prompt's id; follow
    /// it with `--wait`, or with `kiln session attach ID`.
    Send {
        /// The session's id (`s-…`).
        id: SessionId,
        /// The prompt: what the agent should do next.
        text: String,
        /// Plan first: the agent explores read-only and proposes a plan to approve
        /// (`kiln session plan approve`).
        #[arg(long)]
        plan: bool,
        /// Watch until this prompt ends; the exit code says how it ended.
        #[arg(long)]
        wait: bool,
        /// Print `{"prompt_id", "seq"}` (or, with --wait, each event) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Plan mode: approve or reject a plan the agent proposed, or plan every prompt.
    Plan {
        #[command(subcommand)]
        command: super::plan::PlanCommand,
    },
    /// Stop the running prompt (says so when nothing was running).
    Stop {
        /// The session's id (`s-…`).
        id: SessionId,
        /// Also cancel every queued prompt.
        #[arg(long)]
        clear_queue: bool,
    },
    /// Push the session's branch (`kiln/<session>`, and only it) to the repo's remote; prints
    /// the branch, the commit and, for a forge, a compare URL.
    Push {
        /// The session's id (`s-…`).
        id: SessionId,
        /// Print `{"branch", "commit", "compare_url"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the session's branch against the default branch as a unified diff.
    Diff {
        /// The session's id (`s-…`).
        id: SessionId,
    },
    /// Print the session's commits since the default branch as a patch mbox (for `git am`).
    Patch {
        /// The session's id (`s-…`).
        id: SessionId,
    },
    /// Open the session branch's pull request on GitHub in your name, or update the open one
    /// (the branch must be pushed). Without a linked GitHub account it prints the compare page.
    Pr {
        /// The session's id (`s-…`).
        id: SessionId,
        /// Open it as a draft.
        #[arg(long)]
        draft: bool,
        /// The title (default: the session's title).
        #[arg(long)]
        title: Option<String>,
    },
    /// List the sessions you take part in (not archived ones unless asked).
    Ls {
        /// Every session on this kiln, not only yours (admins).
        #[arg(long)]
        all: bool,
        /// Archived sessions too.
        #[arg(long)]
        archived: bool,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a link that lets someone else join a session (owners).
    Share {
        /// The session's id (`s-…`).
        id: SessionId,
        /// What whoever joins may do: watch (viewer) or also prompt and stop (collaborator).
        #[arg(long, value_enum)]
        role: ShareRole,
        /// The link stops working after this many hours (default 168: 7 days).
        #[arg(long, value_name = "HOURS")]
        expires_in_hours: Option<u32>,
        /// The link works once.
        #[arg(long)]
        single_use: bool,
        /// Print the link's details (code included) as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List a session's live share links (owners; never their codes).
    Shares {
        /// The session's id (`s-…`).
        id: SessionId,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a share link (owners): it stops working at once.
    Unshare {
        /// The session's id (`s-…`).
        id: SessionId,
        /// The link's id, as `kiln session shares` shows it (`sh-…`).
        share: ShareId,
    },
    /// Join a session with a share code (or the link it came in).
    Join {
        /// The code `kiln session share` printed, or the whole link.
        code: String,
    },
    /// Change a participant's role (owners).
    Role {
        /// The session's id (`s-…`).
        id: SessionId,
        /// The participant, by user name or id.
        user: String,
        /// Their new role.
        #[arg(value_enum)]
        role: AnyRole,
    },
    /// Remove a participant (owners), or yourself: they no longer see the session.
    Kick {
        /// The session's id (`s-…`).
        id: SessionId,
        /// The participant, by user name or id.
        user: String,
    },
    /// Leave a session.
    Leave {
        /// The session's id (`s-…`).
        id: SessionId,
    },
    /// Archive a session (owners): its work stops, its sandbox is stopped, and it leaves
    /// `kiln session ls` (see it with --archived). It can still be prompted.
    Archive {
        /// The session's id (`s-…`).
        id: SessionId,
    },
    /// Delete a session for good (owners): its work, sandbox, log and snapshots go.
    Rm {
        /// The session's id (`s-…`).
        id: SessionId,
    },
    /// Show a session: who is in it, its prompts, its state.
    Show {
        /// The session's id (`s-…`).
        id: SessionId,
        /// One JSON object instead of a description.
        #[arg(long)]
        json: bool,
    },
    /// Show the sub-sessions a session spawned (and theirs), indented under it, with the
    /// sessions above it.
    Tree {
        /// The session's id (`s-…`).
        id: SessionId,
        /// One JSON object instead of a tree.
        #[arg(long)]
        json: bool,
    },
    /// Send an interrupted, failed or stopped prompt again (by default the newest such one).
    Retry {
        /// The session.
        id: SessionId,
        /// The prompt to send again; by default the session's newest interrupted, failed or
        /// stopped prompt.
        prompt: Option<kiln_core::PromptId>,
        /// Watch until the new prompt ends; the exit code says how it ended.
        #[arg(long)]
        wait: bool,
        /// Print the accepted prompt as JSON (and, with --wait, the events as JSON lines).
        #[arg(long)]
        json: bool,
    },
}

/// Every role, for `kiln session role`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum AnyRole {
    Viewer,
    Collaborator,
    Owner,
}

/// The roles a share link may grant; ownership is not handed out by link.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ShareRole {
    Viewer,
    Collaborator,
}

pub(crate) async fn run(client: &Client, command: SessionCommand) -> Result<ExitCode> {
    match command {
        SessionCommand::New {
            repo,
            prompt,
            title,
            plan,
            json,
            detach,
        } => {
            let body = CreateSession {
                repo,
                prompt,
                title,
                plan,
            };
            let created = client.create_session(&body).await?;
            let id = &created.session.id;
            for warning in &created.warnings {
                eprintln!("warning: {warning}");
            }
            if detach {
                if json {
                    out!("{}", serde_json::to_string(&created)?)?;
                } else {
                    out!("{id}")?;
                    eprintln!("started; watch it with: kiln session attach {id}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("session {id} started (Ctrl-C detaches; the session goes on)");
            follow(client, id, 0, Until::Prompt(created.prompt_id), json).await
        }
        SessionCommand::Attach {
            id,
            after_seq,
            json,
            follow: forever,
        } => {
            let until = if forever { Until::Forever } else { Until::Idle };
            follow(client, &id, after_seq, until, json).await
        }
        SessionCommand::Send {
            id,
            text,
            plan,
            wait,
            json,
        } => {
            let body = kiln_protocol::api::SendPrompt { text, plan };
            let accepted = client.send_prompt_with(&id, &body).await?;
            if !wait {
                if json {
                    out!("{}", serde_json::to_string(&accepted)?)?;
                } else {
                    out!("{}", accepted.prompt_id)?;
                    eprintln!(
                        "queued prompt {} (event {}); follow it with:\n  kiln session attach \
                         {id} --after-seq {}",
                        accepted.prompt_id,
                        accepted.seq,
                        accepted.seq.saturating_sub(1)
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            // From the `prompt_queued` event on: what runs before it shows, as it would live.
            let after = accepted.seq.saturating_sub(1);
            follow(client, &id, after, Until::Prompt(accepted.prompt_id), json).await
        }
        SessionCommand::Retry {
            id,
            prompt,
            wait,
            json,
        } => super::retry::run(client, &id, prompt, wait, json).await,
        SessionCommand::Plan { command } => super::plan::run(client, command).await,
        SessionCommand::Pr { id, draft, title } => {
            let body = kiln_protocol::api::OpenPullRequest { draft, title };
            let pr = client.open_pull_request(&id, &body).await?;
            let what = match (pr.created, pr.draft) {
                (true, true) => "opened draft",
                (true, false) => "opened",
                (false, _) => "updated",
            };
            eprintln!(
                "{what} pull request #{} ({} → {})",
                pr.number, pr.head, pr.base
            );
            out!("{}", pr.url)?;
            Ok(ExitCode::SUCCESS)
        }
        SessionCommand::Stop { id, clear_queue } => {
            let report = client.stop(&id, clear_queue).await?;
            let queue = match (clear_queue, report.cancelled) {
                (false, _) => String::new(),
                (true, 0) => "; the queue was empty".into(),
                (true, n) => format!(" and cancelled {n} queued prompt(s)"),
            };
            match report.stopped_prompt {
                Some(prompt) => eprintln!("stopping prompt {prompt} of {id}{queue}"),
                None => eprintln!("nothing was running in {id}: nothing to stop{queue}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionCommand::Push { id, json } => {
            let pushed = client.push(&id).await?;
            if json {
                out!("{}", serde_json::to_string(&pushed)?)?;
            } else {
                out!("pushed {} at {}", pushed.branch, pushed.commit)?;
                if let Some(url) = &pushed.compare_url {
                    out!("compare: {url}")?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionCommand::Diff { id } => {
            out_text!("{}", client.changes(&id, false).await?)?;
            Ok(ExitCode::SUCCESS)
        }
        SessionCommand::Patch { id } => {
            out_text!("{}", client.changes(&id, true).await?)?;
            Ok(ExitCode::SUCCESS)
        }
        SessionCommand::Ls {
            all,
            archived,
            json,
        } => {
            let listing = kiln_client::Listing { all, archived };
            let sessions = client.sessions_with(listing).await?;
            if json {
                out!("{}", serde_json::to_string(&sessions)?)?;
            } else {
                out_text!("{}", sessions_table(&sessions, now_ms()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionCommand::Share {
            id,
            role,
            expires_in_hours,
            single_use,
            json,
        } => {
            let role = match role {
                ShareRole::Viewer => Role::Viewer,
                ShareRole::Collaborator => Role::Collaborator,
            };
            let body = CreateShare {
                role,
                expires_in_hours,
                single_use,
            };
            kiln_protocol::api::Validate::validate(&body)?;
            let share = client.create_share_with(&id, &body).await?;
            if json {
                out!("{}", serde_json::to_string(&share)?)?;
            } else {
                out!("{}", share.code)?;
                let hours = expires_in_hours.unwrap_or(kiln_protocol::api::SHARE_TTL_HOURS);
                let once = if single_use { ", once" } else { "" };
                eprintln!(
                    "anyone with this code joins {id} as {} (for {hours} hours{once}):\n  kiln \
                     session join {}\n  or POST {}{} with their token; revoke it with kiln \
                     session unshare {id} {}",
                    share.role,
                    share.code,
                    client.base_url(),
                    share.path,
                    share.id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionCommand::Shares { .. }
        | SessionCommand::Unshare { .. }
        | SessionCommand::Role { .. }
        | SessionCommand::Kick { .. }
        | SessionCommand::Leave { .. }
        | SessionCommand::Archive { .. }
        | SessionCommand::Rm { .. } => super::participants::run(client, command).await,
        SessionCommand::Join { code } => {
            let session = client.join(share_code(&code)).await?;
            out!(
                "joined {} as {}: {} ({})",
                session.id,
                session.role.map_or("-", Role::as_str),
                session.title,
                session.repo
            )?;
            Ok(ExitCode::SUCCESS)
        }
        SessionCommand::Tree { id, json } => {
            let tree = client.session_tree(&id).await?;
            if json {
                out!("{}", serde_json::to_string(&tree)?)?;
            } else {
                out_text!("{}", tree_text(&tree))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionCommand::Show { id, json } => {
            let detail = client.session(&id).await?;
            if json {
                out!("{}", serde_json::to_string(&detail)?)?;
            } else {
                out_text!("{}", describe(&detail, now_ms()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The code out of what someone pasted: the code itself, a `/api/join/CODE` path or a full link.
fn share_code(text: &str) -> &str {
    let text = text.trim().trim_end_matches('/');
    text.rsplit_once("/join/").map_or(text, |(_, code)| code)
}

/// A session tree as indented lines: the ancestors' ids, then the session and its descendants.
fn tree_text(tree: &kiln_protocol::api::SessionTree) -> String {
    let mut out = String::new();
    for (i, ancestor) in tree.ancestors.iter().rev().enumerate() {
        out.push_str(&format!("{}{ancestor}\n", "  ".repeat(i)));
    }
    let base = tree.ancestors.len();
    for node in &tree.nodes {
        let pr = node
            .pull_request
            .as_ref()
            .map(|pr| format!("  PR #{} {}", pr.number, pr.state))
            .unwrap_or_default();
        let here = if node.id == tree.id { "  ←" } else { "" };
        out.push_str(&format!(
            "{}{}  {}  {}  {}{pr}{here}\n",
            "  ".repeat(base + node.depth as usize),
            node.id,
            state_word(&node.state),
            node.repo,
            node.title,
        ));
    }
    out.trim_end().to_string()
}

fn state_word(state: &SessionState) -> &'static str {
    match state {
        SessionState::Working => "working",
        SessionState::Idle => "idle",
        SessionState::Closed => "closed",
    }
}

fn sessions_table(sessions: &[SessionSummary], now_ms: i64) -> String {
    let mut rows = vec![row([
        "ID", "STATE", "ROLE", "REPO", "CREATED", "BY", "TITLE",
    ])];
    rows.extend(sessions.iter().map(|s| {
        let ago = ago(now_ms, s.created_at_ms);
        let state = if s.archived {
            "archived"
        } else {
            state_word(&s.state)
        };
        row([
            s.id.as_str(),
            state,
            s.role.map_or("-", Role::as_str),
            &s.repo,
            &ago,
            &s.created_by.name,
            &s.title,
        ])
    }));
    table(&rows)
}

fn describe(detail: &SessionDetail, now_ms: i64) -> String {
    let s = &detail.summary;
    let mut out = format!("{}  {}\n", s.id, s.title);
    let sandbox = detail.sandbox.map_or("none".to_string(), |state| {
        serde_json::to_value(state).map_or(String::new(), |v| v.as_str().unwrap_or("").into())
    });
    out.push_str(&table(&[
        row(["  repo", &s.repo]),
        row(["  state", state_word(&s.state)]),
        row([
            "  you are",
            s.role.map_or("not a participant", Role::as_str),
        ]),
        row([
            "  created",
            &format!("{} by {}", ago(now_ms, s.created_at_ms), s.created_by.name),
        ]),
        row(["  delivery", detail.delivery.as_str()]),
        row(["  plan mode", if detail.plan_mode { "on" } else { "off" }]),
        row(["  sandbox", &sandbox]),
        row(["  events", &detail.head_seq.to_string()]),
    ]));
    out.push_str("participants:\n");
    for p in &detail.participants {
        out.push_str(&format!("  {} ({})\n", p.user.name, p.role));
    }
    let older = detail.prompts_total.saturating_sub(detail.prompts.len());
    if older > 0 {
        out.push_str(&format!(
            "prompts (the newest; {older} older in the event log):\n"
        ));
    } else {
        out.push_str("prompts:\n");
    }
    let rows: Vec<Vec<String>> = detail
        .prompts
        .iter()
        .map(|p| {
            let text = super::render::clip(p.text.lines().next().unwrap_or(""), 60);
            row(["", p.id.as_str(), p.status.as_str(), &p.author.name, &text])
        })
        .collect();
    out.push_str(&table(&rows));
    out
}

pub(crate) use kiln_core::now_ms;

/// "3m ago"; exact enough for a listing, and free of time zones.
pub(crate) fn ago(now_ms: i64, then_ms: i64) -> String {
    let secs = (now_ms - then_ms).max(0) / 1000;
    match secs {
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_codes_come_out_of_links() {
        assert_eq!(share_code("abc123"), "abc123");
        assert_eq!(share_code("/api/join/abc123"), "abc123");
        assert_eq!(share_code(" http://kiln:7800/api/join/abc123/ "), "abc123");
    }

    #[test]
    fn a_tree_is_indented_under_its_ancestors() {
        use kiln_protocol::api::{SessionPullRequest, SessionTree, SessionTreeNode};
        let id = |s: &str| SessionId::parse(s).unwrap();
        let node =
            |s: &str, parent: Option<&str>, depth: u32, state: SessionState| SessionTreeNode {
                id: id(s),
                parent: parent.map(id),
                depth,
                repo: "web".into(),
                title: format!("t{depth}"),
                state,
                pull_request: None,
            };
        let mut child = node(
            "s-000000000000000b",
            Some("s-000000000000000a"),
            1,
            SessionState::Working,
        );
        child.pull_request = Some(SessionPullRequest {
            number: 7,
            url: "https://example.test/pr/7".into(),
            state: "open".into(),
        });
        let tree = SessionTree {
            id: id("s-000000000000000a"),
            ancestors: vec![id("s-0000000000000001")],
            nodes: vec![
                node(
                    "s-000000000000000a",
                    Some("s-0000000000000001"),
                    0,
                    SessionState::Idle,
                ),
                child,
            ],
        };
        assert_eq!(
            tree_text(&tree),
            "s-0000000000000001\n  s-000000000000000a  idle  web  t0  ←\n    s-000000000000000b  working  web  t1  PR #7 open"
        );
    }

    #[test]
    fn ages_are_coarse() {
        assert_eq!(ago(61_000, 0), "1m ago");
        assert_eq!(ago(0, 5_000), "0s ago");
        assert_eq!(ago(3 * 86_400_000, 0), "3d ago");
    }
}
