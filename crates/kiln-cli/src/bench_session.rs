//! `kiln bench session`: the session engine's overheads, measured against a real server on
//! port 0, real sandboxes, a real git repo and the fake model server (so model time is known
//! and can be subtracted). Prints readable lines, then one JSON object as the last line.

use crate::DataDirArg;
use crate::bench::{Stats, mem_used_kib, round2};
use crate::bench_fanout::{Socket, next_seq, next_text, unix_ns};
use anyhow::{Context, bail};
use kiln_core::SessionId;
use kiln_engine::{Engine, EngineConfig};
use kiln_model::ModelConfig;
use kiln_protocol::api::{Event, EventEnvelope, ServerFrame};
use kiln_sandbox::{LocalConfig, LocalProvider, Provider};
use kiln_testkit::{FakeModel, Turn};
use serde::Serialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct SessionBenchArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Prompts timed from acceptance to the model request.
    #[arg(long, default_value_t = 200)]
    prompts: usize,
    /// WebSocket clients of one session for the fan-out test.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Events per second appended during the fan-out test (for 2 s).
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Idle sessions (each with its sandbox) for the memory test.
    #[arg(long, default_value_t = 500)]
    idle_sessions: usize,
}

#[derive(Debug, Serialize)]
struct SessionReport {
    prompt_to_model_request_p50_ms: f64,
    prompt_to_model_request_p99_ms: f64,
    /// The first and the last 20 prompts of the same session: flat if the conversation's
    /// length does not matter.
    prompt_to_model_request_first20_p50_ms: f64,
    prompt_to_model_request_last20_p50_ms: f64,
    first_token_overhead_p50_ms: f64,
    first_token_overhead_p99_ms: f64,
    fanout_100_clients_p50_ms: f64,
    fanout_100_clients_p99_ms: f64,
    /// The same with the clients in a process of their own.
    fanout_elsewhere_p50_ms: f64,
    fanout_elsewhere_p99_ms: f64,
    fanout_clients: usize,
    fanout_events: u64,
    sessions_500_idle_rss_mib: f64,
    idle_sessions: usize,
    idle_server_rss_mib: f64,
    /// Growth of the server's RSS while the idle sessions were made.
    idle_server_rss_growth_mib: f64,
}

/// The injected model time-to-first-token for the overhead measurement.
const TTFT: Duration = Duration::from_millis(100);

pub(crate) struct Bench {
    pub(crate) url: String,
    token: String,
    http: reqwest::Client,
    pub(crate) engine: Engine,
    provider: LocalProvider,
    pub(crate) model: FakeModel,
}

pub(crate) async fn run(args: SessionBenchArgs) -> anyhow::Result<()> {
    let data_dir = args.data.data_dir.clone();
    crate::bench::report_in_scratch(&data_dir, "bench-session", async |root| {
        measure(&args, root).await
    })
    .await
}

async fn measure(args: &SessionBenchArgs, root: &Path) -> anyhow::Result<SessionReport> {
    let repo = kiln_testkit::bare_repo(
        root,
        "bench",
        &[("README.md", "bench\n"), ("src/main.rs", "fn main() {}\n")],
    );
    let bench = start(root.join("data"), &repo, 0).await?;
    let outcome = async {
        let times = prompt_to_request(&bench, args.prompts).await?;
        let (p50, p99) = (times.all.p50, times.all.p99);
        eprintln!(
            "prompt → model request: p50 {p50} ms, p99 {p99} ms ({} prompts); \
             first 20 p50 {} ms, last 20 p50 {} ms",
            args.prompts, times.first.p50, times.last.p50
        );
        let overhead = first_token_overhead(&bench, 50).await?;
        eprintln!(
            "first-token overhead: p50 {} ms, p99 {} ms",
            overhead.p50, overhead.p99
        );
        let (shared, events) = fanout(&bench, args.clients, args.rate, false).await?;
        eprintln!(
            "fan-out to {} clients, {events} events: p50 {} ms, p99 {} ms",
            args.clients, shared.p50, shared.p99
        );
        let (elsewhere, _) = fanout(&bench, args.clients, args.rate, true).await?;
        eprintln!(
            "fan-out to {} clients in another process: p50 {} ms, p99 {} ms",
            args.clients, elsewhere.p50, elsewhere.p99
        );
        let rss_before = rss_kib()?;
        let (total_mib, server_mib) = idle_sessions(&bench, args.idle_sessions).await?;
        let growth_mib = round2(rss_kib()?.saturating_sub(rss_before) as f64 / 1024.0);
        eprintln!(
            "{} idle sessions: {total_mib} MiB in all, server RSS {server_mib} MiB (+{growth_mib} MiB)",
            args.idle_sessions
        );
        anyhow::Ok(SessionReport {
            prompt_to_model_request_p50_ms: p50,
            prompt_to_model_request_p99_ms: p99,
            prompt_to_model_request_first20_p50_ms: times.first.p50,
            prompt_to_model_request_last20_p50_ms: times.last.p50,
            first_token_overhead_p50_ms: overhead.p50,
            first_token_overhead_p99_ms: overhead.p99,
            fanout_100_clients_p50_ms: shared.p50,
            fanout_100_clients_p99_ms: shared.p99,
            fanout_elsewhere_p50_ms: elsewhere.p50,
            fanout_elsewhere_p99_ms: elsewhere.p99,
            fanout_clients: args.clients,
            fanout_events: events,
            sessions_500_idle_rss_mib: total_mib,
            idle_sessions: args.idle_sessions,
            idle_server_rss_mib: server_mib,
            idle_server_rss_growth_mib: growth_mib,
        })
    }
    .await;
    bench.stop().await;
    outcome
}

