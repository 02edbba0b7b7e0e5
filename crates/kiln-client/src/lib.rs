//! Typed API client used by the CLI and by integration tests.
