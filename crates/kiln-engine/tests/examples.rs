//! The projects under `examples/` build for real, each from its own `.kiln/environment.toml`:
//! a Debian base with its packages, its dependencies downloaded in setup, its tests run by a
//! build or warm step in the sandbox. Registries are stood in for by servers on loopback (a
//! PyPI simple index, an npm registry) that the build's egress proxy resolves their names to;
//! the test adds only the variables that point the tools at them. The README's environment is
//! the Rust example's, so it builds too.

mod common;

use common::fixture;
use kiln_testkit::{FileServer, ServedFile};
use sha2::{Digest, Sha256, Sha512};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file of `examples/<name>`, relative to it.
fn example(name: &str) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                let relative = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let root = repo_root().join("examples").join(name);
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();
    files
}

/// The example's files with its environment pointed at the test's registries: `env` added to
/// `[env]`, `allow` to `[network] allow`.
fn pointed_at(
    files: &[(String, String)],
    env: &[(&str, String)],
    allow: &[&str],
) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(path, text)| {
            if path != ".kiln/environment.toml" {
                return (path.clone(), text.clone());
            }
            let mut table: toml::Table = text.parse().unwrap();
            let vars = table
                .entry("env")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap();
            for (key, value) in env {
                vars.insert(key.to_string(), toml::Value::String(value.clone()));
            }
            let network = table
                .entry("network")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap();
            let hosts = allow.iter().map(|h| toml::Value::String(h.to_string()));
            network.insert("allow".into(), toml::Value::Array(hosts.collect()));
            (path.clone(), toml::to_string(&table).unwrap())
        })
        .collect()
}

fn borrowed(files: &[(String, String)]) -> Vec<(&str, &str)> {
    files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect()
}

/// Runs a host tool that makes a test package (python3's zipfile, tar).
fn run(dir: &Path, program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?}: {status}");
}

