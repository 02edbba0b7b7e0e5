//! A running `kiln up` for the CLI's tests: the real binary on port 0 with its own data dir,
//! the fake model, and a git repo to register; and `kiln` commands run against it as a person
//! would, isolated from the caller's environment and config.

use kiln_client::Client;
use kiln_core::Secret;
use kiln_testkit::FakeModel;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `kiln up`, its admin token and a git repo to register; killed on drop.
pub struct Server {
    pub url: String,
    pub token: String,
    pub child: Child,
    /// Holds the data dir, the git repo and an empty config home for the CLI.
    pub dir: tempfile::TempDir,
    /// A bare git repository for sessions to work on.
    pub repo: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stop the server first, so it cannot start another sandbox while they are destroyed.
        let _ = self.child.start_kill();
        if let Some(pid) = self.child.id() {
            super::wait_until_dead(pid);
        }
        super::destroy_all(&self.dir.path().join("data"));
    }
}

pub async fn start(model: &FakeModel) -> Server {
    start_with(model, &[]).await
}

/// [`start`] with more environment for `kiln up`.
pub async fn start_with(model: &FakeModel, env: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    // Sandboxes run as an unprivileged uid that must be able to reach into the data dir.
    let traversable = std::os::unix::fs::PermissionsExt::from_mode(0o711);
    std::fs::set_permissions(dir.path(), traversable).unwrap();
    let (child, url) = up_with(model, dir.path(), "127.0.0.1:0", env).await;
    let token = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap();
    let repo = kiln_testkit::bare_repo(dir.path(), "web", &[("README.md", "# web\n")]);
    Server {
        url,
        token: token.trim().to_string(),
        child,
        dir,
        repo,
    }
}

/// Starts `kiln up` on `DIR/data` and returns it with the URL it announced.
pub async fn up(model: &FakeModel, dir: &Path, listen: &str) -> (Child, String) {
    up_with(model, dir, listen, &[]).await
}

async fn up_with(
    model: &FakeModel,
    dir: &Path,
    listen: &str,
    env: &[(&str, &str)],
) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["up", "--listen", listen, "--data-dir"])
        .arg(dir.join("data"))
        .env("KILN_MODEL", "anthropic/fake")
        .env("ANTHROPIC_BASE_URL", model.url())
        .env("ANTHROPIC_API_KEY", model.api_key())
        .env_remove("KILN_CONFIG")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kiln up starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("kiln listening on ") {
                return url.trim().to_string();
            }
        }
        panic!("kiln up exited without listening");
    })
    .await
    .expect("kiln up prints its address within a minute");
    // Keep draining stderr so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

impl Server {
    /// `kiln ARGS` as the admin, isolated from the caller's environment and config.
    pub fn kiln(&self, args: &[&str]) -> Command {
        self.kiln_as(&self.token, args)
    }

    pub fn kiln_as(&self, token: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(args)
            .env("KILN_URL", &self.url)
            .env("KILN_TOKEN", token)
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env("KILN_DATA_DIR", self.dir.path().join("no-such-dir"))
            .env_remove("KILN_LOG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `kiln ARGS` to the end; a command that hangs fails the test instead of stalling it.
    pub async fn run(&self, args: &[&str]) -> Output {
        let output = self.kiln(args).output();
        let output = tokio::time::timeout(Duration::from_secs(120), output).await;
        output
            .unwrap_or_else(|_| panic!("kiln {args:?} did not finish"))
            .unwrap()
    }

    /// `kill -9` and start again on the same address and data dir.
    pub async fn crash_and_restart(&mut self, model: &FakeModel) {
        self.child.kill().await.unwrap();
        let listen = self.url.trim_start_matches("http://").to_string();
        let (child, url) = up(model, self.dir.path(), &listen).await;
        assert_eq!(url, self.url);
        self.child = child;
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url, Some(Secret::new(self.token.clone()))).unwrap()
    }

    pub async fn add_repo(&self) {
        let path = &self.repo;
        let out = self
            .run(&["repo", "add", "web", path.to_str().unwrap()])
            .await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
