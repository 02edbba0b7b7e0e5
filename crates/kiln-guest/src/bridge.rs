//! The egress bridge of a proxied sandbox: the sandbox has no interface but loopback, so the
//! guest listens on a loopback port (`KILN_EGRESS_LISTEN`, what `HTTP_PROXY` names) and
//! carries each connection, byte for byte, to the host's egress proxy through the Unix socket
//! bound into the sandbox (`KILN_EGRESS_SOCKET`). The proxy outside decides what may pass; the
//! bridge only moves bytes, a bounded number of connections at a time.

use std::sync::Arc;
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::Semaphore;

/// Connections bridged at once; more wait for a free slot (the proxy has its own cap).
const MAX_CONNECTIONS: usize = 256;

/// Starts the bridge when the sandbox is proxied (both variables set); a port that cannot be
/// bound fails the guest's start, so the host hears of it.
pub(crate) async fn start_from_env() -> Result<(), String> {
    let (Ok(socket), Ok(listen)) = (
        std::env::var("KILN_EGRESS_SOCKET"),
        std::env::var("KILN_EGRESS_LISTEN"),
    ) else {
        return Ok(());
    };
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen} for the egress bridge: {e}"))?;
    tokio::spawn(serve(listener, socket));
    Ok(())
}

async fn serve(listener: TcpListener, socket: String) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut inbound = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                crate::log(format_args!("egress bridge: accept failed: {err}"));
                tokio::time::sleep(crate::ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let socket = socket.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match UnixStream::connect(&socket).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(err) => crate::log(format_args!("egress bridge: {socket}: {err}")),
            }
        });
    }
}
