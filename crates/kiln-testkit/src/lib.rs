//! Test helpers shared by kiln's crates: a fake model server speaking the Anthropic and OpenAI
//! streaming formats over real HTTP, a fake GitHub speaking its REST API, a fake Slack Web API and signed Slack events, bare git repositories on disk, and a git smart-HTTP server
//! with basic authentication. Tests use it as a
//! dev-dependency; `kiln bench` uses it too, because a benchmark needs a model it can time.

mod fake_github;
mod fake_model;
mod fake_slack;
mod git_http;
mod otlp;
mod repo;
pub mod slack_events;
mod tls;
mod upstream;
pub mod webhooks;

pub use fake_github::{
    FAKE_APP_ID, FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, Failure, FakeComment, FakeGitHub, FakePull,
    GitHubRequest, TEST_APP_PRIVATE_KEY_PEM,
};
pub use fake_model::{FakeModel, FakeToolCall, RecordedRequest, Script, Turn};
pub use fake_slack::{
    FAKE_SLACK_BOT_TOKEN, FAKE_SLACK_BOT_USER, FakeSlack, SlackCall, SlackMessage,
};
pub use git_http::GitHttpServer;
pub use otlp::{FakeCollector, ReceivedSpan};
pub use repo::{bare_repo, git};
pub use tls::TlsFront;
pub use upstream::{FileServer, ServedFile, http_upstream};
