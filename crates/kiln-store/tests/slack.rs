//! Slack in the control DB: one Slack user per kiln user and the reverse, a deactivated user
//! acting for no one, a relink replacing the old one, told-once, and the thread → session map.

mod common;

use common::store;
use kiln_store::Error;

#[tokio::test]
async fn links_are_one_to_one_and_told_once() {
    let (_dir, store) = store().await;
    let ada = store.create_user("ada", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();

    assert!(store.user_of_slack("U1").await.unwrap().is_none());
    assert!(store.first_slack_telling("U1").await.unwrap());
    assert!(!store.first_slack_telling("U1").await.unwrap());

    store.set_slack_link(&ada.id, "U1").await.unwrap();
    assert_eq!(store.user_of_slack("U1").await.unwrap().unwrap().id, ada.id);
    assert_eq!(
        store.slack_link_of(&ada.id).await.unwrap().as_deref(),
        Some("U1")
    );
    // Linking clears "told": if they unlink later, they are told again.
    assert!(store.first_slack_telling("U1").await.unwrap());
    let taken = store.set_slack_link(&bob.id, "U1").await.unwrap_err();
    assert!(matches!(taken, Error::Conflict(_)), "{taken}");

    // A relink replaces the old Slack user.
    store.set_slack_link(&ada.id, "U2").await.unwrap();
    assert!(store.user_of_slack("U1").await.unwrap().is_none());
    store.set_slack_link(&bob.id, "U1").await.unwrap();
    assert_eq!(store.user_of_slack("U1").await.unwrap().unwrap().id, bob.id);

    store.deactivate_user(&bob.id).await.unwrap();
    assert!(store.user_of_slack("U1").await.unwrap().is_none());

    assert!(store.delete_slack_link(&ada.id).await.unwrap());
    assert!(!store.delete_slack_link(&ada.id).await.unwrap());
    assert!(store.user_of_slack("U2").await.unwrap().is_none());
}

#[tokio::test]
async fn a_thread_drives_one_session() {
    let (_dir, store, _ada, log) = common::session().await;
    let session = log.id().clone();
    assert!(store.slack_thread("C1", "1.1").await.unwrap().is_none());
    store.set_slack_thread("C1", "1.1", &session).await.unwrap();
    assert_eq!(
        store.slack_thread("C1", "1.1").await.unwrap(),
        Some(session)
    );
    assert!(store.slack_thread("C1", "1.2").await.unwrap().is_none());
    assert!(store.slack_thread("C2", "1.1").await.unwrap().is_none());
}
