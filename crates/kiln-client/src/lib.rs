//! The typed API client of a kiln server, used by the `kiln` CLI and by integration tests.
//!
//! [`Client`] has one method per REST endpoint, taking and returning the `kiln-protocol` types;
//! [`Client::subscribe`] follows a session's event log over its WebSocket and reconnects by
//! itself. Every failure is an [`Error`] whose variant says what a person can do about it.
//! The token is a [`kiln_core::Secret`] and reaches nothing but the `Authorization` header.

mod client;
mod error;
mod manage;
mod mcp;
mod secrets;
mod stream;

pub use client::{Client, ImageLog};
pub use error::{Error, Result};
pub use manage::Listing;
pub use stream::{EventStream, Link, SubscribeOptions, websocket_config};
