//! One admitted connection: its TLS handshake, hyper serving its requests,
//! and the watchdog that closes it at `http.header_read_timeout` or
//! `http.idle_timeout`, from the connection's [`Activity`].

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use tracing::debug;

use super::{Admitted, Limits, Refusal, Timeouts};

/// One admitted connection: the TLS handshake, then requests.
pub(super) async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    admitted: Admitted,
    limits: Arc<Limits>,
    shutdown: CancellationToken,
) {
    let _admitted = admitted;
    // Small responses must not wait for Nagle + delayed ACK.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new(Instant::now()));
    let Some(acceptor) = tls else {
        return serve_connection(stream, peer, app, activity, &limits, &shutdown).await;
    };
    let (deadline, _) = activity.deadline(limits.timeouts);
    let handshake = tokio::select! {
        () = shutdown.cancelled() => return,
        handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => handshake,
    };
    match handshake {
        Ok(Ok(stream)) => serve_connection(stream, peer, app, activity, &limits, &shutdown).await,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "HTTPS handshake failed");
            limits.refuse(Refusal::TlsHandshake, Some(peer));
        }
        Err(_) => limits.refuse(Refusal::HeaderTimeout, Some(peer)),
    }
}

/// Serves HTTP/1.1 requests on `io` until the client closes, a timeout of
/// [`Activity`] expires, or shutdown.
pub async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    activity: Arc<Activity>,
    limits: &Limits,
    shutdown: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let mut app = app.clone();
            req.extensions_mut().insert(ConnectInfo(peer));
            let busy = Busy::start(activity.clone());
            async move {
                let response = match app.call(req).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|inner| TrackedBody { inner, _busy: busy }))
            }
        })
    };
    let io = TokioIo::new(TrackedIo {
        inner: io,
        activity: activity.clone(),
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Ours, see the module docs.
        .header_read_timeout(None)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    loop {
        let (deadline, _) = activity.deadline(limits.timeouts);
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                if activity.in_flight() == 0 {
                    return;
                }
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            // A request started or ended, or the next one's headers
            // began: the deadline may have moved earlier.
            () = activity.changed.notified() => {}
            () = tokio::time::sleep_until(deadline) => {
                let (deadline, expiry) = activity.deadline(limits.timeouts);
                if deadline > Instant::now() {
                    continue;
                }
                match expiry {
                    Expiry::HeaderRead => limits.refuse(Refusal::HeaderTimeout, Some(peer)),
                    Expiry::Idle => {
                        limits.metrics.http_idle_closed();
                        debug!(%peer, "HTTP connection idle: closed");
                    }
                }
                // Dropping the connection closes the socket.
                return;
            }
        }
    }
}

/// Which timeout a connection's deadline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `http.header_read_timeout`: the TLS handshake and first headers,
    /// or a later request's headers.
    HeaderRead,
    /// `http.idle_timeout`: no byte either way.
    Idle,
}

/// What a connection has been doing, as far as its timeouts care: a pure
/// state machine over explicit instants, fed by the connection's I/O and
/// its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityState {
    /// Requests whose response has not been sent yet.
    pub in_flight: usize,
    /// Whether a response was sent (the first request is timed from the
    /// accept).
    pub served: bool,
    /// The accept, or when the last response ended.
    pub since: Instant,
    /// First byte of the next request after a response.
    pub head: Option<Instant>,
    /// Last byte read or written.
    pub last_io: Instant,
}

impl ActivityState {
    /// A connection accepted at `now`.
    pub fn new(now: Instant) -> Self {
        ActivityState {
            in_flight: 0,
            served: false,
            since: now,
            head: None,
            last_io: now,
        }
    }

    /// When the connection is closed unless something happens, and why.
    pub fn deadline(&self, t: Timeouts) -> (Instant, Expiry) {
        if self.in_flight > 0 {
            return (self.last_io + t.idle, Expiry::Idle);
        }
        if !self.served {
            return (self.since + t.header_read, Expiry::HeaderRead);
        }
        match self.head {
            Some(head) => (head + t.header_read, Expiry::HeaderRead),
            None => (self.since.max(self.last_io) + t.idle, Expiry::Idle),
        }
    }

    /// Bytes were read at `now`; true when they begin the next request's
    /// headers (the deadline may move earlier). Every other change but
    /// [`ActivityState::wrote`] may move it earlier too.
    pub fn read(&mut self, now: Instant) -> bool {
        self.last_io = now;
        if self.in_flight == 0 && self.served && self.head.is_none() {
            self.head = Some(now);
            return true;
        }
        false
    }

    /// Bytes were written at `now`.
    pub fn wrote(&mut self, now: Instant) {
        self.last_io = now;
    }

    /// hyper parsed a request's headers at `now`.
    pub fn request_started(&mut self, now: Instant) {
        self.in_flight += 1;
        self.head = None;
        self.last_io = now;
    }

    /// A response was sent, or its request dropped, at `now`.
    pub fn response_done(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.served = true;
            self.since = now;
            self.head = None;
        }
        self.last_io = now;
    }
}

/// A connection's [`ActivityState`], shared by its I/O, its requests and
/// its watchdog.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<ActivityState>,
    /// Wakes the watchdog when the deadline may have moved earlier (not
    /// on every byte: those only move it later).
    changed: Notify,
}

