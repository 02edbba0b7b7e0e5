//! `Subscription`: one reader following a session's log from any point, first from SQLite, then
//! live. This is the one replay path every client uses (first connect, reconnect, resume after a
//! server restart), so it must never skip and never repeat an event.
//!
//! How it stays exact: the subscription joins the broadcast *before* it learns the head (see
//! `SessionLog::subscribe`), so every event is either ≤ that head (in SQLite) or on the receiver.
//! It then delivers strictly `last + 1`: live events it already has are dropped by seq, and a
//! gap (a lag, or a live event ahead of the backlog) is filled from SQLite, which holds every
//! event that was ever broadcast because broadcasting happens after COMMIT.

use crate::error::{Error, Result};
use crate::log::{LogInner, StoredEvent, read_stored};
use crate::store::{blocking, lock};
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Weak};
use tokio::sync::broadcast::{self, error::RecvError};

/// Events read from SQLite per catch-up query: big enough to make replays cheap, small enough
/// that a replaying subscriber holds the session's connection only briefly.
const PAGE: usize = 256;

/// Every event of one session with seq > a starting point, in order, each exactly once.
pub struct Subscription {
    /// Weak, so a subscription does not keep a session's DB open: when the last `SessionLog`
    /// handle goes, the broadcast sender goes with it and `next` returns `None`.
    log: Weak<LogInner>,
    live: broadcast::Receiver<Arc<StoredEvent>>,
    /// The seq of the last event returned (at first, the `after_seq` asked for).
    last: u64,
    /// The highest seq known to be committed; while `last` is below it, SQLite has more.
    known: u64,
    /// Events read from SQLite and not yet returned, contiguous from `last + 1`.
    backlog: VecDeque<Arc<StoredEvent>>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("last", &self.last)
            .field("known", &self.known)
            .field("backlog", &self.backlog.len())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(
        log: Weak<LogInner>,
        live: broadcast::Receiver<Arc<StoredEvent>>,
        after_seq: u64,
        head: u64,
    ) -> Subscription {
        Subscription {
            log,
            live,
            last: after_seq,
            known: head,
            backlog: VecDeque::new(),
        }
    }

    /// The seq of the last event returned (or the `after_seq` it started from).
    pub fn last_seq(&self) -> u64 {
        self.last
    }

    /// Next event with seq > the last one returned (first: > `after_seq`). Replays from SQLite,
    /// then live from the broadcast channel; on `Lagged` it catches up from SQLite and goes on.
    /// Returns `None` only when the session log has been dropped (every `SessionLog` handle is
    /// gone) and there is nothing left to deliver without it.
    ///
    /// Cancel-safe: dropping the future (in a `select!`) loses no event.
    pub async fn next(&mut self) -> Result<Option<Arc<StoredEvent>>> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                // The backlog is read contiguously from `last + 1` (checked in `fill`).
                self.last = event.seq();
                return Ok(Some(event));
            }
            if self.last < self.known {
                if !self.fill().await? {
                    return Ok(None);
                }
                continue;
            }
            match self.live.recv().await {
                Ok(event) => {
                    let seq = event.seq();
                    if seq <= self.last {
                        continue;
                    }
                    self.known = self.known.max(seq);
                    if seq == self.last + 1 {
                        self.last = seq;
                        return Ok(Some(event));
                    }
                    // Ahead of us: the events in between are in SQLite; `fill` fetches them,
                    // and this one again with them.
                }
                Err(RecvError::Lagged(skipped)) => {
                    // The receiver jumped to the oldest event it still holds; the next one it
                    // yields shows the gap, which is then filled from SQLite.
                    tracing::debug!(skipped, last = self.last, "subscriber lagged; catching up");
                }
                Err(RecvError::Closed) => return Ok(None),
            }
        }
    }

    /// Reads the next page after `last` from SQLite. `false` when the log is closed.
    async fn fill(&mut self) -> Result<bool> {
        let Some(inner) = self.log.upgrade() else {
            return Ok(false);
        };
        let after = self.last;
        let events = blocking(move || read_stored(&lock(&inner.conn), after, PAGE)).await?;
        let contiguous = events.first().is_some_and(|e| e.seq() == after + 1)
            && events.windows(2).all(|w| w[1].seq() == w[0].seq() + 1);
        if !contiguous {
            // Only a log edited behind the store's back can get here; spinning would be worse.
            return Err(Error::Invalid(format!(
                "the session log is corrupt: seq {} is missing although {} is committed",
                after + 1,
                self.known
            )));
        }
        self.backlog.extend(events.into_iter().map(Arc::new));
        Ok(true)
    }
}
