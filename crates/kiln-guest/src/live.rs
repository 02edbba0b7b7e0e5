//! The requests of one connection that still accept follow-up frames: running execs (stdin,
//! signals) and unfinished file writes (chunks).
//!
//! The connection's reader is the only one that inserts and looks up entries, so it never awaits
//! while holding the lock: it clones a sender out, releases the lock, then sends. The task that
//! serves a request owns a [`Ticket`] whose drop removes the entry; tasks drop it *before* sending
//! their final frame, so a host that reuses an id right after `ExecExited`/`Done` is never refused.

use bytes::Bytes;
use kiln_protocol::guest::RequestId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::mpsc;

/// Bytes for a running request: stdin of an exec or a chunk of a file write.
#[derive(Debug)]
pub(crate) struct Input {
    pub(crate) data: Bytes,
    pub(crate) eof: bool,
}

#[derive(Debug)]
pub(crate) enum Live {
    Exec {
        /// The exec's process group, the target of `Signal`.
        pgid: i32,
        /// `None` when the exec did not ask for stdin or its stdin already got `eof`.
        stdin: Option<mpsc::Sender<Input>>,
    },
    Write {
        /// `None` once `eof` arrived: the write is being committed and takes no more chunks.
        chunks: Option<mpsc::Sender<Input>>,
    },
}

/// Shared between a connection's reader and its request tasks.
#[derive(Clone, Debug, Default)]
pub(crate) struct LiveTable {
    inner: Arc<Mutex<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    /// Distinguishes a later request that reuses an id from the one a [`Ticket`] belongs to.
    next_seq: u64,
    entries: HashMap<RequestId, (u64, Live)>,
}

impl LiveTable {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while holding the lock; if something did, the map is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn contains(&self, id: RequestId) -> bool {
        self.lock().entries.contains_key(&id)
    }

    /// Registers a request. The caller has checked [`LiveTable::contains`] first; only the
    /// connection's reader inserts, so nothing can slip in between.
    pub(crate) fn insert(&self, id: RequestId, live: Live) -> Ticket {
        let mut table = self.lock();
        table.next_seq += 1;
        let seq = table.next_seq;
        table.entries.insert(id, (seq, live));
        Ticket {
            table: self.clone(),
            id,
            seq,
        }
    }

    /// Runs `f` on the entry for `id`; `None` when there is none.
    pub(crate) fn with<R>(&self, id: RequestId, f: impl FnOnce(&mut Live) -> R) -> Option<R> {
        self.lock().entries.get_mut(&id).map(|(_, live)| f(live))
    }

    /// Forgets every entry, which drops every stdin and chunk sender: execs see their stdin
    /// close, unfinished writes see the connection end and remove their temp files.
    pub(crate) fn clear(&self) {
        let entries = std::mem::take(&mut self.lock().entries);
        drop(entries);
    }
}

/// Proof of registration, held by the task serving the request. Dropping it unregisters.
#[derive(Debug)]
pub(crate) struct Ticket {
    table: LiveTable,
    id: RequestId,
    seq: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut table = self.table.lock();
        if table
            .entries
            .get(&self.id)
            .is_some_and(|(seq, _)| *seq == self.seq)
        {
            table.entries.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_ticket_does_not_remove_a_newer_request_with_the_same_id() {
        let table = LiveTable::default();
        let first = table.insert(7, Live::Write { chunks: None });
        table.clear();
        let second = table.insert(7, Live::Write { chunks: None });
        drop(first);
        assert!(table.contains(7));
        drop(second);
        assert!(!table.contains(7));
    }
}
