//! Connection limits for every listener, so one caller's flood cannot starve another VM or another
//! party: a cap per listener and per source address, a process-wide budget of file descriptors, read
//! timeouts (idle connections and slow headers are closed), and back-off when `accept` fails (no
//! spinning at the descriptor limit).
//!
//! A connection over a cap is accepted and closed at once (rather than left in the kernel's backlog),
//! so on a listener shared by several VMs the others keep getting through.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tracing::{debug, warn};

/// Limits of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once on this listener; more are closed on accept.
    pub max_connections: usize,
    /// Connections open at once from one source address; more are closed on accept.
    pub max_per_peer: usize,
    /// A connection that sends nothing for this long is closed (`None`: never, for gRPC peers that
    /// keep pooled connections open; HTTP/2 keep-alive pings watch those instead).
    pub idle_timeout: Option<Duration>,
    /// An HTTP/1 request's headers must arrive within this time.
    pub header_timeout: Duration,
}

impl ConnLimits {
    /// Limits of an HTTP listener (a VM's own IMDS listener, Azure AD, ARM REST): 1024 connections
    /// (whatever their source: on loopback every caller is 127.0.0.1), idle 60 s, headers within 10 s.
    pub const HTTP: ConnLimits = ConnLimits {
        max_connections: 1024,
        max_per_peer: 1024,
        idle_timeout: Some(Duration::from_secs(60)),
        header_timeout: Duration::from_secs(10),
    };
    /// Limits of a listener shared by several VMs, which tells them apart by source address (the
    /// stack's IMDS and extension listeners): 4096 connections, 128 per VM, idle 60 s.
    pub const SHARED: ConnLimits = ConnLimits {
        max_connections: 4096,
        max_per_peer: 128,
        idle_timeout: Some(Duration::from_secs(60)),
        header_timeout: Duration::from_secs(10),
    };
    /// Limits of the loopback listener shared by every VM of a host, which tells them apart by
    /// path (`/vms/{vmId}`): every caller is 127.0.0.1, so no per-source cap below the listener's
    /// 4096 connections; idle 60 s.
    pub const SHARED_LOOPBACK: ConnLimits = ConnLimits {
        max_connections: 4096,
        max_per_peer: 4096,
        idle_timeout: Some(Duration::from_secs(60)),
        header_timeout: Duration::from_secs(10),
    };
    /// Limits of a gRPC listener: 512 connections, 128 per source address, no idle timeout.
    pub const GRPC: ConnLimits = ConnLimits {
        max_connections: 512,
        max_per_peer: 128,
        idle_timeout: None,
        header_timeout: Duration::from_secs(10),
    };
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits::HTTP
    }
}

/// Descriptors kept out of the connection budget for files, stores and outbound calls.
const FD_RESERVE: u64 = 128;

/// The process-wide budget of accepted connections: the soft `RLIMIT_NOFILE` (raised to the hard
/// limit at first use) minus a reserve for files, stores and outbound connections.
fn fd_budget() -> &'static Arc<Semaphore> {
    static BUDGET: OnceLock<Arc<Semaphore>> = OnceLock::new();
    BUDGET.get_or_init(|| {
        let limit = raise_fd_limit();
        let budget = limit.saturating_sub(FD_RESERVE).max(64);
        let budget = usize::try_from(budget)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        debug!(budget, "connection budget");
        Arc::new(Semaphore::new(budget))
    })
}

/// Raises the soft limit of open files to the hard limit and returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut lim = getrlimit(Resource::Nofile);
        if let (Some(cur), Some(max)) = (lim.current, lim.maximum) {
            if cur < max {
                lim.current = Some(max);
                if setrlimit(Resource::Nofile, lim).is_ok() {
                    return max;
                }
            }
            return cur;
        }
        // Unlimited.
        1 << 20
    }
    #[cfg(not(unix))]
    {
        1024
    }
}

