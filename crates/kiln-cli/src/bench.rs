//! `kiln bench …`: benchmark programs. Each prints readable lines, then one JSON object as its
//! last line, so scripts can keep the numbers (see docs/benchmarks.md).

use crate::DataDirArg;
use anyhow::Context;
use clap::Subcommand;
use kiln_sandbox::{
    CommandLine, ExecRequest, ImageSpec, LocalProvider, Provider, Sandbox, SandboxSpec,
};
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Sandbox create, exec, snapshot, restore, concurrency and memory.
    Sandbox(SandboxBenchArgs),
    /// Session engine: prompt → model request, first-token overhead, WebSocket fan-out, memory
    /// of idle sessions.
    Session(crate::bench_session::SessionBenchArgs),
    /// Session start: warm pool hit and miss, restore from a snapshot, the naive way.
    Start(crate::bench_start::StartBenchArgs),
    /// A finished prompt's branch pushed to the repo's remote (1 and 1,000 files), against
    /// `git push` of the same change from the host.
    Push(crate::bench_push::PushBenchArgs),
    /// A finished prompt → its branch pushed → its pull request open on (a fake) GitHub, in
    /// the user's name (1 and 1,000 files); the push against `git push` from the host.
    Pr(crate::bench_pr::PrBenchArgs),
    /// `GET /api/stats` over 10,000 generated sessions: the first request, warm ones, and one
    /// after 100 sessions changed.
    Stats(crate::bench_stats::StatsBenchArgs),
    /// The WebSocket clients of `kiln bench session`'s fan-out test, in a process of their own
    /// (started by that benchmark).
    #[command(hide = true)]
    FanoutClients(crate::bench_fanout::FanoutClientsArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct SandboxBenchArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Sequential create→ready runs.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Sandboxes kept idle to measure memory per sandbox.
    #[arg(long, default_value_t = 100)]
    idle: usize,
}

#[derive(Debug, Serialize)]
struct SandboxReport {
    create_ready_p50_ms: f64,
    create_ready_p99_ms: f64,
    exec_rtt_p50_ms: f64,
    exec_rtt_p99_ms: f64,
    snapshot_50mb_ms: f64,
    restore_50mb_ms: f64,
    concurrent50_create_p99_ms: f64,
    idle_overhead_kib: u64,
    bwrap_floor_p50_ms: f64,
    egress_connect_overhead_p50_ms: f64,
    egress_throughput_ratio: f64,
    create_ready_egress_p50_ms: f64,
    runs: usize,
    data_dir_fs: String,
}

pub(crate) async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Sandbox(args) => sandbox(args).await,
        BenchCommand::Session(args) => crate::bench_session::run(args).await,
        BenchCommand::Start(args) => crate::bench_start::run(args).await,
        BenchCommand::Push(args) => crate::bench_push::run(args).await,
        BenchCommand::Pr(args) => crate::bench_pr::run(args).await,
        BenchCommand::Stats(args) => crate::bench_stats::run(args).await,
        BenchCommand::FanoutClients(args) => crate::bench_fanout::clients(args).await,
    }
}

pub(crate) fn spec() -> SandboxSpec {
    SandboxSpec {
        image: ImageSpec::host(),
        ..SandboxSpec::default()
    }
}

fn argv(args: &[&str]) -> ExecRequest {
    ExecRequest {
        command: CommandLine::Argv {
            argv: args.iter().map(|s| s.to_string()).collect(),
        },
        cwd: None,
        env: Default::default(),
        stdin: false,
        timeout_ms: Some(60_000),
    }
}

async fn ready(provider: &LocalProvider) -> anyhow::Result<Sandbox> {
    let sandbox = provider.create(spec()).await?;
    let outcome = sandbox.run(argv(&["true"])).await?;
    anyhow::ensure!(
        outcome.status.success(),
        "`true` failed in a new sandbox: {outcome:?}"
    );
    Ok(sandbox)
}

