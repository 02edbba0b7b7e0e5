//! The GitHub forge against the fake GitHub of kiln-testkit: PRs with the user's token, the
//! 422 "already exists" path, installation tokens (app JWT verified by the fake, cached), the
//! OAuth code exchange and refresh, and the errors people read.

use kiln_core::Secret;
use kiln_forge::{ChangeRequest, Forge, ForgeError, GitHub, GitHubConfig, RepoRef};
use kiln_testkit::{
    FAKE_APP_ID, FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, Failure, FakeGitHub, TEST_APP_PRIVATE_KEY_PEM,
};
use std::time::Duration;

fn forge(fake: &FakeGitHub) -> GitHub {
    GitHub::new(GitHubConfig {
        api_url: fake.url(),
        app_id: Some(FAKE_APP_ID.into()),
        private_key_pem: Some(Secret::new(TEST_APP_PRIVATE_KEY_PEM.as_bytes().to_vec())),
        client_id: Some(FAKE_CLIENT_ID.into()),
        client_secret: Some(Secret::new(FAKE_CLIENT_SECRET.into())),
        webhook_secret: None,
        triggers: Default::default(),
    })
    .expect("the forge")
}

fn change(title: &str) -> ChangeRequest {
    ChangeRequest {
        head: "kiln/s-1".into(),
        base: "main".into(),
        title: title.into(),
        body: "body".into(),
        draft: true,
    }
}

#[tokio::test]
async fn a_pr_is_opened_with_the_users_token_and_updated_when_it_exists() {
    let fake = FakeGitHub::start().await;
    let token = fake.add_user("alice");
    fake.add_repo("octo/hw", 7, &[("alice", "write")]);
    let gh = forge(&fake);
    let repo = RepoRef::parse("octo/hw").unwrap();
    let token = Secret::new(token);

    let first = gh
        .open_or_update(&token, &repo, &change("one"))
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.change.number, 1);
    assert!(first.change.draft);
    assert_eq!(first.change.state, "open");
    assert!(first.change.url.ends_with("/octo/hw/pull/1"));

    let second = gh
        .open_or_update(&token, &repo, &change("two"))
        .await
        .unwrap();
    assert!(!second.created, "the open PR is updated, not a second one");
    assert_eq!(second.change.number, 1);
    let pulls = fake.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].title, "two");
    assert_eq!(pulls[0].author, "alice");

    let requests = fake.requests();
    let methods: Vec<_> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        methods,
        [
            ("POST", "/repos/octo/hw/pulls"),
            ("POST", "/repos/octo/hw/pulls"),
            ("GET", "/repos/octo/hw/pulls"),
            ("PATCH", "/repos/octo/hw/pulls/1"),
        ]
    );
    assert!(
        requests
            .iter()
            .all(|r| r.token() == Some(token.expose().as_str()))
    );
    assert!(
        requests[2].query.contains("head=octo%3Akiln%2Fs-1"),
        "{}",
        requests[2].query
    );

    fake.merge("octo/hw", 1);
    let state = gh.change_request(&token, &repo, 1).await.unwrap();
    assert!(state.merged);
    assert_eq!(state.state, "closed");
    assert!(state.merged_at_ms.is_some());
}

