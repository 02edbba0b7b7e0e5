//! Repo secrets: sealed by the vault before the store sees them, opened for an image build
//! (every secret, into its setup, build and warm steps) and for a prompt (the `agent = true`
//! ones, into its commands' environment; all of them into its masker). Setting or removing one
//! rebuilds the repo's image, so the image is built with what the repo has now.
//!
//! Callers (the server) have authorized the request; names and values are checked here.

use super::Engine;
use crate::session::SessionSecrets;
use crate::{Error, Result};
use kiln_core::Secret;
use kiln_fleet::images::{BuildSecret, BuildSecrets};
use kiln_protocol::api::{RepoSecret, UserRef, check_secret_name, check_secret_value};
use kiln_store::SealedSecret;
use std::collections::BTreeMap;

/// What a repo secret is sealed under: a ciphertext opens only in its own row.
fn context(repo: &str, name: &str) -> String {
    format!("repo-secret:{repo}:{name}")
}

impl Engine {
    /// Sets (adds or replaces) a secret of `repo`; the value is sealed before it is stored and
    /// is never returned. When the value is new or changed, the repo's image is rebuilt.
    pub async fn set_secret(
        &self,
        by: &UserRef,
        repo: &str,
        name: &str,
        value: Secret<String>,
        agent: bool,
    ) -> Result<RepoSecret> {
        check_secret_name(name).map_err(|e| Error::Invalid(e.0))?;
        check_secret_value(value.expose()).map_err(|e| Error::Invalid(e.0))?;
        let repo = self.repo(repo).await?;
        let vault = &self.inner.vault;
        let fingerprint = vault.fingerprint(value.expose().as_bytes());
        let changed = self
            .inner
            .store
            .secret_fingerprints(&repo.name)
            .await?
            .iter()
            .find(|s| s.name == name)
            .is_none_or(|s| s.fingerprint != fingerprint);
        let sealed = SealedSecret {
            name: name.to_string(),
            ciphertext: vault.seal(&context(&repo.name, name), value.expose().as_bytes()),
            agent,
            fingerprint,
        };
        let listed = self
            .inner
            .store
            .set_secret(&repo.name, sealed, &by.id)
            .await?;
        tracing::info!(repo = %repo.name, secret = name, by = %by.name, agent, "repo secret set");
        if changed {
            self.rebuild_for_secrets(&repo.name).await;
        }
        Ok(listed)
    }

    /// The repo's secrets by name, never their values.
    pub async fn secrets(&self, repo: &str) -> Result<Vec<RepoSecret>> {
        Ok(self.inner.store.secrets(repo).await?)
    }

    /// Removes a secret and rebuilds the repo's image without it. `NotFound` when the repo has
    /// no such secret.
    pub async fn delete_secret(&self, by: &UserRef, repo: &str, name: &str) -> Result<()> {
        self.inner.store.delete_secret(repo, name).await?;
        tracing::info!(repo, secret = name, by = %by.name, "repo secret removed");
        self.rebuild_for_secrets(repo).await;
        Ok(())
    }

    /// Every secret of the repo, opened, for an image build.
    pub(crate) async fn build_secrets(&self, repo: &str) -> Result<BuildSecrets> {
        let mut secrets = BTreeMap::new();
        for sealed in self.inner.store.sealed_secrets(repo).await? {
            let value = self.unseal(repo, &sealed)?;
            secrets.insert(
                sealed.name,
                BuildSecret {
                    value,
                    fingerprint: sealed.fingerprint,
                },
            );
        }
        Ok(secrets)
    }

    /// What a prompt on the repo runs with: the `agent = true` secrets for its commands, and
    /// a masker of every secret (a setup secret may have been written into a file the agent
    /// reads).
    pub(crate) async fn session_secrets(&self, repo: &str) -> Result<SessionSecrets> {
        let mut all = Vec::new();
        let mut env = BTreeMap::new();
        for sealed in self.inner.store.sealed_secrets(repo).await? {
            let value = self.unseal(repo, &sealed)?;
            if sealed.agent {
                env.insert(sealed.name.clone(), value.expose().clone());
            }
            all.push((sealed.name, value));
        }
        let masker = kiln_vault::Masker::new(all.iter().map(|(name, v)| (name, v.expose())));
        Ok(SessionSecrets::new(env, masker))
    }

    /// One secret of the repo, opened (a remote MCP server's bearer token); `None` when the
    /// repo has no secret of that name.
    pub(crate) async fn secret_value(
        &self,
        repo: &str,
        name: &str,
    ) -> Result<Option<Secret<String>>> {
        for sealed in self.inner.store.sealed_secrets(repo).await? {
            if sealed.name == name {
                return Ok(Some(self.unseal(repo, &sealed)?));
            }
        }
        Ok(None)
    }

    fn unseal(&self, repo: &str, sealed: &SealedSecret) -> Result<Secret<String>> {
        let context = context(repo, &sealed.name);
        let bytes = self.inner.vault.unseal(&context, &sealed.ciphertext)?;
        String::from_utf8(bytes.expose().clone())
            .map(Secret::new)
            .map_err(|_| {
                Error::Vault(kiln_vault::Error::Format {
                    context,
                    problem: "the value is not UTF-8".into(),
                })
            })
    }

    /// Builds the repo's image now, so it gets the secrets as they are; when a build is
    /// running (it may have read them before the change), another one follows it.
    async fn rebuild_for_secrets(&self, repo: &str) {
        self.inner
            .rebuilds_wanted
            .lock()
            .expect("rebuilds lock")
            .insert(repo.to_string());
        match self.start_image_build(repo).await {
            Ok(id) => tracing::info!(repo, image = %id, "image build for changed secrets"),
            // The running build's end looks at `rebuilds_wanted`.
            Err(Error::Fleet(kiln_fleet::Error::BuildRunning { .. })) => {}
            Err(e) => {
                tracing::warn!(repo, error = %e, "cannot start an image build for changed secrets")
            }
        }
    }
}
