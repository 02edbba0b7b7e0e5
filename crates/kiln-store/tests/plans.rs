//! Plan mode in a session DB: plan-first prompts, the `plan_mode` setting, and plans decided
//! once, surviving a reopen.

mod common;

use common::session;
use kiln_core::{PlanId, PromptId};
use kiln_protocol::api::{PromptStatus, UserRef};
use kiln_store::{Error, PlanState, Store};

#[tokio::test]
async fn a_plan_is_decided_once_and_survives_a_reopen() {
    let (dir, store, user, log) = session().await;
    let id = log.id().clone();
    let author = UserRef {
        id: user,
        name: "ada".into(),
    };
    let (prompt, plan) = (PromptId::random(), PlanId::random());
    let (p, a, pl) = (prompt.clone(), author.clone(), plan.clone());
    log.write(move |w| {
        assert!(!w.plan_mode()?);
        w.set_plan_mode(true)?;
        w.insert_prompt_with(&p, &a, "plan it", PromptStatus::Queued, true)?;
        w.insert_plan(&pl, &p, Some("Title"), "1. do it")
    })
    .await
    .unwrap();
    assert!(log.prompt(&prompt).await.unwrap().plan);
    let (recent, _) = log.recent_prompts(10, 100).await.unwrap();
    assert!(recent[0].plan);
    drop((log, store));

    let store = Store::open(dir.path()).await.unwrap();
    let log = store.open_session(&id).await.unwrap();
    assert!(log.plan_mode().await.unwrap());
    let pending = log.pending_plans().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (
            pending[0].title.as_deref(),
            pending[0].plan.as_str(),
            pending[0].state
        ),
        (Some("Title"), "1. do it", PlanState::Pending)
    );
    let pl = plan.clone();
    let (decided, _) = log
        .write(move |w| w.decide_plan(&pl, PlanState::Approved))
        .await
        .unwrap();
    assert_eq!(decided.state, PlanState::Approved);
    assert_eq!(decided.prompt_id, prompt);
    let pl = plan.clone();
    let again = log
        .write(move |w| w.decide_plan(&pl, PlanState::Rejected))
        .await;
    match again {
        Err(Error::Conflict(message)) => assert!(message.contains("already approved"), "{message}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(log.plan(&plan).await.unwrap().state, PlanState::Approved);
    assert!(log.pending_plans().await.unwrap().is_empty());
    let unknown = PlanId::random();
    assert!(matches!(
        log.write(move |w| w.decide_plan(&unknown, PlanState::Approved))
            .await,
        Err(Error::NotFound(_))
    ));
}
