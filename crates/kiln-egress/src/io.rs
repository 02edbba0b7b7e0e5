//! The sockets under the proxy: the two listener kinds it serves on, and `Metered`, a stream
//! wrapper that counts bytes each way and remembers the last time a byte moved — the audit's
//! byte counts and the idle timeout both come from it, so neither needs a buffer of its own.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// What the proxy can serve on: a Unix socket bound into a sandbox (production) or TCP (tests,
/// benchmarks).
pub trait Listener: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Listener for TcpListener {
    type Io = TcpStream;
    async fn accept(&self) -> io::Result<TcpStream> {
        let (stream, _) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Listener for UnixListener {
    type Io = UnixStream;
    async fn accept(&self) -> io::Result<UnixStream> {
        Ok(UnixListener::accept(self).await?.0)
    }
}

/// Bytes written (`up`), bytes read (`down`) and the last moment either moved.
#[derive(Debug)]
pub(crate) struct Counters {
    up: AtomicU64,
    down: AtomicU64,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last byte.
    last: AtomicU64,
}

impl Counters {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    pub(crate) fn up(&self) -> u64 {
        self.up.load(Ordering::Relaxed)
    }

    pub(crate) fn down(&self) -> u64 {
        self.down.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// Resolves once no byte has moved for `timeout`.
    pub(crate) async fn idle(&self, timeout: Duration) {
        loop {
            let idle = self.idle_for();
            if idle >= timeout {
                return;
            }
            tokio::time::sleep(timeout - idle).await;
        }
    }
}

/// A stream whose traffic is counted into `Counters`.
#[derive(Debug)]
pub(crate) struct Metered<T> {
    inner: T,
    counters: Arc<Counters>,
}

impl<T> Metered<T> {
    pub(crate) fn new(inner: T, counters: Arc<Counters>) -> Self {
        Self { inner, counters }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.counters.down.fetch_add(n as u64, Ordering::Relaxed);
            self.counters.touch();
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll
            && n > 0
        {
            self.counters.up.fetch_add(n as u64, Ordering::Relaxed);
            self.counters.touch();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_each_direction_and_notices_idleness() {
        let (a, mut b) = tokio::io::duplex(64);
        let counters = Counters::new();
        let mut m = Metered::new(a, counters.clone());
        m.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        b.read_exact(&mut buf).await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut got = [0u8; 3];
        m.read_exact(&mut got).await.unwrap();
        assert_eq!((counters.up(), counters.down()), (5, 3));
        tokio::time::timeout(
            Duration::from_secs(2),
            counters.idle(Duration::from_millis(50)),
        )
        .await
        .expect("idle within 2 s");
    }
}
