//! Warm pools: per repo, sandboxes already running from the repo's newest image, so a new
//! session is a hand-off, not a creation. Entries are generic (no session, no secrets); the
//! session's branch, identity and sync happen after the claim. A refill follows every claim,
//! and a new image replaces the entries made from the old one.
//!
//! Warm-up while typing: a client says "this user is typing a prompt for repo R"; one entry is
//! reserved for that user, and their next session on R takes it. Reservations expire and the
//! entry goes back to the pool.

use kiln_core::UserId;
use kiln_sandbox::Sandbox;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Label naming the repo a pooled sandbox is warm for.
pub const POOL_LABEL: &str = "kiln.pool";

/// The commit a sandbox's checkout is at: the image's, until a sync moves it. Held while a sync
/// runs, so a session's sync that follows a warm-up's waits for it and starts where it ended.
pub type Checkout = Arc<tokio::sync::Mutex<String>>;

/// A ready sandbox from an image.
#[derive(Debug, Clone)]
pub struct PoolEntry {
    pub sandbox: Sandbox,
    pub image_id: String,
    pub checkout: Checkout,
}

/// What [`Pools::reserve`] did.
#[derive(Debug)]
pub enum Reserved {
    /// This entry is now held for the user.
    New(PoolEntry),
    /// The user already held one; it is held longer.
    Extended,
    /// No entry was ready.
    None,
}

#[derive(Debug)]
struct Reservation {
    entry: PoolEntry,
    expires: Instant,
}

/// How far back claims count as demand when sizing a pool.
pub const DEMAND_WINDOW: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Default)]
pub struct Pools {
    entries: Mutex<HashMap<String, Vec<PoolEntry>>>,
    /// When sessions started on each repo, within the demand window.
    starts: Mutex<HashMap<String, VecDeque<Instant>>>,
    reservations: Mutex<HashMap<(UserId, String), Reservation>>,
    /// Repos with a refill running.
    pub refilling: Mutex<HashSet<String>>,
}

impl Pools {
    /// Takes the user's reservation for `repo`, else any ready entry. Entries whose guest died
    /// are returned in `dead` for the caller to destroy.
    pub fn take(&self, repo: &str, user: &UserId) -> (Option<PoolEntry>, Vec<PoolEntry>) {
        self.expire();
        let key = (user.clone(), repo.to_string());
        let mut dead = Vec::new();
        if let Some(reservation) = self.reservations.lock().expect("pool lock").remove(&key) {
            if reservation.entry.sandbox.guest().gone().is_none() {
                return (Some(reservation.entry), dead);
            }
            dead.push(reservation.entry);
        }
        let mut entries = self.entries.lock().expect("pool lock");
        let list = entries.entry(repo.to_string()).or_default();
        while let Some(entry) = list.pop() {
            if entry.sandbox.guest().gone().is_none() {
                return (Some(entry), dead);
            }
            dead.push(entry);
        }
        (None, dead)
    }

    /// Reserves an entry of `repo` for `user` until `ttl` from now (extending the user's
    /// reservation if they hold one).
    pub fn reserve(&self, repo: &str, user: &UserId, ttl: Duration) -> Reserved {
        self.expire();
        let key = (user.clone(), repo.to_string());
        let mut reservations = self.reservations.lock().expect("pool lock");
        if let Some(reservation) = reservations.get_mut(&key) {
            reservation.expires = Instant::now() + ttl;
            return Reserved::Extended;
        }
        let entry = self
            .entries
            .lock()
            .expect("pool lock")
            .get_mut(repo)
            .and_then(Vec::pop);
        match entry {
            Some(entry) => {
                let reserved = entry.clone();
                reservations.insert(
                    key,
                    Reservation {
                        entry,
                        expires: Instant::now() + ttl,
                    },
                );
                Reserved::New(reserved)
            }
            None => Reserved::None,
        }
    }

    /// Counts a session start on `repo` as demand.
    pub fn record_start(&self, repo: &str) {
        let mut starts = self.starts.lock().expect("pool lock");
        let list = starts.entry(repo.to_string()).or_default();
        list.push_back(Instant::now());
        prune(list);
    }

