//! One model turn: the request (the conversation and the tools' specs), its streamed text as
//! events, and what the model said, kept even when the turn breaks off.

use crate::ModelObservation;
use crate::run::{Failure, PromptRun};
use kiln_model::{
    ContentBlock, Message, MessageRole, ModelClient, ModelRequest, StopReason, StreamEvent,
};
use kiln_protocol::api::{ErrorKind, Event};
use std::time::Instant;
use tracing::Instrument;

impl PromptRun<'_> {
    /// One model request, streamed into events. `None` when cancelled. Traced as a
    /// `model_request` span inside the prompt's.
    pub(crate) async fn model_turn(
        &mut self,
        model: &ModelClient,
        system: &str,
        conversation: &[Message],
        turn: u32,
    ) -> Result<Option<(Vec<ContentBlock>, StopReason)>, Failure> {
        let span = tracing::info_span!(
            "model_request",
            session = %self.session.id(),
            prompt = %self.prompt.id,
            turn,
            model = %model.config().display_name(),
        );
        self.streamed_turn(model, system, conversation, turn)
            .instrument(span)
            .await
    }

    async fn streamed_turn(
        &mut self,
        model: &ModelClient,
        system: &str,
        conversation: &[Message],
        turn: u32,
    ) -> Result<Option<(Vec<ContentBlock>, StopReason)>, Failure> {
        let request = ModelRequest {
            system: system.to_string(),
            messages: conversation.to_vec(),
            tools: self
                .tools
                .specs()
                .into_iter()
                .map(|spec| kiln_model::ToolSpec {
                    name: spec.name.to_string(),
                    description: spec.description.to_string(),
                    input_schema: spec.input_schema,
                })
                .collect(),
            max_tokens: None,
        };
        self.emit(Event::ModelRequest {
            prompt_id: self.prompt.id.clone(),
            turn,
            model: model.config().display_name(),
        })
        .await;
        let provider = model.config().provider.as_str();
        let sent = Instant::now();
        let session = self.session;
        let observe = |observation| session.observe_model(observation);
        let fail = |kind| observe(ModelObservation::Failed { provider, kind });
        let mut stream = tokio::select! {
            stream = model.stream(&request) => stream.map_err(|e| {
                fail(e.kind());
                Failure(ErrorKind::Model, format!("the model request failed: {e}"))
            })?,
            _ = self.cancel.cancelled() => return Ok(None),
        };
        observe(ModelObservation::Response {
            provider,
            took: sent.elapsed(),
        });
        let mut first_text = true;
        let mut blocks: Vec<ContentBlock> = Vec::new();
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = self.cancel.cancelled() => {
                    // Keep what was said so the conversation stays whole.
                    let _ = self.keep_partial(blocks).await;
                    return Ok(None);
                }
            };
            match next {
                Some(Ok(StreamEvent::TextDelta(text))) => {
                    if std::mem::take(&mut first_text) {
                        observe(ModelObservation::FirstText {
                            provider,
                            took: sent.elapsed(),
                        });
                    }
                    match blocks.last_mut() {
                        Some(ContentBlock::Text { text: all }) => all.push_str(&text),
                        _ => blocks.push(ContentBlock::Text { text: text.clone() }),
                    }
                    self.emit(Event::TextDelta {
                        prompt_id: self.prompt.id.clone(),
                        text,
                    })
                    .await;
                }
                Some(Ok(StreamEvent::ToolUse { id, name, input })) => {
                    blocks.push(ContentBlock::ToolUse { id, name, input });
                }
                Some(Ok(StreamEvent::Finished { stop_reason, usage })) => {
                    self.last_tokens = usage.input_tokens + usage.output_tokens;
                    observe(ModelObservation::Usage {
                        provider,
                        input_tokens: usage.input_tokens,
                        output_tokens: usage.output_tokens,
                    });
                    self.record_usage(model, turn, &usage).await?;
                    if blocks.is_empty() {
                        blocks.push(ContentBlock::Text {
                            text: String::new(),
                        });
                    }
                    return Ok(Some((blocks, stop_reason)));
                }
                Some(Err(e)) => {
                    fail(e.kind());
                    let _ = self.keep_partial(blocks).await;
                    return Err(Failure(
                        ErrorKind::Model,
                        format!("the model stream failed: {e}"),
                    ));
                }
                None => {
                    fail("stream_cut");
                    let _ = self.keep_partial(blocks).await;
                    return Err(Failure(
                        ErrorKind::Model,
                        "the model stream ended without finishing".into(),
                    ));
                }
            }
        }
    }

    /// Adds one response's usage to the prompt's and the session's sums, as a `model_usage`
    /// event; a daily budget it used up is kept for the loop to act on.
    pub(crate) async fn record_usage(
        &mut self,
        model: &ModelClient,
        turn: u32,
        usage: &kiln_model::Usage,
    ) -> Result<(), Failure> {
        let name = &model.config().model;
        let usage = self.agent.prices.usage(name, usage);
        self.usage.add(&usage);
        let event = Event::ModelUsage {
            prompt_id: self.prompt.id.clone(),
            turn,
            model: model.config().display_name(),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_read_tokens: usage.cache_read_tokens,
            cache_write_tokens: usage.cache_write_tokens,
            cost_usd: usage.cost_usd,
        };
        let recorded = self
            .session
            .record_usage(event, &usage)
            .await
            .map_err(|e| Failure(ErrorKind::Storage, format!("cannot record usage: {e}")))?;
        self.session_usage = recorded.session;
        if self.budget_hit.is_none() {
            self.budget_hit = recorded.budget;
        }
        Ok(())
    }

    /// Records the text of an unfinished turn (tool calls dropped: they never ran), so the
    /// stored conversation still alternates user and assistant.
    async fn keep_partial(&self, blocks: Vec<ContentBlock>) -> Result<(), Failure> {
        let mut text: String = blocks
            .into_iter()
            .filter_map(|b| match b {
                ContentBlock::Text { text } => Some(text),
                _ => None,
            })
            .collect();
        text.push_str("\n[interrupted]");
        let message = Message {
            role: MessageRole::Assistant,
            content: vec![ContentBlock::Text { text }],
        };
        self.store_message(&message).await
    }
}
