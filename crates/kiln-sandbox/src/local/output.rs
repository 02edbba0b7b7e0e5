//! What bubblewrap and the guest print while a sandbox starts: the reason a start failed.
//!
//! Their stderr is a pipe (never a host file, which code in the sandbox could fill past its
//! disk cap). The host reads it only while it waits for the guest's first answer, keeping the
//! first [`START_OUTPUT_LIMIT`](super::START_OUTPUT_LIMIT) bytes and discarding the rest so the
//! writers never block; then the read end is closed and later writes fail with `EPIPE`.

use super::START_OUTPUT_LIMIT;
use crate::{Error, Result};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe::Receiver;

/// The read end of the start-up output pipe and what was read so far.
#[derive(Debug)]
pub(crate) struct StartOutput {
    pipe: Receiver,
    kept: Vec<u8>,
    /// Bytes read past the limit and thrown away.
    dropped: u64,
    /// Every writer closed the pipe.
    done: bool,
}

impl StartOutput {
    pub(crate) fn new(read_end: OwnedFd) -> Result<StartOutput> {
        let pipe = Receiver::from_owned_fd(read_end)
            .map_err(Error::io("reading the sandbox's start-up output", "pipe"))?;
        Ok(StartOutput {
            pipe,
            kept: Vec::new(),
            dropped: 0,
            done: false,
        })
    }

    /// Runs `work` to completion, reading the output meanwhile.
    pub(crate) async fn drain_while<F: Future>(&mut self, work: F) -> F::Output {
        tokio::pin!(work);
        let mut chunk = [0u8; 4096];
        loop {
            tokio::select! {
                output = &mut work => return output,
                read = self.pipe.read(&mut chunk), if !self.done => self.take(read, &chunk),
            }
        }
    }

    /// Reads until every writer is gone or `wait` has passed, and returns the text.
    pub(crate) async fn finish(mut self, wait: Duration) -> String {
        let _ = tokio::time::timeout(wait, async {
            let mut chunk = [0u8; 4096];
            while !self.done {
                let read = self.pipe.read(&mut chunk).await;
                self.take(read, &chunk);
            }
        })
        .await;
        let mut text = String::from_utf8_lossy(&self.kept).into_owned();
        if self.dropped > 0 {
            text.push_str(&format!("\n… ({} more bytes not shown)", self.dropped));
        }
        text
    }

    fn take(&mut self, read: std::io::Result<usize>, chunk: &[u8]) {
        match read {
            Ok(0) | Err(_) => self.done = true,
            Ok(n) => {
                let room = START_OUTPUT_LIMIT.saturating_sub(self.kept.len()).min(n);
                self.kept.extend_from_slice(&chunk[..room]);
                self.dropped += (n - room) as u64;
            }
        }
    }
}
