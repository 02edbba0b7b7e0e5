//! The control DB through the public API: users and tokens, repos, the session index,
//! membership and share links, on real SQLite in a tempdir.

mod common;

use common::{repo, store};
use kiln_core::{Role, SessionId, TokenId};
use kiln_protocol::api::CreateRepo;
use kiln_store::{Error, Store};
use sha2::{Digest, Sha256};

/// Everything SQLite has on disk for the control DB: the main file plus the WAL, where recent
/// commits live until a checkpoint.
fn control_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = std::fs::read(dir.join("control.db")).unwrap();
    bytes.extend(std::fs::read(dir.join("control.db-wal")).unwrap_or_default());
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn users_are_unique_by_name() {
    let (_dir, store) = store().await;
    let ada = store.create_user("ada", true).await.unwrap();
    assert!(ada.admin);
    assert!(matches!(
        store.create_user("ada", false).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.create_user("", false).await,
        Err(Error::Invalid(_))
    ));
    let bob = store.create_user("bob", false).await.unwrap();
    assert_eq!(store.user(&bob.id).await.unwrap(), bob);
    assert_eq!(store.user_by_name("ada").await.unwrap(), Some(ada.clone()));
    assert_eq!(store.user_by_name("eve").await.unwrap(), None);
    assert_eq!(store.list_users().await.unwrap(), vec![ada, bob]);
    let ghost = kiln_core::UserId::random();
    assert!(matches!(store.user(&ghost).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn tokens_authenticate_until_revoked_and_only_hashes_are_stored() {
    let (dir, store) = store().await;
    let ada = store.create_user("ada", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    let created = store.create_token(&ada.id, "laptop").await.unwrap();
    let token = created.token.clone();
    assert!(
        token.starts_with("kiln_") && token.len() == 5 + 64,
        "{token}"
    );
    assert_eq!(store.authenticate(&token).await.unwrap(), Some(ada.clone()));
    // Authenticating twice within a minute is fine (the second does not write).
    assert_eq!(store.authenticate(&token).await.unwrap(), Some(ada.clone()));

    let on_disk = control_bytes(dir.path());
    assert!(
        !contains(&on_disk, token.as_bytes()),
        "the token itself is on disk"
    );
    assert!(
        !contains(&on_disk, &token.as_bytes()[5..]),
        "the token's hex is on disk"
    );
    assert!(
        contains(&on_disk, &Sha256::digest(token.as_bytes())),
        "the hash is not on disk"
    );

    // Listed as made, with when it was last used.
    let listed = store.list_tokens(&ada.id).await.unwrap();
    let used = listed[0].last_used_ms;
    assert!(
        used.is_some_and(|at| at >= created.info.created_at_ms),
        "{listed:?}"
    );
    let made = kiln_protocol::api::TokenInfo {
        last_used_ms: used,
        ..created.info.clone()
    };
    assert_eq!(listed, vec![made]);
    assert!(store.list_tokens(&bob.id).await.unwrap().is_empty());

    // Wrong shapes and near misses are simply not tokens.
    let mut near = token.clone();
    near.replace_range(10..11, if &token[10..11] == "0" { "1" } else { "0" });
    for bad in [
        "",
        "kiln_",
        "Bearer x",
        &near,
        &token.to_uppercase(),
        &token[..60],
    ] {
        assert_eq!(store.authenticate(bad).await.unwrap(), None, "{bad}");
    }

    // Bob cannot revoke Ada's token; Ada can, and then it stops working.
    let id = created.info.id.clone();
    assert!(matches!(
        store.revoke_token(&bob.id, &id).await,
        Err(Error::NotFound(_))
    ));
    store.revoke_token(&ada.id, &id).await.unwrap();
    assert_eq!(store.authenticate(&token).await.unwrap(), None);
    assert!(store.list_tokens(&ada.id).await.unwrap().is_empty());
    assert!(matches!(
        store.revoke_token(&ada.id, &id).await,
        Err(Error::NotFound(_))
    ));
    let unknown_user = kiln_core::UserId::random();
    assert!(matches!(
        store.create_token(&unknown_user, "x").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.revoke_token(&ada.id, &TokenId::random()).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn meta_and_everything_survive_reopen() {
    let (dir, store) = store().await;
    assert_eq!(store.meta_get("bootstrapped").await.unwrap(), None);
    store.meta_set("bootstrapped", "1").await.unwrap();
    store.meta_set("bootstrapped", "2").await.unwrap();
    let ada = store.create_user("ada", false).await.unwrap();
    let token = store.create_token(&ada.id, "ci").await.unwrap().token;
    drop(store);
    let store = Store::open(dir.path()).await.unwrap();
    assert_eq!(
        store.meta_get("bootstrapped").await.unwrap().as_deref(),
        Some("2")
    );
    assert_eq!(store.authenticate(&token).await.unwrap(), Some(ada));
}

#[tokio::test]
async fn repos_are_validated_and_unique() {
    let (_dir, store) = store().await;
    let make = |name: &str, url: &str| CreateRepo {
        name: name.into(),
        url: url.into(),
        default_branch: None,
        description: None,
        hooks: Vec::new(),
        environment: None,
        check: false,
    };
    let repo = store
        .create_repo(&make("kiln", "/srv/git/kiln.git"))
        .await
        .unwrap();
    assert_eq!(repo.default_branch, "main");
    assert_eq!(repo.description, "");
    assert_eq!(store.repo("kiln").await.unwrap(), repo);
    assert!(matches!(
        store.create_repo(&make("kiln", "x")).await,
        Err(Error::Conflict(_))
    ));
    for bad in ["", ".git", "../x", "a/b", "with space", &"x".repeat(65)] {
        let result = store.create_repo(&make(bad, "x")).await;
        assert!(
            matches!(result, Err(Error::Invalid(_))),
            "{bad:?}: {result:?}"
        );
    }
    assert!(matches!(
        store.create_repo(&make("ok", " ")).await,
        Err(Error::Invalid(_))
    ));
    let mut dev = make("app.v2", "git@example.invalid:app.git");
    dev.default_branch = Some("dev".into());
    dev.description = Some("the app".into());
    let dev = store.create_repo(&dev).await.unwrap();
    assert_eq!(
        (dev.default_branch.as_str(), dev.description.as_str()),
        ("dev", "the app")
    );
    let names: Vec<_> = store
        .list_repos()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["app.v2", "kiln"]);
    assert!(matches!(store.repo("nope").await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn sessions_roles_and_shares() {
    let (_dir, store) = store().await;
    repo(&store, "kiln").await;
    let ada = store.create_user("ada", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    let eve = store.create_user("eve", false).await.unwrap();
    let (s1, s2) = (SessionId::random(), SessionId::random());
    store
        .create_session(&s1, "kiln", "first", &ada.id)
        .await
        .unwrap();
    store
        .create_session(&s2, "kiln", "second", &bob.id)
        .await
        .unwrap();
    assert!(matches!(
        store.create_session(&s1, "kiln", "again", &ada.id).await,
        Err(Error::Conflict(_))
    ));
    let s3 = SessionId::random();
    assert!(matches!(
        store.create_session(&s3, "nope", "", &ada.id).await,
        Err(Error::NotFound(_))
    ));

    let row = store.session_row(&s1).await.unwrap();
    assert_eq!(
        (row.repo.as_str(), row.title.as_str(), row.closed),
        ("kiln", "first", false)
    );
    assert_eq!(row.created_by.name, "ada");
    assert_eq!(
        store.role_of(&s1, &ada.id).await.unwrap(),
        Some(Role::Owner)
    );
    assert_eq!(store.role_of(&s1, &bob.id).await.unwrap(), None);

    // Bob joins s1 as a collaborator by link; a viewer link later does not downgrade him.
    let collab = store
        .create_share(&s1, Role::Collaborator, &ada.id)
        .await
        .unwrap();
    assert_eq!(collab.path, format!("/api/join/{}", collab.code));
    let viewer = store
        .create_share(&s1, Role::Viewer, &ada.id)
        .await
        .unwrap();
    let redeem = |code: String, user| {
        let store = store.clone();
        async move {
            store
                .redeem_share(&code, &user)
                .await
                .unwrap()
                .map(|r| (r.session, r.role, r.changed))
        }
    };
    assert_eq!(
        redeem(collab.code.clone(), bob.id.clone()).await,
        Some((s1.clone(), Role::Collaborator, true))
    );
    assert_eq!(
        redeem(viewer.code.clone(), bob.id.clone()).await,
        Some((s1.clone(), Role::Collaborator, false))
    );
    assert_eq!(
        redeem(viewer.code.clone(), ada.id.clone()).await,
        Some((s1.clone(), Role::Owner, false))
    );
    assert_eq!(
        redeem(viewer.code.clone(), eve.id.clone()).await,
        Some((s1.clone(), Role::Viewer, true))
    );
    assert_eq!(
        store.role_of(&s1, &ada.id).await.unwrap(),
        Some(Role::Owner)
    );
    assert_eq!(redeem("0".repeat(32), eve.id.clone()).await, None);
    assert_eq!(redeem("not a code".into(), eve.id.clone()).await, None);
    // The code itself is not stored, so a stored hash is not a code.
    let hash_hex: String = Sha256::digest(collab.code.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(redeem(hash_hex, eve.id.clone()).await, None);

    let members = store.members(&s1).await.unwrap();
    let summary: Vec<_> = members
        .iter()
        .map(|m| (m.user.name.as_str(), m.role))
        .collect();
    assert_eq!(
        summary,
        [
            ("ada", Role::Owner),
            ("bob", Role::Collaborator),
            ("eve", Role::Viewer)
        ]
    );

    // set_role is the explicit form and may downgrade.
    store.set_role(&s1, &bob.id, Role::Viewer).await.unwrap();
    assert_eq!(
        store.role_of(&s1, &bob.id).await.unwrap(),
        Some(Role::Viewer)
    );
    assert!(matches!(
        store.set_role(&s3, &bob.id, Role::Viewer).await,
        Err(Error::NotFound(_))
    ));

    // Bob sees both sessions, newest first, each with his role.
    let bobs: Vec<_> = store
        .sessions_for(&bob.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(row, role)| (row.id, role))
        .collect();
    assert_eq!(
        bobs,
        [(s2.clone(), Role::Owner), (s1.clone(), Role::Viewer)]
    );
    let eves: Vec<_> = store.sessions_for(&eve.id).await.unwrap();
    assert_eq!(eves.len(), 1);
    assert_eq!(
        store.all_session_ids().await.unwrap(),
        [s1.clone(), s2.clone()]
    );

    store.set_session_closed(&s1, true).await.unwrap();
    assert!(store.session_row(&s1).await.unwrap().closed);
    assert!(matches!(
        store.set_session_closed(&s3, true).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.session_row(&s3).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.open_session(&s3).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn a_session_whose_db_cannot_be_created_leaves_no_index_row() {
    let (dir, store) = store().await;
    repo(&store, "kiln").await;
    let ada = store.create_user("ada", false).await.unwrap();
    // A file where the sessions directory should be: creating the session's dir fails.
    std::fs::remove_dir(dir.path().join("sessions")).unwrap();
    std::fs::write(dir.path().join("sessions"), b"in the way").unwrap();
    let id = SessionId::random();
    let result = store.create_session(&id, "kiln", "t", &ada.id).await;
    assert!(matches!(result, Err(Error::Io(_))), "{result:?}");
    assert!(matches!(
        store.session_row(&id).await,
        Err(Error::NotFound(_))
    ));
    assert!(store.sessions_for(&ada.id).await.unwrap().is_empty());
    assert!(store.all_session_ids().await.unwrap().is_empty());
    assert_eq!(store.role_of(&id, &ada.id).await.unwrap(), None);

    // A directory left over from an interrupted create is never overwritten.
    std::fs::remove_file(dir.path().join("sessions")).unwrap();
    std::fs::create_dir_all(dir.path().join("sessions").join(id.as_str())).unwrap();
    let result = store.create_session(&id, "kiln", "t", &ada.id).await;
    assert!(matches!(result, Err(Error::Conflict(_))), "{result:?}");
    assert!(store.all_session_ids().await.unwrap().is_empty());

    // Without it, the same id can be created, and only once.
    std::fs::remove_dir(dir.path().join("sessions").join(id.as_str())).unwrap();
    store
        .create_session(&id, "kiln", "t", &ada.id)
        .await
        .unwrap();
    assert_eq!(store.all_session_ids().await.unwrap(), [id]);
}

#[tokio::test]
async fn the_audit_log_is_append_only() {
    let (dir, store) = common::store().await;
    let action = kiln_protocol::api::AuditAction::GarbageCollected;
    store
        .audit(None, action, "gc", serde_json::json!({"n": 1}))
        .await
        .unwrap();
    let page = store.audit_page(0, 10).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].action, action);
    assert_eq!(page.next_after, page.entries[0].seq);
    let conn = rusqlite::Connection::open(dir.path().join("control.db")).unwrap();
    for change in ["UPDATE audit SET target = 'x'", "DELETE FROM audit"] {
        let error = conn.execute(change, []).unwrap_err().to_string();
        assert!(error.contains("append-only"), "{change}: {error}");
    }
    assert_eq!(store.audit_page(0, 10).await.unwrap().entries, page.entries);
}
