//! kiln's egress proxy: how a sandbox with no network interface but loopback reaches package
//! registries and git hosts, under a policy the operator controls, with the host and the
//! private network never reachable.
//!
//! A sandbox gets a Unix socket bound in; its guest bridges `HTTP_PROXY`/`HTTPS_PROXY` to it.
//! Behind the socket, `serve` runs an HTTP/1.1 forward proxy (absolute-form requests, CONNECT
//! tunnels, no TLS interception) whose every decision comes from one `Gate`:
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use kiln_egress::{AddressRules, EgressPolicy, Gate, Phase};
//!
//! let rules = Arc::new(AddressRules::new(vec!["127.0.0.1:8080".parse().unwrap()]));
//! let gate = Gate::new("allowlist".parse().unwrap(), Phase::Agent, rules)
//!     .with_audit(|record| tracing::info!(host = %record.host, allowed = record.allowed, "egress"));
//! let listener = tokio::net::UnixListener::bind("/run/kiln/sbx-1/egress.sock")?;
//! kiln_egress::serve(listener, Arc::new(gate)).await;
//! # Ok(()) }
//! ```
//!
//! **Invariant:** whatever the policy, the proxy connects only to addresses `AddressRules`
//! allows, checked on the resolved socket address it connects to (never on a name).

mod address;
mod body;
mod error;
mod gate;
mod io;
mod policy;
mod proxy;
mod socket;

pub use address::{AddressClass, AddressRules, DeniedAddr, classify, interface_addresses};
pub use error::{Phase, PolicyError, Refusal};
pub use gate::{AuditSink, EgressRecord, EgressTotals, Gate, Limits, Reason, TestResolve};
pub use io::Listener;
pub use policy::{EgressMode, EgressPolicy, HostPattern, REGISTRY_PRESET, preset};
pub use proxy::serve;
pub use socket::SocketProxy;
