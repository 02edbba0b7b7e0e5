//! Repositories sessions can be started on. A repo's name appears in commands, URLs and
//! directory names, so it is validated here, once, for every caller.

use crate::db::{json_col, now_ms};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::stored::{StoredHook, hooks_json};
use kiln_core::Secret;
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
    let hooks: Vec<StoredHook> = json_col(row, 5)?;
    let hooks = hooks.into_iter().map(HookSpec::from).collect();
    let url: String = row.get(1)?;
    let credentials: Option<String> = row.get(7)?;
    Ok(Repo {
        name: row.get(0)?,
        url: display_url(&url, credentials.is_some_and(|c| !c.is_empty())),
        default_branch: row.get(2)?,
        description: row.get(3)?,
        created_at_ms: row.get(4)?,
        hooks,
        environment: row.get(6)?,
    })
}

const REPO_COLUMNS: &str =
    "name, url, default_branch, description, created_at_ms, hooks, environment, credentials";

/// Where and how the host fetches a repo: the url without credentials and, apart from it, the
/// credentials that were in it (`user:password`, percent-encoded as they were in the url).
/// Only the fetch reads this; everything else sees [`Repo::url`], which hides them.
#[derive(Debug, Clone)]
pub struct RepoRemote {
    pub url: String,
    pub credentials: Option<Secret<String>>,
}

/// Splits the userinfo out of an http(s) url: `https://user:token@host/x.git` →
/// (`https://host/x.git`, `user:token`). The userinfo ends at the last `@` before the first
/// `/` after `://` (as the schema's migration splits stored urls). Other schemes keep their
/// user (`ssh://git@host/x`, a name rather than a secret) but may not carry a password.
fn split_credentials(url: &str) -> Result<(String, Option<Secret<String>>)> {
    let Some(scheme_end) = url.find("://") else {
        return Ok((url.to_string(), None));
    };
    let (scheme, tail) = url.split_at(scheme_end + 3);
    let authority_end = tail.find('/').unwrap_or(tail.len());
    let Some(at) = tail[..authority_end].rfind('@') else {
        return Ok((url.to_string(), None));
    };
    let userinfo = &tail[..at];
    let http = scheme.eq_ignore_ascii_case("http://") || scheme.eq_ignore_ascii_case("https://");
    if !http {
        if userinfo.contains(':') {
            return Err(Error::Invalid(format!(
                "a {scheme}… url cannot carry a password; use an ssh key on the kiln host, or \
                 an https url with a token"
            )));
        }
        return Ok((url.to_string(), None));
    }
    let clean = format!("{scheme}{}", &tail[at + 1..]);
    let credentials = (!userinfo.is_empty()).then(|| Secret::new(userinfo.to_string()));
    Ok((clean, credentials))
}

/// Checks a repo name as registering one does (`Invalid` says what is wrong).
pub fn check_repo_name(name: &str) -> Result<()> {
    validate_name(name)
}

/// A repo url without its credentials, and the credentials (see `split_credentials`): for
/// checking a url before it is stored, without putting a secret on a command line.
pub fn split_repo_url(url: &str) -> Result<(String, Option<Secret<String>>)> {
    split_credentials(url)
}