#[tokio::test]
async fn errors_say_what_happened_without_the_token() {
    let fake = FakeGitHub::start().await;
    let token = Secret::new(fake.add_user("bob"));
    fake.add_repo("octo/hw", 7, &[("bob", "read")]);
    let gh = forge(&fake);
    let repo = RepoRef::parse("octo/hw").unwrap();

    fake.fail_next(Failure::RateLimited { reset_in_secs: 120 });
    let e = gh
        .open_or_update(&token, &repo, &change("x"))
        .await
        .unwrap_err();
    let ForgeError::RateLimited { reset_at_ms, .. } = &e else {
        panic!("expected a rate limit, got {e}");
    };
    assert!(reset_at_ms.is_some());
    let text = e.to_string();
    assert!(
        text.contains("rate limit") && text.contains("retry in"),
        "{text}"
    );
    assert!(text.contains("min"), "{text}");

    fake.fail_next(Failure::Unauthorized);
    let e = gh
        .open_or_update(&token, &repo, &change("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, ForgeError::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("sign in with GitHub again"), "{e}");

    // A reader cannot open a PR: GitHub's 403.
    let e = gh
        .open_or_update(&token, &repo, &change("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, ForgeError::Forbidden { .. }), "{e}");
    let seen = gh.permission(&token, &repo).await.unwrap();
    assert!(seen.read && !seen.write, "{seen:?}");
    // A repository GitHub hides from the user (404): no access at all, not an error.
    let hidden = gh
        .permission(&token, &RepoRef::parse("octo/nope").unwrap())
        .await
        .unwrap();
    assert_eq!(hidden, kiln_forge::Permission::default());

    let e = gh
        .open_or_update(&token, &RepoRef::parse("octo/nope").unwrap(), &change("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, ForgeError::NotFound { .. }), "{e}");

    let bad = Secret::new("ghu_not_a_token".to_string());
    let e = gh.current_user(&bad).await.unwrap_err();
    assert!(!e.to_string().contains("ghu_not_a_token"), "{e}");
    assert!(!format!("{e:?}").contains(token.expose()), "{e:?}");
}

#[tokio::test]
async fn installation_tokens_are_cached_until_shortly_before_expiry() {
    let fake = FakeGitHub::start().await;
    fake.add_repo("octo/hw", 7, &[]);
    fake.add_repo("octo/other", 7, &[]);
    let gh = forge(&fake);
    let repo = RepoRef::parse("octo/hw").unwrap();

    let a = gh.installation_token(&repo).await.unwrap();
    let b = gh.installation_token(&repo).await.unwrap();
    let c = gh
        .installation_token(&RepoRef::parse("octo/other").unwrap())
        .await
        .unwrap();
    assert_eq!(a.token.expose(), b.token.expose());
    assert_eq!(
        a.token.expose(),
        c.token.expose(),
        "one installation, one token"
    );
    assert!(fake.is_installation_token(a.token.expose(), 7));
    assert_eq!(a.username, "x-access-token");
    let minted = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/app/installations/7/access_tokens")
        .count();
    assert_eq!(minted, 1, "{:?}", fake.requests());
    // The fake verified the JWT (RS256, iss, lifetime): a bad one would have been a 401.

    // A token within the refresh margin is replaced.
    let fresh = FakeGitHub::start().await;
    fresh.add_repo("octo/hw", 9, &[]);
    fresh.set_installation_token_ttl(Duration::from_secs(60));
    let gh = forge(&fresh);
    let a = gh.installation_token(&repo).await.unwrap();
    let b = gh.installation_token(&repo).await.unwrap();
    assert_ne!(a.token.expose(), b.token.expose());

    let e = gh
        .installation_token(&RepoRef::parse("octo/absent").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, ForgeError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("installed"), "{e}");
}

#[tokio::test]
async fn a_wrong_app_key_is_refused_by_github() {
    let fake = FakeGitHub::start().await;
    fake.add_repo("octo/hw", 7, &[]);
    let gh = GitHub::new(GitHubConfig {
        api_url: fake.url(),
        app_id: Some("1".into()),
        private_key_pem: Some(Secret::new(TEST_APP_PRIVATE_KEY_PEM.as_bytes().to_vec())),
        ..GitHubConfig::default()
    })
    .unwrap();
    let e = gh
        .installation_token(&RepoRef::parse("octo/hw").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, ForgeError::Unauthorized { .. }), "{e}");

    let e = GitHub::new(GitHubConfig {
        api_url: fake.url(),
        app_id: Some("1".into()),
        private_key_pem: Some(Secret::new(b"not a key".to_vec())),
        ..GitHubConfig::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("app key"), "{e}");
}

#[tokio::test]
async fn sign_in_exchanges_a_code_and_refreshes() {
    let fake = FakeGitHub::start().await;
    fake.add_user("carol");
    fake.set_user_token_ttl(Duration::from_secs(2));
    let gh = forge(&fake);

    let url = gh.authorize_url("st4te", "http://127.0.0.1:1/cb").unwrap();
    assert!(url.starts_with(&format!("{}/login/oauth/authorize?client_id=", fake.url())));
    assert!(url.contains("state=st4te"), "{url}");

    let e = gh.exchange_code("wrong", "http://x/cb").await.unwrap_err();
    let ForgeError::SignIn { code, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(code, "bad_verification_code");

    let code = fake.code_for("carol");
    let tokens = gh.exchange_code(&code, "http://x/cb").await.unwrap();
    assert_eq!(
        gh.current_user(&tokens.access).await.unwrap().login,
        "carol"
    );
    assert!(tokens.expires_at_ms.unwrap() <= kiln_core::now_ms() + 2_000);
    // A code works once.
    assert!(gh.exchange_code(&code, "http://x/cb").await.is_err());

    let refreshed = gh.refresh(tokens.refresh.as_ref().unwrap()).await.unwrap();
    assert_ne!(refreshed.access.expose(), tokens.access.expose());
    assert_eq!(
        fake.login_of(refreshed.access.expose()).as_deref(),
        Some("carol")
    );
    // The old refresh token was used up.
    let e = gh
        .refresh(tokens.refresh.as_ref().unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sign in with GitHub again"), "{e}");

    let unconfigured = GitHub::new(GitHubConfig {
        api_url: fake.url(),
        ..GitHubConfig::default()
    })
    .unwrap();
    let e = unconfigured.authorize_url("s", "http://x").unwrap_err();
    assert!(e.to_string().contains("client_id"), "{e}");
}

#[test]
fn compare_and_clone_urls() {
    let gh = GitHub::new(GitHubConfig::default()).unwrap();
    let repo = RepoRef::parse("octo/hw").unwrap();
    assert_eq!(
        gh.compare_url(&repo, "main", "kiln/s-1"),
        "https://github.com/octo/hw/compare/main...kiln/s-1?expand=1"
    );
    assert_eq!(gh.clone_url(&repo), "https://github.com/octo/hw.git");
    let ghes = GitHub::new(GitHubConfig {
        api_url: "https://ghe.example/api/v3".into(),
        ..GitHubConfig::default()
    })
    .unwrap();
    assert_eq!(ghes.clone_url(&repo), "https://ghe.example/octo/hw.git");
    assert_eq!(ghes.git_host(), "ghe.example");
}
