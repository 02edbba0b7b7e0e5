//! A server-sent events parser (the WHATWG `text/event-stream` rules) that accepts the body in
//! chunks cut at arbitrary byte positions, as the network delivers it. Both providers stream SSE.

use crate::ModelError;

/// One dispatched event; `event` is `message` when the stream named none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub(crate) event: String,
    pub(crate) data: String,
}

/// A line or an event larger than this is a broken or hostile server, not a model response.
const MAX_EVENT_BYTES: usize = 16 << 20;

#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// The incomplete line at the end of the last chunk.
    line: Vec<u8>,
    /// The last line ended in `\r`: a `\n` starting the next chunk belongs to it.
    after_cr: bool,
    /// Whether a line was processed yet (a UTF-8 BOM is stripped from the first one).
    seen_line: bool,
    event: String,
    /// Each `data:` line's value followed by `\n`; the last `\n` is dropped on dispatch.
    data: String,
}

impl SseParser {
    /// Consumes the next chunk of the body and returns the events it completed.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, ModelError> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    self.line.extend_from_slice(&rest[..end]);
                    self.after_cr = rest[end] == b'\r';
                    rest = &rest[end + 1..];
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.process_line(&line) {
                        events.push(event);
                    }
                }
                None => {
                    self.line.extend_from_slice(rest);
                    rest = &[];
                }
            }
            if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
                return Err(ModelError::Malformed(format!(
                    "an SSE event is larger than {MAX_EVENT_BYTES} bytes"
                )));
            }
        }
        Ok(events)
    }

    fn process_line(&mut self, mut line: &[u8]) -> Option<SseEvent> {
        if !self.seen_line {
            self.seen_line = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None; // a comment, e.g. a keep-alive
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
            }
            _ => {} // `id`, `retry` and unknown fields mean nothing to a one-shot response
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return None;
        }
        data.pop();
        Some(SseEvent {
            event: if event.is_empty() {
                "message".to_string()
            } else {
                event
            },
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(parser.feed(chunk).unwrap());
        }
        events
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn named_events_comments_and_default_name() {
        let body = b": keep-alive\nevent: ping\ndata: {\"type\": \"ping\"}\n\ndata: [DONE]\n\n";
        assert_eq!(
            parse_all(&[body]),
            [ev("ping", "{\"type\": \"ping\"}"), ev("message", "[DONE]")]
        );
    }

    #[test]
    fn multi_line_data_crlf_cr_and_bom() {
        let body = b"\xEF\xBB\xBFdata:a\r\ndata:  b\r\rdata\nevent: x\n\n";
        assert_eq!(parse_all(&[body]), [ev("message", "a\n b"), ev("x", "")]);
    }

    #[test]
    fn an_event_without_data_or_blank_line_is_not_dispatched() {
        assert_eq!(parse_all(&[b"event: lonely\n\ndata: unterminated"]), []);
    }

    #[test]
    fn crlf_split_between_chunks_is_one_line_end() {
        assert_eq!(
            parse_all(&[b"data: a\r", b"\n\r", b"\n"]),
            [ev("message", "a")]
        );
    }

    #[test]
    fn oversized_event_is_malformed() {
        let mut parser = SseParser::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert!(matches!(parser.feed(&big), Err(ModelError::Malformed(_))));
    }

    fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts {
            chunks.push(bytes[start..cut].to_vec());
            start = cut;
        }
        chunks.push(bytes[start..].to_vec());
        chunks
    }

    fn feed_chunks(chunks: &[Vec<u8>]) -> Vec<SseEvent> {
        let slices: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        parse_all(&slices)
    }

    proptest! {
        #[test]
        fn written_events_survive_any_split(
            events in prop::collection::vec(
                (prop::option::of("[a-z_]{1,12}"), prop::collection::vec("\\PC{0,12}", 1..4), any::<bool>()),
                0..8,
            ),
            ending in prop::sample::select(vec!["\n", "\r\n", "\r"]),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut body = String::new();
            let mut expected = Vec::new();
            for (name, lines, comment) in &events {
                if *comment {
                    body.push_str(": comment");
                    body.push_str(ending);
                }
                if let Some(name) = name {
                    body.push_str(&format!("event: {name}{ending}"));
                }
                for line in lines {
                    body.push_str(&format!("data: {line}{ending}"));
                }
                body.push_str(ending);
                expected.push(ev(name.as_deref().unwrap_or("message"), &lines.join("\n")));
            }
            let chunks = split(body.as_bytes(), &cuts);
            prop_assert_eq!(feed_chunks(&chunks), expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_split_does_not_matter(
            bytes in prop::collection::vec(any::<u8>(), 0..2000),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
        ) {
            let whole = feed_chunks(std::slice::from_ref(&bytes));
            prop_assert_eq!(feed_chunks(&split(&bytes, &cuts)), whole);
        }
    }
}
