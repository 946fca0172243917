//! The agent's front door: it accepts TCP connections, completes their TLS
//! handshake within a deadline, caps how many connections exist at once, and
//! closes connections that stay idle, so that no one without a token can
//! exhaust the agent's descriptors or its accept loop.
//!
//! - Every connection is registered in a [`ConnTable`] from `accept` on. At
//!   the cap, a new connection evicts the oldest one still in its handshake,
//!   else the connection idle for longest (no authenticated request in
//!   flight); when every connection is busy, the new one is closed. An
//!   attacker without a token can hold only evictable connections, so the
//!   operator always gets in.
//! - The handshake has a deadline; a connection is idle when no
//!   authenticated request is in flight (the auth layer counts them through
//!   [`ConnInfo`]), and one idle past the idle timeout is closed. Health
//!   checks answer without a token and so never keep a connection open.
//! - When descriptors run out (`EMFILE`), the loop closes one evictable
//!   connection, backs off (10 ms doubling to 1 s) instead of spinning, and
//!   logs that at most once per interval.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The front door's limits (`agent.toml` `[limits]`).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 512,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Accept errors and refusals are logged at most once per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What one connection is doing, shared by its socket, the table and the
/// requests it carries.
#[derive(Debug)]
pub struct ConnState {
    opened: Instant,
    /// Milliseconds after `opened`; u64::MAX while the handshake runs.
    established_ms: AtomicU64,
    /// Authenticated requests in flight.
    active: AtomicUsize,
    /// Milliseconds after `opened` of the last request start or end.
    last_active_ms: AtomicU64,
    evict: CancellationToken,
}

const HANDSHAKING: u64 = u64::MAX;

