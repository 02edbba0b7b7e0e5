//! Image builds from a real local repo with real setup commands that work offline: a script that
//! makes a SQLite schema, a build step, a warm step. Incremental rebuilds skip setup while the
//! lockfile and the setup are unchanged and rerun it, from the clean base, when either changes;
//! a failed build keeps the last good image.

use kiln_engine::{Engine, EngineConfig};
use kiln_protocol::api::CreateRepo;
use kiln_sandbox::{
    CommandLine, ExecRequest, ImageSpec, LocalConfig, LocalProvider, Provider, SandboxSpec,
};
use kiln_store::{ImageRecord, Store};
use kiln_testkit::{bare_repo, git};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ENVIRONMENT: &str = r#"
manifests = ["deps.lock"]
[[setup]]
run = "echo setup >> /home/kiln/setup.log && python3 -c \"import sqlite3; c = sqlite3.connect('/home/kiln/app.db'); c.execute('create table if not exists users (id integer primary key)'); c.commit()\""
[[build]]
name = "compile"
run = "mkdir -p build && cp src.txt build/out.txt"
[[warm]]
run = "cat build/out.txt > /home/kiln/warm.txt"
"#;

struct Fixture {
    engine: Engine,
    provider: LocalProvider,
    work: PathBuf,
    bare: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.provider.destroy_all_blocking();
    }
}

async fn fixture() -> Fixture {
    fixture_with(EngineConfig {
        image_step_timeout: Duration::from_secs(60),
        ..EngineConfig::default()
    })
    .await
}

async fn fixture_with(config: EngineConfig) -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("ki-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let bare = bare_repo(
        dir.path(),
        "app",
        &[
            (".kiln/environment.toml", ENVIRONMENT),
            ("deps.lock", "a=1\n"),
            ("src.txt", "v1\n"),
        ],
    );
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let provider = LocalProvider::open(LocalConfig::new(&data)).await.unwrap();
    let store = Store::open(&data).await.unwrap();
    store
        .create_repo(&CreateRepo {
            name: "app".into(),
            url: bare.to_string_lossy().into_owned(),
            default_branch: None,
            description: None,
            hooks: Vec::new(),
            environment: None,
            check: false,
        })
        .await
        .unwrap();
    let engine = Engine::start(store, Arc::new(provider.clone()), data, config)
        .await
        .unwrap();
    Fixture {
        engine,
        provider,
        work: dir.path().join("app-work"),
        bare,
        _dir: dir,
    }
}

impl Fixture {
    /// Commits `files` on main and pushes them to the bare repo.
    fn push(&self, files: &[(&str, &str)], message: &str) {
        for (path, contents) in files {
            std::fs::write(self.work.join(path), contents).unwrap();
        }
        git(&self.work, &["add", "."]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(
            &self.work,
            &["push", "-q", self.bare.to_str().unwrap(), "main"],
        );
    }

    /// Runs a script in a fresh sandbox made from the image.
    async fn in_image(&self, image: &ImageRecord, script: &str) -> String {
        let sandbox = self
            .provider
            .create(SandboxSpec {
                image: ImageSpec {
                    layers: image.layers.clone(),
                    host_system: true,
                },
                ..SandboxSpec::default()
            })
            .await
            .unwrap();
        let outcome = sandbox
            .run(ExecRequest {
                command: CommandLine::Shell {
                    script: script.into(),
                },
                cwd: Some("/workspace".into()),
                env: Default::default(),
                stdin: false,
                timeout_ms: Some(20_000),
            })
            .await
            .unwrap();
        self.provider.destroy(sandbox.id()).await.unwrap();
        assert!(outcome.status.success(), "{outcome:?}");
        String::from_utf8_lossy(&outcome.stdout).into_owned()
    }
}

fn head(work: &Path) -> String {
    git(work, &["rev-parse", "HEAD"]).trim().to_string()
}

const INSPECT: &str = "cat build/out.txt /home/kiln/warm.txt; wc -l < /home/kiln/setup.log; \
    python3 -c \"import sqlite3; print(sqlite3.connect('/home/kiln/app.db').execute('select name from sqlite_master').fetchall())\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_build_incrementally_and_setup_reruns_only_when_the_lockfile_changes() {
    let fx = fixture().await;
    let first = fx.engine.build_image("app").await.unwrap();
    assert!(first.is_ready(), "{}", first.log);
    assert!(first.setup_ran);
    assert_eq!(first.commit, head(&fx.work));
    assert!(first.log.contains("== build: compile"), "{}", first.log);
    assert_eq!(
        fx.in_image(&first, INSPECT).await,
        "v1\nv1\n1\n[('users',)]\n"
    );

