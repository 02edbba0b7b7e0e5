//! The HTTP and WebSocket API: axum routes, auth, the OpenAPI document.
