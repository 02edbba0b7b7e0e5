//! Helpers shared by the store's integration tests: a store in a fresh tempdir, and the few
//! fixtures (a user, a repo, a session) most tests start from.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use kiln_core::{SessionId, UserId};
use kiln_protocol::api::{CreateRepo, Event};
use kiln_store::{SessionLog, Store};
use tempfile::TempDir;

pub async fn store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    (dir, store)
}

pub async fn repo(store: &Store, name: &str) {
    let repo = CreateRepo {
        name: name.into(),
        url: format!("https://example.invalid/{name}.git"),
        default_branch: None,
        description: None,
        hooks: Vec::new(),
        environment: None,
        check: false,
    };
    store.create_repo(&repo).await.unwrap();
}

/// A store with one user ("ada"), one repo ("kiln") and one session she created.
pub async fn session() -> (TempDir, Store, UserId, SessionLog) {
    let (dir, store) = store().await;
    let user = store.create_user("ada", false).await.unwrap();
    repo(&store, "kiln").await;
    let log = store
        .create_session(&SessionId::random(), "kiln", "t", &user.id)
        .await
        .unwrap();
    (dir, store, user.id, log)
}

/// An event that carries a number, so tests can check that event `n` is the one at seq `n`.
pub fn numbered(n: u64) -> Event {
    Event::Error {
        prompt_id: None,
        kind: kiln_protocol::api::ErrorKind::Other,
        message: format!("event {n}"),
    }
}

pub fn number_of(event: &Event) -> u64 {
    match event {
        Event::Error { message, .. } => message.strip_prefix("event ").unwrap().parse().unwrap(),
        other => panic!("not a numbered event: {other:?}"),
    }
}
