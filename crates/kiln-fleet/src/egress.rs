//! Egress: a sandbox reaches the network only through a kiln-egress proxy this process serves
//! on a Unix socket in the data dir, under a policy, with every connection audited.
//!
//! - Image builds ([`BuildEgress`]): one proxy per build under the environment's `[network]
//!   setup` policy, its traffic summed up per host in the build log, so the person reading it sees
//!   why a download failed.
//! - The agent's sandboxes ([`SandboxEgress`]): sessions' and warm pools' sandboxes each get a
//!   proxy of their own under the image's `[network] agent` policy, in a directory named by the
//!   sandbox's [`EGRESS_LABEL`]. The directory (not the socket) is bound into the sandbox, so
//!   after a restart the proxy of a sandbox that outlived the process is served again at the same
//!   path. Its connections are tallied per host until the session takes them (after each tool
//!   call) to record as events. One proxy per sandbox also means one connection cap per sandbox:
//!   a sandbox that floods its proxy exhausts its own listener, not its neighbours'.
//! - Programs kiln runs on the host for a build ([`HostEgress`]): a Debian base's downloads
//!   (mmdebstrap's apt) go through the same kind of proxy, on a loopback port, audited the same
//!   way.

use crate::{Error, Result};
use kiln_egress::{
    AddressRules, EgressPolicy, EgressRecord, EgressTotals, Gate, HostPattern, Phase, SocketProxy,
    TestResolve,
};
use kiln_protocol::api::AgentNetwork;
use kiln_sandbox::{EGRESS_SOCKET_NAME, NetworkPolicy, SandboxInfo};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Label naming the egress directory of an agent sandbox (under `DATA/egress`).
pub const EGRESS_LABEL: &str = "kiln.egress";
/// Agent sandboxes' egress directories start with this, builds' never do.
const AGENT_PREFIX: &str = "agent-";
/// Hosts (with outcome) one tally keeps apart; past it, connections are counted under one entry.
const MAX_TALLY_KEYS: usize = 1000;
/// A proxy younger than this is never swept: its sandbox may still be starting.
const SWEEP_GRACE: Duration = Duration::from_secs(60);

/// Server-wide egress settings (from `kiln.toml`).
#[derive(Debug, Clone)]
pub struct EgressSettings {
    /// The address rule every policy keeps (loopback, this host, private ranges, the kiln API).
    pub rules: Arc<AddressRules>,
    /// Hosts no repo may reach; wins over every policy.
    pub deny: Vec<HostPattern>,
    /// Hosts added to every allowlist, for every repo (an internal registry mirror).
    pub allow: Vec<HostPattern>,
    /// Tests only: names resolved to loopback servers the test runs (off unless set).
    pub test_resolve: Option<TestResolve>,
}

impl Default for EgressSettings {
    fn default() -> Self {
        EgressSettings {
            rules: Arc::new(AddressRules::new(Vec::new())),
            deny: Vec::new(),
            allow: Vec::new(),
            test_resolve: None,
        }
    }
}

impl EgressSettings {
    /// `policy` with the server-wide additions to an allowlist.
    fn widen(&self, policy: EgressPolicy) -> EgressPolicy {
        match policy {
            EgressPolicy::Allowlist {
                mut hosts,
                read_only,
            } => {
                hosts.extend(self.allow.iter().cloned());
                EgressPolicy::Allowlist { hosts, read_only }
            }
            other => other,
        }
    }

    /// The agent-time policy an image records, as served.
    pub fn agent_policy(&self, network: &AgentNetwork) -> EgressPolicy {
        let hosts: Vec<HostPattern> = network
            .allow
            .iter()
            .filter_map(|host| {
                host.parse()
                    .inspect_err(|e| tracing::warn!(host, error = %e, "skipping an allowed host"))
                    .ok()
            })
            .collect();
        self.widen(EgressPolicy::from_mode(
            network.mode,
            &hosts,
            network.read_only,
        ))
    }

    /// A gate under `policy` that hands every connection's record to `tally` (and `totals`).
    fn gate(
        &self,
        policy: EgressPolicy,
        phase: Phase,
        tally: &Arc<Tally>,
        totals: Option<&Arc<EgressTotals>>,
    ) -> Gate {
        let tally = tally.clone();
        let gate = Gate::new(policy, phase, self.rules.clone())
            .with_denied_hosts(self.deny.clone())
            .with_audit(move |record| tally.add(&record));
        let gate = match totals {
            Some(totals) => gate.with_totals(totals.clone()),
            None => gate,
        };
        match &self.test_resolve {
            Some(test) => gate.with_test_resolve(test.clone()),
            None => gate,
        }
    }
}

/// Connections to one host with one outcome, summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostTally {
    pub connections: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// The longest connection.
    pub max_duration_ms: u64,
}

