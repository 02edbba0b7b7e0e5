//! GitHub links and sign-in states in the control DB: one login per user and one user per
//! login, sealed bytes back as stored, a state that works once.

mod common;

use common::store;
use kiln_store::{Error, SealedGitHubLink};

fn link(login: &str, access: &[u8]) -> SealedGitHubLink {
    SealedGitHubLink {
        login: login.into(),
        github_id: 7,
        access_ciphertext: access.to_vec(),
        refresh_ciphertext: Some(b"\x01r".to_vec()),
        expires_at_ms: Some(1_000),
        refresh_expires_at_ms: None,
    }
}

#[tokio::test]
async fn a_user_links_one_github_login_and_a_login_one_user() {
    let (_dir, store) = store().await;
    let ada = store.create_user("ada", true).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();

    assert!(store.github_link(&ada.id).await.unwrap().is_none());
    store
        .set_github_link(&ada.id, link("Ada-GH", b"\x01a"))
        .await
        .unwrap();
    let stored = store.github_link(&ada.id).await.unwrap().unwrap();
    assert_eq!(stored, link("Ada-GH", b"\x01a"));
    assert!(!format!("{stored:?}").contains("ciphertext"));
    assert_eq!(
        store.user_by_github_login("ada-gh").await.unwrap(),
        Some(ada.id.clone())
    );

    // New tokens replace the old ones.
    store
        .set_github_link(&ada.id, link("Ada-GH", b"\x01b"))
        .await
        .unwrap();
    let stored = store.github_link(&ada.id).await.unwrap().unwrap();
    assert_eq!(stored.access_ciphertext, b"\x01b");

    let e = store
        .set_github_link(&bob.id, link("ada-gh", b"\x01c"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    assert!(e.to_string().contains("another kiln user"), "{e}");

    assert!(store.delete_github_link(&ada.id).await.unwrap());
    assert!(!store.delete_github_link(&ada.id).await.unwrap());
    assert!(
        store
            .user_by_github_login("ada-gh")
            .await
            .unwrap()
            .is_none()
    );
    store
        .set_github_link(&bob.id, link("ada-gh", b"\x01c"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_sign_in_state_works_once() {
    let (_dir, store) = store().await;
    let ada = store.create_user("ada", true).await.unwrap();
    store.add_oauth_state("s1", None).await.unwrap();
    store.add_oauth_state("s2", Some(&ada.id)).await.unwrap();
    assert_eq!(store.take_oauth_state("s1").await.unwrap(), Some(None));
    assert_eq!(store.take_oauth_state("s1").await.unwrap(), None);
    assert_eq!(store.take_oauth_state("nope").await.unwrap(), None);
    assert_eq!(
        store.take_oauth_state("s2").await.unwrap(),
        Some(Some(ada.id))
    );
}
