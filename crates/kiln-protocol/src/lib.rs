//! Types that cross a process boundary. Today that is the guest-agent protocol spoken between the
//! control plane and the small agent inside every sandbox; REST and WebSocket types join later.
//!
//! Everything here is plain data plus pure encoding: no IO, no runtime.

pub mod guest;
