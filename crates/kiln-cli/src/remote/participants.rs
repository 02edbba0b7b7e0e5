//! `kiln session shares|unshare|role|kick|leave|archive|rm`: who is in a session and how it
//! ends. Each is one or two API calls; owners' rules (who may change whom) are the server's.

use super::people::resolve_user;
use super::session::{AnyRole, SessionCommand, ago, now_ms};
use super::{row, table};
use anyhow::Result;
use kiln_client::Client;
use kiln_core::Role;
use std::process::ExitCode;

pub(crate) async fn run(client: &Client, command: SessionCommand) -> Result<ExitCode> {
    match command {
        SessionCommand::Shares { id, json } => {
            let shares = client.shares(&id).await?;
            if json {
                out!("{}", serde_json::to_string(&shares)?)?;
            } else {
                let now = now_ms();
                let mut rows = vec![row(["ID", "ROLE", "BY", "CREATED", "EXPIRES", "USES"])];
                rows.extend(shares.iter().map(|s| {
                    let expires = s.expires_at_ms.map_or("never".into(), |at| {
                        format!("in {}h", (at - now).max(0) / 3_600_000)
                    });
                    row([
                        s.id.as_str(),
                        s.role.as_str(),
                        &s.created_by.name,
                        &ago(now, s.created_at_ms),
                        &expires,
                        if s.single_use { "once" } else { "many" },
                    ])
                }));
                out_text!("{}", table(&rows))?;
            }
        }
        SessionCommand::Unshare { id, share } => {
            client.revoke_share(&id, &share).await?;
            eprintln!("revoked share link {share} of {id}: it no longer works");
        }
        SessionCommand::Role { id, user, role } => {
            let role = match role {
                AnyRole::Viewer => Role::Viewer,
                AnyRole::Collaborator => Role::Collaborator,
                AnyRole::Owner => Role::Owner,
            };
            let user_id = resolve_user(client, &user).await?;
            client.set_role(&id, &user_id, role).await?;
            eprintln!("{user} is now {role} in {id}");
        }
        SessionCommand::Kick { id, user } => {
            let user_id = resolve_user(client, &user).await?;
            client.remove_participant(&id, &user_id).await?;
            eprintln!("removed {user} from {id}");
        }
        SessionCommand::Leave { id } => {
            let me = client.me().await?.user;
            client.remove_participant(&id, &me.id).await?;
            eprintln!("left {id}");
        }
        SessionCommand::Archive { id } => {
            client.archive_session(&id).await?;
            eprintln!(
                "archived {id}: it is stopped and left out of kiln session ls (see it with \
                 --archived)"
            );
        }
        SessionCommand::Rm { id } => {
            client.delete_session(&id).await?;
            eprintln!("deleted {id}: its sandbox, log and snapshots are gone");
        }
        other => unreachable!("not a participants command: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}
