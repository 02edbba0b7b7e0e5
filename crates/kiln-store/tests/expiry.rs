//! Credentials that end: tokens and share links past their expiry stop working, and a
//! deactivated user's do at once. Time is moved by rewriting the expiry in the control DB
//! through a second connection, as a clock jump would.

mod common;

use common::{repo, store};
use kiln_core::{Role, SessionId};
use kiln_store::ShareOptions;

/// Moves every expiry in `table` into the past.
fn expire_all(dir: &std::path::Path, table: &str) {
    let conn = rusqlite::Connection::open(dir.join("control.db")).unwrap();
    conn.execute(
        &format!("UPDATE {table} SET expires_at_ms = 1 WHERE expires_at_ms IS NOT NULL"),
        [],
    )
    .unwrap();
}

#[tokio::test]
async fn tokens_stop_at_their_expiry_and_with_their_user() {
    let (dir, store) = store().await;
    let ada = store.create_user("ada", true).await.unwrap();
    let spare = store.create_token(&ada.id, "for good").await.unwrap();
    let expiring = store
        .issue_token(&ada.id, "ci", Some(1), kiln_protocol::api::TokenScope::Full)
        .await
        .unwrap();
    assert!(store.authenticate(&expiring.token).await.unwrap().is_some());
    expire_all(dir.path(), "tokens");
    assert!(store.authenticate(&expiring.token).await.unwrap().is_none());
    assert!(store.authenticate(&spare.token).await.unwrap().is_some());

    let bob = store.create_user("bob", false).await.unwrap();
    let token = store.create_token(&bob.id, "laptop").await.unwrap();
    let code = store.create_login_code(&bob.id).await.unwrap();
    store.deactivate_user(&bob.id).await.unwrap();
    assert!(store.authenticate(&token.token).await.unwrap().is_none());
    assert!(
        store
            .redeem_login_code(code.code.expose())
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.list_tokens(&bob.id).await.unwrap().is_empty());
    let listed = store.list_users().await.unwrap();
    assert!(listed.iter().any(|u| u.name == "bob" && u.deactivated));
}

#[tokio::test]
async fn share_links_stop_at_their_expiry() {
    let (dir, store) = store().await;
    repo(&store, "kiln").await;
    let ada = store.create_user("ada", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    let id = SessionId::random();
    store
        .create_session(&id, "kiln", "t", &ada.id)
        .await
        .unwrap();
    let options = ShareOptions {
        expires_in_hours: Some(1),
        single_use: false,
    };
    let link = store
        .create_share_with(&id, Role::Viewer, &ada.id, options)
        .await
        .unwrap();
    assert_eq!(store.shares(&id).await.unwrap().len(), 1);
    expire_all(dir.path(), "shares");
    assert_eq!(store.redeem_share(&link.code, &bob.id).await.unwrap(), None);
    assert!(
        store.shares(&id).await.unwrap().is_empty(),
        "expired links are not listed"
    );
}
