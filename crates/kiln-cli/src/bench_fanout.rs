//! The fan-out test's clients in a process of their own (`kiln bench session
//! --clients-elsewhere`): 100 WebSocket clients reading frames take CPU from the server they
//! measure when they share its process and its two cores; out of process, what is left is
//! closer to the server's own share. The clients run as `kiln bench fanout-clients` (hidden),
//! say `ready` once every socket is open, and at the end print when each client received each
//! event (Unix time in nanoseconds: both processes read the same clock) as one JSON line.

use crate::bench::Stats;
use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// `kiln bench fanout-clients`: the token comes in `KILN_TOKEN`, never on the command line.
#[derive(Debug, clap::Args)]
pub(crate) struct FanoutClientsArgs {
    /// The server, `http://HOST:PORT`.
    #[arg(long)]
    url: String,
    #[arg(long)]
    session: String,
    /// The events counted are those after this seq.
    #[arg(long)]
    after_seq: u64,
    #[arg(long)]
    clients: usize,
    /// Events each client waits for.
    #[arg(long)]
    events: u64,
}

/// What the clients print last: per client, per event (seq − after_seq − 1), when it arrived.
#[derive(Debug, Serialize, Deserialize)]
struct Received {
    received_unix_ns: Vec<Vec<u64>>,
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A socket following `session` after `after_seq`.
pub(crate) async fn connect(
    url: &str,
    token: &str,
    session: &str,
    after_seq: u64,
) -> anyhow::Result<Socket> {
    let url = format!(
        "{}/api/sessions/{session}/ws?after_seq={after_seq}",
        url.replace("http://", "ws://")
    );
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let config = Some(kiln_client::websocket_config());
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, config, false).await?;
    Ok(socket)
}

/// The next text frame, waiting at most 30 s.
pub(crate) async fn next_text(socket: &mut Socket) -> anyhow::Result<String> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .context("no event within 30 s")?
            .context("socket closed")??;
        if let Message::Text(text) = message {
            return Ok(text.as_str().to_string());
        }
    }
}

/// The seq of the next event frame, reading only what it needs.
pub(crate) async fn next_seq(socket: &mut Socket) -> anyhow::Result<u64> {
    #[derive(serde::Deserialize)]
    struct Frame {
        seq: Option<u64>,
    }
    loop {
        if let Some(seq) = serde_json::from_str::<Frame>(&next_text(socket).await?)?.seq {
            return Ok(seq);
        }
    }
}

pub(crate) fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The client process.
pub(crate) async fn clients(args: FanoutClientsArgs) -> anyhow::Result<()> {
    let token = std::env::var("KILN_TOKEN").context("KILN_TOKEN is not set")?;
    let mut sockets = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        sockets.push(connect(&args.url, &token, &args.session, args.after_seq).await?);
    }
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            let (after, total) = (args.after_seq, args.events);
            tokio::spawn(async move {
                let mut received = vec![0u64; total as usize];
                let mut got = 0;
                while got < total {
                    let seq = next_seq(&mut socket).await?;
                    let at = unix_ns();
                    if let Some(slot) = seq
                        .checked_sub(after + 1)
                        .and_then(|i| received.get_mut(i as usize))
                    {
                        *slot = at;
                        got += 1;
                    }
                }
                anyhow::Ok(received)
            })
        })
        .collect();
    println!("ready");
    let mut received_unix_ns = Vec::with_capacity(readers.len());
    for reader in readers {
        received_unix_ns.push(reader.await??);
    }
    println!("{}", serde_json::to_string(&Received { received_unix_ns })?);
    Ok(())
}

/// The server side: starts the client process, waits for its sockets, runs `append` (which
/// appends the events, recording when each was appended, Unix ns by index), and returns the
/// latencies the clients saw.
pub(crate) async fn measure_elsewhere<F>(
    url: &str,
    token: &str,
    session: &str,
    after_seq: u64,
    clients: usize,
    events: u64,
    append: F,
) -> anyhow::Result<Stats>
where
    F: AsyncFnOnce() -> anyhow::Result<Vec<u64>>,
{
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "bench",
            "fanout-clients",
            "--url",
            url,
            "--session",
            session,
        ])
        .args(["--after-seq", &after_seq.to_string()])
        .args(["--clients", &clients.to_string()])
        .args(["--events", &events.to_string()])
        .env("KILN_TOKEN", token)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the client process")?;
    let mut lines = BufReader::new(child.stdout.take().context("the clients' stdout")?).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("the clients did not connect within 60 s")??;
    if ready.as_deref() != Some("ready") {
        bail!("the client process said {ready:?} instead of ready");
    }
    let appended = append().await?;
    let last = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .context("the clients did not finish within 120 s")??
        .context("the client process ended without its report")?;
    let status = child.wait().await?;
    if !status.success() {
        bail!("the client process failed: {status}");
    }
    let report: Received = serde_json::from_str(&last)?;
    let mut samples = Vec::new();
    for client in &report.received_unix_ns {
        for (received, appended) in client.iter().zip(&appended) {
            if *appended != 0 {
                samples.push(Duration::from_nanos(received.saturating_sub(*appended)));
            }
        }
    }
    if samples.is_empty() {
        bail!("the clients received nothing");
    }
    Ok(Stats::of(samples))
}