/// What one tally keeps apart: host, port, allowed, the reason in words.
pub type TallyKey = (String, u16, bool, String);

/// Connections summed per host and outcome: bounded however many connections there are.
#[derive(Debug, Default)]
struct Tally(Mutex<BTreeMap<TallyKey, HostTally>>);

impl Tally {
    fn add(&self, r: &EgressRecord) {
        let mut hosts = self.0.lock().expect("egress tally lock");
        let mut key = (r.host.clone(), r.port, r.allowed, r.reason.to_string());
        if hosts.len() >= MAX_TALLY_KEYS && !hosts.contains_key(&key) {
            key = (
                "(other hosts)".into(),
                0,
                r.allowed,
                "too many hosts to list".into(),
            );
        }
        let entry = hosts.entry(key).or_default();
        entry.connections += 1;
        entry.bytes_up += r.bytes_up;
        entry.bytes_down += r.bytes_down;
        entry.max_duration_ms = entry.max_duration_ms.max(r.duration_ms);
    }

    fn take(&self) -> BTreeMap<TallyKey, HostTally> {
        std::mem::take(&mut *self.0.lock().expect("egress tally lock"))
    }
}

/// The proxy of one running build; stops and removes its socket and directory when dropped.
pub(crate) struct BuildEgress {
    proxy: Option<SocketProxy>,
    tally: Arc<Tally>,
}

impl BuildEgress {
    /// Serves `policy` for build `id`; `None` when the policy lets nothing out.
    pub(crate) fn start(
        settings: &EgressSettings,
        data_dir: &Path,
        id: &str,
        policy: EgressPolicy,
        totals: &Arc<EgressTotals>,
    ) -> Result<Option<BuildEgress>> {
        if policy == EgressPolicy::None {
            return Ok(None);
        }
        let tally = Arc::new(Tally::default());
        let gate = settings.gate(settings.widen(policy), Phase::Setup, &tally, Some(totals));
        let dir = data_dir.join("egress").join(id);
        let proxy =
            SocketProxy::start(&dir, EGRESS_SOCKET_NAME, Arc::new(gate)).map_err(Error::io(
                format!("serving the build's egress proxy in {}", dir.display()),
            ))?;
        Ok(Some(BuildEgress {
            proxy: Some(proxy),
            tally,
        }))
    }

    pub(crate) fn network(&self) -> NetworkPolicy {
        NetworkPolicy::Proxy {
            dir: self.proxy.as_ref().expect("served").dir().to_path_buf(),
        }
    }

    pub(crate) fn summary(&self) -> String {
        self.tally.summary()
    }
}

impl Tally {
    /// One build-log line per host and outcome: connections, bytes each way, and why.
    fn summary(&self) -> String {
        self.take()
            .into_iter()
            .map(|((host, port, allowed, reason), t)| {
                let verdict = if allowed { "allowed" } else { "refused" };
                format!(
                    "== egress: {host}:{port} {verdict} ({reason}): {} connection(s), {} B up, {} B down\n",
                    t.connections, t.bytes_up, t.bytes_down
                )
            })
            .collect()
    }
}

/// The same proxy for a program kiln runs on the host itself (mmdebstrap's apt, building a
/// base): on a loopback port of its own for the program's lifetime, stopped when dropped.
pub(crate) struct HostEgress {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    tally: Arc<Tally>,
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
        let tally = Arc::new(Tally::default());
        let gate = Arc::new(settings.gate(policy, Phase::Setup, &tally, None));
        let task = tokio::spawn(kiln_egress::serve(listener, gate));
        Ok(HostEgress {
            address,
            task,
            tally,
        })
    }

    /// `http://127.0.0.1:PORT`, the proxy's URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub(crate) fn summary(&self) -> String {
        self.tally.summary()
    }
}

impl Drop for HostEgress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for BuildEgress {
    fn drop(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            proxy.close();
        }
    }
}

/// One agent sandbox's proxy.
struct Served {
    proxy: SocketProxy,
    tally: Arc<Tally>,
    since: Instant,
}

/// The proxies of the agent's sandboxes, by the token their [`EGRESS_LABEL`] carries.
pub struct SandboxEgress {
    settings: EgressSettings,
    /// `DATA/egress`: one directory per sandbox, and its policy beside it (`TOKEN.json`),
    /// outside what the sandbox is given, for serving it again after a restart.
    dir: PathBuf,
    served: Mutex<HashMap<String, Served>>,
    /// What the agents' and the image builds' proxies passed and refused since start (the
    /// host's own, a base's mmdebstrap, is not counted), for `GET /metrics`.
    totals: Arc<EgressTotals>,
}

