//! The repo's environment definition as it stands, for what reads it outside a build (the
//! agent's MCP servers): the one set through the API, else the file on the default branch of
//! the host's mirror as last fetched — never the session's checkout, which the agent may edit.

use super::environment::{ENVIRONMENT_FILE, Environment};
use crate::host::{git, git_bytes};
use crate::workspace::Workspaces;
use crate::{Error, Result};
use kiln_protocol::api::Repo;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The definitions read from mirrors, by repo, with the state of the branch's ref files they
/// were read at: every prompt asks, and two `git` processes per prompt would sit between its
/// sandbox and its first model request. A fetch that moves the branch rewrites one of those
/// files, so a changed file is a changed key.
#[derive(Debug, Default)]
pub struct EnvironmentCache(std::sync::Mutex<HashMap<String, (RefState, Environment)>>);

type RefState = [Option<(SystemTime, u64)>; 2];

fn ref_state(mirror: &Path, branch: &str) -> RefState {
    let stat = |path: PathBuf| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    [
        stat(mirror.join("refs/heads").join(branch)),
        stat(mirror.join("packed-refs")),
    ]
}

impl Workspaces {
    /// The definition now; the default one when the repo has none (or no mirror yet).
    pub async fn current_environment(&self, repo: &Repo) -> Result<Environment> {
        let text = match &repo.environment {
            Some(text) => text.clone(),
            None => {
                let mirror = self.mirror(&repo.name);
                if !mirror.join("HEAD").is_file() {
                    return Ok(Environment::default());
                }
                let state = ref_state(&mirror, &repo.default_branch);
                let cache = &self.environments.0;
                if let Some((seen, environment)) = cache.lock().expect("cache lock").get(&repo.name)
                    && *seen == state
                {
                    return Ok(environment.clone());
                }
                let environment = self.read_environment(&mirror, repo).await?;
                cache
                    .lock()
                    .expect("cache lock")
                    .insert(repo.name.clone(), (state, environment.clone()));
                return Ok(environment);
            }
        };
        Environment::parse(&text).map_err(Error::Environment)
    }

    /// The definition on the default branch of the host's mirror.
    async fn read_environment(&self, mirror: &Path, repo: &Repo) -> Result<Environment> {
        let spec = format!("refs/heads/{}:{ENVIRONMENT_FILE}", repo.default_branch);
        let timeout = self.git_timeout;
        // `cat-file -e` first: a missing file is no definition, not an error.
        if git(mirror, &["cat-file", "-e", &spec], timeout)
            .await
            .is_err()
        {
            return Ok(Environment::default());
        }
        let bytes = git_bytes(mirror, &["cat-file", "blob", &spec], timeout).await?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::Environment(format!("{ENVIRONMENT_FILE}: not UTF-8 text")))?;
        Environment::parse(&text).map_err(Error::Environment)
    }
}
