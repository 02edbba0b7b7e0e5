//! Test helpers: a fake model server speaking the Anthropic and OpenAI streaming formats, git repos, a running server.
