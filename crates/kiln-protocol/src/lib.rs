//! Types that cross a process boundary: the guest-agent protocol spoken between the control plane
//! and the small agent inside every sandbox ([`guest`]), and the public API every client speaks:
//! REST bodies, WebSocket frames and the session event log ([`api`]).
//!
//! Everything here is plain data plus pure encoding: no IO, no runtime.

pub mod api;
pub mod guest;
