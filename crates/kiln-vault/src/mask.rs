//! Masking secret values in text before it is stored or streamed: build logs, tool output,
//! event text.
//!
//! What is masked, each replaced by `[secret NAME]`:
//! - the value itself, when it has at least [`MIN_MASKED_BYTES`] bytes (a shorter value would
//!   mask unrelated text everywhere, and could be guessed anyway; kiln refuses to store one);
//! - each line of a multi-line value (a PEM key printed in part, or with `\r\n`), when the line
//!   has at least 8 bytes;
//! - its standard and URL-safe base64 forms at each of the three alignments a value can have
//!   inside a longer base64 text (`Authorization: Basic base64(user:TOKEN)`, `echo $TOKEN |
//!   base64` with its newline). Only the characters that depend on the value alone are matched,
//!   so up to two bytes at either end of the value may stay visible in base64; a form shorter
//!   than 8 characters is not matched (it would match unrelated base64).
//!
//! Matching is one Aho-Corasick pass (leftmost-longest) however many secrets there are, so
//! large text costs a linear scan. Other encodings (hex, URL-encoding, JSON escapes of a value
//! with quotes) are not recognized.
//!
//! Text that arrives in pieces (a command's output) goes through a [`MaskStream`]: it holds back
//! only the tail of what it was given that could be the start of a value (the longest suffix
//! that is a proper prefix of a pattern, found with each pattern's KMP table) and emits the
//! rest masked, so a value split across two chunks is still caught, and output that cannot be a
//! value's start is never delayed.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Values shorter than this are not masked (and kiln refuses to store them).
pub const MIN_MASKED_BYTES: usize = 4;
/// Shorter base64 forms and lines of a value are not matched: they would match unrelated text.
const MIN_PART_CHARS: usize = 8;

/// Masks a set of secret values in text. Built once per build or prompt from the values and
/// their names; cheap to share behind an `Arc`. The default masks nothing.
#[derive(Default)]
pub struct Masker {
    /// `None` when there is nothing to mask.
    matcher: Option<AhoCorasick>,
    patterns: Vec<Pattern>,
}

struct Pattern {
    bytes: Vec<u8>,
    replacement: Arc<str>,
    /// KMP prefix function: `fail[i]` is the longest proper prefix of `bytes[..=i]` that is
    /// also its suffix.
    fail: Vec<u32>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("patterns", &self.patterns.len())
            .finish()
    }
}

/// The forms of `value` that are masked (see the module's documentation).
fn forms(value: &str) -> Vec<String> {
    let mut forms = Vec::new();
    if value.len() < MIN_MASKED_BYTES {
        return forms;
    }
    forms.push(value.to_string());
    if value.contains('\n') {
        for line in value.lines() {
            let line = line.trim_end_matches('\r');
            if line.len() >= MIN_PART_CHARS && line != value {
                forms.push(line.to_string());
            }
        }
    }
    let bytes = value.as_bytes();
    for skip in 0..3 {
        let rest = &bytes[skip.min(bytes.len())..];
        let whole = rest.len() / 3 * 3;
        if whole / 3 * 4 < MIN_PART_CHARS {
            continue;
        }
        forms.push(STANDARD_NO_PAD.encode(&rest[..whole]));
        forms.push(URL_SAFE_NO_PAD.encode(&rest[..whole]));
    }
    forms
}

fn prefix_function(bytes: &[u8]) -> Vec<u32> {
    let mut fail = vec![0u32; bytes.len()];
    let mut k = 0usize;
    for i in 1..bytes.len() {
        while k > 0 && bytes[i] != bytes[k] {
            k = fail[k - 1] as usize;
        }
        if bytes[i] == bytes[k] {
            k += 1;
        }
        fail[i] = k as u32;
    }
    fail
}

