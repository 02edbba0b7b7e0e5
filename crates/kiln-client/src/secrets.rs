//! The client side of repo secrets: set one (the value goes in the request body, and nowhere
//! else: never in a URL, never logged), list names, remove one.

use crate::client::{Client, NO_BODY};
use crate::error::Result;
use kiln_core::Secret;
use kiln_protocol::api::{RepoSecret, SetSecret};
use reqwest::Method;

impl Client {
    /// Sets a secret of `repo` (admins); with `agent`, sessions get it too. The repo's image
    /// is rebuilt.
    pub async fn set_secret(
        &self,
        repo: &str,
        name: &str,
        value: Secret<String>,
        agent: bool,
    ) -> Result<RepoSecret> {
        let body = SetSecret {
            value: value.expose().clone(),
            agent,
        };
        self.call(Method::PUT, &["repos", repo, "secrets", name], Some(&body))
            .await
    }

    /// The repo's secrets by name (admins); never values.
    pub async fn secrets(&self, repo: &str) -> Result<Vec<RepoSecret>> {
        self.call(Method::GET, &["repos", repo, "secrets"], NO_BODY)
            .await
    }

    /// Removes a secret of `repo` (admins); the repo's image is rebuilt without it.
    pub async fn delete_secret(&self, repo: &str, name: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &["repos", repo, "secrets", name], NO_BODY)
            .await
    }
}