fn write_all(dir: &Path, files: &[(&str, &str)]) {
    for (path, contents) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

/// `humanize` 4.9.0 as a wheel: the one function the example uses.
fn humanize_wheel(dir: &Path) -> Vec<u8> {
    write_all(
        dir,
        &[
            (
                "humanize/__init__.py",
                "def intcomma(value):\n    return f\"{int(value):,}\"\n",
            ),
            (
                "humanize-4.9.0.dist-info/METADATA",
                "Metadata-Version: 2.1\nName: humanize\nVersion: 4.9.0\n",
            ),
            (
                "humanize-4.9.0.dist-info/WHEEL",
                "Wheel-Version: 1.0\nGenerator: kiln-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            ),
            (
                "humanize-4.9.0.dist-info/RECORD",
                "humanize/__init__.py,,\nhumanize-4.9.0.dist-info/METADATA,,\n\
                 humanize-4.9.0.dist-info/WHEEL,,\nhumanize-4.9.0.dist-info/RECORD,,\n",
            ),
        ],
    );
    let wheel = "humanize-4.9.0-py3-none-any.whl";
    run(
        dir,
        "python3",
        &[
            "-m",
            "zipfile",
            "-c",
            wheel,
            "humanize",
            "humanize-4.9.0.dist-info",
        ],
    );
    std::fs::read(dir.join(wheel)).unwrap()
}

/// `ms` 2.1.3 as an npm tarball: the part of it the example uses.
fn ms_tarball(dir: &Path) -> Vec<u8> {
    write_all(
        dir,
        &[
            (
                "package/package.json",
                r#"{"name": "ms", "version": "2.1.3", "main": "index.js"}"#,
            ),
            (
                "package/index.js",
                "const units = { ms: 1, s: 1000, m: 60000, h: 3600000 };\n\
                 module.exports = function ms(text) {\n\
                 \x20 const m = /^(\\d+)(ms|s|m|h)$/.exec(text);\n\
                 \x20 return m ? Number(m[1]) * units[m[2]] : undefined;\n\
                 };\n",
            ),
        ],
    );
    run(dir, "tar", &["-czf", "ms-2.1.3.tgz", "package"]);
    std::fs::read(dir.join("ms-2.1.3.tgz")).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_installs_from_an_index_and_passes_its_tests() {
    let scratch = tempfile::tempdir().unwrap();
    let wheel = humanize_wheel(scratch.path());
    let name = "humanize-4.9.0-py3-none-any.whl";
    let index = FileServer::start(vec![
        ServedFile {
            path: "/simple/humanize/".into(),
            content_type: "text/html".into(),
            body: format!(
                "<!DOCTYPE html><html><body><a href=\"/files/{name}#sha256={}\">{name}</a></body></html>\n",
                hex(&Sha256::digest(&wheel))
            )
            .into_bytes(),
        },
        ServedFile {
            path: format!("/files/{name}"),
            content_type: "application/octet-stream".into(),
            body: wheel,
        },
    ])
    .await;
    let files = pointed_at(
        &example("python"),
        &[
            // No port: the proxy resolves the name to the server, whatever the port.
            ("PIP_INDEX_URL", "http://pypi.test/simple/".into()),
            ("PIP_TRUSTED_HOST", "pypi.test".into()),
        ],
        &["pypi.test"],
    );
    let fx = fixture("python", &borrowed(&files), &[("pypi.test", index.addr)]).await;
    let image = fx.engine.build_image("python").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);
    for expected in [
        "Successfully installed humanize-4.9.0",
        "test_groups_the_thousands",
        "Ran 2 tests",
        "== egress: pypi.test:",
    ] {
        assert!(image.log.contains(expected), "{expected}: {}", image.log);
    }
    assert!(index.requests().contains(&format!("/files/{name}")));
    // A session's sandbox has the venv first on its PATH.
    assert_eq!(
        fx.in_pool("id -u; python -c 'import sizes; print(sizes.describe(\"x\", 1000))'")
            .await,
        "1000\nx: 1,000 bytes\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_installs_from_a_registry_and_passes_its_tests() {
    let scratch = tempfile::tempdir().unwrap();
    let tarball = ms_tarball(scratch.path());
    let integrity = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(Sha512::digest(&tarball))
    };
    // No port in the URLs: the proxy resolves the name to the server, whatever the port.
    let metadata = format!(
        r#"{{"name": "ms", "dist-tags": {{"latest": "2.1.3"}}, "versions": {{"2.1.3": {{"name": "ms", "version": "2.1.3", "main": "index.js", "dist": {{"tarball": "http://npm.test/ms/-/ms-2.1.3.tgz", "integrity": "sha512-{integrity}"}}}}}}}}"#
    );
    let registry = FileServer::start(vec![
        ServedFile {
            path: "/ms".into(),
            content_type: "application/json".into(),
            body: metadata.into_bytes(),
        },
        ServedFile {
            path: "/ms/-/ms-2.1.3.tgz".into(),
            content_type: "application/octet-stream".into(),
            body: tarball,
        },
    ])
    .await;
    let files = pointed_at(
        &example("node"),
        &[("npm_config_registry", "http://npm.test/".into())],
        &["npm.test"],
    );
    let fx = fixture("node", &borrowed(&files), &[("npm.test", registry.addr)]).await;
    let image = fx.engine.build_image("node").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);
    for expected in [
        "added 1 package",
        "pass 2",
        "fail 0",
        "== egress: npm.test:",
    ] {
        assert!(image.log.contains(expected), "{expected}: {}", image.log);
    }
    assert!(
        registry
            .requests()
            .contains(&"/ms/-/ms-2.1.3.tgz".to_string())
    );
    assert_eq!(
        fx.in_pool("id -u; node -e 'console.log(require(\"./\").timeoutMs(\"3s\"))'")
            .await,
        "1000\n3000\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_example_and_the_readme_s_environment_build_and_pass_their_tests() {
    let files = example("rust");
    let environment = &files
        .iter()
        .find(|(path, _)| path == ".kiln/environment.toml")
        .unwrap()
        .1;
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let block = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README shows an environment");
    assert_eq!(
        block, environment,
        "the README's environment is examples/rust's"
    );

    let fx = fixture("rust", &borrowed(&files), &[]).await;
    let image = fx.engine.build_image("rust").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);
    for expected in [
        "== setup: apt-get install -y --no-install-recommends jq (as root)",
        "test result: ok. 2 passed",
        "== egress: deb.debian.org:80 allowed",
    ] {
        assert!(image.log.contains(expected), "{expected}: {}", image.log);
    }
    assert_eq!(
        fx.in_pool("id -u; jq -n 1; echo $RUST_BACKTRACE; test -d target/debug && echo built")
            .await,
        "1000\n1\n1\nbuilt\n"
    );
}
