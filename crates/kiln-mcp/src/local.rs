//! A local server's stdio as a byte duplex: the server runs inside the session's sandbox as a
//! guest `exec` with stdin, and a driver task copies what rmcp writes into its stdin and its
//! stdout back. Its stderr is kept (the last few KiB) to say why it died.
//!
//! The driver is owned by the [`Local`] handle: dropping the handle kills the process group in
//! the sandbox and ends the task.

use bytes::Bytes;
use kiln_sandbox::{CommandLine, ExecEvent, ExecRequest, ExecStream, OutputStream, Sandbox};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

/// Buffer of the duplex between rmcp and the driver.
const PIPE: usize = 256 << 10;
/// Stderr kept for the message when the server dies.
const STDERR_TAIL: usize = 4 << 10;

/// How the process ended, for messages: set once by the driver.
pub(crate) type Ended = Arc<Mutex<Option<String>>>;

/// The running server; dropping it stops the process.
#[derive(Debug)]
pub(crate) struct Local {
    stop: CancellationToken,
    pub(crate) ended: Ended,
}

impl Drop for Local {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts `command` in the sandbox; returns rmcp's end of its stdio.
pub(crate) async fn start(
    sandbox: &Sandbox,
    command: &[String],
    env: &BTreeMap<String, String>,
) -> Result<(Local, DuplexStream), kiln_sandbox::Error> {
    let stream = sandbox
        .exec(ExecRequest {
            command: CommandLine::Argv {
                argv: command.to_vec(),
            },
            cwd: Some(kiln_core::WORKDIR.to_string()),
            env: env.clone(),
            stdin: true,
            // Lives as long as the session's connection; the handle's drop kills it.
            timeout_ms: None,
        })
        .await?;
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let local = Local {
        stop: CancellationToken::new(),
        ended: Arc::default(),
    };
    tokio::spawn(drive(
        stream,
        theirs,
        local.stop.clone(),
        local.ended.clone(),
    ));
    Ok((local, ours))
}

async fn drive(
    mut stream: ExecStream,
    mut pipe: DuplexStream,
    stop: CancellationToken,
    ended: Ended,
) {
    let mut stderr = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut stdin_open = true;
    let why = loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = stream.kill().await;
                break "stopped".to_string();
            }
            read = pipe.read(&mut buf), if stdin_open => match read {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    let _ = stream.write_stdin(Bytes::new(), true).await;
                }
                Ok(n) => {
                    if let Err(e) = stream.write_stdin(Bytes::copy_from_slice(&buf[..n]), false).await {
                        let _ = stream.kill().await;
                        break format!("writing to it failed: {e}");
                    }
                }
            },
            event = stream.next() => match event {
                Ok(Some(ExecEvent::Output { stream: OutputStream::Stdout, data })) => {
                    if pipe.write_all(&data).await.is_err() {
                        let _ = stream.kill().await;
                        break "its client went away".to_string();
                    }
                }
                Ok(Some(ExecEvent::Output { stream: OutputStream::Stderr, data })) => {
                    stderr.extend_from_slice(&data);
                    if stderr.len() > STDERR_TAIL {
                        stderr.drain(..stderr.len() - STDERR_TAIL);
                    }
                }
                Ok(Some(ExecEvent::Started { .. })) => {}
                Ok(Some(ExecEvent::Exited(status))) => break format!("it exited ({status})"),
                Ok(None) => break "it exited".to_string(),
                Err(e) => break format!("the sandbox stopped answering ({e})"),
            },
        }
    };
    let tail = String::from_utf8_lossy(&stderr);
    let tail = tail.trim();
    let message = if tail.is_empty() {
        why
    } else {
        format!("{why}; its last output on stderr: {tail}")
    };
    *ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
    // Dropping `pipe` ends rmcp's side: its pending and later requests fail as closed.
}
