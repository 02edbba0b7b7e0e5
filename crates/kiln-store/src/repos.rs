//! Repositories sessions can be started on. A repo's name appears in commands, URLs and
//! directory names, so it is validated here, once, for every caller.

use crate::db::{json_col, now_ms};
use crate::error::{Error, Result};
use crate::store::Store;
use kiln_protocol::api::{CreateRepo, HookSpec, Repo, UpdateRepo};
use rusqlite::{OptionalExtension, params};

const DEFAULT_BRANCH: &str = "main";

/// `[A-Za-z0-9._-]{1,64}`, not starting with `.`: safe as a path component and in a URL, and
/// never `.`, `..` or a hidden file.
fn validate_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "repo name {name:?} must be 1 to 64 of A-Z a-z 0-9 . _ - and not start with '.'"
        )))
    }
}

fn repo_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Repo> {
    let hooks: Vec<HookSpec> = json_col(row, 5)?;
    Ok(Repo {
        name: row.get(0)?,
        url: row.get(1)?,
        default_branch: row.get(2)?,
        description: row.get(3)?,
        created_at_ms: row.get(4)?,
        hooks,
        environment: row.get(6)?,
    })
}

const REPO_COLUMNS: &str =
    "name, url, default_branch, description, created_at_ms, hooks, environment";

fn validate_branch(branch: &str) -> Result<()> {
    kiln_protocol::api::check_branch("default_branch", branch).map_err(|e| Error::Invalid(e.0))
}

impl Store {
    /// Registers a repo. `Invalid` for a bad name, an empty url or an empty branch; `Conflict`
    /// when the name is taken.
    pub async fn create_repo(&self, repo: &CreateRepo) -> Result<Repo> {
        validate_name(&repo.name)?;
        if repo.url.trim().is_empty() {
            return Err(Error::Invalid("repo url must not be empty".into()));
        }
        let default_branch = repo
            .default_branch
            .clone()
            .unwrap_or_else(|| DEFAULT_BRANCH.into());
        validate_branch(&default_branch)?;
        let repo = Repo {
            name: repo.name.clone(),
            url: repo.url.clone(),
            default_branch,
            description: repo.description.clone().unwrap_or_default(),
            hooks: repo.hooks.clone(),
            environment: repo.environment.clone().filter(|e| !e.is_empty()),
            created_at_ms: now_ms(),
        };
        let hooks = serde_json::to_string(&repo.hooks)?;
        self.control(move |conn| {
            conn.execute(
                "INSERT INTO repos (name, url, default_branch, description, created_at_ms, hooks,
                                    environment)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    repo.name,
                    repo.url,
                    repo.default_branch,
                    repo.description,
                    repo.created_at_ms,
                    hooks,
                    repo.environment,
                ],
            )
            .map_err(Error::from)
            .map_err(|e| match e {
                e if e.is_unique_violation() => {
                    Error::Conflict(format!("a repo named {:?} exists", repo.name))
                }
                e => e,
            })?;
            Ok(repo)
        })
        .await
    }

    pub async fn repo(&self, name: &str) -> Result<Repo> {
        let name = name.to_string();
        self.control(move |conn| {
            conn.query_row(
                &format!("SELECT {REPO_COLUMNS} FROM repos WHERE name = ?1"),
                [&name],
                repo_row,
            )
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("no repo named {name:?}")))
        })
        .await
    }

    /// Changes what `update` names; `NotFound` for an unknown repo.
    pub async fn update_repo(&self, name: &str, update: &UpdateRepo) -> Result<Repo> {
        if let Some(branch) = &update.default_branch {
            validate_branch(branch)?;
        }
        let hooks = update
            .hooks
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        let (name, update) = (name.to_string(), update.clone());
        self.control(move |conn| {
            let changed = conn.execute(
                "UPDATE repos SET default_branch = coalesce(?2, default_branch),
                     description = coalesce(?3, description), hooks = coalesce(?4, hooks),
                     environment = CASE WHEN ?5 IS NULL THEN environment ELSE nullif(?5, '') END
                 WHERE name = ?1",
                params![
                    name,
                    update.default_branch,
                    update.description,
                    hooks,
                    update.environment
                ],
            )?;
            if changed == 0 {
                return Err(Error::NotFound(format!("no repo named {name:?}")));
            }
            Ok(conn.query_row(
                &format!("SELECT {REPO_COLUMNS} FROM repos WHERE name = ?1"),
                [&name],
                repo_row,
            )?)
        })
        .await
    }

    /// Every repo, by name.
    pub async fn list_repos(&self) -> Result<Vec<Repo>> {
        self.control(|conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {REPO_COLUMNS} FROM repos ORDER BY name"))?;
            let repos = stmt
                .query_map([], repo_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(repos)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn repo_names() {
        for good in ["kiln", "a", "my-repo_2.0", &"x".repeat(64)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "ü",
            &"x".repeat(65),
            "a\n",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
