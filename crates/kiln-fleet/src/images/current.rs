//! The repo's environment definition as it stands, for what reads it outside a build (the
//! agent's MCP servers): the one set through the API, else the file on the default branch of
//! the host's mirror as last fetched — never the session's checkout, which the agent may edit.

use super::environment::{ENVIRONMENT_FILE, Environment};
use crate::host::{git, git_bytes};
use crate::workspace::Workspaces;
use crate::{Error, Result};
use kiln_protocol::api::Repo;

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
                let spec = format!("refs/heads/{}:{ENVIRONMENT_FILE}", repo.default_branch);
                let timeout = self.git_timeout;
                // `cat-file -e` first: a missing file is no definition, not an error.
                if git(&mirror, &["cat-file", "-e", &spec], timeout)
                    .await
                    .is_err()
                {
                    return Ok(Environment::default());
                }
                let bytes = git_bytes(&mirror, &["cat-file", "blob", &spec], timeout).await?;
                String::from_utf8(bytes).map_err(|_| {
                    Error::Environment(format!("{ENVIRONMENT_FILE}: not UTF-8 text"))
                })?
            }
        };
        Environment::parse(&text).map_err(Error::Environment)
    }
}
