//! The log of an image build while it runs, so that `kiln image build` (through
//! `GET /api/repos/{name}/images/{id}/log`) shows each line as it is written, not when the
//! build is over.
//!
//! The builder appends to one shared `String`; a reader keeps an offset into it and waits on a
//! `watch` channel for more. Readers never lag or lose text (unlike a broadcast of chunks), and
//! the text is held once, however many people follow. It lives as long as the build (the
//! stored log is capped; this one is not, like the builder's log always was).
//!
//! Secret values never reach the text: once the build knows its secrets
//! ([`BuildLog::mask_with`]), everything appended is masked first, so followers and the stored
//! record see `[secret NAME]`. Command output, which arrives in chunks that may split a value,
//! goes through a [`kiln_vault::MaskStream`] per stream instead ([`BuildLog::push_masked`]).

use kiln_vault::Masker;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::watch;

/// A running build's log: written by the builder, read by any number of [`BuildLogFollower`]s.
#[derive(Debug)]
pub(crate) struct BuildLog {
    state: Mutex<State>,
    /// Bumped after every append and at the end; followers wait on it.
    changed: watch::Sender<()>,
    /// The build's secrets, masked in everything appended; set once, before any step runs.
    masker: OnceLock<Arc<Masker>>,
}

#[derive(Debug, Default)]
struct State {
    text: String,
    /// Set when the build ended (or was abandoned): followers stop after the last text.
    done: bool,
}

impl Default for BuildLog {
    fn default() -> BuildLog {
        BuildLog {
            state: Mutex::default(),
            changed: watch::Sender::new(()),
            masker: OnceLock::new(),
        }
    }
}

impl BuildLog {
    /// Masks the build's secrets in everything appended from now on (the first call wins).
    pub(crate) fn mask_with(&self, masker: Arc<Masker>) {
        let _ = self.masker.set(masker);
    }

    /// The masker of this log's secrets (an empty one before [`BuildLog::mask_with`]).
    pub(crate) fn masker(&self) -> Arc<Masker> {
        self.masker.get().cloned().unwrap_or_default()
    }

    /// Appends text, with the build's secrets masked; followers see it at once. (Named like
    /// `String::push_str`, which the builder's log used to be.)
    pub(crate) fn push_str(&self, text: &str) {
        match self.masker.get() {
            Some(masker) => self.push_masked(&masker.mask(text)),
            None => self.push_masked(text),
        }
    }

    /// Appends text that is masked already: a [`kiln_vault::MaskStream`]'s output over
    /// [`BuildLog::masker`].
    pub(crate) fn push_masked(&self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.state
            .lock()
            .expect("build log lock")
            .text
            .push_str(text);
        self.changed.send_replace(());
    }

    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        self.state.lock().expect("build log lock").text.clone()
    }

    /// Marks the build over: followers end after what was written.
    pub(crate) fn finish(&self) {
        self.state.lock().expect("build log lock").done = true;
        self.changed.send_replace(());
    }

    /// A reader from the start of the log.
    pub(crate) fn follow(self: &Arc<BuildLog>) -> BuildLogFollower {
        BuildLogFollower {
            changed: self.changed.subscribe(),
            log: self.clone(),
            offset: 0,
        }
    }
}

/// Reads a running build's log: first everything written so far, then each new piece as it is
/// written, until the build ends.
#[derive(Debug)]
pub struct BuildLogFollower {
    log: Arc<BuildLog>,
    changed: watch::Receiver<()>,
    /// How much of the text this reader has returned (always at a char boundary: text is
    /// appended in whole `&str`s).
    offset: usize,
}

impl BuildLogFollower {
    /// The text written since the last call; `None` once the build ended and all is read.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            // Mark the current version seen before reading, so an append after the read wakes
            // the wait below.
            self.changed.borrow_and_update();
            {
                let state = self.log.state.lock().expect("build log lock");
                if state.text.len() > self.offset {
                    let text = state.text[self.offset..].to_string();
                    self.offset = state.text.len();
                    return Some(text);
                }
                if state.done {
                    return None;
                }
            }
            if self.changed.changed().await.is_err() {
                return None;
            }
        }
    }
}

/// Turns a command's output chunks into text without breaking a character that straddles two
/// chunks: an unfinished one at the end waits for the next chunk (invalid bytes become U+FFFD).
#[derive(Debug, Default)]
pub(crate) struct Utf8Chunks {
    pending: Vec<u8>,
}

impl Utf8Chunks {
    pub(crate) fn decode(&mut self, data: &[u8]) -> String {
        self.pending.extend_from_slice(data);
        let len = self.pending.len();
        // Where an unfinished character at the end starts, if one does.
        let keep_from = (len.saturating_sub(3)..len)
            .rev()
            .find(|&i| self.pending[i] & 0xC0 != 0x80)
            .filter(|&i| {
                let needs = match self.pending[i] {
                    b if b >= 0xF0 => 4,
                    b if b >= 0xE0 => 3,
                    b if b >= 0xC0 => 2,
                    _ => 1,
                };
                len - i < needs
            })
            .unwrap_or(len);
        let rest = self.pending.split_off(keep_from);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }

    /// Whatever is left when the output ends.
    pub(crate) fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_across_chunks_arrive_whole() {
        let text = "ok ✓ é 🦀 done";
        for split in 0..=text.len() {
            let mut chunks = Utf8Chunks::default();
            let bytes = text.as_bytes();
            let mut out = chunks.decode(&bytes[..split]);
            assert!(!out.contains('\u{FFFD}'), "{split}: {out:?}");
            out += &chunks.decode(&bytes[split..]);
            out += &chunks.finish();
            assert_eq!(out, text, "split at {split}");
        }
        let mut chunks = Utf8Chunks::default();
        assert_eq!(chunks.decode(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(chunks.decode(b"\xe2\x9c"), "");
        assert_eq!(chunks.finish(), "\u{FFFD}");
    }

    #[tokio::test]
    async fn a_follower_gets_the_past_then_each_append_then_the_end() {
        let log = Arc::new(BuildLog::default());
        log.push_str("== one\n");
        let mut follower = log.follow();
        assert_eq!(follower.next().await.as_deref(), Some("== one\n"));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(text) = follower.next().await {
                got.push(text);
            }
            got
        });
        tokio::task::yield_now().await;
        log.push_str("two\n");
        log.push_str("three\n");
        log.finish();
        let got = reader.await.unwrap();
        assert_eq!(got.concat(), "two\nthree\n");
        let mut late = log.follow();
        assert_eq!(late.next().await.as_deref(), Some("== one\ntwo\nthree\n"));
        assert_eq!(late.next().await, None);
    }

    #[tokio::test]
    async fn secrets_are_masked_before_followers_see_them() {
        let log = Arc::new(BuildLog::default());
        log.mask_with(Arc::new(Masker::new([("TOKEN", "tok-123456")])));
        let mut follower = log.follow();
        log.push_str("== step: echo tok-123456\n");
        let mut stream = log.masker().stream();
        log.push_masked(&stream.push("out: tok-12"));
        log.push_masked(&stream.push("3456\n"));
        log.push_masked(&stream.finish());
        log.finish();
        let mut seen = String::new();
        while let Some(text) = follower.next().await {
            seen.push_str(&text);
        }
        assert_eq!(seen, "== step: echo [secret TOKEN]\nout: [secret TOKEN]\n");
        assert_eq!(log.text(), seen);
    }
}