/// A kiln in this process on `data`: store, engine (with `pool_size` warm sandboxes per repo),
/// the API on port 0, the fake model, and `repo` registered as `bench`.
pub(crate) async fn start(data: PathBuf, repo: &Path, pool_size: usize) -> anyhow::Result<Bench> {
    let config = EngineConfig {
        pool_size,
        ..EngineConfig::default()
    };
    start_with(data, repo, config).await
}

/// [`start`] with an engine configured as `config` says (its model is the fake's).
pub(crate) async fn start_with(
    data: PathBuf,
    repo: &Path,
    config: EngineConfig,
) -> anyhow::Result<Bench> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&data)?;
    std::fs::set_permissions(
        data.parent().expect("has parent"),
        std::fs::Permissions::from_mode(0o711),
    )?;
    let model = FakeModel::start().await;
    let provider = LocalProvider::open(LocalConfig::new(&data)).await?;
    let store = kiln_store::Store::open(&data).await?;
    let token = kiln_server::bootstrap(&store, &data)
        .await?
        .context("a fresh data dir yields the admin token")?;
    let env = |key: &str| match key {
        "ANTHROPIC_API_KEY" => Some(model.api_key().to_string()),
        "ANTHROPIC_BASE_URL" => Some(model.url()),
        _ => None,
    };
    let config = EngineConfig {
        model: ModelConfig::resolve(Some("anthropic/bench"), env)?,
        ..config
    };
    let engine = Engine::start(store, Arc::new(provider.clone()), data, config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let state = kiln_server::AppState::new(engine.clone());
    tokio::spawn(kiln_server::serve(listener, state, std::future::pending()));
    let bench = Bench {
        url,
        token,
        http: reqwest::Client::new(),
        engine,
        provider,
        model,
    };
    let (status, body) = bench
        .post(
            "/api/repos",
            json!({"name": "bench", "url": repo.to_string_lossy()}),
        )
        .await?;
    if status != 201 {
        bail!("adding the repo failed: {body}");
    }
    Ok(bench)
}

impl Bench {
    /// A new session whose first prompt (`prompt`) has finished, and a socket following it.
    async fn finished_session(&self, prompt: &str) -> anyhow::Result<(SessionId, Socket)> {
        let session = self.new_session(prompt).await?;
        let mut socket = self.ws(&session, 0).await?;
        loop {
            if let Event::PromptFinished { .. } = next_event(&mut socket).await?.event {
                return Ok((session, socket));
            }
        }
    }

    /// How long after `started` the model server received the request that followed the first
    /// `before` (waiting up to a minute for it).
    pub(crate) async fn model_request_after(&self, before: usize, started: Instant) -> Duration {
        self.model
            .wait_for_request(before, Duration::from_secs(60))
            .await
            .received_at
            .into_std()
            .saturating_duration_since(started)
    }

    /// Stops the engine and destroys every sandbox it made.
    pub(crate) async fn stop(&self) {
        self.engine.shutdown().await;
        self.provider.destroy_all().await;
    }

    pub(crate) async fn provider_destroy(&self, id: &str) -> anyhow::Result<()> {
        let id = kiln_sandbox::SandboxId::parse(id).context("a sandbox id")?;
        Ok(self.provider.destroy(&id).await?)
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        Ok((
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        ))
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await?;
        Ok((
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        ))
    }

