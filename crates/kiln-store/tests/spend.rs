//! What the store keeps of spend: the daily sums per user and repo (the day passed in, so a
//! new day needs no clock), a session's running total kept with its usage events, and the
//! rewrite of a compacted conversation.

mod common;

use common::session;
use kiln_core::PromptId;
use kiln_protocol::api::{Event, PromptStatus, Usage, UserRef};
use kiln_store::{DailySpend, Error};
use serde_json::json;

#[tokio::test]
async fn daily_spend_adds_up_per_user_and_repo_and_starts_again_each_day() {
    let (_dir, store, ada, _log) = session().await;
    let bob = store.create_user("bob", false).await.unwrap().id;
    let day = "2026-12-02";
    store
        .add_daily_spend(day, &ada, "kiln", 0.25)
        .await
        .unwrap();
    let spent = store.add_daily_spend(day, &ada, "kiln", 0.5).await.unwrap();
    assert_eq!(
        spent,
        DailySpend {
            user_usd: 0.75,
            repo_usd: 0.75
        }
    );
    let spent = store
        .add_daily_spend(day, &bob, "kiln", 0.25)
        .await
        .unwrap();
    assert_eq!(
        spent,
        DailySpend {
            user_usd: 0.25,
            repo_usd: 1.0
        }
    );
    assert_eq!(
        store.daily_spend(day, &ada, "other").await.unwrap(),
        DailySpend {
            user_usd: 0.75,
            repo_usd: 0.0
        }
    );
    // The next UTC day starts from nothing: a budget resets.
    let next = "2026-12-03";
    assert_eq!(
        store.daily_spend(next, &ada, "kiln").await.unwrap(),
        DailySpend::default()
    );
    store
        .add_daily_spend(next, &ada, "kiln", 0.1)
        .await
        .unwrap();
    // Days more than a week old are dropped as new ones are written.
    store
        .add_daily_spend("2026-12-20", &ada, "kiln", 0.1)
        .await
        .unwrap();
    assert_eq!(
        store.daily_spend(day, &ada, "kiln").await.unwrap(),
        DailySpend::default()
    );
}

#[tokio::test]
async fn a_session_keeps_a_running_total_and_its_conversation_can_be_compacted() {
    let (_dir, _store, ada, log) = session().await;
    assert_eq!(log.spend().await.unwrap(), Usage::default());
    let prompt = PromptId::random();
    let author = UserRef {
        id: ada,
        name: "ada".into(),
    };
    let usage = Usage {
        input_tokens: 100,
        output_tokens: 10,
        cache_read_tokens: 40,
        cache_write_tokens: 0,
        cost_usd: Some(0.5),
    };
    for _ in 0..2 {
        let (prompt, author) = (prompt.clone(), author.clone());
        log.write(move |w| {
            if w.prompt(&prompt).is_err() {
                w.insert_prompt(&prompt, &author, "x", PromptStatus::Running)?;
            }
            for i in 0..3 {
                w.push_message(&prompt, &json!({"n": i}))?;
            }
            w.add_spend(&usage)
        })
        .await
        .unwrap();
    }
    let total = log.spend().await.unwrap();
    assert_eq!((total.input_tokens, total.cache_read_tokens), (200, 80));
    assert_eq!(total.cost_usd, Some(1.0));

    // Six messages: the first four become one summary, the last two are rewritten.
    let compact = |summarised: usize, kept: Vec<serde_json::Value>| {
        let prompt = prompt.clone();
        log.write(move |w| {
            w.compact_messages(&prompt, summarised, &json!({"summary": true}), &kept)?;
            w.event(Event::Compacted {
                prompt_id: prompt.clone(),
                before_tokens: 10,
                after_tokens: 5,
                messages_summarised: summarised as u64,
            })
        })
    };
    compact(4, vec![json!({"n": "a"}), json!({"n": "b"})])
        .await
        .unwrap();
    assert_eq!(
        *log.messages().await.unwrap(),
        [
            json!({"summary": true}),
            json!({"n": "a"}),
            json!({"n": "b"})
        ]
    );
    // A conversation that changed meanwhile is not overwritten.
    assert!(matches!(
        compact(1, vec![json!(1)]).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(log.messages().await.unwrap().len(), 3);
}
