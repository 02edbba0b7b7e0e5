//! Credentials in the control DB: login codes and browser sessions, the last admin token, repo
//! url credentials kept apart, share links that never make owners. Real SQLite in a tempdir.

mod common;

use common::store;
use kiln_core::{Role, SessionId};
use kiln_protocol::api::CreateRepo;
use kiln_store::Error;

/// A second connection to the control DB, as an outside writer (WAL lets it in).
fn raw(dir: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("control.db")).unwrap()
}

#[tokio::test]
async fn login_codes_work_once_and_expire() {
    let (dir, store) = store().await;
    let ada = store.create_user("ada", false).await.unwrap();
    let code = store.create_login_code(&ada.id).await.unwrap();
    let code = code.code.expose().clone();
    assert_eq!(code.len(), 32, "{code}");

    let session = store
        .redeem_login_code(&code)
        .await
        .unwrap()
        .expect("a session");
    assert_eq!(session.user, ada);
    let secret = session.secret.expose().clone();
    assert_eq!(
        store.authenticate_browser(&secret).await.unwrap(),
        Some(ada.clone())
    );
    // A session secret is not an API token, and an API token is not a session.
    assert_eq!(store.authenticate(&secret).await.unwrap(), None);
    let token = store.create_token(&ada.id, "t").await.unwrap().token;
    assert_eq!(store.authenticate_browser(&token).await.unwrap(), None);

    // Single use.
    assert!(store.redeem_login_code(&code).await.unwrap().is_none());
    assert!(
        store
            .redeem_login_code("not a code")
            .await
            .unwrap()
            .is_none()
    );

    // An expired code is refused, and so is an expired session.
    let late = store.create_login_code(&ada.id).await.unwrap();
    raw(dir.path())
        .execute("UPDATE login_codes SET expires_at_ms = 1", [])
        .unwrap();
    assert!(
        store
            .redeem_login_code(late.code.expose())
            .await
            .unwrap()
            .is_none()
    );
    raw(dir.path())
        .execute("UPDATE browser_sessions SET expires_at_ms = 1", [])
        .unwrap();
    assert_eq!(store.authenticate_browser(&secret).await.unwrap(), None);

    // Logging out ends a session at once.
    let code = store.create_login_code(&ada.id).await.unwrap();
    let session = store
        .redeem_login_code(code.code.expose())
        .await
        .unwrap()
        .unwrap();
    store
        .end_browser_session(session.secret.expose())
        .await
        .unwrap();
    assert_eq!(
        store
            .authenticate_browser(session.secret.expose())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn the_last_admin_token_cannot_be_revoked() {
    let (_dir, store) = store().await;
    let root = store.create_user("root", true).await.unwrap();
    let ops = store.create_user("ops", true).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    let first = store.create_token(&root.id, "a").await.unwrap().info.id;
    let second = store.create_token(&ops.id, "b").await.unwrap().info.id;
    let bobs = store.create_token(&bob.id, "c").await.unwrap().info.id;

    store.revoke_token(&root.id, &first).await.unwrap();
    match store.revoke_token(&ops.id, &second).await {
        Err(Error::Conflict(msg)) => assert!(msg.contains("last"), "{msg}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Non-admins may revoke their last token.
    store.revoke_token(&bob.id, &bobs).await.unwrap();
}

#[tokio::test]
async fn repo_credentials_are_kept_apart_from_the_url() {
    let (dir, store) = store().await;
    let secret = "ghp_s3cretTOKEN";
    let repo = store
        .create_repo(&CreateRepo {
            name: "private".into(),
            url: format!("https://bot:{secret}@git.example.invalid/org/x.git"),
            default_branch: None,
            description: None,
            hooks: Vec::new(),
            environment: None,
            check: false,
        })
        .await
        .unwrap();
    assert_eq!(repo.url, "https://****@git.example.invalid/org/x.git");
    assert_eq!(store.repo("private").await.unwrap().url, repo.url);
    assert_eq!(store.list_repos().await.unwrap()[0].url, repo.url);
    let remote = store.repo_remote("private").await.unwrap();
    assert_eq!(remote.url, "https://git.example.invalid/org/x.git");
    assert_eq!(
        remote.credentials.unwrap().expose(),
        &format!("bot:{secret}")
    );
    // The url column holds no secret.
    let url: String = raw(dir.path())
        .query_row("SELECT url FROM repos", [], |row| row.get(0))
        .unwrap();
    assert!(!url.contains(secret), "{url}");

    let refused = store
        .create_repo(&CreateRepo {
            name: "ssh".into(),
            url: "ssh://git:pw@host/x.git".into(),
            default_branch: None,
            description: None,
            hooks: Vec::new(),
            environment: None,
            check: false,
        })
        .await;
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
}

#[tokio::test]
async fn share_links_never_make_owners() {
    let (dir, store) = store().await;
    let ada = store.create_user("ada", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    common::repo(&store, "kiln").await;
    let id = SessionId::random();
    store
        .create_session(&id, "kiln", "t", &ada.id)
        .await
        .unwrap();
    let refused = store.create_share(&id, Role::Owner, &ada.id).await;
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");

    // An owner link made before links were limited grants collaborator.
    let link = store
        .create_share(&id, Role::Collaborator, &ada.id)
        .await
        .unwrap();
    raw(dir.path())
        .execute("UPDATE shares SET role = 'owner'", [])
        .unwrap();
    let redeemed = store
        .redeem_share(&link.code, &bob.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(redeemed.role, Role::Collaborator);
    assert_eq!(
        store.role_of(&id, &bob.id).await.unwrap(),
        Some(Role::Collaborator)
    );
}
