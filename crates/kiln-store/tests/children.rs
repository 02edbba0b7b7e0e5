//! Sub-sessions in the index: a child's row names its parent, copies the parent's members with
//! their roles, and commits together with its first events; a failure in those leaves nothing.

mod common;

use common::{repo, store};
use kiln_core::{PromptId, Role, SessionId};
use kiln_protocol::api::{Event, PromptStatus};
use kiln_store::Error;

#[tokio::test]
async fn a_child_is_made_with_its_parent_members_and_its_first_prompt_or_not_at_all() {
    let (dir, store) = store().await;
    repo(&store, "kiln").await;
    let ada = store.create_user("ada", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    let parent = SessionId::random();
    store
        .create_session(&parent, "kiln", "parent", &ada.id)
        .await
        .unwrap();
    store
        .set_role(&parent, &bob.id, Role::Collaborator)
        .await
        .unwrap();

    // Bob's prompt spawns it: his prompt, the parent's people.
    let child = SessionId::random();
    let prompt = PromptId::random();
    let bob_ref = kiln_protocol::api::UserRef {
        id: bob.id.clone(),
        name: bob.name.clone(),
    };
    let log = store
        .create_child_session(&child, "kiln", "child", &bob.id, &parent, {
            let (prompt, bob_ref) = (prompt.clone(), bob_ref.clone());
            move |w| {
                w.insert_prompt(&prompt, &bob_ref, "go", PromptStatus::Queued)?;
                w.event(Event::PromptQueued {
                    prompt_id: prompt,
                    author: bob_ref,
                    text: "go".into(),
                    delivery: Default::default(),
                    plan: false,
                })?;
                Ok(())
            }
        })
        .await
        .unwrap();
    assert_eq!(log.prompts().await.unwrap()[0].id, prompt);
    let row = store.session_row(&child).await.unwrap();
    assert_eq!(row.parent.as_ref(), Some(&parent));
    assert_eq!(row.created_by.id, bob.id);
    assert_eq!(
        store.role_of(&child, &ada.id).await.unwrap(),
        Some(Role::Owner)
    );
    assert_eq!(
        store.role_of(&child, &bob.id).await.unwrap(),
        Some(Role::Collaborator)
    );
    let children = store.children(&parent).await.unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!(children[0].id, child);
    assert_eq!(store.session_row(&parent).await.unwrap().parent, None);

    // First events that cannot be written: no row, no directory.
    let failed = SessionId::random();
    let result = store
        .create_child_session(&failed, "kiln", "x", &bob.id, &parent, |_| {
            Err(Error::Invalid("refused on purpose".into()))
        })
        .await;
    assert!(matches!(result, Err(Error::Invalid(_))), "{result:?}");
    assert!(matches!(
        store.session_row(&failed).await,
        Err(Error::NotFound(_))
    ));
    assert!(!dir.path().join("sessions").join(failed.as_str()).exists());
    assert_eq!(store.children(&parent).await.unwrap().len(), 1);

    // A parent that does not exist.
    let orphan = SessionId::random();
    let result = store
        .create_child_session(&orphan, "kiln", "x", &bob.id, &SessionId::random(), |_| {
            Ok(())
        })
        .await;
    assert!(matches!(result, Err(Error::NotFound(_))), "{result:?}");
}
