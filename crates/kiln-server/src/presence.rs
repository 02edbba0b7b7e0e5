//! Who is looking at a session right now, and who is typing: ephemeral, never stored.
//!
//! One small broadcast channel per session with watchers; it disappears with its last watcher.
//! A user with several clients is present once; `away` is sent when their last client leaves.
//! A socket that joins is told who is already there (one `present` each), so every client
//! knows the whole room, not only who came after it.

use kiln_core::{SessionId, UserId};
use kiln_protocol::api::{Ephemeral, UserRef};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

#[derive(Debug, Clone, Default)]
pub(crate) struct Presence {
    inner: Arc<Mutex<HashMap<SessionId, Room>>>,
}

#[derive(Debug)]
struct Room {
    tx: broadcast::Sender<Ephemeral>,
    /// Open sockets per user, with the user as they joined.
    clients: HashMap<UserId, (UserRef, usize)>,
}

/// Leaves the room when dropped (the socket closed).
#[derive(Debug)]
pub(crate) struct Guard {
    presence: Presence,
    session: SessionId,
    user: UserRef,
}

impl Presence {
    /// Joins a session's room; tells the others if this is the user's first client there.
    /// Returns, besides the guard and the room's channel, the others already present.
    pub(crate) fn join(
        &self,
        session: &SessionId,
        user: &UserRef,
    ) -> (Guard, broadcast::Receiver<Ephemeral>, Vec<UserRef>) {
        let mut rooms = self.inner.lock().expect("presence lock");
        let room = rooms.entry(session.clone()).or_insert_with(|| Room {
            tx: broadcast::channel(64).0,
            clients: HashMap::new(),
        });
        let rx = room.tx.subscribe();
        let here: Vec<UserRef> = room
            .clients
            .iter()
            .filter(|(id, _)| **id != user.id)
            .map(|(_, (user, _))| user.clone())
            .collect();
        let (_, count) = room
            .clients
            .entry(user.id.clone())
            .or_insert_with(|| (user.clone(), 0));
        *count += 1;
        if *count == 1 {
            let _ = room.tx.send(Ephemeral::Present { user: user.clone() });
        }
        let guard = Guard {
            presence: self.clone(),
            session: session.clone(),
            user: user.clone(),
        };
        (guard, rx, here)
    }

    pub(crate) fn send(&self, session: &SessionId, event: Ephemeral) {
        if let Some(room) = self.inner.lock().expect("presence lock").get(session) {
            let _ = room.tx.send(event);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut rooms = self.presence.inner.lock().expect("presence lock");
        let Some(room) = rooms.get_mut(&self.session) else {
            return;
        };
        if let Some((_, count)) = room.clients.get_mut(&self.user.id) {
            *count -= 1;
            if *count == 0 {
                room.clients.remove(&self.user.id);
                let _ = room.tx.send(Ephemeral::Away {
                    user: self.user.clone(),
                });
            }
        }
        if room.clients.is_empty() {
            rooms.remove(&self.session);
        }
    }
}
