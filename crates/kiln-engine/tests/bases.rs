//! Debian bases for real: bookworm from deb.debian.org through kiln's egress proxy, built once
//! into a cache every test shares. A root setup step installs a package with apt; sessions'
//! sandboxes run as the sandbox user on the base's system, not the host's; the base trusts the
//! host's CA certificates; a base that cannot be built fails the image build with the reason.

mod common;

use common::{bases_dir, fixture};
use kiln_sandbox::Provider;

/// The packages of examples/python, so that the two tests share one base.
const BASE: &str = r#"
base = "debian:bookworm"
packages = ["python3", "python3-venv"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_steps_install_with_apt_and_sessions_run_as_the_sandbox_user() {
    let environment = format!(
        r#"{BASE}
[[setup]]
name = "system tools"
run = "apt-get install -y --no-install-recommends jq && id -u > /usr/local/share/setup-uid && touch /usr/local/bin/root-was-here"
user = "root"
[[setup]]
run = "id -u > /home/kiln/setup-uid"
[[warm]]
run = "jq -n '1 + 1'"
"#
    );
    let fx = fixture(
        "tools",
        &[
            (".kiln/environment.toml", &environment),
            ("README", "tools\n"),
        ],
        &[],
    )
    .await;
    let image = fx.engine.build_image("tools").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);
    assert!(
        image.log.contains("== setup: system tools (as root)\n"),
        "{}",
        image.log
    );
    assert!(
        image
            .log
            .contains("== base debian:bookworm with python3, python3-venv: debian-bookworm-"),
        "{}",
        image.log
    );
    // apt's downloads went through the build's proxy.
    assert!(
        image.log.contains("== egress: deb.debian.org:80 allowed"),
        "{}",
        image.log
    );
    let base = &image.layers[0];
    assert!(
        base.starts_with(bases_dir()) && base.ends_with("rootfs"),
        "{base:?}"
    );

    // A pooled sandbox, as a session gets it: the sandbox user on Debian's system, the root
    // step's files there, the system's CA bundle named.
    let out = fx
        .in_pool(
            "id -u; id -un; cat /usr/local/share/setup-uid /home/kiln/setup-uid; jq -n '2 * 21'; \
             cut -d. -f1 /etc/debian_version; test -e /usr/local/bin/root-was-here && echo root-files; \
             echo $HOME $SSL_CERT_FILE; git --version | cut -d' ' -f1-2",
        )
        .await;
    assert_eq!(
        out,
        "1000\nkiln\n0\n1000\n42\n12\nroot-files\n/home/kiln /etc/ssl/certs/ca-certificates.crt\ngit version\n"
    );

    // What the host trusts, the base trusts: every certificate of the host's bundle, and the
    // locally added ones as files of their own.
    let host = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap();
    let theirs = std::fs::read_to_string(base.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    let certificates: Vec<&str> = host
        .split("-----END CERTIFICATE-----")
        .filter(|c| c.contains("-----BEGIN CERTIFICATE-----"))
        .collect();
    assert!(!certificates.is_empty());
    for certificate in certificates {
        assert!(theirs.contains(certificate.trim()), "{certificate}");
    }
    if let Ok(local) = std::fs::read_dir("/usr/local/share/ca-certificates") {
        for entry in local.flatten() {
            let copied = base
                .join("usr/local/share/ca-certificates")
                .join(entry.file_name());
            assert!(copied.exists(), "{copied:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_that_cannot_be_built_fails_the_build_with_the_reason() {
    let environment = r#"
base = "debian:bookworm"
packages = ["kiln-no-such-package"]
[[setup]]
run = "true"
"#;
    let fx = fixture("broken", &[(".kiln/environment.toml", environment)], &[]).await;
    let image = fx.engine.build_image("broken").await.unwrap();
    let error = image.error.clone().expect("the build failed");
    assert!(
        error.starts_with("building the base debian:bookworm failed: mmdebstrap exited with"),
        "{error}"
    );
    // apt's reason, not mmdebstrap's command lines (they name host paths).
    assert!(
        error.ends_with("E: Unable to locate package kiln-no-such-package"),
        "{error}"
    );
    assert!(image.log.contains("kiln-no-such-package"), "{}", image.log);
    // No sandbox was made, and the partial base is gone.
    assert!(fx.provider.list().await.unwrap().is_empty());
    let name = image
        .log
        .lines()
        .find_map(|line| line.split(": building ").nth(1))
        .expect("the log names the base");
    assert!(!bases_dir().join(format!(".{name}.partial")).exists());
    assert!(!bases_dir().join(name).exists());
}
