//! [`ModelStream`]: pulls body chunks (each within the idle timeout), cuts them into SSE events and
//! hands those to the provider's decoder, yielding provider-neutral [`StreamEvent`]s in order.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::sse::{SseEvent, SseParser};
use crate::{ModelError, ProviderKind, StreamEvent, anthropic, openai};

/// How long to wait for the end of the body after the last event.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(100);

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

enum Decoder {
    Anthropic(anthropic::Decoder),
    OpenAi(openai::Decoder),
}

impl Decoder {
    fn on_event(&mut self, event: &SseEvent) -> Result<Vec<StreamEvent>, ModelError> {
        match self {
            Decoder::Anthropic(d) => d.on_event(event),
            Decoder::OpenAi(d) => d.on_event(event),
        }
    }

    fn on_eof(&mut self) -> Result<Vec<StreamEvent>, ModelError> {
        match self {
            Decoder::Anthropic(d) => d.on_eof(),
            Decoder::OpenAi(d) => d.on_eof(),
        }
    }
}

/// A response being streamed. Yields text deltas and tool calls, then one
/// [`StreamEvent::Finished`] or one error, then `None`. Dropping it closes the connection.
pub struct ModelStream {
    body: Body,
    parser: SseParser,
    decoder: Decoder,
    /// Decoded but not yet returned; an error or `Finished` ends the stream once returned.
    pending: VecDeque<Result<StreamEvent, ModelError>>,
    idle_timeout: Duration,
    /// Set once the body is exhausted or the stream ended; nothing more is read.
    done: bool,
}

impl fmt::Debug for ModelStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelStream")
            .field("pending", &self.pending.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ModelStream {
    pub(crate) fn new(
        response: reqwest::Response,
        provider: ProviderKind,
        idle_timeout: Duration,
    ) -> ModelStream {
        ModelStream {
            body: Box::pin(response.bytes_stream()),
            parser: SseParser::default(),
            decoder: match provider {
                ProviderKind::Anthropic => Decoder::Anthropic(anthropic::Decoder::default()),
                ProviderKind::OpenAi => Decoder::OpenAi(openai::Decoder::default()),
            },
            pending: VecDeque::new(),
            idle_timeout,
            done: false,
        }
    }

    /// The next event; `None` after `Finished` or an error.
    ///
    /// Cancel-safe: dropping the future loses no event, so it can sit in a `select!`.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, ModelError>> {
        loop {
            if !self.done && matches!(self.pending.front(), Some(Ok(StreamEvent::Finished { .. })))
            {
                // Reading the body to its end returns the connection to the pool instead of
                // closing it; the end normally arrives with the last event. Done before taking
                // `Finished` from the queue so that cancelling here loses nothing.
                let drain = async { while let Some(Ok(_)) = self.body.next().await {} };
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
                self.done = true;
            }
            if let Some(item) = self.pending.pop_front() {
                if matches!(item, Err(_) | Ok(StreamEvent::Finished { .. })) {
                    self.done = true;
                    self.pending.clear();
                }
                return Some(item);
            }
            if self.done {
                return None;
            }
            match tokio::time::timeout(self.idle_timeout, self.body.next()).await {
                Err(_) => self.pending.push_back(Err(ModelError::IdleTimeout)),
                Ok(Some(Ok(chunk))) => self.decode(&chunk),
                Ok(Some(Err(error))) => {
                    tracing::debug!(%error, "model response body failed");
                    self.pending.push_back(Err(ModelError::StreamCut));
                }
                Ok(None) => {
                    self.done = true;
                    let decoded = self.decoder.on_eof();
                    self.push(decoded);
                }
            }
        }
    }

    /// Queues what a chunk completes, stopping at the first error (after the events before it).
    fn decode(&mut self, chunk: &[u8]) {
        let events = match self.parser.feed(chunk) {
            Ok(events) => events,
            Err(error) => return self.pending.push_back(Err(error)),
        };
        for event in events {
            let decoded = self.decoder.on_event(&event);
            if !self.push(decoded) {
                return;
            }
        }
    }

    /// Queues decoded events or an error; false on error.
    fn push(&mut self, decoded: Result<Vec<StreamEvent>, ModelError>) -> bool {
        match decoded {
            Ok(events) => {
                self.pending.extend(events.into_iter().map(Ok));
                true
            }
            Err(error) => {
                self.pending.push_back(Err(error));
                false
            }
        }
    }
}