impl ConnState {
    fn new() -> Self {
        ConnState {
            opened: Instant::now(),
            established_ms: AtomicU64::new(HANDSHAKING),
            active: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            evict: CancellationToken::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn handshaking(&self) -> bool {
        self.established_ms.load(Ordering::Relaxed) == HANDSHAKING
    }

    fn established(&self) {
        let now = self.now_ms();
        self.last_active_ms.store(now, Ordering::Relaxed);
        self.established_ms.store(now, Ordering::Relaxed);
    }

    fn idle(&self) -> bool {
        self.active.load(Ordering::Relaxed) == 0
    }

    /// How long the connection has been without an authenticated request.
    fn idle_for(&self) -> Duration {
        let last = self.last_active_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    /// Marks an authenticated request in flight until the guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.last_active_ms.store(self.now_ms(), Ordering::Relaxed);
        ActiveRequest(self.clone())
    }
}

/// An authenticated request in flight on a connection.
#[derive(Debug)]
pub struct ActiveRequest(Arc<ConnState>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0
            .last_active_ms
            .store(self.0.now_ms(), Ordering::Relaxed);
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection a request came on (in the request's extensions).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub state: Arc<ConnState>,
}

/// Every open connection.
#[derive(Debug, Default)]
pub struct ConnTable {
    inner: Mutex<TableInner>,
}

#[derive(Debug, Default)]
struct TableInner {
    next_id: u64,
    conns: HashMap<u64, Arc<ConnState>>,
}

impl ConnTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, TableInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections registered and not evicted.
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers a new connection, evicting another at the cap; None when
    /// every connection is busy and the new one must be refused.
    fn register(self: &Arc<Self>, cap: usize) -> Option<Registration> {
        let mut inner = self.lock();
        if inner.conns.len() >= cap {
            let victim = Self::victim(&inner.conns)?;
            Self::evict(&mut inner, victim);
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let state = Arc::new(ConnState::new());
        inner.conns.insert(id, state.clone());
        Some(Registration {
            id,
            state,
            table: Arc::downgrade(self),
        })
    }

    /// Closes one evictable connection; false when there is none.
    fn evict_one(&self) -> bool {
        let mut inner = self.lock();
        match Self::victim(&inner.conns) {
            Some(id) => {
                Self::evict(&mut inner, id);
                true
            }
            None => false,
        }
    }

    fn evict(inner: &mut TableInner, id: u64) {
        if let Some(state) = inner.conns.remove(&id) {
            state.evict.cancel();
        }
    }

    /// The oldest connection still in its handshake, else the one idle for
    /// longest; never one with an authenticated request in flight.
    fn victim(conns: &HashMap<u64, Arc<ConnState>>) -> Option<u64> {
        let handshaking = conns
            .iter()
            .filter(|(_, s)| s.handshaking())
            .min_by_key(|(_, s)| s.opened)
            .map(|(id, _)| *id);
        handshaking.or_else(|| {
            conns
                .iter()
                .filter(|(_, s)| s.idle())
                .max_by_key(|(_, s)| s.idle_for())
                .map(|(id, _)| *id)
        })
    }
}

/// A connection's place in the table, given up when the connection ends.
#[derive(Debug)]
struct Registration {
    id: u64,
    state: Arc<ConnState>,
    table: Weak<ConnTable>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(table) = self.table.upgrade() {
            table.lock().conns.remove(&self.id);
        }
    }
}

/// Logs a recurring condition at most once per [`LOG_INTERVAL`], with how
/// often it happened since.
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    fn new() -> Self {
        Throttled {
            last: None,
            suppressed: 0,
        }
    }

    fn note(&mut self, log: impl FnOnce(u64)) {
        self.suppressed += 1;
        if self.last.is_none_or(|t| t.elapsed() >= LOG_INTERVAL) {
            log(self.suppressed);
            self.suppressed = 0;
            self.last = Some(Instant::now());
        }
    }
}

/// EMFILE or ENFILE: this process, or the system, has no descriptor left.
fn out_of_descriptors(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(Errno::from_io_error(e), Some(Errno::MFILE | Errno::NFILE))
}

/// Accepts on `listener` until the returned stream is dropped; yields
/// connections whose TLS handshake completed. The table is for the auth
/// layer's accounting and for tests.
pub fn serve_connections(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: ConnectionLimits,
) -> (
    tokio_stream::wrappers::ReceiverStream<io::Result<Conn>>,
    Arc<ConnTable>,
) {
    let table = Arc::new(ConnTable::default());
    // Small: handshakes that completed wait here for the server to take them.
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(tls),
        table.clone(),
        limits,
        tx,
    ));
    (tokio_stream::wrappers::ReceiverStream::new(rx), table)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    table: Arc<ConnTable>,
    limits: ConnectionLimits,
    tx: mpsc::Sender<io::Result<Conn>>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut exhausted = Throttled::new();
    let mut refused = Throttled::new();
    let mut failed = Throttled::new();
    loop {
        let accepted = tokio::select! {
            // The server stopped taking connections: close the listener.
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = BACKOFF_MIN;
                let _ = tcp.set_nodelay(true);
                let Some(registration) = table.register(limits.max_connections) else {
                    refused.note(|n| {
                        tracing::warn!(
                            max_connections = limits.max_connections,
                            "connection cap reached with every connection busy: refused {n} \
                             connection(s) (raise [limits] max_connections?)"
                        )
                    });
                    continue;
                };
                tokio::spawn(handshake(
                    tcp,
                    peer,
                    registration,
                    acceptor.clone(),
                    limits.clone(),
                    tx.clone(),
                ));
            }
            Err(e) if out_of_descriptors(&e) => {
                let evicted = table.evict_one();
                exhausted.note(|n| {
                    tracing::warn!(
                        open = table.len(),
                        "cannot accept: {e} ({n} time(s) since the last report); {}",
                        if evicted {
                            "closing idle connections and backing off"
                        } else {
                            "every connection is busy; backing off"
                        }
                    )
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(e) => {
                // ECONNABORTED and the like: the peer gave up; nothing to fix.
                failed.note(|n| tracing::debug!("accept failed: {e} ({n} time(s))"));
                tokio::time::sleep(BACKOFF_MIN).await;
            }
        }
    }
}

async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    registration: Registration,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
    tx: mpsc::Sender<io::Result<Conn>>,
) {
    let evicted = registration.state.evict.clone();
    let done = tokio::select! {
        () = evicted.cancelled() => {
            tracing::debug!(%peer, "closed a connection still in its TLS handshake (connection cap)");
            return;
        }
        done = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)) => done,
    };
    match done {
        Ok(Ok(tls)) => {
            registration.state.established();
            let conn = Conn::new(tls, peer, registration, limits.idle_timeout);
            // The server stopped: the connection is dropped, and closed.
            let _ = tx.send(Ok(conn)).await;
        }
        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
        Err(_) => tracing::debug!(
            %peer,
            "no TLS handshake within {:?}: connection closed",
            limits.handshake_timeout
        ),
    }
}

