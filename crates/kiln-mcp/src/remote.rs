//! A remote server's address, checked before anything is sent: the host is resolved once, every
//! address it resolves to must pass the egress address rules (no loopback, private, link-local,
//! multicast or host address) unless kiln.toml's `[mcp] allow_hosts` names that `host:port`,
//! and the HTTP client is pinned to the checked address, so no second lookup can differ (DNS
//! rebinding).

use crate::{Error, McpSettings};
use kiln_egress::AddressRules;
use std::net::SocketAddr;
use std::time::Duration;

/// How long resolving the host may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JSON answer a remote server may send (a tool's result is cut far shorter later).
pub(crate) const MAX_RESPONSE: usize = 4 << 20;

/// The HTTP client for `url`, pinned to its checked address.
pub(crate) async fn client(
    server: &str,
    url: &str,
    settings: &McpSettings,
) -> Result<reqwest13::Client, Error> {
    let config = |message: String| Error::Config {
        server: server.to_string(),
        message,
    };
    let parsed = reqwest13::Url::parse(url).map_err(|e| config(format!("url {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(config(format!("url {url:?} must be http:// or https://")));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| config(format!("url {url:?} has no host")))?
        .to_string();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| config(format!("url {url:?} has no port")))?;
    // `[::1]` in a URL, `::1` to the resolver.
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let host_port = format!("{host}:{port}");
    let resolved: Vec<SocketAddr> = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::net::lookup_host((bare.as_str(), port)),
    )
    .await
    .map_err(|_| Error::Resolve {
        server: server.to_string(),
        host: host.clone(),
        message: format!(
            "no answer within {}",
            kiln_core::human_duration(RESOLVE_TIMEOUT)
        ),
    })?
    .map_err(|e| Error::Resolve {
        server: server.to_string(),
        host: host.clone(),
        message: e.to_string(),
    })?
    .collect();
    let Some(first) = resolved.first().copied() else {
        return Err(Error::Resolve {
            server: server.to_string(),
            host,
            message: "no addresses".into(),
        });
    };
    if !settings.allow_hosts.contains(&host_port) {
        let rules = AddressRules::new(Vec::new());
        for addr in &resolved {
            if let Err(class) = rules.check(*addr, &[]) {
                return Err(Error::Refused {
                    server: server.to_string(),
                    host,
                    host_port,
                    addr: *addr,
                    class,
                });
            }
        }
    }
    // reqwest here is built without a default crypto provider: ring, like the rest of kiln.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest13::Client::builder()
        .resolve(&bare, first)
        // The system proxy would make the check above meaningless.
        .no_proxy()
        .connect_timeout(crate::CONNECT_TIMEOUT)
        .redirect(reqwest13::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| config(format!("cannot build its HTTP client: {e}")))
}
