//! Egress for image builds: a build's steps reach the network only through a kiln-egress proxy
//! this process serves for the build's duration, on a socket of its own in the data dir, under
//! the environment's `[network] setup` policy. What it let through or refused is summed up per
//! host in the build log, so the person reading it sees why a download failed. A Debian base's
//! downloads (mmdebstrap's apt, on the host) go through the same kind of proxy, on a loopback
//! port, audited the same way.

use crate::{Error, Result};
use kiln_egress::{
    AddressRules, EgressPolicy, EgressRecord, Gate, HostPattern, Phase, SocketProxy, TestResolve,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Server-wide egress settings (from `kiln.toml`).
#[derive(Debug, Clone)]
pub struct EgressSettings {
    /// The address rule every policy keeps (loopback, this host, private ranges, the kiln API).
    pub rules: Arc<AddressRules>,
    /// Hosts no repo may reach; wins over every policy.
    pub deny: Vec<HostPattern>,
    /// Tests only: names resolved to loopback servers the test runs (off unless set).
    pub test_resolve: Option<TestResolve>,
}

impl Default for EgressSettings {
    fn default() -> Self {
        EgressSettings {
            rules: Arc::new(AddressRules::new(Vec::new())),
            deny: Vec::new(),
            test_resolve: None,
        }
    }
}

/// Connections and bytes to one host with one outcome.
#[derive(Debug, Default)]
struct Tally {
    connections: u64,
    up: u64,
    down: u64,
}

/// What one proxy let through or refused, kept (bounded) for the build log's summary.
#[derive(Debug, Clone, Default)]
struct Audit {
    records: Arc<Mutex<Vec<EgressRecord>>>,
}

impl Audit {
    /// The gate of a proxy serving `policy` for an image build, recording into this audit.
    fn gate(&self, settings: &EgressSettings, policy: EgressPolicy) -> Gate {
        let records = self.records.clone();
        let gate = Gate::new(policy, Phase::Setup, settings.rules.clone())
            .with_denied_hosts(settings.deny.clone())
            .with_audit(move |record| {
                let mut records = records.lock().expect("egress records lock");
                // Bounded: a build that opens millions of connections keeps the first ones.
                if records.len() < 10_000 {
                    records.push(record);
                }
            });
        match &settings.test_resolve {
            Some(test) => gate.with_test_resolve(test.clone()),
            None => gate,
        }
    }

    /// One line per host and outcome: connections, bytes each way, and why.
    fn summary(&self) -> String {
        let records = self.records.lock().expect("egress records lock");
        let mut hosts: BTreeMap<(String, u16, bool, String), Tally> = BTreeMap::new();
        for r in records.iter() {
            let key = (r.host.clone(), r.port, r.allowed, r.reason.to_string());
            let entry = hosts.entry(key).or_default();
            entry.connections += 1;
            entry.up += r.bytes_up;
            entry.down += r.bytes_down;
        }
        hosts
            .into_iter()
            .map(|((host, port, allowed, reason), Tally { connections: n, up, down })| {
                let verdict = if allowed { "allowed" } else { "refused" };
                format!(
                    "== egress: {host}:{port} {verdict} ({reason}): {n} connection(s), {up} B up, {down} B down\n"
                )
            })
            .collect()
    }
}

/// The proxy of one running build; stops and removes its socket when dropped.
pub(crate) struct BuildEgress {
    proxy: SocketProxy,
    audit: Audit,
}

impl BuildEgress {
    /// Serves `policy` for build `id`; `None` when the policy lets nothing out.
    pub(crate) fn start(
        settings: &EgressSettings,
        data_dir: &Path,
        id: &str,
        policy: EgressPolicy,
    ) -> Result<Option<BuildEgress>> {
        if policy == EgressPolicy::None {
            return Ok(None);
        }
        let audit = Audit::default();
        let gate = audit.gate(settings, policy);
        let dir = data_dir.join("egress");
        let proxy =
            SocketProxy::start(&dir, &format!("{id}.sock"), Arc::new(gate)).map_err(Error::io(
                format!("serving the build's egress proxy in {}", dir.display()),
            ))?;
        Ok(Some(BuildEgress { proxy, audit }))
    }

    pub(crate) fn socket(&self) -> &Path {
        self.proxy.path()
    }

    /// One line per host and outcome: connections, bytes each way, and why.
    pub(crate) fn summary(&self) -> String {
        self.audit.summary()
    }
}

/// The same proxy for a program kiln runs on the host itself (mmdebstrap's apt, building a
/// base): on a loopback port of its own for the program's lifetime, stopped when dropped.
pub(crate) struct HostEgress {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    audit: Audit,
}

impl HostEgress {
    pub(crate) async fn start(
        settings: &EgressSettings,
        policy: EgressPolicy,
    ) -> Result<HostEgress> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(Error::io("serving an egress proxy on the loopback"))?;
        let address = listener
            .local_addr()
            .map_err(Error::io("serving an egress proxy on the loopback"))?;
        let audit = Audit::default();
        let gate = Arc::new(audit.gate(settings, policy));
        let task = tokio::spawn(kiln_egress::serve(listener, gate));
        Ok(HostEgress {
            address,
            task,
            audit,
        })
    }

    /// `http://127.0.0.1:PORT`, the proxy's URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub(crate) fn summary(&self) -> String {
        self.audit.summary()
    }
}

impl Drop for HostEgress {
    fn drop(&mut self) {
        self.task.abort();
    }
}
