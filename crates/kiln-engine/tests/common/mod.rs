//! What the Debian-base tests share: an engine on a fresh data dir with one repo made from
//! files, a base cache shared by every test (each base is built once, under the target dir), the
//! Debian archive reachable through kiln's egress proxy, the test's own registries on loopback,
//! and a warm pool sandbox — what a session claims — to look inside an image.

#![allow(dead_code, unreachable_pub)]

use kiln_engine::{Engine, EngineConfig};
use kiln_protocol::api::CreateRepo;
use kiln_sandbox::{CommandLine, ExecRequest, LocalConfig, LocalProvider, Provider};
use kiln_store::Store;
use kiln_testkit::bare_repo;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where every test keeps its bases: one build per suite and package list for the whole suite,
/// and for the next run.
pub fn bases_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-bases")
}

/// The Debian archive's address on port 80, pinned in the egress proxy's resolve table so the
/// tests name the one outside address they reach (this machine's resolver answers every outside
/// name with its egress gateway). The archive is a package registry: the one outside host these
/// tests reach, by apt.
pub async fn debian_archive() -> SocketAddr {
    tokio::net::lookup_host(("deb.debian.org", 80))
        .await
        .expect("resolving deb.debian.org")
        .find(SocketAddr::is_ipv4)
        .expect("deb.debian.org has an IPv4 address")
}

pub struct Fixture {
    pub engine: Engine,
    pub provider: LocalProvider,
    pub repo: String,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.provider.destroy_all_blocking();
    }
}

/// An engine whose repo `repo` holds `files`, with a warm pool of one; `registries` are the
/// names the build's proxy resolves to the test's loopback servers.
pub async fn fixture(
    repo: &str,
    files: &[(&str, &str)],
    registries: &[(&str, SocketAddr)],
) -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("kb-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let bare = bare_repo(dir.path(), repo, files);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let provider = LocalProvider::open(LocalConfig::new(&data)).await.unwrap();
    let store = Store::open(&data).await.unwrap();
    store
        .create_repo(&CreateRepo {
            name: repo.into(),
            url: bare.to_string_lossy().into_owned(),
            default_branch: None,
            description: None,
            hooks: Vec::new(),
            environment: None,
            check: false,
        })
        .await
        .unwrap();
    let archive = debian_archive().await;
    let mut names: std::collections::HashMap<String, SocketAddr> = registries
        .iter()
        .map(|(name, addr)| (name.to_string(), *addr))
        .collect();
    names.insert("deb.debian.org".into(), archive);
    let mut allow_addresses: Vec<SocketAddr> = registries.iter().map(|(_, addr)| *addr).collect();
    allow_addresses.push(archive);
    let config = EngineConfig {
        image_step_timeout: Duration::from_secs(600),
        pool_size: 1,
        pool_max: 1,
        bases_dir: Some(bases_dir()),
        egress: kiln_engine::EgressSettings {
            test_resolve: Some(kiln_egress::TestResolve {
                names,
                allow_addresses,
            }),
            ..Default::default()
        },
        ..EngineConfig::default()
    };
    let engine = Engine::start(store, Arc::new(provider.clone()), data, config)
        .await
        .unwrap();
    Fixture {
        engine,
        provider,
        repo: repo.into(),
        _dir: dir,
    }
}

impl Fixture {
    /// Runs `script` in the repo's warm pool sandbox (made from its newest image, as a session's
    /// is) and returns its stdout; it must succeed.
    pub async fn in_pool(&self, script: &str) -> String {
        // A refill of its own (after a build) may replace an entry between the listing and
        // the attach: take the newest, and look again if it went.
        let mut tries = 0;
        let sandbox = loop {
            self.engine.refill_pool(&self.repo).await.unwrap();
            let pooled = self
                .provider
                .list()
                .await
                .unwrap()
                .into_iter()
                .filter(|info| info.spec.labels.contains_key("kiln.pool"))
                .max_by_key(|info| info.created_ms)
                .expect("a pooled sandbox");
            match self.provider.attach(&pooled.id).await {
                Ok(sandbox) => break sandbox,
                Err(e) if tries < 20 => {
                    tries += 1;
                    eprintln!("pooled sandbox {} went ({e}); looking again", pooled.id);
                    // Let the engine's own refill settle.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no pooled sandbox stays: {e}"),
            }
        };
        let outcome = sandbox
            .run(ExecRequest {
                command: CommandLine::Shell {
                    script: script.into(),
                },
                cwd: Some("/workspace".into()),
                env: Default::default(),
                stdin: false,
                timeout_ms: Some(60_000),
            })
            .await
            .unwrap();
        assert!(
            outcome.status.success(),
            "{script}: {:?}\n{}\n{}",
            outcome.status,
            String::from_utf8_lossy(&outcome.stdout),
            String::from_utf8_lossy(&outcome.stderr)
        );
        String::from_utf8_lossy(&outcome.stdout).into_owned()
    }
}
