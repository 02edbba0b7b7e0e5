//! `kiln`: the one binary. `kiln up` runs the control plane; the other subcommands are clients
//! of its API, or run sandboxes directly on this machine, or benchmark kiln.

mod admin;
mod bench;
mod bench_egress;
mod bench_fanout;
mod bench_pr;
mod bench_push;
mod bench_session;
mod bench_start;
mod bench_stats;
mod logs;
mod remote;
mod sandbox;
mod up;
mod up_slack;
mod up_spend;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Self-hosted infrastructure for background coding agents"
)]
struct Cli {
    /// How logs on stderr are written: `text` for people, `json` (one object per line) for
    /// log collectors. `KILN_LOG` sets the level (default `warn`).
    #[arg(long, global = true, env = "KILN_LOG_FORMAT", value_enum, default_value_t = logs::LogFormat::Text)]
    log_format: logs::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run kiln on this machine: API server, session engine and local sandboxes.
    ///
    /// Stop it with Ctrl-C or SIGTERM (a second one exits at once): running prompts are
    /// interrupted, warm pool sandboxes are destroyed, and sessions' own sandboxes stay on
    /// purpose, so the next `kiln up` reattaches them. To remove those too once kiln is
    /// stopped: `kiln sandbox rm --all --data-dir DIR` (sessions then resume from their
    /// snapshots).
    Up(up::UpArgs),
    /// Run and manage sandboxes on this machine.
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    /// Measure kiln's speed; the last line printed is one JSON object.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Register and list the repositories sessions work on (talks to a kiln server).
    Repo(remote::RepoArgs),
    /// Build and inspect repos' environment images (talks to a kiln server)
    Image(remote::ImageArgs),
    /// Start, watch, prompt and share agent sessions (talks to a kiln server).
    Session(remote::SessionArgs),
    /// Show the server at a glance: version, model reachability, sandboxes, images, pools
    /// (talks to a kiln server; exits 1 when the model does not answer).
    Status(remote::StatusArgs),
    /// Whether the agents pay off: sessions that ended in a merged PR, PRs, speed, spend
    /// (talks to a kiln server; docs/stats.md).
    Stats(remote::StatsArgs),
    /// Add, list and deactivate users (talks to a kiln server).
    User(remote::UserArgs),
    /// Make, list and revoke API tokens (talks to a kiln server).
    Token(remote::TokenArgs),
    /// Print a single-use sign-in link for a browser, as yourself (talks to a kiln server).
    LoginLink(remote::LoginLinkArgs),
    /// Read the audit log: sign-ins, tokens, roles, shares, repo, secret and hook changes
    /// (admins; talks to a kiln server). `--jsonl` exports every entry.
    Audit(remote::AuditArgs),
    /// Administer the kiln on this machine through its data dir (recovery).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Copy the control DB and every session DB into DIR while kiln runs (SQLite's online
    /// backup): `kiln up --data-dir DIR` on the copy serves every session's history.
    Backup(admin::BackupArgs),
    /// Print the API's OpenAPI document (what `/api/openapi.json` serves), without a server:
    /// the web UI's types are generated from it (`web/openapi.json`).
    #[command(hide = true)]
    Openapi,
}

/// Where kiln keeps its state: `--data-dir`, else `$KILN_DATA_DIR`, else `/var/lib/kiln`.
#[derive(Debug, Clone, clap::Args)]
struct DataDirArg {
    /// Where kiln keeps its state (databases, layers, sandboxes).
    #[arg(long, env = "KILN_DATA_DIR", default_value = "/var/lib/kiln")]
    data_dir: PathBuf,
}

/// Whether logs are coloured: on a terminal, unless `NO_COLOR` is set to anything but the
/// empty string (no-color.org).
fn log_colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let traces = logs::init(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Sandbox(cmd) => sandbox::run(cmd).await,
            Command::Bench(cmd) => bench::run(cmd).await.map(|()| ExitCode::SUCCESS),
            Command::Repo(args) => Ok(remote::repo(args).await),
            Command::Image(args) => Ok(remote::image(args).await),
            Command::Session(args) => Ok(remote::session(args).await),
            Command::User(args) => Ok(remote::user(args).await),
            Command::Token(args) => Ok(remote::token(args).await),
            Command::LoginLink(args) => Ok(remote::login_link(args).await),
            Command::Audit(args) => Ok(remote::audit(args).await),
            Command::Status(args) => Ok(remote::status(args).await),
            Command::Stats(args) => Ok(remote::stats(args).await),
            Command::Admin(cmd) => admin::run(cmd).await.map(|()| ExitCode::SUCCESS),
            Command::Backup(args) => admin::backup(args).await.map(|()| ExitCode::SUCCESS),
            Command::Openapi => {
                print!("{}", kiln_server::openapi_json());
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    // The runtime goes first: the trace exporter sends what is left from outside it.
    drop(runtime);
    traces.shutdown();
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(
            &<super::Cli as clap::CommandFactory>::command(),
            "kiln",
            &mut missing,
        );
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        use super::log_colour;
        assert!(log_colour(true, None));
        assert!(log_colour(true, Some("".into())));
        assert!(!log_colour(true, Some("1".into())));
        assert!(!log_colour(false, None));
    }
}