    // A code change: no setup, a new build, the new commit.
    fx.push(&[("src.txt", "v2\n")], "code");
    let second = fx.engine.build_image("app").await.unwrap();
    assert!(second.is_ready(), "{}", second.log);
    assert!(!second.setup_ran, "{}", second.log);
    assert_eq!(second.parent.as_deref(), Some(first.id.as_str()));
    assert_eq!(second.commit, head(&fx.work));
    assert_eq!(
        fx.in_image(&second, INSPECT).await,
        "v2\nv2\n1\n[('users',)]\n"
    );

    // A dependency change: setup runs again, from the clean base (its log starts over).
    fx.push(&[("deps.lock", "a=2\n")], "deps");
    let third = fx.engine.build_image("app").await.unwrap();
    assert!(third.is_ready(), "{}", third.log);
    assert!(third.setup_ran);
    assert!(
        third.log.contains("setup reruns, from the clean base"),
        "{}",
        third.log
    );
    assert_eq!(
        fx.in_image(&third, INSPECT).await,
        "v2\nv2\n1\n[('users',)]\n"
    );

    let store = fx.engine.store();
    assert_eq!(
        store.latest_image("app").await.unwrap().unwrap().id,
        third.id
    );
    assert_eq!(store.images("app").await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_hung_build_is_recorded_and_the_last_good_image_stays() {
    let fx = fixture().await;
    let good = fx.engine.build_image("app").await.unwrap();
    assert!(good.is_ready(), "{}", good.log);

    let broken = ENVIRONMENT.replace("cp src.txt build/out.txt", "echo compiling; exit 3");
    fx.push(&[(".kiln/environment.toml", &broken)], "break the build");
    let failed = fx.engine.build_image("app").await.unwrap();
    let error = failed.error.clone().expect("the build failed");
    assert!(error.contains("compile"), "{error}");
    // Said as people say it, not as Rust debug-prints it.
    assert!(error.contains("exited with 3 after"), "{error}");
    assert!(
        !error.contains("ExitStatus") && !error.contains("Some("),
        "{error}"
    );
    assert!(failed.log.contains("compiling"), "{}", failed.log);
    let store = fx.engine.store();
    assert_eq!(
        store.latest_image("app").await.unwrap().unwrap().id,
        good.id
    );

    let hung = format!(
        "timeout_secs = 1\n{}",
        ENVIRONMENT.replace("cp src.txt build/out.txt", "sleep 30")
    );
    fx.push(&[(".kiln/environment.toml", &hung)], "hang the build");
    let started = Instant::now();
    let timed_out = fx.engine.build_image("app").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let error = timed_out.error.unwrap();
    assert!(error.contains("timed out after 1 s"), "{error}");
    assert_eq!(
        store.latest_image("app").await.unwrap().unwrap().id,
        good.id
    );

    // A build that fails inside setup did run setup (a rerun starts it again).
    let bad_setup = ENVIRONMENT.replace("echo setup >>", "exit 4; echo setup >>");
    fx.push(
        &[
            (".kiln/environment.toml", &bad_setup),
            ("deps.lock", "a=3\n"),
        ],
        "break setup",
    );
    let in_setup = fx.engine.build_image("app").await.unwrap();
    let error = in_setup.error.clone().expect("the build failed");
    assert!(
        error.contains("setup") && error.contains("exited with 4"),
        "{error}"
    );
    assert!(in_setup.setup_ran, "{}", in_setup.log);

    let bad = "colour = 1\n";
    fx.push(&[(".kiln/environment.toml", bad)], "bad environment");
    let refused = fx.engine.build_image("app").await.unwrap();
    assert!(refused.error.unwrap().contains("colour"));
    // No build sandbox is left running.
    assert!(fx.provider.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cadence_rebuilds_only_repos_whose_branch_moved() {
    let fx = fixture().await;
    // No image yet: the pass builds one.
    let built = fx.engine.rebuild_moved_images().await.unwrap();
    assert_eq!(built.len(), 1);
    assert!(built[0].is_ready(), "{}", built[0].log);
    // Nothing moved: nothing to build.
    assert!(fx.engine.rebuild_moved_images().await.unwrap().is_empty());
    fx.push(&[("src.txt", "v2\n")], "move");
    let built = fx.engine.rebuild_moved_images().await.unwrap();
    assert_eq!(built.len(), 1);
    assert_eq!(built[0].commit, head(&fx.work));
    assert!(!built[0].setup_ran);

    // A failed build at a commit is not retried until the branch moves again.
    let broken = ENVIRONMENT.replace("cp src.txt build/out.txt", "exit 1");
    fx.push(&[(".kiln/environment.toml", &broken)], "break");
    assert!(
        fx.engine.rebuild_moved_images().await.unwrap()[0]
            .error
            .is_some()
    );
    assert!(fx.engine.rebuild_moved_images().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cadence_runs_on_its_own_schedule() {
    let fx = fixture_with(EngineConfig {
        image_rebuild_every: Some(Duration::from_millis(300)),
        ..EngineConfig::default()
    })
    .await;
    let store = fx.engine.store();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.latest_image("app").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "no scheduled build");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fx.push(&[("src.txt", "v3\n")], "move");
    let expected = head(&fx.work);
    while store.latest_image("app").await.unwrap().unwrap().commit != expected {
        assert!(
            Instant::now() < deadline,
            "the moved branch was not rebuilt"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_host_path_reaches_the_sandbox_through_the_repo() {
    let fx = fixture().await;
    let image = fx.engine.build_image("app").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);
    // The data dir, the mirror and the upstream all live under the fixture's directory.
    let host = fx._dir.path().to_string_lossy().into_owned();
    let script = format!(
        "git --git-dir=/kiln/repo.git config --get remote.origin.url || true; \
         grep -rlsF {host} /kiln /workspace/.git /home/kiln || true"
    );
    assert_eq!(fx.in_image(&image, &script).await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_downloads_through_the_egress_proxy_under_the_repo_s_policy() {
    let registry = kiln_testkit::http_upstream("dependency v1\n").await;
    let fx = fixture_with(EngineConfig {
        image_step_timeout: Duration::from_secs(60),
        egress: kiln_engine::EgressSettings {
            test_resolve: Some(kiln_egress::TestResolve {
                names: [("pkg.test".to_string(), registry)].into(),
                allow_addresses: vec![registry],
            }),
            ..Default::default()
        },
        ..EngineConfig::default()
    })
    .await;
    let port = registry.port();
    let allowed = format!(
        "[network]\nsetup = \"allowlist\"\nallow = [\"pkg.test\"]\n\
         [[setup]]\nrun = \"curl -sSf --max-time 20 http://pkg.test:{port}/dep.txt -o /home/kiln/dep.txt\"\n"
    );
    fx.push(&[(".kiln/environment.toml", &allowed)], "a dependency");
    let image = fx.engine.build_image("app").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);
    assert_eq!(
        fx.in_image(&image, "cat /home/kiln/dep.txt").await,
        "dependency v1\n"
    );
    assert!(
        image.log.contains("== egress: pkg.test:") && image.log.contains("allowed"),
        "{}",
        image.log
    );

    // A host outside the policy: the step fails, and the log says what refused it and why.
    let refused = allowed.replace("http://pkg.test", "http://elsewhere.test");
    fx.push(
        &[(".kiln/environment.toml", &refused), ("deps.lock", "a=2\n")],
        "elsewhere",
    );
    let image = fx.engine.build_image("app").await.unwrap();
    assert!(!image.is_ready(), "{}", image.log);
    assert!(
        image.log.contains("elsewhere.test:") && image.log.contains("refused"),
        "{}",
        image.log
    );

    // `none`: no proxy at all; the sandbox has only its loopback.
    let none = allowed.replace("setup = \"allowlist\"", "setup = \"none\"");
    fx.push(
        &[(".kiln/environment.toml", &none), ("deps.lock", "a=3\n")],
        "offline",
    );
    let image = fx.engine.build_image("app").await.unwrap();
    assert!(!image.is_ready(), "{}", image.log);
    assert!(!image.log.contains("== egress:"), "{}", image.log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_setup_reruns_from_the_clean_base_leaving_nothing_of_the_old_one() {
    let fx = fixture().await;
    let old = ENVIRONMENT.replace(
        "echo setup >> /home/kiln/setup.log",
        "echo setup >> /home/kiln/setup.log && touch /home/kiln/old-setup-was-here",
    );
    fx.push(&[(".kiln/environment.toml", &old)], "an older setup");
    let first = fx.engine.build_image("app").await.unwrap();
    assert!(first.is_ready(), "{}", first.log);
    assert_eq!(
        fx.in_image(&first, "ls /home/kiln").await,
        "app.db\nold-setup-was-here\nsetup.log\nwarm.txt\n"
    );

    // Only the setup step changed, no manifest: setup reruns, not on the old image's layers.
    fx.push(&[(".kiln/environment.toml", ENVIRONMENT)], "a newer setup");
    let second = fx.engine.build_image("app").await.unwrap();
    assert!(second.is_ready(), "{}", second.log);
    assert!(second.setup_ran, "{}", second.log);
    assert!(
        !second.layers.iter().any(|l| first.layers.contains(l)),
        "{:?} / {:?}",
        first.layers,
        second.layers
    );
    assert_eq!(
        fx.in_image(&second, "ls /home/kiln; wc -l < /home/kiln/setup.log")
            .await,
        "app.db\nsetup.log\nwarm.txt\n1\n"
    );

    // So does a change of the variables setup runs with; the next code change does not.
    let with_env = format!("{ENVIRONMENT}\n[env]\nGREETING = \"hello\"\n");
    fx.push(&[(".kiln/environment.toml", &with_env)], "a variable");
    let third = fx.engine.build_image("app").await.unwrap();
    assert!(third.is_ready() && third.setup_ran, "{}", third.log);
    fx.push(&[("src.txt", "v2\n")], "code");
    let fourth = fx.engine.build_image("app").await.unwrap();
    assert!(fourth.is_ready() && !fourth.setup_ran, "{}", fourth.log);
    assert!(fourth.layers.starts_with(&third.layers));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_removes_bases_nothing_stands_on() {
    let fx = fixture_with(EngineConfig {
        gc_grace: Duration::ZERO,
        ..EngineConfig::default()
    })
    .await;
    // Bases as the builder leaves them in DATA/bases (made by hand: no Debian needed here).
    let bases = fx._dir.path().join("data").join("bases");
    for name in ["debian-bookworm-unused", "debian-bookworm-used"] {
        std::fs::create_dir_all(bases.join(name).join("rootfs/etc")).unwrap();
        std::fs::write(
            bases.join(name).join("description"),
            "base = \"debian:bookworm\"\n",
        )
        .unwrap();
    }
    // A build that died half-way, its lock free.
    std::fs::create_dir_all(bases.join(".debian-bookworm-dead.partial/rootfs/usr")).unwrap();
    let used = bases.join("debian-bookworm-used").join("rootfs");
    let sandbox = fx
        .provider
        .create(SandboxSpec {
            image: ImageSpec {
                layers: vec![used.clone()],
                host_system: true,
            },
            ..SandboxSpec::default()
        })
        .await
        .unwrap();
    let report = fx.engine.collect_garbage().await.unwrap();
    assert_eq!(report.bases_removed, 1, "{report:?}");
    assert!(used.exists());
    assert!(!bases.join("debian-bookworm-unused").exists());
    assert!(!bases.join(".debian-bookworm-dead.partial").exists());

    // Once nothing runs on it, it goes too.
    fx.provider.destroy(sandbox.id()).await.unwrap();
    let report = fx.engine.collect_garbage().await.unwrap();
    assert_eq!(report.bases_removed, 1, "{report:?}");
    assert!(!used.exists());
}