impl Masker {
    /// A masker for `(name, value)` pairs. A value shorter than [`MIN_MASKED_BYTES`] is left
    /// out; when two secrets share a value, the first one's name is shown.
    pub fn new<N, V>(secrets: impl IntoIterator<Item = (N, V)>) -> Masker
    where
        N: AsRef<str>,
        V: AsRef<str>,
    {
        let mut seen: HashMap<String, ()> = HashMap::new();
        let mut patterns = Vec::new();
        for (name, value) in secrets {
            let replacement: Arc<str> = format!("[secret {}]", name.as_ref()).into();
            for form in forms(value.as_ref()) {
                if seen.insert(form.clone(), ()).is_some() {
                    continue;
                }
                let bytes = form.into_bytes();
                patterns.push(Pattern {
                    fail: prefix_function(&bytes),
                    bytes,
                    replacement: replacement.clone(),
                });
            }
        }
        let matcher = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(patterns.iter().map(|p| &p.bytes))
                .expect("a few thousand patterns of at most a few hundred KiB build")
        });
        Masker { matcher, patterns }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `text` with every secret form replaced (borrowed when nothing matched).
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(matcher) = &self.matcher else {
            return Cow::Borrowed(text);
        };
        let mut out: Option<String> = None;
        let mut last = 0;
        for m in matcher.find_iter(text) {
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(&text[last..m.start()]);
            out.push_str(&self.patterns[m.pattern().as_usize()].replacement);
            last = m.end();
        }
        match out {
            None => Cow::Borrowed(text),
            Some(mut out) => {
                out.push_str(&text[last..]);
                Cow::Owned(out)
            }
        }
    }

    /// A stream masker over this set (see [`MaskStream`]).
    pub fn stream(self: &Arc<Self>) -> MaskStream {
        MaskStream {
            masker: self.clone(),
            pending: String::new(),
        }
    }

    /// Where the longest suffix of `text` that is a proper prefix of some pattern starts
    /// (`text.len()` when there is none): text from there on may be the start of a value.
    fn hold_from(&self, text: &str) -> usize {
        let bytes = text.as_bytes();
        let mut longest = 0;
        for pattern in &self.patterns {
            let n = pattern.bytes.len();
            // A proper prefix is at most n - 1 bytes: only that much of the tail matters.
            let start = bytes.len().saturating_sub(n - 1);
            let mut k = 0usize;
            for &c in &bytes[start..] {
                while k > 0 && pattern.bytes[k] != c {
                    k = pattern.fail[k - 1] as usize;
                }
                if pattern.bytes[k] == c {
                    k += 1;
                }
            }
            longest = longest.max(k);
        }
        // A pattern starts at a character boundary (values are text, base64 is ASCII), so a
        // suffix equal to a pattern's prefix does too.
        bytes.len() - longest
    }
}

/// Masks text that arrives in pieces (one per stream: stdout and stderr each get one). Each
/// [`MaskStream::push`] returns what can be shown now, masked; a tail that may be the start of
/// a value waits for the next piece; [`MaskStream::finish`] returns what is left.
#[derive(Debug)]
pub struct MaskStream {
    masker: Arc<Masker>,
    /// Raw text held back: a proper prefix of some pattern, so at most the longest pattern.
    pending: String,
}

impl MaskStream {
    /// The masked text that can be shown after `text` arrived.
    pub fn push(&mut self, text: &str) -> String {
        let Some(matcher) = &self.masker.matcher else {
            return text.to_string();
        };
        self.pending.push_str(text);
        let buffer = std::mem::take(&mut self.pending);
        let hold_from = self.masker.hold_from(&buffer);
        let mut out = String::with_capacity(buffer.len());
        let mut last = 0;
        for m in matcher.find_iter(&buffer) {
            // A match that starts in the held-back tail may be the start of a longer value:
            // it is decided when more text arrives.
            if m.start() >= hold_from {
                break;
            }
            out.push_str(&buffer[last..m.start()]);
            out.push_str(&self.masker.patterns[m.pattern().as_usize()].replacement);
            last = m.end();
        }
        let cut = hold_from.max(last);
        out.push_str(&buffer[last..cut]);
        self.pending = buffer[cut..].to_string();
        out
    }

    /// Whatever was held back, masked: the stream ended.
    pub fn finish(&mut self) -> String {
        let pending = std::mem::take(&mut self.pending);
        self.masker.mask(&pending).into_owned()
    }

