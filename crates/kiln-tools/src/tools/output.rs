//! Keeping tool output within what a model can usefully read, in bounded memory.
//!
//! Output is cut in the middle: the head shows how a command started, the tail how it ended (where
//! errors and summaries are), and the marker says how much is missing so the model can narrow its
//! next call. A command may print gigabytes; [`HeadTail`] keeps only the two ends while counting.

/// The most text a tool result carries, in bytes.
pub const OUTPUT_LIMIT: usize = 30_000;

/// Cuts `text` to at most about `limit` bytes, keeping its head and tail.
pub(crate) fn truncate(text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let half = limit / 2;
    let head = floor_boundary(&text, half);
    let tail = ceil_boundary(&text, text.len() - half);
    format!(
        "{}\n\n[... {} bytes truncated ...]\n\n{}",
        &text[..head],
        tail - head,
        &text[tail..]
    )
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// The first and last `half` bytes of a stream, and how many bytes passed in between.
#[derive(Debug)]
pub(crate) struct HeadTail {
    half: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
    total: u64,
}

impl HeadTail {
    pub(crate) fn new(limit: usize) -> Self {
        HeadTail {
            half: limit / 2,
            head: Vec::new(),
            tail: Vec::new(),
            total: 0,
        }
    }

    pub(crate) fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.half.saturating_sub(self.head.len());
        let take = room.min(data.len());
        self.head.extend_from_slice(&data[..take]);
        data = &data[take..];
        if data.is_empty() {
            return;
        }
        self.tail.extend_from_slice(data);
        // Trim only once the tail is twice its size, so trimming costs O(1) per byte.
        if self.tail.len() > 2 * self.half {
            let excess = self.tail.len() - self.half;
            self.tail.drain(..excess);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The text, with a marker where bytes were dropped.
    pub(crate) fn into_string(mut self) -> String {
        if self.tail.len() > self.half {
            let excess = self.tail.len() - self.half;
            self.tail.drain(..excess);
        }
        let kept = (self.head.len() + self.tail.len()) as u64;
        let head = String::from_utf8_lossy(&self.head);
        let tail = String::from_utf8_lossy(&self.tail);
        if kept == self.total {
            format!("{head}{tail}")
        } else {
            let cut = self.total - kept;
            format!("{head}\n\n[... {cut} bytes truncated ...]\n\n{tail}")
        }
    }
}

/// Decodes a byte stream as UTF-8 across chunk boundaries: a character split between two chunks
/// comes out whole; invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub(crate) struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub(crate) fn decode(&mut self, chunk: &[u8]) -> String {
        self.pending.extend_from_slice(chunk);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(err) => {
                    let valid = err.valid_up_to();
                    // Valid by construction: `valid_up_to` bytes decode.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match err.error_len() {
                        // An incomplete character at the end: keep it for the next chunk.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of the stream.
    pub(crate) fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_both_ends_and_says_so() {
        let text = format!("{}{}", "a".repeat(100), "b".repeat(100));
        let cut = truncate(text, 50);
        assert!(cut.starts_with(&"a".repeat(25)));
        assert!(cut.ends_with(&"b".repeat(25)));
        assert!(cut.contains("[... 150 bytes truncated ...]"), "{cut}");
        assert_eq!(truncate("short".into(), 50), "short");
        // Never splits a character.
        let cut = truncate("é".repeat(100), 51);
        assert!(cut.contains("truncated"));
    }

    #[test]
    fn head_tail_keeps_the_ends_of_a_long_stream() {
        let mut buf = HeadTail::new(10);
        for _ in 0..1000 {
            buf.push(b"0123456789");
        }
        let text = buf.into_string();
        assert!(text.starts_with("01234\n"), "{text}");
        assert!(text.ends_with("\n56789"), "{text}");
        assert!(text.contains("9990 bytes truncated"), "{text}");
        let mut small = HeadTail::new(100);
        small.push(b"hello ");
        small.push(b"world");
        assert_eq!(small.into_string(), "hello world");
    }

    #[test]
    fn utf8_survives_chunk_boundaries() {
        let bytes = "héllo wörld".as_bytes();
        let mut stream = Utf8Stream::default();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&stream.decode(&[*b]));
        }
        out.push_str(&stream.finish());
        assert_eq!(out, "héllo wörld");
        assert_eq!(Utf8Stream::default().decode(b"a\xffb"), "a\u{fffd}b");
    }
}
