//! `Gate`: everything one listener decides with — the policy, the server's deny list, the
//! address rules, the bounds, the audit sink — and the two decisions it makes: may this host be
//! asked for (by name, before any DNS query), and which resolved address may be connected to.
//!
//! Order matters and is fixed here: deny list, then policy, then (read-only) method, then DNS,
//! then the address rules on every resolved address, then connect. A refused name is never
//! resolved, so a denied host costs no DNS query either.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::address::AddressRules;
use crate::error::{Phase, Refusal};
use crate::policy::{EgressPolicy, HostPattern, normalize_host};

/// Bounds of one listener. The defaults suit one sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; one more is answered 503 (a sandbox flooding the proxy
    /// exhausts its own listener, not the host).
    pub max_connections: usize,
    /// DNS resolution plus TCP connect to the upstream.
    pub connect_timeout: Duration,
    /// A connection or tunnel with no byte in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Per-direction buffer of a tunnel: the most the proxy holds for one connection.
    pub buffer_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            buffer_size: 16 * 1024,
        }
    }
}

/// Tests only: names resolved to the test's own servers, and the exact socket addresses the
/// fixed address rules are lifted for. Off unless a caller sets it; the server's deny list still
/// applies, and every name and address not listed here gets the normal rules.
#[derive(Debug, Clone, Default)]
pub struct TestResolve {
    pub names: HashMap<String, SocketAddr>,
    pub allow_addresses: Vec<SocketAddr>,
}

/// Why a connection was let through, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// The policy is `open`.
    Open,
    /// The allowlist entry that matched.
    Listed {
        pattern: String,
    },
    Refused {
        refusal: Refusal,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open => f.write_str("open policy"),
            Self::Listed { pattern } => write!(f, "allowlist entry {pattern}"),
            Self::Refused { refusal } => refusal.fmt(f),
        }
    }
}

/// One connection (a CONNECT tunnel or one forwarded HTTP request), as the audit sees it.
/// Bytes are counted on the upstream socket (headers included); a refused connection has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressRecord {
    /// As requested (lowercase); empty when no host was read (past the connection cap, or a
    /// request that is not a proxy request).
    pub host: String,
    pub port: u16,
    /// Whether bytes were allowed to flow to the upstream.
    pub allowed: bool,
    pub reason: Reason,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
}

/// What every listener that shares it passed and refused, summed since it was made: read at
/// any time (a metrics scrape) without stopping the proxies.
#[derive(Debug, Default)]
pub struct EgressTotals {
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    denied: AtomicU64,
}

impl EgressTotals {
    fn add(&self, record: &EgressRecord) {
        self.bytes_up.fetch_add(record.bytes_up, Ordering::Relaxed);
        self.bytes_down
            .fetch_add(record.bytes_down, Ordering::Relaxed);
        if !record.allowed {
            self.denied.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Bytes sent upstream (headers included).
    pub fn bytes_up(&self) -> u64 {
        self.bytes_up.load(Ordering::Relaxed)
    }

    /// Bytes received from upstream.
    pub fn bytes_down(&self) -> u64 {
        self.bytes_down.load(Ordering::Relaxed)
    }

    /// Connections refused.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }
}

/// Where records go. Called on the proxy's tasks: it must not block (send on a bounded channel
/// with `try_send`, count what it drops).
pub type AuditSink = Arc<dyn Fn(EgressRecord) + Send + Sync>;

/// One listener's rules. Build with `Gate::new` and the `with_*` methods, share as `Arc<Gate>`.
pub struct Gate {
    policy: EgressPolicy,
    /// Whose policy it is, for the refusal's hint.
    phase: Phase,
    /// The server-wide deny list (`kiln.toml`): wins over every policy.
    deny: Vec<HostPattern>,
    /// Shared by every listener of the server: one cache of the host's addresses.
    rules: Arc<AddressRules>,
    pub(crate) limits: Limits,
    test: Option<TestResolve>,
    audit: Option<AuditSink>,
    totals: Option<Arc<EgressTotals>>,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("policy", &self.policy)
            .field("phase", &self.phase)
            .field("deny", &self.deny)
            .field("limits", &self.limits)
            .field("test", &self.test.is_some())
            .finish_non_exhaustive()
    }
}

impl Gate {
    pub fn new(policy: EgressPolicy, phase: Phase, rules: Arc<AddressRules>) -> Self {
        Self {
            policy,
            phase,
            deny: Vec::new(),
            rules,
            limits: Limits::default(),
            test: None,
            audit: None,
            totals: None,
        }
    }