    /// Whether text is held back.
    pub fn is_holding(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    fn masker() -> Arc<Masker> {
        Arc::new(Masker::new([
            ("TOKEN", "s3cr3t-t0k3n-value"),
            ("SHORT", "abc"),
            ("KEY", "line-one-of-key\nline-two-of-key"),
        ]))
    }

    #[test]
    fn values_and_their_encodings_are_masked() {
        let m = masker();
        assert_eq!(m.mask("token=s3cr3t-t0k3n-value;"), "token=[secret TOKEN];");
        assert_eq!(m.mask("nothing here"), "nothing here");
        assert!(matches!(m.mask("nothing here"), Cow::Borrowed(_)));
        // Too short to mask.
        assert_eq!(m.mask("abc abc"), "abc abc");
        for encoded in [
            STANDARD.encode("s3cr3t-t0k3n-value"),
            STANDARD.encode("s3cr3t-t0k3n-value\n"),
            URL_SAFE.encode("s3cr3t-t0k3n-value"),
            STANDARD.encode("user:s3cr3t-t0k3n-value"),
            STANDARD.encode("u:s3cr3t-t0k3n-value"),
        ] {
            let masked = m.mask(&encoded);
            assert!(masked.contains("[secret TOKEN]"), "{encoded} → {masked}");
            // What is left of the encoding is a few characters at either end.
            let left = masked.replace("[secret TOKEN]", "");
            assert!(left.len() <= 12, "{encoded} → {masked}");
        }
        let key = m.mask("-----\nline-two-of-key\r\n");
        assert_eq!(key, "-----\n[secret KEY]\r\n");
    }

    #[test]
    fn a_value_split_anywhere_across_pieces_is_masked() {
        let m = masker();
        let text = "start s3cr3t-t0k3n-value middle s3cr3t-t0k3n-valu end s3cr3t-t0k3n-value";
        let expected = m.mask(text).into_owned();
        for split in 0..=text.len() {
            for second in split..=text.len() {
                let mut stream = m.stream();
                let mut out = stream.push(&text[..split]);
                out += &stream.push(&text[split..second]);
                out += &stream.push(&text[second..]);
                out += &stream.finish();
                assert_eq!(out, expected, "split at {split} and {second}");
            }
        }
    }

    #[test]
    fn streams_hold_back_only_what_may_start_a_value() {
        let m = masker();
        let mut stream = m.stream();
        assert_eq!(stream.push("plain output\n"), "plain output\n");
        assert!(!stream.is_holding());
        assert_eq!(stream.push("x s3cr"), "x ");
        assert!(stream.is_holding());
        assert_eq!(stream.push("ap\n"), "s3crap\n");
        // A value that is the start of a longer one waits to see which it is.
        let m = Arc::new(Masker::new([("A", "abcdefgh"), ("B", "abcdefghijkl")]));
        let mut stream = m.stream();
        assert_eq!(stream.push("1 abcdefgh"), "1 ");
        assert_eq!(stream.push("ijkl 2"), "[secret B] 2");
        let mut stream = m.stream();
        assert_eq!(stream.push("1 abcdefgh"), "1 ");
        assert_eq!(stream.push("!"), "[secret A]!");
        assert_eq!(stream.finish(), "");
    }

    #[test]
    fn an_empty_masker_passes_text_through() {
        let m = Arc::new(Masker::default());
        assert!(m.is_empty());
        assert_eq!(m.mask("abc"), "abc");
        let mut stream = m.stream();
        assert_eq!(stream.push("s3cr"), "s3cr");
        assert_eq!(stream.finish(), "");
        assert!(Masker::new([("X", "ab")]).is_empty());
    }

    proptest::proptest! {
        /// Whatever the text and however it is cut, streaming masks as masking the whole does,
        /// and no value survives.
        #[test]
        fn streaming_equals_masking_the_whole(
            pieces in proptest::collection::vec("(s3cr3t|-t0k|3n-value|abc|x|é|\n){0,6}", 0..8)
        ) {
            let m = masker();
            let whole: String = pieces.concat();
            let mut stream = m.stream();
            let mut out: String = pieces.iter().map(|p| stream.push(p)).collect();
            out += &stream.finish();
            proptest::prop_assert_eq!(&out, &m.mask(&whole).into_owned());
            proptest::prop_assert!(!out.contains("s3cr3t-t0k3n-value"));
        }
    }
}