    /// Waits (up to two minutes) until the session's first prompt has finished.
    pub(crate) async fn wait_finished(&self, session: &SessionId) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let page: Value = self
                .http
                .get(format!(
                    "{}/api/sessions/{session}/events?limit=5000",
                    self.url
                ))
                .bearer_auth(&self.token)
                .send()
                .await?
                .json()
                .await?;
            let events = page["events"].as_array().cloned().unwrap_or_default();
            if events
                .iter()
                .any(|e| e["event"]["type"] == "prompt_finished")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("session {session} did not finish its prompt within 2 min");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Archives a session (its sandbox goes), ignoring failures.
    pub(crate) async fn archive(&self, session: &SessionId) {
        let _ = self
            .post(&format!("/api/sessions/{session}/archive"), json!({}))
            .await;
    }

    pub(crate) async fn new_session(&self, prompt: &str) -> anyhow::Result<SessionId> {
        let (status, body) = self
            .post("/api/sessions", json!({"repo": "bench", "prompt": prompt}))
            .await?;
        if status != 201 {
            bail!("creating a session failed: {body}");
        }
        body["session"]["id"]
            .as_str()
            .context("session id")?
            .parse()
            .map_err(anyhow::Error::msg)
    }

    pub(crate) async fn prompt(&self, session: &SessionId, text: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .post(
                &format!("/api/sessions/{session}/prompts"),
                json!({"text": text}),
            )
            .await?;
        if status != 202 {
            bail!("sending a prompt failed: {body}");
        }
        Ok(body["prompt_id"].as_str().context("prompt id")?.to_string())
    }

    async fn ws(&self, session: &SessionId, after_seq: u64) -> anyhow::Result<Socket> {
        crate::bench_fanout::connect(&self.url, &self.token, session.as_str(), after_seq).await
    }
}

/// The next event from a socket, with a timeout.
async fn next_event(socket: &mut Socket) -> anyhow::Result<EventEnvelope> {
    loop {
        if let ServerFrame::Event(envelope) = serde_json::from_str(&next_text(socket).await?)? {
            return Ok(envelope);
        }
    }
}

async fn until_finished(socket: &mut Socket, prompt: &str) -> anyhow::Result<()> {
    loop {
        let envelope = next_event(socket).await?;
        if let Event::PromptFinished { prompt_id, .. } = &envelope.event
            && prompt_id.as_str() == prompt
        {
            return Ok(());
        }
    }
}

/// Prompt → model request over a session's prompts: all of them, the first 20, the last 20.
struct PromptTimes {
    all: Stats,
    first: Stats,
    last: Stats,
}

/// Prompt sent (sandbox running, agent idle) → the request arrives at the model server.
async fn prompt_to_request(bench: &Bench, prompts: usize) -> anyhow::Result<PromptTimes> {
    bench.model.set_default(Turn::text("ok"));
    let (session, mut socket) = bench.finished_session("warm up").await?;
    let mut samples = Vec::with_capacity(prompts);
    for i in 0..prompts {
        let before = bench.model.request_count();
        let sent = Instant::now();
        let prompt = bench.prompt(&session, &format!("prompt {i}")).await?;
        samples.push(bench.model_request_after(before, sent).await);
        until_finished(&mut socket, &prompt).await?;
    }
    let edge = samples.len().min(20);
    Ok(PromptTimes {
        first: Stats::of(samples[..edge].to_vec()),
        last: Stats::of(samples[samples.len() - edge..].to_vec()),
        all: Stats::of(samples),
    })
}

/// Client-visible first token minus the model's injected time-to-first-token.
async fn first_token_overhead(bench: &Bench, prompts: usize) -> anyhow::Result<Stats> {
    bench
        .model
        .set_default(Turn::text("first token").with_ttft(TTFT));
    let (session, mut socket) = bench.finished_session("warm up").await?;
    let mut samples = Vec::with_capacity(prompts);
    for i in 0..prompts {
        let sent = Instant::now();
        let prompt = bench.prompt(&session, &format!("prompt {i}")).await?;
        loop {
            let envelope = next_event(&mut socket).await?;
            if matches!(&envelope.event, Event::TextDelta { prompt_id, .. } if prompt_id.as_str() == prompt)
            {
                samples.push(sent.elapsed().saturating_sub(TTFT));
                break;
            }
        }
        until_finished(&mut socket, &prompt).await?;
    }
    Ok(Stats::of(samples))
}

