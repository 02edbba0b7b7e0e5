//! Per-user admission: a user may have at most `max_active_sessions_per_user` sessions active
//! (working, or holding a sandbox) at once. Creations being admitted count too, so concurrent
//! requests cannot all slip under the limit.

use super::Inner;
use crate::{Error, Result};
use kiln_core::{SessionId, UserId};
use std::sync::Arc;

/// A place among a user's active sessions, held while a session is being created or brought
/// back; the limit counts it until the session's own actor counts as active.
pub(super) struct Admission {
    inner: Arc<Inner>,
    user: UserId,
}

impl Admission {
    /// Admits one more active session of `user` (`session`, already counted if active, aside),
    /// or says which limit stands in the way.
    pub(super) fn take(
        inner: &Arc<Inner>,
        user: &UserId,
        session: Option<&SessionId>,
    ) -> Result<Admission> {
        let limit = inner.config.max_active_sessions_per_user;
        let sessions = inner.sessions.lock().expect("sessions lock");
        let mut admitting = inner.admitting.lock().expect("admitting lock");
        let pending = admitting.get(user).copied().unwrap_or(0);
        if limit > 0 {
            let active = sessions
                .iter()
                .filter(|(id, actor)| {
                    Some(*id) != session && actor.creator() == user && actor.is_active()
                })
                .count();
            if active + pending >= limit {
                return Err(Error::LimitReached(format!(
                    "you have {limit} active sessions, the most one user may have at once \
                     (max_active_sessions_per_user); wait for one to finish and go idle — an \
                     idle session's sandbox stops after idle_stop_minutes — or ask an admin to \
                     raise the limit"
                )));
            }
        }
        *admitting.entry(user.clone()).or_default() += 1;
        Ok(Admission {
            inner: inner.clone(),
            user: user.clone(),
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut admitting = self
            .inner
            .admitting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = admitting.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                admitting.remove(&self.user);
            }
        }
    }
}

impl super::Engine {
    /// A place for `session` being woken (a prompt or an approved plan brings its sandbox
    /// back), counted against its creator, whose sandbox it is; none when it is active already.
    pub(super) fn admit_wake(
        &self,
        actor: &crate::session::SessionActor,
        session: &SessionId,
    ) -> Result<Option<Admission>> {
        if actor.is_active() {
            return Ok(None);
        }
        Admission::take(&self.inner, actor.creator(), Some(session)).map(Some)
    }
}
