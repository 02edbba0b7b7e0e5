//! Model provider clients (Anthropic Messages, OpenAI Chat Completions and compatibles): streaming, tool calls, retries.