    /// How many sandboxes `repo`'s pool should hold: its recent demand, within `min..=max`.
    pub fn target(&self, repo: &str, min: usize, max: usize) -> usize {
        let mut starts = self.starts.lock().expect("pool lock");
        let demand = starts.get_mut(repo).map_or(0, |list| {
            prune(list);
            list.len()
        });
        demand.clamp(min, max.max(min))
    }

    /// Puts expired reservations back into their pools.
    pub fn expire(&self) {
        let now = Instant::now();
        let mut reservations = self.reservations.lock().expect("pool lock");
        let expired: Vec<(UserId, String)> = reservations
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut entries = self.entries.lock().expect("pool lock");
        for key in expired {
            if let Some(reservation) = reservations.remove(&key) {
                entries.entry(key.1).or_default().push(reservation.entry);
            }
        }
    }

    /// Ready entries of `repo` (not counting reservations).
    pub fn ready(&self, repo: &str) -> usize {
        self.entries
            .lock()
            .expect("pool lock")
            .get(repo)
            .map_or(0, Vec::len)
    }

    /// The image each ready entry of `repo` was made from.
    pub fn images(&self, repo: &str) -> Vec<String> {
        self.entries
            .lock()
            .expect("pool lock")
            .get(repo)
            .map(|list| list.iter().map(|e| e.image_id.clone()).collect())
            .unwrap_or_default()
    }

    /// Entries of `repo` (reserved ones too), for counting against the pool size.
    pub fn size(&self, repo: &str) -> usize {
        let reserved = self
            .reservations
            .lock()
            .expect("pool lock")
            .keys()
            .filter(|(_, r)| r == repo)
            .count();
        self.ready(repo) + reserved
    }

    pub fn add(&self, repo: &str, entry: PoolEntry) {
        self.entries
            .lock()
            .expect("pool lock")
            .entry(repo.to_string())
            .or_default()
            .push(entry);
    }

    /// Removes and returns every entry, reserved ones too.
    pub fn drain(&self) -> Vec<PoolEntry> {
        let mut all: Vec<PoolEntry> = self
            .entries
            .lock()
            .expect("pool lock")
            .drain()
            .flat_map(|(_, list)| list)
            .collect();
        all.extend(
            self.reservations
                .lock()
                .expect("pool lock")
                .drain()
                .map(|(_, r)| r.entry),
        );
        all
    }

    /// Removes and returns ready entries of `repo` past `size` (demand fell).
    pub fn trim(&self, repo: &str, size: usize) -> Vec<PoolEntry> {
        let excess = self.size(repo).saturating_sub(size);
        let mut entries = self.entries.lock().expect("pool lock");
        let Some(list) = entries.get_mut(repo) else {
            return Vec::new();
        };
        let keep = list.len().saturating_sub(excess);
        list.split_off(keep)
    }

    /// Removes and returns the ready entries of `repo` not made from `image_id`.
    pub fn remove_stale(&self, repo: &str, image_id: &str) -> Vec<PoolEntry> {
        let mut entries = self.entries.lock().expect("pool lock");
        let Some(list) = entries.get_mut(repo) else {
            return Vec::new();
        };
        let (keep, stale): (Vec<_>, Vec<_>) = list.drain(..).partition(|e| e.image_id == image_id);
        *list = keep;
        stale
    }
}

/// Drops starts older than the demand window.
fn prune(starts: &mut VecDeque<Instant>) {
    while starts.front().is_some_and(|t| t.elapsed() > DEMAND_WINDOW) {
        starts.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_follows_recent_demand_within_its_bounds() {
        let pools = Pools::default();
        assert_eq!(pools.target("r", 2, 5), 2, "no demand: the minimum");
        for _ in 0..4 {
            pools.record_start("r");
        }
        assert_eq!(pools.target("r", 2, 5), 4);
        assert_eq!(pools.target("other", 2, 5), 2, "per repo");
        for _ in 0..4 {
            pools.record_start("r");
        }
        assert_eq!(pools.target("r", 2, 5), 5, "capped");
        assert_eq!(pools.target("r", 2, 0), 2, "a max below the min is the min");
        // A machine up for less than the window has no instant that old.
        if let Some(old) = Instant::now().checked_sub(DEMAND_WINDOW + Duration::from_secs(1)) {
            let mut list: VecDeque<Instant> = [old, old, Instant::now()].into();
            prune(&mut list);
            assert_eq!(list.len(), 1, "old starts no longer count");
        }
    }
}
