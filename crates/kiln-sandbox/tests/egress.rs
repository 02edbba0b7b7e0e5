//! A proxied sandbox (`NetworkPolicy::Proxy`): still no interface but loopback, yet an HTTP
//! client inside reaches an allowed host through the egress proxy the host serves on a Unix
//! socket (bridged by the guest), and is refused what the policy does not allow. The only
//! upstream is a server on this machine's loopback, reachable through the proxy's test knob.

mod common;

use common::{Harness, host_spec, ok, run};
use kiln_egress::{AddressRules, EgressPolicy, Gate, Phase, TestResolve};
use kiln_sandbox::{NetworkPolicy, Provider, SandboxSpec};
use std::sync::{Arc, Mutex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_sandbox_reaches_allowed_hosts_through_the_proxy_only() {
    let harness = Harness::new().await;
    let addr = kiln_testkit::http_upstream("hello from upstream").await;
    let records = Arc::new(Mutex::new(Vec::new()));
    let policy: EgressPolicy = "allow:pkg.test".parse().unwrap();
    let gate = Gate::new(
        policy,
        Phase::Setup,
        Arc::new(AddressRules::new(Vec::new())),
    )
    .with_test_resolve(TestResolve {
        names: [("pkg.test".to_string(), addr)].into(),
        allow_addresses: vec![addr],
    })
    .with_audit({
        let records = records.clone();
        move |record| records.lock().unwrap().push(record)
    });
    let dir = harness.data_dir().join("egress");
    let proxy =
        kiln_egress::SocketProxy::start(&dir, kiln_sandbox::EGRESS_SOCKET_NAME, Arc::new(gate))
            .unwrap();
    assert_eq!(proxy.path(), dir.join(kiln_sandbox::EGRESS_SOCKET_NAME));

    let sandbox = harness
        .provider
        .create(SandboxSpec {
            network: NetworkPolicy::Proxy { dir: dir.clone() },
            ..host_spec()
        })
        .await
        .unwrap();
    let port = addr.port();
    let body = ok(
        &sandbox,
        &format!("curl -sS --max-time 10 http://pkg.test:{port}/"),
    )
    .await;
    assert_eq!(body, "hello from upstream");
    {
        let records = records.lock().unwrap();
        let record = records
            .iter()
            .find(|r| r.host == "pkg.test")
            .expect("audited");
        assert!(record.allowed, "{record:?}");
        assert!(record.bytes_down > 0, "{record:?}");
    }

    // Not on the list: the proxy answers with the reason.
    let refused = ok(&sandbox, "curl -sS --max-time 10 http://elsewhere.test/").await;
    assert!(refused.contains("elsewhere.test"), "{refused}");
    // And nothing bypasses it: the sandbox has no route out, only its loopback.
    let direct = run(
        &sandbox,
        &format!("curl -sS --noproxy '*' --max-time 5 http://{addr}/"),
    )
    .await;
    assert!(
        !direct.status.success(),
        "the host's loopback is not reachable"
    );

    // A socket that is not there is refused up front.
    let missing = harness
        .provider
        .create(SandboxSpec {
            network: NetworkPolicy::Proxy {
                dir: harness.data_dir().join("nope"),
            },
            ..host_spec()
        })
        .await;
    assert!(
        missing.is_err_and(|e| e.to_string().contains("not a listening Unix socket")),
        "a missing proxy socket is an invalid spec"
    );
}

/// `git clone https://…` through the proxy: a CONNECT tunnel the proxy cannot read, to the test's
/// own git server behind TLS, with credentials that travel inside the tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clones_over_https_through_a_connect_tunnel() {
    let harness = Harness::new().await;
    let repos = tempfile::tempdir().unwrap();
    kiln_testkit::bare_repo(repos.path(), "demo", &[("README.md", "over https\n")]);
    let git = kiln_testkit::GitHttpServer::start(repos.path(), "kiln", "s3cret").await;
    let front = kiln_testkit::TlsFront::start("git.test", git.addr()).await;
    let records = Arc::new(Mutex::new(Vec::new()));
    let gate = Gate::new(
        "allow:git.test".parse().unwrap(),
        Phase::Setup,
        Arc::new(AddressRules::new(Vec::new())),
    )
    .with_test_resolve(TestResolve {
        names: [("git.test".to_string(), front.addr())].into(),
        allow_addresses: vec![front.addr()],
    })
    .with_audit({
        let records = records.clone();
        move |record| records.lock().unwrap().push(record)
    });
    let dir = harness.data_dir().join("egress-git");
    let proxy =
        kiln_egress::SocketProxy::start(&dir, kiln_sandbox::EGRESS_SOCKET_NAME, Arc::new(gate))
            .unwrap();
    let sandbox = harness
        .provider
        .create(SandboxSpec {
            network: NetworkPolicy::Proxy { dir: dir.clone() },
            ..host_spec()
        })
        .await
        .unwrap();
    sandbox
        .guest()
        .write_file("/tmp/ca.pem", front.cert_pem().as_bytes(), None)
        .await
        .unwrap();
    let readme = ok(
        &sandbox,
        "GIT_SSL_CAINFO=/tmp/ca.pem git clone -q https://kiln:s3cret@git.test/demo.git /tmp/demo \
         && cat /tmp/demo/README.md",
    )
    .await;
    assert_eq!(readme, "over https\n");
    // The credentials reached the server through the tunnel (git asks without them first).
    assert!(git.authorized_requests() > 0);
    let records = records.lock().unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.host == "git.test" && r.port == 443 && r.allowed && r.bytes_down > 0),
        "a CONNECT tunnel to git.test:443: {records:?}"
    );
    drop(proxy);
}