impl std::fmt::Debug for SandboxEgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxEgress")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SandboxEgress {
    pub fn new(settings: EgressSettings, data_dir: &Path) -> SandboxEgress {
        SandboxEgress {
            settings,
            dir: data_dir.join("egress"),
            served: Mutex::new(HashMap::new()),
            totals: Arc::default(),
        }
    }

    /// What the agents' and builds' proxies passed and refused since start.
    pub fn totals(&self) -> &Arc<EgressTotals> {
        &self.totals
    }

    pub fn settings(&self) -> &EgressSettings {
        &self.settings
    }

    /// Serves `network` for a sandbox about to be created: what its spec says about the network,
    /// and the label (key, token) that names the proxy. Under `none` a proxy is served too: it
    /// refuses every request with a 403 that says why, which beats a name that does not resolve.
    pub fn serve(&self, network: &AgentNetwork) -> Result<(NetworkPolicy, (String, String))> {
        let policy = self.settings.agent_policy(network);
        let token = format!("{AGENT_PREFIX}{}", kiln_core::random_hex(8));
        let record = self.dir.join(format!("{token}.json"));
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| {
                let json = serde_json::to_vec(&policy).map_err(std::io::Error::other)?;
                std::fs::write(&record, json)
            })
            .map_err(Error::io(format!("recording {}", record.display())))?;
        let network = self.start(&token, policy)?;
        Ok((network, (EGRESS_LABEL.to_string(), token)))
    }

    fn start(&self, token: &str, policy: EgressPolicy) -> Result<NetworkPolicy> {
        let tally = Arc::new(Tally::default());
        let gate = self
            .settings
            .gate(policy, Phase::Agent, &tally, Some(&self.totals));
        let dir = self.dir.join(token);
        let proxy =
            SocketProxy::start(&dir, EGRESS_SOCKET_NAME, Arc::new(gate)).map_err(Error::io(
                format!("serving a sandbox's egress proxy in {}", dir.display()),
            ))?;
        let network = NetworkPolicy::Proxy {
            dir: proxy.dir().to_path_buf(),
        };
        self.served.lock().expect("egress lock").insert(
            token.to_string(),
            Served {
                proxy,
                tally,
                since: Instant::now(),
            },
        );
        Ok(network)
    }

    /// After a restart: serves the proxy of a sandbox found running, under the policy it was
    /// created with. A sandbox without the label has no network to serve.
    pub fn resume(&self, info: &SandboxInfo) -> Result<()> {
        let Some(token) = token(info) else {
            return Ok(());
        };
        if self.served.lock().expect("egress lock").contains_key(token) {
            return Ok(());
        }
        let record = self.dir.join(format!("{token}.json"));
        let policy: EgressPolicy = std::fs::read(&record)
            .map_err(Error::io(format!("reading {}", record.display())))
            .and_then(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| {
                    Error::io(format!("reading {}", record.display()))(std::io::Error::other(e))
                })
            })?;
        self.start(token, policy).map(drop)
    }

    /// The connections the sandbox made since the last call, per host and outcome.
    pub fn take(&self, info: &SandboxInfo) -> BTreeMap<TallyKey, HostTally> {
        let served = self.served.lock().expect("egress lock");
        match token(info).and_then(|t| served.get(t)) {
            Some(s) => s.tally.take(),
            None => BTreeMap::new(),
        }
    }

    /// Stops every proxy, keeping the directories and policies for the next start (a graceful
    /// stop: the sandboxes live on).
    pub fn stop_all(&self) {
        self.served.lock().expect("egress lock").clear();
    }

    /// Stops the proxies (and removes the directories) of sandboxes that no longer run:
    /// `live` holds the tokens of those that do.
    pub fn sweep(&self, live: &HashSet<String>) {
        let gone: Vec<(String, SocketProxy)> = {
            let mut served = self.served.lock().expect("egress lock");
            let tokens: Vec<String> = served
                .iter()
                .filter(|(token, s)| !live.contains(*token) && s.since.elapsed() > SWEEP_GRACE)
                .map(|(token, _)| token.clone())
                .collect();
            tokens
                .into_iter()
                .filter_map(|t| served.remove(&t).map(|s| (t, s.proxy)))
                .collect()
        };
        for (token, proxy) in gone {
            proxy.close();
            let _ = std::fs::remove_file(self.dir.join(format!("{token}.json")));
        }
        // What a previous run left behind for sandboxes that are gone.
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let served = self.served.lock().expect("egress lock");
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let token = name.strip_suffix(".json").unwrap_or(&name);
            if token.starts_with(AGENT_PREFIX)
                && !live.contains(token)
                && !served.contains_key(token)
            {
                let path = entry.path();
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(path.join(EGRESS_SOCKET_NAME));
                let _ = std::fs::remove_dir(&path);
            }
        }
    }
}

/// The egress token a sandbox's label carries.
pub(crate) fn token(info: &SandboxInfo) -> Option<&str> {
    info.spec.labels.get(EGRESS_LABEL).map(String::as_str)
}
