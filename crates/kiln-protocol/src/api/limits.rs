//! Limits on every field a client sends, in one place. Lengths are in characters (Unicode scalar
//! values, what JSON Schema's `maxLength` counts), never bytes, so a name in Japanese gets the
//! same room as one in English. The server checks every request body with [`Validate`] before a
//! handler sees it; the OpenAPI document states the same numbers (`maxLength`, `maxItems`; a
//! test keeps them equal).

use super::access::SetRepoAccess;
use super::rest::{
    CreateRepo, CreateSession, HookSpec, SendPrompt, StopSession, UpdateRepo, UpdateSession,
};

/// User, token and repo names.
pub const NAME_CHARS: usize = 64;
/// A repo's clone URL.
pub const URL_CHARS: usize = 2_048;
/// A branch name (also checked as git checks it).
pub const BRANCH_CHARS: usize = 200;
/// A repo's description.
pub const DESCRIPTION_CHARS: usize = 2_000;
/// A session's title.
pub const TITLE_CHARS: usize = 200;
/// A prompt's text.
pub const PROMPT_CHARS: usize = 100_000;
/// An environment definition (TOML).
pub const ENVIRONMENT_CHARS: usize = 65_536;
/// Hooks of one repo.
pub const HOOKS_MAX: usize = 32;
/// A hook's tool matcher.
pub const MATCHER_CHARS: usize = 256;
/// Arguments of a hook's command.
pub const COMMAND_ARGS_MAX: usize = 64;
/// One argument of a hook's command.
pub const ARG_CHARS: usize = 4_096;
/// Members one repo may list (`PUT /api/repos/{name}/access`).
pub const REPO_MEMBERS_MAX: usize = 10_000;

/// A request body that breaks a limit; the message names the field and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Checks a request body's fields against their limits.
pub trait Validate {
    fn validate(&self) -> Result<(), Invalid>;
}

/// `value` has at most `max` characters.
pub fn check_chars(field: &str, value: &str, max: usize) -> Result<(), Invalid> {
    // Counting stops just past the limit: a 1 MB title costs no more than a short one.
    let count = value.chars().take(max + 1).count();
    if count > max {
        return Err(Invalid(format!(
            "`{field}` is longer than {max} characters; shorten it"
        )));
    }
    Ok(())
}

fn check_items<T>(field: &str, items: &[T], max: usize) -> Result<(), Invalid> {
    if items.len() > max {
        return Err(Invalid(format!(
            "`{field}` has {} items; the limit is {max}",
            items.len()
        )));
    }
    Ok(())
}

fn check_optional(field: &str, value: &Option<String>, max: usize) -> Result<(), Invalid> {
    value
        .as_deref()
        .map_or(Ok(()), |value| check_chars(field, value, max))
}

/// A branch name: at most [`BRANCH_CHARS`] and valid for git.
pub fn check_branch(field: &str, value: &str) -> Result<(), Invalid> {
    check_chars(field, value, BRANCH_CHARS)?;
    kiln_core::check_branch_name(value).map_err(|why| {
        Invalid(format!(
            "`{field}` {value:?} is not a git branch name: it {why}"
        ))
    })
}

fn check_hooks(hooks: &[HookSpec]) -> Result<(), Invalid> {
    check_items("hooks", hooks, HOOKS_MAX)?;
    for hook in hooks {
        check_optional("hooks[].matcher", &hook.matcher, MATCHER_CHARS)?;
        check_items("hooks[].command", &hook.command, COMMAND_ARGS_MAX)?;
        for arg in &hook.command {
            check_chars("hooks[].command[]", arg, ARG_CHARS)?;
        }
    }
    Ok(())
}

impl Validate for CreateRepo {
    fn validate(&self) -> Result<(), Invalid> {
        check_chars("name", &self.name, NAME_CHARS)?;
        check_chars("url", &self.url, URL_CHARS)?;
        if let Some(branch) = &self.default_branch {
            check_branch("default_branch", branch)?;
        }
        check_optional("description", &self.description, DESCRIPTION_CHARS)?;
        check_optional("environment", &self.environment, ENVIRONMENT_CHARS)?;
        check_hooks(&self.hooks)
    }
}

impl Validate for UpdateRepo {
    fn validate(&self) -> Result<(), Invalid> {
        if let Some(branch) = &self.default_branch {
            check_branch("default_branch", branch)?;
        }
        check_optional("description", &self.description, DESCRIPTION_CHARS)?;
        check_optional("environment", &self.environment, ENVIRONMENT_CHARS)?;
        self.hooks.as_deref().map_or(Ok(()), check_hooks)
    }
}

