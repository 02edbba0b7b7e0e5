//! The client commands of `kiln` (`kiln repo …`, `kiln session …`): they talk to a kiln server
//! over its API through `kiln-client`, like any other client, and never touch the server's data.
//!
//! Exit codes are part of the interface: 0 when the prompt (or request) succeeded, 1 when it
//! failed, was cancelled or interrupted, or the server refused the request, 2 for usage and
//! configuration mistakes (clap uses 2 too), 3 when the server cannot be reached or refuses the
//! token, and 130 when the user detached with Ctrl-C.

/// `println!` that returns the write's error instead of panicking on it: when the reader went
/// away (`kiln session ls | head -1`) the command ends quietly ([`closed_pipe`]).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `print!` as [`out!`] is `println!`.
macro_rules! out_text {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod config;
mod follow;
mod image;
mod mcp;
mod participants;
mod people;
mod plan;
mod render;
mod retry;
mod secrets;
mod session;
mod stats;
mod status;

use anyhow::{Context, Result};
use clap::Subcommand;
use kiln_client::Client;
use kiln_protocol::api::{AccessMode, CreateRepo, SetRepoAccess, UpdateRepo};
use std::io::IsTerminal;
use std::process::ExitCode;

pub(crate) use session::SessionCommand;

/// `kiln repo …`
#[derive(Debug, clap::Args)]
pub(crate) struct RepoArgs {
    #[command(flatten)]
    server: config::ServerArgs,
    #[command(subcommand)]
    command: RepoCommand,
}

/// `kiln image …`
#[derive(Debug, clap::Args)]
pub(crate) struct ImageArgs {
    #[command(flatten)]
    server: config::ServerArgs,
    #[command(subcommand)]
    command: image::ImageCommand,
}

/// `kiln session …`
#[derive(Debug, clap::Args)]
pub(crate) struct SessionArgs {
    #[command(flatten)]
    server: config::ServerArgs,
    #[command(subcommand)]
    command: SessionCommand,
}

pub(crate) use stats::{StatsArgs, stats};
pub(crate) use status::{StatusArgs, status};
/// `kiln user …`
#[derive(Debug, clap::Args)]
pub(crate) struct UserArgs {
    #[command(flatten)]
    server: config::ServerArgs,
    #[command(subcommand)]
    command: people::UserCommand,
}

/// `kiln token …`
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    server: config::ServerArgs,
    #[command(subcommand)]
    command: people::TokenCommand,
}

/// `kiln login-link`
#[derive(Debug, clap::Args)]
pub(crate) struct LoginLinkArgs {
    #[command(flatten)]
    server: config::ServerArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    /// Only entries after this sequence number.
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    after: i64,
    /// Every entry as one JSON object per line (to export), instead of a table of the newest.
    #[arg(long)]
    jsonl: bool,
    #[command(flatten)]
    server: config::ServerArgs,
}

