//! `kiln repo secret set|ls|rm`: a repo's secrets (admins). The value is read from standard
//! input, never from an argument (arguments show in `ps` and shell history), and is never
//! printed back.

use super::session::{ago, now_ms};
use super::{row, table};
use anyhow::{Result, bail};
use clap::Subcommand;
use kiln_client::Client;
use kiln_core::Secret;
use std::io::{IsTerminal, Read};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(crate) enum SecretCommand {
    /// Set a secret from standard input (one trailing newline is dropped): image builds'
    /// setup, build and warm steps get it as the variable NAME; the image is rebuilt.
    /// Example: `printf %s "$NPM_TOKEN" | kiln repo secret set web NPM_TOKEN`.
    Set {
        /// The repo's name.
        repo: String,
        /// The variable name, e.g. NPM_TOKEN.
        name: String,
        /// Give it to sessions too: the agent's commands can read it (and so the agent, and
        /// whoever prompts it). Choose this only for a value you accept the agent may use.
        #[arg(long)]
        agent: bool,
    },
    /// List a repo's secrets (names, never values).
    Ls {
        /// The repo's name.
        repo: String,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret; the image is rebuilt without it.
    Rm {
        /// The repo's name.
        repo: String,
        /// The variable name.
        name: String,
    },
}

/// The largest value read from standard input: the server's limit, and a little more so that
/// the server's message (which names the limit) is what people see.
const MAX_INPUT: u64 = kiln_protocol::api::SECRET_VALUE_BYTES as u64 + 2;

/// The value on standard input, without one trailing newline (`\n` or `\r\n`).
fn read_value(name: &str) -> Result<Secret<String>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("type the value of {name}, then Enter and Ctrl-D (it is shown as you type)");
    }
    let mut bytes = Vec::new();
    stdin.lock().take(MAX_INPUT + 1).read_to_end(&mut bytes)?;
    value_from(bytes, name)
}

/// The value in `bytes`, without one trailing newline; empty input is refused.
fn value_from(bytes: Vec<u8>, name: &str) -> Result<Secret<String>> {
    let mut value = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("the value on standard input is not UTF-8 text"))?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        bail!(
            "no value on standard input; pipe it in, e.g. `printf %s \"$VALUE\" | kiln repo \
             secret set REPO {name}`"
        );
    }
    Ok(Secret::new(value))
}

pub(crate) async fn run(client: &Client, command: SecretCommand) -> Result<ExitCode> {
    match command {
        SecretCommand::Set { repo, name, agent } => {
            kiln_protocol::api::check_secret_name(&name)?;
            let value = read_value(&name)?;
            let secret = client.set_secret(&repo, &name, value, agent).await?;
            let reach = if secret.agent {
                "image builds and sessions get it"
            } else {
                "image builds get it, sessions do not"
            };
            eprintln!("set secret {} of {repo}: {reach}", secret.name);
        }
        SecretCommand::Ls { repo, json } => {
            let secrets = client.secrets(&repo).await?;
            if json {
                out!("{}", serde_json::to_string(&secrets)?)?;
            } else {
                let now = now_ms();
                let mut rows = vec![row(["NAME", "SESSIONS", "UPDATED", "BY"])];
                rows.extend(secrets.iter().map(|s| {
                    row([
                        &s.name,
                        if s.agent { "yes" } else { "no" },
                        &ago(now, s.updated_at_ms),
                        &s.updated_by.name,
                    ])
                }));
                out_text!("{}", table(&rows))?;
            }
        }
        SecretCommand::Rm { repo, name } => {
            client.delete_secret(&repo, &name).await?;
            eprintln!("removed secret {name} of {repo}; its image is rebuilt without it");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::value_from;

    #[test]
    fn one_trailing_newline_is_dropped_and_empty_input_refused() {
        let value = |input: &str| {
            value_from(input.as_bytes().to_vec(), "X")
                .map(|v| v.expose().clone())
                .map_err(|e| e.to_string())
        };
        assert_eq!(value("abc\n").unwrap(), "abc");
        assert_eq!(value("abc\r\n").unwrap(), "abc");
        assert_eq!(value("abc\n\n").unwrap(), "abc\n");
        assert_eq!(value("a b ").unwrap(), "a b ");
        assert!(
            value("\n")
                .unwrap_err()
                .contains("no value on standard input")
        );
        assert!(value("").is_err());
        assert!(value_from(vec![0xff], "X").is_err());
    }
}