impl Validate for CreateSession {
    fn validate(&self) -> Result<(), Invalid> {
        check_chars("repo", &self.repo, NAME_CHARS)?;
        check_chars("prompt", &self.prompt, PROMPT_CHARS)?;
        check_optional("title", &self.title, TITLE_CHARS)
    }
}

impl Validate for SendPrompt {
    fn validate(&self) -> Result<(), Invalid> {
        check_chars("text", &self.text, PROMPT_CHARS)
    }
}

impl Validate for SetRepoAccess {
    fn validate(&self) -> Result<(), Invalid> {
        if self.members.len() > REPO_MEMBERS_MAX {
            return Err(Invalid(format!(
                "`members` lists more than {REPO_MEMBERS_MAX} users"
            )));
        }
        Ok(())
    }
}

/// Bodies with nothing unbounded in them.
macro_rules! bounded_by_type {
    ($($ty:ty),*) => {$(
        impl Validate for $ty {
            fn validate(&self) -> Result<(), Invalid> {
                Ok(())
            }
        }
    )*};
}

bounded_by_type!(StopSession, UpdateSession);

#[cfg(test)]
mod tests {
    use super::super::people::{CreateToken, CreateUser};
    use super::*;
    use utoipa::PartialSchema;

    fn max_length<T: PartialSchema>(field: &str) -> serde_json::Value {
        let schema = serde_json::to_value(T::schema()).unwrap();
        schema["properties"][field]["maxLength"].clone()
    }

    /// The OpenAPI document states the limits the server enforces.
    #[test]
    fn schemas_state_the_limits() {
        assert_eq!(max_length::<CreateUser>("name"), NAME_CHARS);
        assert_eq!(max_length::<CreateToken>("name"), NAME_CHARS);
        assert_eq!(max_length::<CreateRepo>("name"), NAME_CHARS);
        assert_eq!(max_length::<CreateRepo>("url"), URL_CHARS);
        assert_eq!(max_length::<CreateRepo>("default_branch"), BRANCH_CHARS);
        assert_eq!(max_length::<CreateRepo>("description"), DESCRIPTION_CHARS);
        assert_eq!(max_length::<CreateRepo>("environment"), ENVIRONMENT_CHARS);
        assert_eq!(max_length::<UpdateRepo>("default_branch"), BRANCH_CHARS);
        assert_eq!(max_length::<UpdateRepo>("description"), DESCRIPTION_CHARS);
        assert_eq!(max_length::<UpdateRepo>("environment"), ENVIRONMENT_CHARS);
        assert_eq!(max_length::<CreateSession>("repo"), NAME_CHARS);
        assert_eq!(max_length::<CreateSession>("prompt"), PROMPT_CHARS);
        assert_eq!(max_length::<CreateSession>("title"), TITLE_CHARS);
        assert_eq!(max_length::<SendPrompt>("text"), PROMPT_CHARS);
        assert_eq!(max_length::<HookSpec>("matcher"), MATCHER_CHARS);
        let hook = serde_json::to_value(HookSpec::schema()).unwrap();
        assert_eq!(hook["properties"]["command"]["maxItems"], COMMAND_ARGS_MAX);
        let repo = serde_json::to_value(CreateRepo::schema()).unwrap();
        assert_eq!(repo["properties"]["hooks"]["maxItems"], HOOKS_MAX);
    }

    #[test]
    fn lengths_are_characters_not_bytes() {
        let title = "é".repeat(TITLE_CHARS);
        let session = |title: String| CreateSession {
            plan: false,
            repo: "demo".into(),
            prompt: "hi".into(),
            title: Some(title),
        };
        assert_eq!(session(title.clone()).validate(), Ok(()));
        let error = session(title + "é").validate().unwrap_err();
        assert!(
            error.0.contains("`title`") && error.0.contains("200"),
            "{error}"
        );
    }

    #[test]
    fn branches_are_checked_as_git_does() {
        let update = |branch: &str| UpdateRepo {
            default_branch: Some(branch.into()),
            ..Default::default()
        };
        assert_eq!(update("release/1.2").validate(), Ok(()));
        for bad in ["main:refs/heads/x", "a..b", "-x", "x.lock", "a b", ""] {
            let error = update(bad).validate().unwrap_err();
            assert!(error.0.contains("default_branch"), "{error}");
        }
    }
}
