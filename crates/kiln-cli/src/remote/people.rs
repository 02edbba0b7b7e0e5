//! `kiln user …` and `kiln token …`: the people who may use kiln and their API tokens, without
//! curl. A token is printed once, when it is made (kiln keeps only its hash); listings show
//! names, owners and dates, never tokens.

use super::session::ago;
use super::{row, table};
use anyhow::{Result, bail};
use clap::Subcommand;
use kiln_client::Client;
use kiln_core::{TokenId, UserId};
use kiln_protocol::api::{CreateToken, CreateUser, TokenScope, UpdateUser, User, Validate};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Add a user (admins) and print a first API token for them.
    Add {
        /// The user's handle: letters, digits, `.`, `_`, `-` (e.g. `bob.smith`).
        name: String,
        /// How their commits are signed, e.g. "Bob Smith" (default: the handle).
        #[arg(long, value_name = "NAME")]
        display_name: Option<String>,
        /// The email their commits carry, e.g. bob@example.com.
        #[arg(long, value_name = "EMAIL")]
        email: Option<String>,
        /// Make the user an admin (may add repos and users, see every session).
        #[arg(long)]
        admin: bool,
        /// Print the new user and token as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the users (admins).
    Ls {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change a user's display name or email (admins; anyone for themselves).
    Set {
        /// The user, by handle or id.
        user: String,
        /// How their commits are signed ("" resets it to the handle).
        #[arg(long, value_name = "NAME")]
        display_name: Option<String>,
        /// The email their commits carry ("" removes it).
        #[arg(long, value_name = "EMAIL")]
        email: Option<String>,
    },
    /// Deactivate a user (admins): their tokens and browser sign-ins stop working at once;
    /// their sessions and prompts keep their name.
    Rm {
        /// The user, by handle or id.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Make an API token and print it (once: kiln keeps only its hash).
    Create {
        /// What the token is for, e.g. "laptop" or "ci".
        name: String,
        /// The token stops working after this many days (default: never).
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
        /// Make it for this user instead of yourself (admins), by handle or id.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// A read-only token (dashboards, bots): it reads what the user may read and changes
        /// nothing.
        #[arg(long)]
        read_only: bool,
        /// Print the token and its details as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List your tokens (never the tokens themselves).
    Ls {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one of your tokens: it stops working at once.
    Revoke {
        /// The token's id, as `kiln token ls` shows it (`t-…`).
        id: TokenId,
    },
}

pub(crate) async fn user(client: &Client, command: UserCommand) -> Result<ExitCode> {
    match command {
        UserCommand::Add {
            name,
            display_name,
            email,
            admin,
            json,
        } => {
            let body = CreateUser {
                name,
                admin,
                display_name,
                email,
            };
            // Checked here too, so a mistake is said before anything is sent.
            body.validate()?;
            let user = client.create_user(&body).await?;
            let token = client
                .create_token(&CreateToken {
                    name: "first token (kiln user add)".into(),
                    user_id: Some(user.id.clone()),
                    expires_in_days: None,
                    scope: TokenScope::Full,
                })
                .await?;
            if json {
                let out = serde_json::json!({"user": user, "token": token});
                out!("{out}")?;
            } else {
                out!("{}", token.token)?;
                eprintln!(
                    "added {} ({}){}; the line above is their API token, shown this once: give \
                     it to them for KILN_TOKEN",
                    user.name,
                    user.id,
                    if user.admin { ", an admin" } else { "" }
                );
            }
        }
        UserCommand::Ls { json } => {
            let users = client.users().await?;
            if json {
                out!("{}", serde_json::to_string(&users)?)?;
            } else {
                out_text!("{}", users_table(&users, super::session::now_ms()))?;
            }
        }
        UserCommand::Set {
            user,
            display_name,
            email,
        } => {
            if display_name.is_none() && email.is_none() {
                bail!("say what to change: --display-name NAME and/or --email EMAIL");
            }
            let body = UpdateUser {
                display_name,
                email,
            };
            body.validate()?;
            let id = resolve_user(client, &user).await?;
            let user = client.update_user(&id, &body).await?;
            out!("{}: commits as {}", user.name, identity(&user))?;
        }
        UserCommand::Rm { user } => {
            let id = resolve_user(client, &user).await?;
            let user = client.deactivate_user(&id).await?;
            eprintln!(
                "deactivated {}: their tokens and sign-ins no longer work",
                user.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn token(client: &Client, command: TokenCommand) -> Result<ExitCode> {
    match command {
        TokenCommand::Create {
            name,
            expires_in_days,
            user,
            read_only,
            json,
        } => {
            let user_id = match user {
                Some(user) => Some(resolve_user(client, &user).await?),
                None => None,
            };
            let body = CreateToken {
                name,
                user_id,
                expires_in_days,
                scope: if read_only {
                    TokenScope::ReadOnly
                } else {
                    TokenScope::Full
                },
            };
            body.validate()?;
            let created = client.create_token(&body).await?;
            if json {
                out!("{}", serde_json::to_string(&created)?)?;
            } else {
                out!("{}", created.token)?;
                let until = match created.info.expires_at_ms {
                    Some(_) => format!(" for {} days", expires_in_days.unwrap_or_default()),
                    None => String::new(),
                };
                let reads = match created.info.scope {
                    TokenScope::ReadOnly => " (read-only)",
                    TokenScope::Full => "",
                };
                eprintln!(
                    "token {} ({}){reads} works{until}; it is shown this once: put it in KILN_TOKEN",
                    created.info.id, created.info.name
                );
            }
        }
        TokenCommand::Ls { json } => {
            let tokens = client.tokens().await?;
            if json {
                out!("{}", serde_json::to_string(&tokens)?)?;
            } else {
                let now = super::session::now_ms();
                let mut rows = vec![row([
                    "ID",
                    "NAME",
                    "SCOPE",
                    "CREATED",
                    "LAST USED",
                    "EXPIRES",
                ])];
                rows.extend(tokens.iter().map(|t| {
                    let used = t.last_used_ms.map_or("never".into(), |at| ago(now, at));
                    let expires = t.expires_at_ms.map_or("never".into(), |at| until(now, at));
                    row([
                        t.id.as_str(),
                        &t.name,
                        match t.scope {
                            TokenScope::Full => "full",
                            TokenScope::ReadOnly => "read-only",
                        },
                        &ago(now, t.created_at_ms),
                        &used,
                        &expires,
                    ])
                }));
                out_text!("{}", table(&rows))?;
            }
        }
        TokenCommand::Revoke { id } => {
            client.delete_token(&id).await?;
            eprintln!("revoked token {id}: it no longer works");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A user id for a handle or id, as an admin sees the users; a caller who may not list users
/// can still name themselves.
pub(crate) async fn resolve_user(client: &Client, wanted: &str) -> Result<UserId> {
    if let Some(id) = UserId::parse(wanted) {
        return Ok(id);
    }
    let me = client.me().await?.user;
    if me.name == wanted {
        return Ok(me.id);
    }
    let users = client.users().await?;
    users
        .into_iter()
        .find(|u| u.name == wanted)
        .map(|u| u.id)
        .ok_or_else(|| anyhow::anyhow!("no user named {wanted:?} (see kiln user ls)"))
}

/// `Name <email>` as commits show it.
fn identity(user: &User) -> String {
    let name = if user.display_name.is_empty() {
        &user.name
    } else {
        &user.display_name
    };
    let email = user
        .email
        .clone()
        .unwrap_or_else(|| format!("{}@users.kiln.local", user.id));
    format!("{name} <{email}>")
}

fn users_table(users: &[User], now: i64) -> String {
    let mut rows = vec![row(["NAME", "ID", "ROLE", "COMMITS AS", "CREATED"])];
    rows.extend(users.iter().map(|u| {
        let role = match (u.deactivated, u.admin) {
            (true, _) => "deactivated",
            (false, true) => "admin",
            (false, false) => "user",
        };
        row([
            u.name.as_str(),
            u.id.as_str(),
            role,
            &identity(u),
            &ago(now, u.created_at_ms),
        ])
    }));
    table(&rows)
}

/// "in 3d"; exact enough for a listing.
fn until(now_ms: i64, then_ms: i64) -> String {
    if then_ms <= now_ms {
        return "expired".into();
    }
    let secs = (then_ms - now_ms) / 1000;
    match secs {
        s if s < 3600 => format!("in {}m", s / 60),
        s if s < 86_400 => format!("in {}h", s / 3600),
        s => format!("in {}d", s / 86_400),
    }
}