/// The accept side of one listener: counts connections per listener and per source address.
#[derive(Clone)]
pub struct Admission {
    limits: ConnLimits,
    listener_slots: Arc<Semaphore>,
    per_peer: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Admission {
    /// A fresh admission state for one listener.
    pub fn new(limits: ConnLimits) -> Self {
        Admission {
            limits,
            listener_slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            per_peer: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The limits.
    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    /// Accepts the next connection that fits the limits; connections over a cap are closed at once,
    /// and accept errors (e.g. out of descriptors) are logged and retried after a pause.
    pub async fn accept(&self, listener: &TcpListener) -> (LimitedStream, SocketAddr) {
        let mut backoff = Duration::from_millis(10);
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    backoff = Duration::from_millis(10);
                    if let Some(stream) = self.admit(tcp, peer) {
                        return (stream, peer);
                    }
                }
                Err(e) => {
                    warn!(error = %e, pause_ms = backoff.as_millis() as u64, "accept failed; pausing");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Wraps `tcp` when it fits every limit, or drops (closes) it.
    fn admit(&self, tcp: TcpStream, peer: SocketAddr) -> Option<LimitedStream> {
        let Ok(global) = fd_budget().clone().try_acquire_owned() else {
            debug!(peer = %peer, "connection refused: process connection budget exhausted");
            return None;
        };
        let Ok(slot) = self.listener_slots.clone().try_acquire_owned() else {
            debug!(peer = %peer, "connection refused: listener at its connection cap");
            return None;
        };
        let peer_guard = {
            let mut counts = self.per_peer.lock().unwrap_or_else(|p| p.into_inner());
            let n = counts.entry(peer.ip()).or_insert(0);
            if *n >= self.limits.max_per_peer {
                debug!(peer = %peer, "connection refused: source address at its connection cap");
                return None;
            }
            *n += 1;
            PeerGuard {
                ip: peer.ip(),
                counts: self.per_peer.clone(),
            }
        };
        let _ = tcp.set_nodelay(true);
        Some(LimitedStream {
            inner: tcp,
            idle_timeout: self.limits.idle_timeout,
            idle: None,
            _permits: (global, slot, peer_guard),
        })
    }
}

struct PeerGuard {
    ip: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// An accepted connection holding its places in the limits until it is dropped; reads fail with
/// `TimedOut` after the idle timeout without incoming bytes.
pub struct LimitedStream {
    inner: TcpStream,
    idle_timeout: Option<Duration>,
    idle: Option<Pin<Box<Sleep>>>,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit, PeerGuard),
}

impl LimitedStream {
    /// The TCP stream.
    pub fn tcp(&self) -> &TcpStream {
        &self.inner
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.idle = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let Some(timeout) = this.idle_timeout else {
                    return Poll::Pending;
                };
                let sleep = this.idle.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + timeout))
                });
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for too long",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for LimitedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn connections_over_the_per_peer_cap_are_closed_and_slots_come_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admission = Admission::new(ConnLimits {
            max_connections: 10,
            max_per_peer: 2,
            idle_timeout: None,
            header_timeout: Duration::from_secs(10),
        });
        let a2 = admission.clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            loop {
                let (s, _) = a2.accept(&listener).await;
                tx.send(s).await.unwrap();
            }
        });
        let c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let mut c3 = TcpStream::connect(addr).await.unwrap();
        let s1 = rx.recv().await.unwrap();
        let _s2 = rx.recv().await.unwrap();
        // The third is closed by the server: reading gives EOF.
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), c3.read(&mut b))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        // Closing one admitted connection frees a place.
        drop(s1);
        drop(c1);
        let _c4 = TcpStream::connect(addr).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a place came back")
            .unwrap();
    }

    #[tokio::test]
    async fn an_idle_connection_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admission = Admission::new(ConnLimits {
            idle_timeout: Some(Duration::from_millis(200)),
            ..ConnLimits::HTTP
        });
        let _client = TcpStream::connect(addr).await.unwrap();
        let (mut s, _) = admission.accept(&listener).await;
        let mut b = [0u8; 1];
        let err = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