async fn sandbox(args: SandboxBenchArgs) -> anyhow::Result<()> {
    let provider = crate::sandbox::open(&args.data).await?;
    let data_dir_fs = filesystem_of(&args.data.data_dir);
    println!("data dir {} on {data_dir_fs}", args.data.data_dir.display());

    let mut floor = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        let status = tokio::process::Command::new(&provider.config().bwrap)
            .args([
                "--unshare-all",
                "--ro-bind",
                "/usr",
                "/usr",
                "--symlink",
                "usr/lib64",
                "/lib64",
            ])
            .args([
                "--symlink",
                "usr/lib",
                "/lib",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "/usr/bin/true",
            ])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "bare bwrap failed: {status}");
        floor.push(start.elapsed());
    }
    let floor = Stats::of(floor);
    println!(
        "bare bwrap true          p50 {:7.2} ms  p99 {:7.2} ms",
        floor.p50, floor.p99
    );

    let mut create = Vec::new();
    for _ in 0..args.runs {
        let start = Instant::now();
        let sandbox = ready(&provider).await?;
        create.push(start.elapsed());
        provider.destroy(sandbox.id()).await?;
    }
    let create = Stats::of(create);
    println!(
        "create → ready ({:>3})    p50 {:7.2} ms  p99 {:7.2} ms",
        args.runs, create.p50, create.p99
    );

    let sandbox = ready(&provider).await?;
    let mut rtt = Vec::new();
    for _ in 0..args.runs {
        let start = Instant::now();
        sandbox.run(argv(&["true"])).await?;
        rtt.push(start.elapsed());
    }
    let rtt = Stats::of(rtt);
    println!(
        "exec `true` round trip   p50 {:7.2} ms  p99 {:7.2} ms",
        rtt.p50, rtt.p99
    );

    // 50 MB in the writable layer: 50 files of 1 MiB of random bytes, and one deletion.
    let fill = "mkdir -p /workspace/data && for i in $(seq 1 50); do head -c 1000000 /dev/urandom > /workspace/data/f$i; done && rm /workspace/data/f1";
    let outcome = sandbox.run(argv(&["sh", "-c", fill])).await?;
    anyhow::ensure!(
        outcome.status.success(),
        "filling the sandbox failed: {outcome:?}"
    );
    let (mut snap_times, mut restore_times) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let start = Instant::now();
        let snapshot = provider.snapshot(sandbox.id()).await?;
        snap_times.push(start.elapsed());
        let start = Instant::now();
        let restored = provider
            .create(SandboxSpec {
                image: snapshot.image.clone(),
                ..spec()
            })
            .await?;
        let check = restored
            .run(argv(&[
                "test",
                "-f",
                "/workspace/data/f50",
                "-a",
                "!",
                "-e",
                "/workspace/data/f1",
            ]))
            .await?;
        restore_times.push(start.elapsed());
        anyhow::ensure!(
            check.status.success(),
            "the restored sandbox lacks the snapshot's files"
        );
        provider.destroy(restored.id()).await?;
        std::fs::remove_dir_all(snapshot.image.layers.last().expect("snapshot layer"))?;
    }
    provider.destroy(sandbox.id()).await?;
    let (snap, restore) = (Stats::of(snap_times), Stats::of(restore_times));
    println!("snapshot 50 MB           p50 {:7.2} ms", snap.p50);
    println!("restore 50 MB → ready    p50 {:7.2} ms", restore.p50);

    let start = Instant::now();
    let creations = (0..50).map(|_| {
        let provider = provider.clone();
        async move {
            let start = Instant::now();
            let sandbox = ready(&provider).await?;
            anyhow::Ok((start.elapsed(), sandbox))
        }
    });
    let results = futures_util::future::join_all(creations).await;
    let wall = start.elapsed();
    let mut concurrent = Vec::new();
    for result in results {
        let (elapsed, sandbox) = result?;
        concurrent.push(elapsed);
        provider.destroy(sandbox.id()).await?;
    }
    let concurrent = Stats::of(concurrent);
    println!(
        "50 concurrent creates    p50 {:7.2} ms  p99 {:7.2} ms  (all in {:.0} ms)",
        concurrent.p50,
        concurrent.p99,
        wall.as_secs_f64() * 1000.0
    );

    let before = mem_used_kib()?;
    let mut idle = Vec::new();
    for _ in 0..args.idle {
        idle.push(ready(&provider).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = mem_used_kib()?;
    let per_sandbox = after.saturating_sub(before) / args.idle.max(1) as u64;
    println!(
        "idle memory per sandbox  {per_sandbox} KiB (host MemTotal-MemAvailable over {} sandboxes)",
        args.idle
    );
    for sandbox in idle {
        provider.destroy(sandbox.id()).await?;
    }

    let egress = crate::bench_egress::measure(&provider, &args.data.data_dir, args.runs).await?;

    let report = SandboxReport {
        create_ready_p50_ms: create.p50,
        create_ready_p99_ms: create.p99,
        exec_rtt_p50_ms: rtt.p50,
        exec_rtt_p99_ms: rtt.p99,
        snapshot_50mb_ms: snap.p50,
        restore_50mb_ms: restore.p50,
        concurrent50_create_p99_ms: concurrent.p99,
        idle_overhead_kib: per_sandbox,
        bwrap_floor_p50_ms: floor.p50,
        egress_connect_overhead_p50_ms: egress.connect_overhead_p50_ms,
        egress_throughput_ratio: egress.throughput_ratio,
        create_ready_egress_p50_ms: egress.create_ready_p50_ms,
        runs: args.runs,
        data_dir_fs,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Runs a benchmark in a scratch directory under the data dir (named `NAME-PID`, removed
/// afterwards, whatever happened) and prints its report as the last line, one JSON object.
pub(crate) async fn report_in_scratch<R: Serialize>(
    data_dir: &std::path::Path,
    name: &str,
    measure: impl AsyncFnOnce(&std::path::Path) -> anyhow::Result<R>,
) -> anyhow::Result<()> {
    let root = data_dir.join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let result = measure(&root).await;
    let _ = std::fs::remove_dir_all(&root);
    println!("{}", serde_json::to_string(&result?)?);
    Ok(())
}

/// Median and 99th percentile in milliseconds.
pub(crate) struct Stats {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
}

impl Stats {
    pub(crate) fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        let at = |q: f64| {
            let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            round2(samples[index].as_secs_f64() * 1000.0)
        };
        Stats {
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

pub(crate) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Host memory in use (MemTotal − MemAvailable): what sandboxes cost, kernel memory included.
pub(crate) fn mem_used_kib() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .with_context(|| format!("{name} missing from /proc/meminfo"))
    };
    Ok(field("MemTotal:")? - field("MemAvailable:")?)
}

/// The filesystem type of the mount holding `path`, from /proc/self/mountinfo.
fn filesystem_of(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(" - ");
            let mount_point = parts.next()?.split(' ').nth(4)?;
            let fstype = parts.next()?.split(' ').next()?;
            path.starts_with(mount_point)
                .then(|| (mount_point.len(), fstype.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, fs)| fs)
}
