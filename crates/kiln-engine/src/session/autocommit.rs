//! A prompt that ends with uncommitted changes has them committed for its author (`auto_commit`,
//! on in `kiln up`): the work of a prompt is a commit of the person who asked for it, with kiln
//! as the committer and the session's trailer (the checkout's hook adds it). The message is one
//! short model request over the diff stat; without an answer, the prompt's first line.

use super::port::Port;
use kiln_core::WORKDIR;
use kiln_model::{Message, ModelRequest, StreamEvent};
use kiln_protocol::api::PromptInfo;
use kiln_sandbox::{CommandLine, ExecRequest, Sandbox};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where the commit message is written in the sandbox.
const MESSAGE_FILE: &str = "/tmp/.kiln-commit-msg";
/// Bound on the message request.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// A commit subject's usual bound.
const SUBJECT_CHARS: usize = 72;

const SYSTEM: &str = "You write git commit messages. Reply with one line only: an imperative \
summary of the change, at most 72 characters, no quotes, no trailing period.";

impl Port<'_> {
    /// Commits what `prompt` left uncommitted on the session's branch, if anything, with the
    /// model's message when `ask_model`; a failure is logged (the prompt's outcome stands).
    pub(super) async fn auto_commit(&self, prompt: &PromptInfo, ask_model: bool) {
        if !self.inner.config.auto_commit {
            return;
        }
        // The sandbox the prompt used, if it is still there; never one made for this.
        let sandbox = {
            let Ok(slot) = self.actor.sandbox.try_lock() else {
                return;
            };
            match &slot.sandbox {
                Some(s) if s.guest().gone().is_none() => s.clone(),
                _ => return,
            }
        };
        if let Err(e) = self.commit_leftovers(&sandbox, prompt, ask_model).await {
            tracing::warn!(session = %self.actor.log.id(), error = %e, "cannot commit a prompt's uncommitted changes");
        }
    }

    async fn commit_leftovers(
        &self,
        sandbox: &Sandbox,
        prompt: &PromptInfo,
        ask_model: bool,
    ) -> Result<(), String> {
        let branch = format!("refs/heads/kiln/{}", self.actor.log.id());
        // Staged in the sandbox's index, so the stat covers new files too.
        let stat = format!(
            "set -e\ncd {WORKDIR}\n\
             [ \"$(git symbolic-ref -q HEAD)\" = '{branch}' ] || exit 0\n\
             [ -n \"$(git status --porcelain --untracked-files=all)\" ] || exit 0\n\
             git add -A\n\
             git diff --cached --stat=100 | tail -n 40\n"
        );
        let stat = run(sandbox, stat, BTreeMap::new()).await?;
        if stat.trim().is_empty() {
            return Ok(());
        }
        let asked = match ask_model {
            true => self.model_message(prompt, &stat).await,
            false => None,
        };
        let message = asked.unwrap_or_else(|| fallback_message(&prompt.text));
        sandbox
            .guest()
            .write_file(MESSAGE_FILE, message.as_bytes(), Some(0o600))
            .await
            .map_err(|e| e.to_string())?;
        let env = kiln_agent::Session::prompt_env(self, &prompt.author);
        let commit = format!(
            "cd {WORKDIR}\ngit commit --quiet --file={MESSAGE_FILE}\nstatus=$?\nrm -f {MESSAGE_FILE}\nexit $status\n"
        );
        run(sandbox, commit, env).await.map(|_| ())
    }

    /// The model's one-line message for the change, or none (no model, an error, a timeout,
    /// an empty answer).
    async fn model_message(&self, prompt: &PromptInfo, stat: &str) -> Option<String> {
        let model = self.inner.agent.model.as_ref()?;
        let request = ModelRequest {
            system: SYSTEM.into(),
            messages: vec![Message::user(format!(
                "The request was:\n{}\n\nThe changed files:\n{stat}",
                first_chars(&prompt.text, 2000)
            ))],
            tools: Vec::new(),
            max_tokens: Some(100),
        };
        let answer = async {
            let mut stream = model.stream(&request).await.ok()?;
            let mut text = String::new();
            while let Some(event) = stream.next().await {
                match event.ok()? {
                    StreamEvent::TextDelta(delta) => text.push_str(&delta),
                    StreamEvent::Finished { .. } => return Some(text),
                    _ => {}
                }
            }
            None
        };
        let text = tokio::time::timeout(MESSAGE_TIMEOUT, answer).await.ok()??;
        let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
        let line = line
            .trim_matches(|c| c == '"' || c == '`' || c == '\'')
            .trim();
        (!line.is_empty()).then(|| first_chars(line, SUBJECT_CHARS))
    }
}

/// The prompt's first line, as a subject.
fn fallback_message(prompt: &str) -> String {
    let line = prompt.lines().map(str::trim).find(|l| !l.is_empty());
    first_chars(
        line.unwrap_or("Changes made in a kiln session"),
        SUBJECT_CHARS,
    )
}

fn first_chars(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}

/// Runs a script as the sandbox user; its stdout, or its stderr as the error.
async fn run(
    sandbox: &Sandbox,
    script: String,
    env: BTreeMap<String, String>,
) -> Result<String, String> {
    let outcome = sandbox
        .run(ExecRequest {
            command: CommandLine::Shell { script },
            cwd: Some("/".into()),
            env,
            stdin: false,
            timeout_ms: Some(60_000),
        })
        .await
        .map_err(|e| e.to_string())?;
    if !outcome.status.success() {
        return Err(String::from_utf8_lossy(&outcome.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&outcome.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fallback_is_the_prompt_s_first_line() {
        assert_eq!(
            super::fallback_message("\n  Fix the parser  \nand more"),
            "Fix the parser"
        );
        assert_eq!(super::fallback_message(&"x".repeat(100)).len(), 72);
    }
}
