//! Egress for image builds: a build's steps reach the network only through a kiln-egress proxy
//! this process serves for the build's duration, on a socket of its own in the data dir, under
//! the environment's `[network] setup` policy. What it let through or refused is summed up per
//! host in the build log, so the person reading it sees why a download failed.

use crate::{Error, Result};
use kiln_egress::{
    AddressRules, EgressPolicy, EgressRecord, Gate, HostPattern, Phase, SocketProxy, TestResolve,
};
use std::collections::BTreeMap;
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

/// The proxy of one running build; stops and removes its socket when dropped.
pub(crate) struct BuildEgress {
    proxy: SocketProxy,
    records: Arc<Mutex<Vec<EgressRecord>>>,
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
        let records = Arc::new(Mutex::new(Vec::new()));
        let mut gate = Gate::new(policy, Phase::Setup, settings.rules.clone())
            .with_denied_hosts(settings.deny.clone())
            .with_audit({
                let records = records.clone();
                move |record| {
                    let mut records = records.lock().expect("egress records lock");
                    // Bounded: a build that opens millions of connections keeps the first ones.
                    if records.len() < 10_000 {
                        records.push(record);
                    }
                }
            });
        if let Some(test) = &settings.test_resolve {
            gate = gate.with_test_resolve(test.clone());
        }
        let dir = data_dir.join("egress");
        let proxy =
            SocketProxy::start(&dir, &format!("{id}.sock"), Arc::new(gate)).map_err(Error::io(
                format!("serving the build's egress proxy in {}", dir.display()),
            ))?;
        Ok(Some(BuildEgress { proxy, records }))
    }

    pub(crate) fn socket(&self) -> &Path {
        self.proxy.path()
    }

    /// One line per host and outcome: connections, bytes each way, and why.
    pub(crate) fn summary(&self) -> String {
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