    /// The server-wide deny list.
    pub fn with_denied_hosts(mut self, deny: Vec<HostPattern>) -> Self {
        self.deny = deny;
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_audit(mut self, sink: impl Fn(EgressRecord) + Send + Sync + 'static) -> Self {
        self.audit = Some(Arc::new(sink));
        self
    }

    /// Adds every connection to `totals` (shared by the server's listeners).
    pub fn with_totals(mut self, totals: Arc<EgressTotals>) -> Self {
        self.totals = Some(totals);
        self
    }

    /// The test knob; see `TestResolve`. Never set it outside tests.
    pub fn with_test_resolve(mut self, test: TestResolve) -> Self {
        self.test = Some(test);
        self
    }

    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    pub(crate) fn record(&self, record: EgressRecord) {
        tracing::debug!(host = %record.host, port = record.port, allowed = record.allowed, reason = %record.reason, "egress");
        if let Some(totals) = &self.totals {
            totals.add(&record);
        }
        if let Some(sink) = &self.audit {
            sink(record);
        }
    }

    /// The decision by name (and, for plain HTTP, method), before any DNS query.
    pub(crate) fn admit(&self, host: &str, method: Option<&Method>) -> Result<Reason, Refusal> {
        let host = normalize_host(host);
        if let Some(p) = self.deny.iter().find(|p| p.matches(&host)) {
            return Err(Refusal::ServerDenied {
                host,
                pattern: p.to_string(),
            });
        }
        let reason = match self.policy.admits(&host) {
            None if self.policy == EgressPolicy::None => {
                return Err(Refusal::NoNetwork {
                    host,
                    phase: self.phase,
                });
            }
            None => {
                return Err(Refusal::NotListed {
                    host,
                    phase: self.phase,
                });
            }
            Some(None) => Reason::Open,
            Some(Some(p)) => Reason::Listed {
                pattern: p.to_string(),
            },
        };
        if let Some(method) = method
            && self.policy.read_only()
            && !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        {
            return Err(Refusal::ReadOnly {
                host,
                method: method.to_string(),
                phase: self.phase,
            });
        }
        Ok(reason)
    }

    /// Resolves `host`, keeps the addresses the rules allow and connects to the first that
    /// answers, all within the connect timeout.
    pub(crate) async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, Refusal> {
        let deadline = Instant::now() + self.limits.connect_timeout;
        let addrs = self.resolve(host, port).await?;
        let test_allow = self
            .test
            .as_ref()
            .map_or(&[][..], |t| &t.allow_addresses[..]);
        let mut refused = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.rules.check(*a, test_allow) {
                Ok(()) => true,
                Err(class) => {
                    refused.get_or_insert((a.ip(), class));
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(match refused {
                Some((addr, class)) => Refusal::Address {
                    host: host.to_owned(),
                    addr,
                    class,
                    mode: self.policy.mode(),
                },
                None => Refusal::Resolve {
                    host: host.to_owned(),
                    detail: "it has no address".to_owned(),
                },
            });
        }
        let mut last = String::new();
        for addr in allowed {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(_) => {
                    last = format!(
                        "{addr}: no answer within {} s",
                        self.limits.connect_timeout.as_secs()
                    );
                    break;
                }
            }
        }
        Err(Refusal::Connect {
            host: host.to_owned(),
            detail: last,
        })
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        if let Some(addr) = self.test.as_ref().and_then(|t| t.names.get(host)) {
            return Ok(vec![*addr]);
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let failed = |detail: String| Refusal::Resolve {
            host: host.to_owned(),
            detail,
        };
        match tokio::time::timeout(
            self.limits.connect_timeout,
            tokio::net::lookup_host((host, port)),
        )
        .await
        {
            Ok(Ok(addrs)) => Ok(addrs.collect()),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Err(_) => Err(failed(format!(
                "no answer within {} s",
                self.limits.connect_timeout.as_secs()
            ))),
        }
    }
}
