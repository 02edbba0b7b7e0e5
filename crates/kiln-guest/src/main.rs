//! Placeholder replaced by the guest agent implementation.
fn main() {}