#[derive(Debug, Subcommand)]
enum RepoCommand {
    /// Register a repository that sessions can work on (admins). The server checks first that
    /// it can read the URL (`git ls-remote`) and says what is wrong if not.
    Add {
        /// Short name used in commands: letters, digits, `-`, `_`, `.`.
        name: String,
        /// Anything `git clone` takes: https, ssh, or a path on the server.
        url: String,
        /// The branch sessions start from and images follow (default: main).
        #[arg(long, value_name = "BRANCH")]
        default_branch: Option<String>,
        /// A line saying what the repo is, shown by `kiln repo ls`.
        #[arg(long)]
        description: Option<String>,
        /// Register it without checking that the server can read the URL now.
        #[arg(long)]
        no_check: bool,
    },
    /// Delete a repository (admins) with its sessions, warm sandboxes, mirror and images.
    Rm {
        /// The repo's name.
        name: String,
        /// Also when sessions on it are working or hold a sandbox: they are stopped.
        #[arg(long)]
        force: bool,
    },
    /// List the registered repositories.
    Ls {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the environment definition set for a repo through the API, or set it from a TOML
    /// file (`-` for stdin) in place of the repo's `.kiln/environment.toml` (admins).
    Env {
        /// The repo's name.
        name: String,
        /// The definition to set (the format of `.kiln/environment.toml`).
        #[arg(long, value_name = "FILE", conflicts_with = "clear")]
        set: Option<std::path::PathBuf>,
        /// Remove the definition set through the API: builds read the repo's file again.
        #[arg(long)]
        clear: bool,
    },
    /// Show who may start sessions on a repo, or set it (admins): everyone, or its members
    /// (and admins) only — to anyone else a members-only repo does not exist.
    Access {
        /// The repo's name.
        name: String,
        /// Open the repo to every user (its member list is kept).
        #[arg(long, conflicts_with = "members_only")]
        everyone: bool,
        /// Open the repo to its members (and admins) only.
        #[arg(long)]
        members_only: bool,
        /// The members, by user name or id, comma-separated (replaces the list).
        #[arg(long, value_name = "USERS", value_delimiter = ',')]
        members: Option<Vec<String>>,
    },
    /// A repo's secrets (admins): values image builds (and, if chosen, sessions) get as
    /// environment variables; stored encrypted, never shown, masked in logs.
    Secret {
        #[command(subcommand)]
        command: secrets::SecretCommand,
    },
    /// A repo's MCP servers ([[mcp]] in its environment definition): state and tools.
    Mcp {
        #[command(subcommand)]
        command: mcp::McpCommand,
    },
}

pub(crate) async fn repo(args: RepoArgs) -> ExitCode {
    report(async {
        let client = connect(&args.server)?;
        match args.command {
            RepoCommand::Add {
                name,
                url,
                default_branch,
                description,
                no_check,
            } => {
                let body = CreateRepo {
                    name,
                    url,
                    default_branch,
                    description,
                    hooks: Vec::new(),
                    environment: None,
                    check: !no_check,
                };
                let repo = client.create_repo(&body).await?;
                out!(
                    "added repo {} ({}, default branch {})",
                    repo.name,
                    repo.url,
                    repo.default_branch
                )?;
            }
            RepoCommand::Rm { name, force } => {
                client.delete_repo(&name, force).await?;
                eprintln!("deleted repo {name} with its sessions, warm sandboxes and images");
            }
            RepoCommand::Ls { json } => {
                let repos = client.repos().await?;
                if json {
                    out!("{}", serde_json::to_string(&repos)?)?;
                } else {
                    let mut rows = vec![row(["NAME", "DEFAULT BRANCH", "URL", "DESCRIPTION"])];
                    rows.extend(
                        repos
                            .iter()
                            .map(|r| row([&r.name, &r.default_branch, &r.url, &r.description])),
                    );
                    out_text!("{}", table(&rows))?;
                }
            }
            RepoCommand::Env { name, set, clear } => {
                let environment = match (set, clear) {
                    (Some(path), _) => Some(read_text(&path)?),
                    (None, true) => Some(String::new()),
                    (None, false) => None,
                };
                let repo = match environment {
                    Some(environment) => {
                        let body = UpdateRepo {
                            environment: Some(environment),
                            ..UpdateRepo::default()
                        };
                        client.update_repo(&name, &body).await?
                    }
                    None => client.repo(&name).await?,
                };
                match repo.environment {
                    Some(text) => out_text!("{text}")?,
                    None => eprintln!(
                        "{}: no environment set through the API (only admins see one); builds \
                         read .kiln/environment.toml",
                        repo.name
                    ),
                }
            }
            RepoCommand::Access {
                name,
                everyone,
                members_only,
                members,
            } => {
                let mut access = client.repo_access(&name).await?;
                if everyone || members_only || members.is_some() {
                    let members = match members {
                        Some(names) => user_ids(&client, &names).await?,
                        None => access.members.iter().map(|m| m.id.clone()).collect(),
                    };
                    let mode = match (everyone, members_only) {
                        (true, _) => AccessMode::Everyone,
                        (_, true) => AccessMode::Members,
                        _ => access.mode,
                    };
                    let body = SetRepoAccess { mode, members };
                    access = client.set_repo_access(&name, &body).await?;
                }
                let who = match access.mode {
                    AccessMode::Everyone => "every user",
                    AccessMode::Members => "its members and admins only",
                };
                out!("{name}: sessions may be started by {who}")?;
                let names: Vec<&str> = access.members.iter().map(|m| m.name.as_str()).collect();
                out!(
                    "members: {}",
                    if names.is_empty() {
                        "(none)".to_string()
                    } else {
                        names.join(", ")
                    }
                )?;
            }
            RepoCommand::Secret { command } => return secrets::run(&client, command).await,
            RepoCommand::Mcp { command } => return mcp::run(&client, command).await,
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// User ids for names or ids, as an admin sees the users.
async fn user_ids(client: &Client, wanted: &[String]) -> Result<Vec<kiln_core::UserId>> {
    let users = client.users().await?;
    wanted
        .iter()
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
        .map(|w| {
            users
                .iter()
                .find(|u| u.name == w || u.id.as_str() == w)
                .map(|u| u.id.clone())
                .ok_or_else(|| anyhow::anyhow!("no user named {w:?} (see GET /api/users)"))
        })
        .collect()
}

pub(crate) async fn user(args: UserArgs) -> ExitCode {
    report(async {
        let client = connect(&args.server)?;
        people::user(&client, args.command).await
    })
    .await
}

pub(crate) async fn token(args: TokenArgs) -> ExitCode {
    report(async {
        let client = connect(&args.server)?;
        people::token(&client, args.command).await
    })
    .await
}

/// Prints a fresh single-use sign-in URL for the caller (valid for minutes, once).
pub(crate) async fn login_link(args: LoginLinkArgs) -> ExitCode {
    report(async {
        let client = connect(&args.server)?;
        let link = client.create_login_link().await?;
        out!("{}", link.url)?;
        if std::io::stderr().is_terminal() {
            eprintln!("open it in a browser within 10 minutes; it works once");
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// `kiln audit`: the audit log (admins) — a table, or every entry as JSON lines.
pub(crate) async fn audit(args: AuditArgs) -> ExitCode {
    report(async {
        let client = connect(&args.server)?;
        let mut after = args.after;
        let mut rows = vec![row(["SEQ", "WHEN", "ACTOR", "ACTION", "TARGET"])];
        let now = session::now_ms();
        loop {
            let page = client.audit(after, 1000).await?;
            for entry in &page.entries {
                if args.jsonl {
                    out!("{}", serde_json::to_string(entry)?)?;
                } else {
                    let action = serde_json::to_value(entry.action)?;
                    rows.push(row([
                        &entry.seq.to_string(),
                        &session::ago(now, entry.at_ms),
                        entry.actor.as_ref().map_or("kiln", |a| a.name.as_str()),
                        action.as_str().unwrap_or_default(),
                        &entry.target,
                    ]));
                }
            }
            if page.entries.is_empty() || page.next_after == after {
                break;
            }
            after = page.next_after;
        }
        if !args.jsonl {
            out_text!("{}", table(&rows))?;
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub(crate) async fn image(args: ImageArgs) -> ExitCode {
    report(async {
        let client = connect(&args.server)?;
        image::run(&client, args.command).await
    })
    .await
}

pub(crate) async fn session(args: SessionArgs) -> ExitCode {
    report(async {
        let client = connect(&args.server)?;
        session::run(&client, args.command).await
    })
    .await
}

/// A file's text, or standard input's for `-`.
fn read_text(path: &std::path::Path) -> Result<String> {
    if path.as_os_str() == "-" {
        return Ok(std::io::read_to_string(std::io::stdin())?);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn connect(server: &config::ServerArgs) -> Result<Client> {
    let remote = config::resolve(server, &|name| std::env::var(name).ok())?;
    Ok(Client::new(&remote.url, remote.token)?)
}

/// Runs a command and turns its error into a message on stderr and the documented exit code.
async fn report(command: impl Future<Output = Result<ExitCode>>) -> ExitCode {
    let err = match command.await {
        Ok(code) => return code,
        Err(err) => err,
    };
    // Whoever read the output stopped reading (`| head`): what they wanted is out, so this
    // is not a failure to report.
    if closed_pipe(&err) {
        return ExitCode::SUCCESS;
    }
    let code = if let Some(err) = err.downcast_ref::<kiln_client::Error>() {
        if err.is_connection() { 3 } else { 1 }
    } else if err.is::<config::ConfigError>() {
        2
    } else {
        1
    };
    let paint = render::Paint(std::io::stderr().is_terminal() && config::colour_allowed());
    eprintln!("{} {err:#}", paint.red("error:"));
    if let Some(kiln_client::Error::Unauthorized { .. }) = err.downcast_ref::<kiln_client::Error>()
        && let Some(hint) = config::TOKEN_HINT.get()
    {
        eprintln!("{hint}");
    }
    ExitCode::from(code)
}

/// Whether an error is a write to a pipe nobody reads any more.
pub(crate) fn closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            let cell = |r: &Vec<String>| r.get(i).map_or(0, |c| c.chars().count());
            rows.iter().map(cell).max().unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count();
                line.push_str(&format!("{cell}{}  ", " ".repeat(pad)));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_columns() {
        let rows = vec![
            super::row(["NAME", "URL"]),
            super::row(["web-app", "https://x"]),
            super::row(["é", ""]),
        ];
        assert_eq!(super::table(&rows), "NAME     URL\nweb-app  https://x\né\n");
    }
}