/// A TLS connection the server serves; it reads as closed once evicted or
/// idle past the idle timeout, which makes the server drop it.
pub struct Conn {
    io: TlsStream<TcpStream>,
    peer: SocketAddr,
    registration: Registration,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    idle_check: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
    closed: bool,
}

impl Conn {
    fn new(
        io: TlsStream<TcpStream>,
        peer: SocketAddr,
        registration: Registration,
        idle_timeout: Duration,
    ) -> Self {
        let evicted = Box::pin(registration.state.evict.clone().cancelled_owned());
        Conn {
            io,
            peer,
            registration,
            evicted,
            idle_check: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            closed: false,
        }
    }

    /// True when the connection must close now: evicted, or idle too long.
    /// Otherwise the timers are armed to wake this task when that may change.
    fn must_close(&mut self, cx: &mut Context<'_>) -> bool {
        if self.closed || self.evicted.as_mut().poll(cx).is_ready() {
            return true;
        }
        while self.idle_check.as_mut().poll(cx).is_ready() {
            let state = &self.registration.state;
            let next = if state.idle() {
                let idle_for = state.idle_for();
                if idle_for >= self.idle_timeout {
                    tracing::debug!(peer = %self.peer, "closing a connection idle for {idle_for:?}");
                    return true;
                }
                self.idle_timeout - idle_for
            } else {
                self.idle_timeout
            };
            let deadline = tokio::time::Instant::now() + next;
            self.idle_check.as_mut().reset(deadline);
        }
        false
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.must_close(cx) {
            // End of stream: the server ends the connection.
            self.closed = true;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            peer: self.peer,
            state: self.registration.state.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn established(table: &Arc<ConnTable>) -> Registration {
        let r = table.register(usize::MAX).unwrap();
        r.state.established();
        r
    }

    #[test]
    fn at_the_cap_handshakes_go_first_then_the_longest_idle() {
        let table = Arc::new(ConnTable::default());
        let busy = established(&table);
        let _request = busy.state.begin_request();
        let idle_old = established(&table);
        std::thread::sleep(Duration::from_millis(5));
        let idle_new = established(&table);
        let shaking_old = table.register(usize::MAX).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let shaking_new = table.register(usize::MAX).unwrap();
        assert_eq!(table.len(), 5);

        let _a = table.register(5).unwrap();
        assert!(shaking_old.state.evict.is_cancelled());
        assert!(!shaking_new.state.evict.is_cancelled());
        let _b = table.register(5).unwrap();
        assert!(shaking_new.state.evict.is_cancelled());
        // No handshakes left: the idle connection, not the busy one.
        drop(_a);
        drop(_b);
        let c = table.register(3).unwrap();
        assert!(idle_old.state.evict.is_cancelled());
        assert!(!busy.state.evict.is_cancelled());
        // Only busy connections: the new one is refused.
        c.state.established();
        let _c_request = c.state.begin_request();
        let _idle_new_request = idle_new.state.begin_request();
        assert!(table.register(3).is_none());
        assert!(!busy.state.evict.is_cancelled());
    }

    #[test]
    fn a_dropped_registration_leaves_the_table() {
        let table = Arc::new(ConnTable::default());
        let r = table.register(10).unwrap();
        assert_eq!(table.len(), 1);
        drop(r);
        assert!(table.is_empty());
    }

    #[test]
    fn requests_mark_a_connection_busy_until_they_end() {
        let table = Arc::new(ConnTable::default());
        let r = established(&table);
        assert!(r.state.idle());
        let guard = r.state.begin_request();
        assert!(!r.state.idle());
        drop(guard);
        assert!(r.state.idle());
        assert!(r.state.idle_for() < Duration::from_secs(1));
    }
}