/// Events appended to one session at `rate` per second for 2 s, each received by `clients`
/// sockets: append → arrival at each client. In this process (`elsewhere` false: the clients
/// share the server's process and cores) or in a process of their own.
async fn fanout(
    bench: &Bench,
    clients: usize,
    rate: u64,
    elsewhere: bool,
) -> anyhow::Result<(Stats, u64)> {
    bench.model.set_default(Turn::text("ok"));
    let (session, _socket) = bench.finished_session("fan-out").await?;
    let log = bench.engine.store().open_session(&session).await?;
    let head = log.head_seq().await;
    let total = rate * 2;
    if elsewhere {
        let stats = crate::bench_fanout::measure_elsewhere(
            &bench.url,
            &bench.token,
            session.as_str(),
            head,
            clients,
            total,
            async || {
                let mut appended = vec![0u64; total as usize];
                append_at_rate(&log, head, total, rate, |i| appended[i] = unix_ns()).await?;
                Ok(appended)
            },
        )
        .await?;
        return Ok((stats, total));
    }
    // When each event was appended, in nanoseconds after `epoch`, by seq - head - 1 (0: not
    // yet). Atomics rather than a locked map: 100 readers contending for one lock measured
    // the lock, not the server.
    let epoch = Instant::now();
    let appended: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let mut readers = Vec::new();
    for _ in 0..clients {
        let mut socket = bench.ws(&session, head).await?;
        let appended = appended.clone();
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total as usize);
            while (latencies.len() as u64) < total {
                let seq = next_seq(&mut socket).await?;
                let received = epoch.elapsed();
                let Some(slot) = seq
                    .checked_sub(head + 1)
                    .and_then(|i| appended.get(i as usize))
                else {
                    continue;
                };
                let at = slot.load(Ordering::Acquire);
                if at != 0 {
                    latencies.push(received.saturating_sub(Duration::from_nanos(at)));
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    append_at_rate(&log, head, total, rate, |i| {
        let at = epoch.elapsed().as_nanos().max(1) as u64;
        appended[i].store(at, Ordering::Release);
    })
    .await?;
    let mut all = Vec::new();
    for reader in readers {
        all.extend(reader.await??);
    }
    Ok((Stats::of(all), total))
}

/// Appends `total` text deltas at `rate` per second (a burst each millisecond), calling
/// `before(i)` just before the `i`-th: the seq is known only after the append, so the time is
/// recorded before it, by index (appends are serial here).
async fn append_at_rate(
    log: &kiln_store::SessionLog,
    head: u64,
    total: u64,
    rate: u64,
    mut before: impl FnMut(usize),
) -> anyhow::Result<()> {
    let prompt_id = kiln_core::PromptId::random();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let per_tick = (rate / 1000).max(1);
    let mut sent = 0;
    while sent < total {
        tick.tick().await;
        for _ in 0..per_tick.min(total - sent) {
            let seq = head + sent + 1;
            before(sent as usize);
            let stored = log
                .append(Event::TextDelta {
                    prompt_id: prompt_id.clone(),
                    text: "token ".into(),
                })
                .await?;
            anyhow::ensure!(
                stored.seq() == seq,
                "unexpected seq {} (wanted {seq})",
                stored.seq()
            );
            sent += 1;
        }
    }
    Ok(())
}

/// Memory of `n` idle sessions, each with its sandbox and one finished prompt: host memory in
/// use before and after (server, sandboxes, page cache of their files), and the server's RSS.
async fn idle_sessions(bench: &Bench, n: usize) -> anyhow::Result<(f64, f64)> {
    bench.model.set_default(Turn::text("ok"));
    let before = mem_used_kib()?;
    let semaphore = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    let bench_url = bench.url.clone();
    let token = bench.token.clone();
    for i in 0..n {
        let permit = semaphore.clone().acquire_owned().await?;
        let (url, token) = (bench_url.clone(), token.clone());
        let http = bench.http.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let response = http
                .post(format!("{url}/api/sessions"))
                .bearer_auth(&token)
                .json(&json!({"repo": "bench", "prompt": format!("idle {i}")}))
                .send()
                .await?;
            let body: Value = response.json().await?;
            let id = body["session"]["id"]
                .as_str()
                .context("session id")?
                .to_string();
            // Idle: its first prompt finished.
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let detail: Value = http
                    .get(format!("{url}/api/sessions/{id}"))
                    .bearer_auth(&token)
                    .send()
                    .await?
                    .json()
                    .await?;
                if detail["state"] == "idle" && detail["sandbox"] == "ready" {
                    return anyhow::Ok(());
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "session {id} did not go idle: {detail}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = mem_used_kib()?;
    let total_mib = round2(after.saturating_sub(before) as f64 / 1024.0);
    Ok((total_mib, round2(rss_kib()? as f64 / 1024.0)))
}

fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .context("VmRSS missing from /proc/self/status")
}
