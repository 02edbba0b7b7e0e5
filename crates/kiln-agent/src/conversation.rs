//! The conversation as the model sees it, stored in the session beside the events: loading it
//! (closing calls a crash left unanswered), extending it, prompts inserted while the agent works,
//! and the system prompt.

use crate::run::{Failure, PromptRun};
use kiln_core::WORKDIR;
use kiln_model::{ContentBlock, Message, MessageRole};
use kiln_protocol::api::ErrorKind;
use kiln_sandbox::{DOCS_DIR, Sandbox};
use serde::Deserialize;

impl PromptRun<'_> {
    /// Hands prompts queued in insert mode to the model as part of this prompt.
    pub(crate) async fn deliver_inserted(
        &self,
        conversation: &mut [Message],
    ) -> Result<(), Failure> {
        let into = self.prompt.id.clone();
        let inserted = self
            .session
            .take_inserted(&into)
            .await
            .map_err(|e| Failure(ErrorKind::Storage, format!("cannot read the queue: {e}")))?;
        let notices = self.session.take_notices();
        if inserted.is_empty() && notices.is_empty() {
            return Ok(());
        }
        // The last message is the user's (the prompt or tool results): add to it, so the
        // conversation keeps alternating.
        let last = conversation
            .last_mut()
            .expect("the prompt's message is always there");
        for prompt in inserted {
            last.content.push(ContentBlock::Text {
                text: format!("[{} adds] {}", prompt.author.name, prompt.text),
            });
        }
        for notice in notices {
            last.content.push(ContentBlock::Text {
                text: format!("[kiln] {notice}"),
            });
        }
        self.replace_last(last).await
    }

    pub(crate) async fn system_prompt(&self, sandbox: &Sandbox) -> String {
        let repo = self.session.repo();
        let mut system = format!(
            "You are a coding agent working in a sandbox on the repository {name} ({url}), \
             checked out at {WORKDIR} on a session branch made from {branch}. Use the tools to \
             read, search, edit and run code there. Work until the request is done, then say \
             briefly what you changed.",
            name = repo.name,
            url = kiln_core::redact_urls(&repo.url),
            branch = repo.default_branch,
        );
        if !repo.description.is_empty() {
            system.push_str(&format!("\n\nAbout the repository: {}", repo.description));
        }
        if sandbox.info().spec.docs.is_some() {
            system.push_str(&format!(
                "\n\n{DOCS_DIR}/environment.md describes this sandbox's environment (its image, \
                 how it was built and how long each step took, the network policy, the limits), \
                 and {DOCS_DIR}/kiln/ holds kiln's documentation (the environment definition, \
                 secrets, GitHub). Both are read-only. Read them when asked about kiln, the \
                 environment, or how to make this repository's setup faster."
            ));
        }
        if self.tools.get("spawn_session").is_some() {
            system.push_str(SUBSESSIONS);
        }
        let agents = format!("{WORKDIR}/AGENTS.md");
        if let Ok(bytes) = sandbox.guest().read_file(&agents).await {
            let text = String::from_utf8_lossy(&bytes);
            let text: String = text.chars().take(32 * 1024).collect();
            system.push_str(&format!(
                "\n\nThe repository's AGENTS.md says:\n<agents_md>\n{text}\n</agents_md>"
            ));
        }
        if self.plan.is_some() {
            system.push_str("\n\n");
            system.push_str(crate::plan::PLAN_MODE_SYSTEM);
        }
        system
    }

    pub(crate) async fn load_conversation(&self) -> Result<Vec<Message>, Failure> {
        let stored = self.session.conversation().await.map_err(|e| {
            Failure(
                ErrorKind::Storage,
                format!("cannot read the conversation: {e}"),
            )
        })?;
        stored
            .iter()
            .map(|value| {
                Message::deserialize(value).map_err(|e| {
                    Failure(
                        ErrorKind::Storage,
                        format!("the stored conversation is unreadable: {e}"),
                    )
                })
            })
            .collect()
    }

    /// A run that ended between the model's tool calls and their results — the process was
    /// killed, or the run panicked — left calls without results, which model APIs refuse:
    /// each gets a result saying it did not finish, so the conversation can go on.
    pub(crate) async fn close_unanswered_calls(
        &self,
        conversation: &mut Vec<Message>,
    ) -> Result<(), Failure> {
        let Some(last) = conversation.last() else {
            return Ok(());
        };
        if last.role != MessageRole::Assistant {
            return Ok(());
        }
        let results: Vec<ContentBlock> = last
            .content
            .iter()
            .filter_map(|block| match block {
                ContentBlock::ToolUse { id, .. } => Some(ContentBlock::ToolResult {
                    tool_use_id: id.clone(),
                    content: "interrupted: this call did not finish (kiln stopped or failed \
                              during it); check its effects before relying on them"
                        .into(),
                    is_error: true,
                }),
                _ => None,
            })
            .collect();
        if results.is_empty() {
            return Ok(());
        }
        let message = Message {
            role: MessageRole::User,
            content: results,
        };
        self.push(conversation, message).await
    }

    pub(crate) async fn push(
        &self,
        conversation: &mut Vec<Message>,
        message: Message,
    ) -> Result<(), Failure> {
        self.store_message(&message).await?;
        conversation.push(message);
        Ok(())
    }

    pub(crate) async fn store_message(&self, message: &Message) -> Result<(), Failure> {
        let value = serde_json::to_value(message).expect("messages serialize");
        let prompt = self.prompt.id.clone();
        self.session
            .push_message(&prompt, value)
            .await
            .map_err(|e| {
                Failure(
                    ErrorKind::Storage,
                    format!("cannot store the conversation: {e}"),
                )
            })
    }

    pub(crate) async fn replace_last(&self, message: &Message) -> Result<(), Failure> {
        let value = serde_json::to_value(message).expect("messages serialize");
        self.session.replace_last_message(value).await.map_err(|e| {
            Failure(
                ErrorKind::Storage,
                format!("cannot store the conversation: {e}"),
            )
        })
    }
}

/// The system prompt's word on sub-sessions, when their tools are offered.
const SUBSESSIONS: &str = "\n\nYou can start sub-sessions (spawn_session): other agents, each \
    with its own sandbox and branch, working in parallel. They help with research across several \
    repositories, with one large change split into several independent pull requests, and with \
    trying competing approaches side by side. They do not help with small changes or with steps \
    that build on each other or touch the same files: do those yourself. A sub-session does not \
    see this conversation, so give it a complete prompt; follow it with wait_sessions or \
    session_status, and you are told when one finishes.";