/// How a repo's url is shown: `https://****@host/x.git` when it has credentials.
fn display_url(url: &str, has_credentials: bool) -> String {
    match url.find("://") {
        Some(i) if has_credentials => format!("{}****@{}", &url[..i + 3], &url[i + 3..]),
        _ => url.to_string(),
    }
}

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
        let (url, credentials) = split_credentials(&repo.url)?;
        let repo = Repo {
            name: repo.name.clone(),
            url: display_url(&url, credentials.is_some()),
            default_branch,
            description: repo.description.clone().unwrap_or_default(),
            hooks: repo.hooks.clone(),
            environment: repo.environment.clone().filter(|e| !e.is_empty()),
            created_at_ms: now_ms(),
        };
        let hooks = hooks_json(&repo.hooks)?;
        self.control(move |conn| {
            conn.execute(
                "INSERT INTO repos (name, url, default_branch, description, created_at_ms, hooks,
                                    environment, credentials)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    repo.name,
                    url,
                    repo.default_branch,
                    repo.description,
                    repo.created_at_ms,
                    hooks,
                    repo.environment,
                    credentials.as_ref().map(|c| c.expose()),
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
            .ok_or_else(|| Error::NotFound(format!("repo {name:?}")))
        })
        .await
    }

    /// Changes what `update` names; `NotFound` for an unknown repo.
    pub async fn update_repo(&self, name: &str, update: &UpdateRepo) -> Result<Repo> {
        if let Some(branch) = &update.default_branch {
            validate_branch(branch)?;
        }
        let hooks = update.hooks.as_deref().map(hooks_json).transpose()?;
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
                return Err(Error::NotFound(format!("repo {name:?}")));
            }
            Ok(conn.query_row(
                &format!("SELECT {REPO_COLUMNS} FROM repos WHERE name = ?1"),
                [&name],
                repo_row,
            )?)
        })
        .await
    }

    /// Where the host fetches `name` from, with the credentials kept apart from the url.
    pub async fn repo_remote(&self, name: &str) -> Result<RepoRemote> {
        let name = name.to_string();
        self.control(move |conn| {
            let found: Option<(String, Option<String>)> = conn
                .query_row(
                    "SELECT url, credentials FROM repos WHERE name = ?1",
                    [&name],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let (url, credentials) =
                found.ok_or_else(|| Error::NotFound(format!("repo {name:?}")))?;
            Ok(RepoRemote {
                url,
                credentials: credentials.filter(|c| !c.is_empty()).map(Secret::new),
            })
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
    use super::{display_url, split_credentials, validate_name};

    /// The migration splits urls stored before credentials were kept apart, the same way
    /// `split_credentials` splits new ones.
    #[test]
    fn the_migration_moves_credentials_out_of_stored_urls() {
        use crate::schema::CONTROL;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.db");
        let step = CONTROL
            .iter()
            .position(|m| m.name == "repo credentials apart from urls")
            .unwrap();
        let conn = crate::db::open(&path, true, &CONTROL[..step]).unwrap();
        let urls = [
            "https://u:p%40ss@example.com:8443/a/b.git",
            "HTTP://tok@host/x",
            "https://a@b@host",
            "https://host/x@y",
            "ssh://git@host/x",
            "/srv/git/x.git",
            "https://plain.example.com/x.git",
        ];
        for (i, url) in urls.iter().enumerate() {
            conn.execute(
                "INSERT INTO repos (name, url, default_branch, description, created_at_ms)
                 VALUES (?1, ?2, 'main', '', 0)",
                rusqlite::params![format!("r{i}"), url],
            )
            .unwrap();
        }
        drop(conn);
        let conn = crate::db::open(&path, false, CONTROL).unwrap();
        for (i, url) in urls.iter().enumerate() {
            let stored: (String, Option<String>) = conn
                .query_row(
                    "SELECT url, credentials FROM repos WHERE name = ?1",
                    [format!("r{i}")],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .unwrap();
            let (clean, credentials) = split_credentials(url).unwrap();
            let expected = (clean, credentials.map(|c| c.expose().clone()));
            assert_eq!(stored, expected, "{url}");
        }
    }

    #[test]
    fn credentials_leave_http_urls() {
        let split = |url: &str| {
            let (clean, credentials) = split_credentials(url).unwrap();
            (clean, credentials.map(|c| c.expose().clone()))
        };
        assert_eq!(
            split("https://u:p%40ss@example.com:8443/a/b.git"),
            (
                "https://example.com:8443/a/b.git".into(),
                Some("u:p%40ss".into())
            )
        );
        assert_eq!(
            split("HTTP://tok@host/x"),
            ("HTTP://host/x".into(), Some("tok".into()))
        );
        assert_eq!(
            split("https://a@b@host"),
            ("https://host".into(), Some("a@b".into()))
        );
        assert_eq!(split("https://host/x@y"), ("https://host/x@y".into(), None));
        assert_eq!(split("ssh://git@host/x"), ("ssh://git@host/x".into(), None));
        assert_eq!(split("/srv/git/x.git"), ("/srv/git/x.git".into(), None));
        assert!(split_credentials("ssh://git:secret@host/x").is_err());
        assert_eq!(display_url("https://host/x", true), "https://****@host/x");
        assert_eq!(display_url("https://host/x", false), "https://host/x");
    }

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