impl Activity {
    /// A connection accepted at `now`.
    pub fn new(now: Instant) -> Self {
        Activity {
            state: Mutex::new(ActivityState::new(now)),
            changed: Notify::new(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut ActivityState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn deadline(&self, t: Timeouts) -> (Instant, Expiry) {
        self.with(|s| s.deadline(t))
    }

    fn in_flight(&self) -> usize {
        self.with(|s| s.in_flight)
    }
}

/// A request in flight, from its headers until its response body is done
/// (or dropped).
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Self {
        activity.with(|s| s.request_started(Instant::now()));
        activity.changed.notify_one();
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.with(|s| s.response_done(Instant::now()));
        self.0.changed.notify_one();
    }
}

/// A response body that marks its request done when hyper drops it.
struct TrackedBody {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket, recording reads and writes in its [`Activity`].
struct TrackedIo<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for TrackedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before && this.activity.with(|s| s.read(Instant::now())) {
            this.activity.changed.notify_one();
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TrackedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if n > 0 {
            this.activity.with(|s| s.wrote(Instant::now()));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        if n > 0 {
            this.activity.with(|s| s.wrote(Instant::now()));
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use crate::config::HttpConfig;
    use crate::metrics::Metrics;

    #[test]
    fn deadlines_follow_the_connection() {
        let t = Timeouts {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        };
        let s = |n: u64| Duration::from_secs(n);
        let t0 = Instant::now();
        let mut a = ActivityState::new(t0);
        // First request: header timeout from the accept, bytes or not.
        assert_eq!(a.deadline(t), (t0 + s(10), Expiry::HeaderRead));
        assert!(!a.read(t0 + s(1)));
        assert_eq!(a.deadline(t), (t0 + s(10), Expiry::HeaderRead));
        // In flight: idle timeout from the last byte either way.
        a.request_started(t0 + s(2));
        assert_eq!(a.deadline(t), (t0 + s(62), Expiry::Idle));
        a.wrote(t0 + s(30));
        assert_eq!(a.deadline(t), (t0 + s(90), Expiry::Idle));
        // Between requests: idle timeout from the end of the response...
        a.response_done(t0 + s(40));
        assert_eq!(a.deadline(t), (t0 + s(100), Expiry::Idle));
        // ...then header timeout from the next request's first byte.
        assert!(a.read(t0 + s(50)), "first byte of the next head");
        assert!(!a.read(t0 + s(51)));
        assert_eq!(a.deadline(t), (t0 + s(60), Expiry::HeaderRead));
        a.request_started(t0 + s(52));
        assert_eq!(a.head, None);
        a.response_done(t0 + s(53));
        assert_eq!(a.deadline(t), (t0 + s(113), Expiry::Idle));
    }

    struct Served {
        client: DuplexStream,
        metrics: Arc<Metrics>,
        task: tokio::task::JoinHandle<()>,
    }

    /// One connection of a server with `header_read_timeout` 5 s and
    /// `idle_timeout` 30 s over an in-memory pipe.
    fn serve_pipe() -> Served {
        serve_pipe_with(Duration::from_secs(5), Duration::from_secs(30))
    }

    fn serve_pipe_with(header_read_timeout: Duration, idle_timeout: Duration) -> Served {
        let config = HttpConfig {
            header_read_timeout,
            idle_timeout,
            ..HttpConfig::default()
        };
        let metrics = Arc::new(Metrics::new());
        let limits = Limits::new(&config, 8, metrics.clone());
        let app = Router::new().route("/", get(|| async { "ok" }));
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer = SocketAddr::from(([192, 0, 2, 1], 40000));
        let task = tokio::spawn(async move {
            let activity = Arc::new(Activity::new(Instant::now()));
            serve_connection(
                server,
                peer,
                app,
                activity,
                &limits,
                &CancellationToken::new(),
            )
            .await;
        });
        Served {
            client,
            metrics,
            task,
        }
    }

    /// Reads until the response body `ok` arrived.
    async fn read_response(client: &mut DuplexStream) {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\nok") {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the response: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
    }

    /// Reads until the server closes; returns the virtual time it took.
    async fn closed_after(client: &mut DuplexStream) -> Duration {
        let start = Instant::now();
        let mut buf = [0u8; 1024];
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => start.elapsed(),
            Ok(n) => panic!("unexpected bytes {:?}", &buf[..n]),
        }
    }

    fn refused(metrics: &Metrics, reason: &str) -> bool {
        let text = metrics.render(|_| 0, 0, false);
        text.contains(&format!(
            "kiosk_http_connections_refused_total{{reason=\"{reason}\"}} 1"
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn unfinished_headers_are_closed_at_the_header_timeout() {
        let mut s = serve_pipe();
        s.client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        assert_eq!(closed_after(&mut s.client).await, Duration::from_secs(5));
        s.task.await.unwrap();
        assert!(refused(&s.metrics, "header_timeout"));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keep_alive_closes_at_the_idle_timeout_and_a_slow_next_head_at_the_header_timeout()
    {
        let mut s = serve_pipe();
        s.client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        read_response(&mut s.client).await;
        // Kept alive: a second request on the same connection is served.
        tokio::time::sleep(Duration::from_secs(20)).await;
        s.client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        read_response(&mut s.client).await;
        // Then nothing: closed after idle_timeout, not header_read_timeout.
        assert_eq!(closed_after(&mut s.client).await, Duration::from_secs(30));
        s.task.await.unwrap();
        let text = s.metrics.render(|_| 0, 0, false);
        assert!(
            text.contains("kiosk_http_connections_idle_closed_total 1"),
            "{text}"
        );

        let mut s = serve_pipe();
        s.client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        read_response(&mut s.client).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        s.client.write_all(b"GET / HT").await.unwrap();
        assert_eq!(closed_after(&mut s.client).await, Duration::from_secs(5));
        assert!(refused(&s.metrics, "header_timeout"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_timeout_shorter_than_the_header_timeout_applies_after_the_response() {
        let mut s = serve_pipe_with(Duration::from_secs(300), Duration::from_secs(1));
        s.client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        read_response(&mut s.client).await;
        assert_eq!(closed_after(&mut s.client).await, Duration::from_secs(1));
    }
}
