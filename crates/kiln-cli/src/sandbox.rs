//! `kiln sandbox …`: one-off sandboxes for humans and for checks.

use crate::DataDirArg;
use anyhow::Context;
use clap::Subcommand;
use kiln_sandbox::{
    CommandLine, ExecEvent, ExecRequest, ImageSpec, Limits, LocalConfig, LocalProvider,
    OutputStream, Provider, SandboxId, SandboxSpec,
};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::io::AsyncReadExt;

#[derive(Debug, Subcommand)]
pub(crate) enum SandboxCommand {
    /// Run one command in a fresh sandbox, stream its output, exit with its exit code.
    Run(RunArgs),
    /// List sandboxes.
    Ls {
        #[command(flatten)]
        data: DataDirArg,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Destroy sandboxes: the ones named, or with --all every sandbox of the data dir once kiln
    /// is stopped (sessions' sandboxes included: their next prompt restores a snapshot).
    Rm {
        #[command(flatten)]
        data: DataDirArg,
        /// Sandbox ids, as `kiln sandbox ls` shows them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every sandbox of the data dir; refused while `kiln up` runs on it.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// A read-only layer directory, bottom first; repeatable.
    #[arg(long = "layer")]
    layers: Vec<PathBuf>,
    /// Do not bind the host's /usr; the layers must then hold a whole root filesystem.
    #[arg(long)]
    no_host_system: bool,
    /// Memory limit in bytes.
    #[arg(long)]
    memory: Option<u64>,
    /// Process limit.
    #[arg(long)]
    pids: Option<u64>,
    /// Size cap of the writable layer in bytes.
    #[arg(long, default_value_t = Limits::default().disk_bytes)]
    disk: u64,
    /// Kill the command after this many seconds (exit code 124).
    #[arg(long)]
    timeout: Option<f64>,
    /// Environment variable KEY=VALUE; repeatable.
    #[arg(long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    #[arg(long)]
    cwd: Option<String>,
    /// What the command may reach over HTTP(S), through kiln's egress proxy: `none` (its own
    /// loopback only), `allowlist` (the package registries' preset), `allow:HOST,HOST`
    /// (`*.example.org` wildcards) or `open`. Never this host, loopback, private or link-local
    /// addresses, whatever the policy.
    #[arg(long, default_value = "none")]
    net: kiln_egress::EgressPolicy,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

pub(crate) async fn run(cmd: SandboxCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SandboxCommand::Run(args) => run_one(args).await,
        SandboxCommand::Ls { data, json } => {
            let provider = open(&data).await?;
            let mut out = std::io::stdout().lock();
            for info in provider.list().await? {
                if json {
                    writeln!(out, "{}", serde_json::to_string(&info)?)?;
                } else {
                    let layers = info.spec.image.layers.len();
                    writeln!(
                        out,
                        "{}\tcreated_ms={}\tlayers={layers}",
                        info.id, info.created_ms
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Rm { data, ids, all } => {
            // Held while it runs, so a kiln up started meanwhile cannot hand out a sandbox that
            // is being destroyed.
            let _lock = if all {
                Some(lock_soon(&data.data_dir).await.map_err(|_| {
                    anyhow::anyhow!(
                        "kiln up is running on {}: stop it first (Ctrl-C, or SIGTERM to its \
                         process), then run this again",
                        data.data_dir.display()
                    )
                })?)
            } else {
                None
            };
            let provider = open(&data).await?;
            let ids = if all {
                let listed = provider.list().await?;
                eprintln!("destroying {} sandbox(es)", listed.len());
                listed.into_iter().map(|info| info.id.to_string()).collect()
            } else {
                ids
            };
            for raw in ids {
                let id = SandboxId::parse(&raw)
                    .with_context(|| format!("{raw:?} is not a sandbox id"))?;
                provider
                    .destroy(&id)
                    .await
                    .with_context(|| format!("destroying {id}"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) async fn open(data: &DataDirArg) -> anyhow::Result<LocalProvider> {
    LocalProvider::open(LocalConfig::new(&data.data_dir))
        .await
        .with_context(|| {
            format!(
                "opening the sandbox provider at {}",
                data.data_dir.display()
            )
        })
}

async fn run_one(args: RunArgs) -> anyhow::Result<ExitCode> {
    let provider = open(&args.data).await?;
    let spec = SandboxSpec {
        image: ImageSpec {
            layers: args.layers,
            host_system: !args.no_host_system,
        },
        env: args.env.into_iter().collect(),
        limits: Limits {
            memory_bytes: args.memory,
            pids: args.pids,
            cpu_weight: None,
            disk_bytes: args.disk,
        },
        ..SandboxSpec::default()
    };
    let egress = match args.net {
        kiln_egress::EgressPolicy::None => None,
        policy => Some(ad_hoc_egress(&args.data.data_dir, policy)?),
    };
    let spec = SandboxSpec {
        network: match &egress {
            Some(egress) => kiln_sandbox::NetworkPolicy::Proxy {
                dir: egress.dir().to_path_buf(),
            },
            None => kiln_sandbox::NetworkPolicy::Isolated,
        },
        ..spec
    };
    let sandbox = provider
        .create(spec)
        .await
        .context("creating the sandbox")?;
    let forward_stdin = !std::io::stdin().is_terminal();
    let request = ExecRequest {
        command: CommandLine::Argv { argv: args.command },
        cwd: args.cwd,
        env: Default::default(),
        stdin: forward_stdin,
        timeout_ms: args.timeout.map(|s| (s * 1000.0) as u64),
    };
    let result = tokio::select! {
        result = stream(&sandbox, request) => result,
        _ = tokio::signal::ctrl_c() => Ok(ExitCode::from(130)),
    };
    provider
        .destroy(sandbox.id())
        .await
        .context("destroying the sandbox")?;
    if let Some(egress) = egress {
        egress.close();
    }
    result
}

/// The egress proxy of one `kiln sandbox run`, served by this process on a socket in the data
/// dir for as long as the command runs.
fn ad_hoc_egress(
    data: &std::path::Path,
    policy: kiln_egress::EgressPolicy,
) -> anyhow::Result<kiln_egress::SocketProxy> {
    let rules = std::sync::Arc::new(kiln_egress::AddressRules::new(Vec::new()));
    let gate = kiln_egress::Gate::new(policy, kiln_egress::Phase::AdHoc, rules);
    let dir = data
        .join("egress")
        .join(format!("run-{}", kiln_core::random_hex(8)));
    let name = kiln_sandbox::EGRESS_SOCKET_NAME;
    kiln_egress::SocketProxy::start(&dir, name, std::sync::Arc::new(gate))
        .with_context(|| format!("serving the egress proxy in {}", dir.display()))
}

/// Streams the exec's output to ours and its stdin from ours; returns its exit code.
async fn stream(sandbox: &kiln_sandbox::Sandbox, request: ExecRequest) -> anyhow::Result<ExitCode> {
    let forward_stdin = request.stdin;
    let mut exec = sandbox.exec(request).await?;
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdin_open = forward_stdin;
    loop {
        tokio::select! {
            event = exec.next() => match event? {
                Some(ExecEvent::Output { stream: OutputStream::Stdout, data }) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&data)?;
                    out.flush()?;
                }
                Some(ExecEvent::Output { stream: OutputStream::Stderr, data }) => std::io::stderr().write_all(&data)?,
                Some(ExecEvent::Started { .. }) => {}
                Some(ExecEvent::Exited(status)) => {
                    if status.timed_out {
                        eprintln!("kiln: command timed out");
                        return Ok(ExitCode::from(124));
                    }
                    return Ok(ExitCode::from(status.shell_code().clamp(0, 255) as u8));
                }
                None => anyhow::bail!("the exec ended without an exit status"),
            },
            read = stdin.read(&mut buf), if stdin_open => {
                let n = read.context("reading stdin")?;
                stdin_open = n > 0;
                // The sandbox may have closed its stdin already; that is not our error.
                let _ = exec.write_stdin(bytes::Bytes::copy_from_slice(&buf[..n]), n == 0).await;
            }
        }
    }
}

/// The data dir's lock, waiting a moment for it: a kiln that was just killed may leave it to a
/// child in the middle of starting a program (fork, then exec closes it) for a few ms.
async fn lock_soon(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match crate::up::lock_data_dir(data_dir) {
            Ok(lock) => return Ok(lock),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}
