//! Test helpers shared by kiln's crates (a dev-dependency only): today a fake model server speaking
//! the Anthropic and OpenAI streaming formats over real HTTP; later a running kiln server and bare
//! git repositories.

mod fake_model;

pub use fake_model::{FakeModel, FakeToolCall, RecordedRequest, Script, Turn};
