//! Test helpers shared by kiln's crates: a fake model server speaking the Anthropic and OpenAI
//! streaming formats over real HTTP, and bare git repositories on disk. Tests use it as a
//! dev-dependency; `kiln bench` uses it too, because a benchmark needs a model it can time.

mod fake_model;
mod repo;

pub use fake_model::{FakeModel, FakeToolCall, RecordedRequest, Script, Turn};
pub use repo::{bare_repo, git};
