//! Repo secrets in the control DB: set (add and replace), list without values, read sealed,
//! remove, bounded per repo, gone with their repo. The store holds whatever bytes the engine
//! sealed; here they are stand-ins, and the test checks they come back byte for byte.

mod common;

use common::{repo, store};
use kiln_protocol::api::{ImageSecret, SECRETS_PER_REPO};
use kiln_store::{Error, SealedSecret};

fn sealed(name: &str, ciphertext: &[u8], agent: bool) -> SealedSecret {
    SealedSecret {
        name: name.into(),
        ciphertext: ciphertext.to_vec(),
        agent,
        fingerprint: format!("fp-{}", ciphertext.len()),
    }
}

#[tokio::test]
async fn secrets_are_set_listed_replaced_and_removed() {
    let (_dir, store) = store().await;
    let ada = store.create_user("ada", true).await.unwrap();
    let bob = store.create_user("bob", true).await.unwrap();
    repo(&store, "app").await;
    repo(&store, "other").await;

    let listed = store
        .set_secret("app", sealed("TOKEN", b"\x01sealed", false), &ada.id)
        .await
        .unwrap();
    assert_eq!(listed.name, "TOKEN");
    assert!(!listed.agent);
    assert_eq!(listed.updated_by.name, "ada");
    store
        .set_secret("app", sealed("NPM", b"\x01other!", true), &ada.id)
        .await
        .unwrap();
    store
        .set_secret("other", sealed("TOKEN", b"\x01x", false), &ada.id)
        .await
        .unwrap();

    // Replacing keeps one row, with the new bytes, flag and author.
    let replaced = store
        .set_secret("app", sealed("TOKEN", b"\x01sealed-again", true), &bob.id)
        .await
        .unwrap();
    assert!(replaced.agent);
    assert_eq!(replaced.updated_by.id, bob.id);
    let names: Vec<_> = store
        .secrets("app")
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.agent))
        .collect();
    assert_eq!(names, [("NPM".into(), true), ("TOKEN".into(), true)]);
    let sealed_now = store.sealed_secrets("app").await.unwrap();
    assert_eq!(sealed_now[1].ciphertext, b"\x01sealed-again");
    assert!(!format!("{:?}", sealed_now[1]).contains("sealed-again"));
    assert_eq!(
        store.secret_fingerprints("app").await.unwrap(),
        [
            ImageSecret {
                name: "NPM".into(),
                fingerprint: "fp-7".into()
            },
            ImageSecret {
                name: "TOKEN".into(),
                fingerprint: "fp-13".into()
            }
        ]
    );

    store.delete_secret("app", "TOKEN").await.unwrap();
    assert!(matches!(
        store.delete_secret("app", "TOKEN").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(store.secrets("app").await.unwrap().len(), 1);
    // The other repo's secret of the same name is its own.
    assert_eq!(store.secrets("other").await.unwrap().len(), 1);

    for missing in [
        store.secrets("nope").await.map(|_| ()),
        store.delete_secret("nope", "X").await,
        store
            .set_secret("nope", sealed("X", b"x", false), &ada.id)
            .await
            .map(|_| ()),
    ] {
        assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    }
}

#[tokio::test]
async fn a_repo_holds_a_bounded_number_and_loses_them_with_itself() {
    let (_dir, store) = store().await;
    let ada = store.create_user("ada", true).await.unwrap();
    repo(&store, "app").await;
    for i in 0..SECRETS_PER_REPO {
        store
            .set_secret("app", sealed(&format!("S{i}"), b"x", false), &ada.id)
            .await
            .unwrap();
    }
    let over = store
        .set_secret("app", sealed("ONE_MORE", b"x", false), &ada.id)
        .await;
    assert!(matches!(over, Err(Error::Invalid(_))), "{over:?}");
    // Replacing one at the limit is fine.
    store
        .set_secret("app", sealed("S0", b"y", true), &ada.id)
        .await
        .unwrap();

    store.delete_repo("app").await.unwrap();
    repo(&store, "app").await;
    assert!(store.secrets("app").await.unwrap().is_empty());
    assert!(store.sealed_secrets("app").await.unwrap().is_empty());
}
