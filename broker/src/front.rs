//! The front door: our own accept loops for the public MQTT listeners
//! (plain TCP and TLS), in front of rumqttd's listeners, which only listen on
//! loopback.
//!
//! For each client connection, in order:
//!
//! 1. **max connections**: over `max_connections` open client connections,
//!    the socket is closed right after accept;
//! 2. **connection rate**: a [`RateLimiter`] (`connections_per_second`,
//!    burst of one second's worth) gives the connection a start time; it
//!    waits in our queue (an accepted socket, so the kernel's listen queue
//!    never overflows) or, when its start would be more than
//!    `connect_timeout` away, is closed at once;
//! 3. TCP_NODELAY, then the **TLS handshake** (tokio-rustls) on the TLS
//!    listener, and reading the **CONNECT** packet (rumqttd's own v4 codec),
//!    both within `connect_timeout`: a client that never finishes its
//!    handshake costs one task and a timer, never the accept loop;
//! 4. **failed-login throttling** per client address ([`LoginThrottle`],
//!    `failed_logins_per_minute`) and the **credentials** check, answered
//!    with a real CONNACK return code: 0x04 bad username or password, 0x05
//!    not authorized (no credentials, throttled address, last will topic
//!    forbidden by the ACL), 0x02 identifier rejected (a kiosk with a
//!    foreign client id), 0x01 for a protocol other than MQTT 3.1.1;
//! 5. a connection to one of rumqttd's loopback listeners (always the same
//!    one for a client id, see [`upstream_index`]; at most
//!    [`UPSTREAM_SLOTS`] connects in flight per listener so rumqttd's
//!    one-at-a-time accept loop and its listen queue are never flooded),
//!    which gets the CONNECT bytes as received and re-checks credentials
//!    and the ACL itself ([`FleetProtocol`](crate::FleetProtocol));
//! 6. bytes are copied both ways until either side closes, the broker
//!    shuts down, or the user's credentials are **revoked**: a watcher
//!    re-reads the credentials file every [`CREDENTIALS_CHECK`] and drops
//!    every live connection whose user was removed or got a new password
//!    (`kiosk-gateway kiosk remove|rotate`, `kiosk-broker passwd`).
//!
//! Every refusal is counted in [`BrokerMetrics`] and logged with the client
//! address, user name and client id (at most one warning per reason and
//! second, with the count held back since the last; the others at debug
//! level, so a flood cannot flood the log). Accepted logins are logged at
//! info with address, user name, client id and role; a login that takes
//! over a live session of the same client id at WARN with both addresses
//! (`kiosk_broker_sessions_taken_over_total`).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kiosk_schemas::Secret;
use rumqttd::protocol::v4::{self, V4};
use rumqttd::protocol::{self, ConnAck, ConnectReturnCode, Login, Packet, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::acl::Acl;
use crate::credentials::{AuthOutcome, CredentialStore, RefuseReason};
use crate::fds;
use crate::limits::{LoginThrottle, RateLimiter};
use crate::metrics::{AclAction, BrokerMetrics, Refusal};
use kiosk_schemas::log_limit::SharedLogLimiter;

/// Connects in flight to one rumqttd listener: below its listen backlog
/// (128), so connections queue in our process, not in the kernel.
pub(crate) const UPSTREAM_SLOTS: usize = 64;
/// How often the credentials file is checked for revoked users.
pub(crate) const CREDENTIALS_CHECK: Duration = Duration::from_secs(1);
/// How long a connection whose client closed its side may still receive
/// what the broker sends.
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a refused client gets to read its CONNACK.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// A client stream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// What the front door enforces; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct FrontLimits {
    pub max_connections: usize,
    pub connections_per_second: u32,
    pub failed_logins_per_minute: u32,
    pub failed_logins_per_address_per_minute: u32,
    pub connect_timeout: Duration,
    pub max_packet: usize,
    /// Keep alive (s) handed to rumqttd for clients that asked for none.
    pub zero_keep_alive_secs: u16,
}

/// State shared by the accept loops and connection tasks.
pub(crate) struct FrontDoor {
    credentials: Arc<CredentialStore>,
    acl: Arc<Acl>,
    metrics: Arc<BrokerMetrics>,
    limits: FrontLimits,
    connections: Arc<Semaphore>,
    rate: RateLimiter,
    throttle: LoginThrottle,
    upstreams: Vec<(SocketAddr, Arc<Semaphore>)>,
    sessions: Sessions,
    log_limit: SharedLogLimiter<Refusal>,
    /// The password of every CONNECT handed to rumqttd, which accepts no
    /// other: rumqttd's listeners are no side door.
    internal_secret: Secret,
    shutdown: CancellationToken,
}

impl FrontDoor {
    pub(crate) fn new(
        credentials: Arc<CredentialStore>,
        acl: Arc<Acl>,
        metrics: Arc<BrokerMetrics>,
        limits: FrontLimits,
        upstreams: &[SocketAddr],
        internal_secret: Secret,
        shutdown: CancellationToken,
    ) -> Arc<FrontDoor> {
        Arc::new(FrontDoor {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            rate: RateLimiter::new(limits.connections_per_second),
            throttle: LoginThrottle::new(
                limits.failed_logins_per_minute,
                limits.failed_logins_per_address_per_minute,
            ),
            upstreams: upstreams
                .iter()
                .map(|a| (*a, Arc::new(Semaphore::new(UPSTREAM_SLOTS))))
                .collect(),
            sessions: Sessions::default(),
            log_limit: SharedLogLimiter::new(Duration::from_secs(1), Refusal::ALL.len()),
            internal_secret,
            credentials,
            acl,
            metrics,
            limits,
            shutdown,
        })
    }

    /// Accepts connections on `listener` until shutdown; `tls` makes it the
    /// TLS listener.
    pub(crate) async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
    ) {
        loop {
            let accepted = tokio::select! {
                () = self.shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, mostly: back off a little
                    // instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                self.refuse(Refusal::MaxConnections, peer, None, None);
                continue;
            };
            let Some(wait) = self
                .rate
                .reserve(Instant::now(), self.limits.connect_timeout)
            else {
                self.refuse(Refusal::RateLimited, peer, None, None);
                continue;
            };
            tokio::spawn(
                self.clone()
                    .connection(stream, peer, tls.clone(), permit, wait),
            );
        }
    }

    /// Re-reads the credentials file every [`CREDENTIALS_CHECK`] and drops
    /// live connections of users removed or given a new password.
    pub(crate) async fn revocation_watcher(self: Arc<Self>) {
        let mut seen = self.credentials.generation();
        let mut tick = tokio::time::interval(CREDENTIALS_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.credentials.refresh();
            let generation = self.credentials.generation();
            if generation == seen {
                continue;
            }
            seen = generation;
            for live in self.sessions.revoked(&self.credentials) {
                self.metrics.revoked();
                warn!(client_id = ?live.client_id, username = ?live.username, peer = %live.peer,
                    "credentials removed or changed: disconnecting the live session");
                live.token.cancel();
            }
        }
    }

    /// Logs (limited) and counts a refusal.
    fn refuse(
        &self,
        reason: Refusal,
        peer: SocketAddr,
        client_id: Option<&str>,
        username: Option<&str>,
    ) {
        self.metrics.refused(reason);
        if let Some(suppressed) = self.log_limit.check(reason, Instant::now()) {
            warn!(%peer, ?client_id, ?username, %reason, suppressed, "MQTT connection refused");
        } else {
            debug!(%peer, ?client_id, ?username, %reason, "MQTT connection refused");
        }
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        permit: OwnedSemaphorePermit,
        wait: Duration,
    ) {
        if !wait.is_zero() {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
        // Small packets (PUBACKs, jobs) must not wait for Nagle + delayed ACK.
        let _ = stream.set_nodelay(true);
        let deadline = tokio::time::Instant::now() + self.limits.connect_timeout;
        let mut client: Box<dyn Io> = match tls {
            None => Box::new(stream),
            Some(acceptor) => {
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => Box::new(stream),
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "TLS handshake failed");
                        return self.refuse(Refusal::TlsHandshake, peer, None, None);
                    }
                    Err(_) => return self.refuse(Refusal::ConnectTimeout, peer, None, None),
                }
            }
        };
        // A CONNECT carries ids, a login and a last will: a small cap keeps
        // clients that have not logged in from holding large buffers.
        let max_connect = self.limits.max_packet.min(MAX_CONNECT_BYTES);
        let read = tokio::time::timeout_at(deadline, read_connect(&mut client, max_connect));
        let (packet, pipelined) = match read.await {
            Ok(Ok(read)) => read,
            Ok(Err(ConnectError::Closed)) => return,
            Ok(Err(ConnectError::Io(e))) => {
                debug!(%peer, error = %e, "connection failed before CONNECT");
                return;
            }
            Ok(Err(ConnectError::TooLarge)) => {
                return self.refuse(Refusal::PayloadTooLarge, peer, None, None);
            }
            Ok(Err(ConnectError::ProtocolVersion)) => {
                self.refuse(Refusal::Protocol, peer, None, None);
                return refuse_with(client, ConnectReturnCode::RefusedProtocolVersion).await;
            }
            Ok(Err(ConnectError::Protocol)) => {
                return self.refuse(Refusal::Protocol, peer, None, None);
            }
            Err(_) => return self.refuse(Refusal::ConnectTimeout, peer, None, None),
        };
        let Packet::Connect(mut connect, props, will, will_props, login) = packet else {
            return self.refuse(Refusal::Protocol, peer, None, None);
        };
        let client_id = connect.client_id.clone();
        let Some(login) = login else {
            self.refuse(Refusal::LoginFailed, peer, Some(&client_id), None);
            return refuse_with(client, ConnectReturnCode::NotAuthorized).await;
        };
        let username = login.username;
        // Takes a token now, so parallel attempts cannot all pass before
        // the first failure is counted; a success gives it back.
        if !self
            .throttle
            .try_begin(peer.ip(), &username, Instant::now())
        {
            self.refuse(
                Refusal::LoginThrottled,
                peer,
                Some(&client_id),
                Some(&username),
            );
            return refuse_with(client, ConnectReturnCode::NotAuthorized).await;
        }
        let password = Secret::new(login.password);
        // Taken before the check: if the file changes in between, the
        // session is registered under the older version and revoked, never
        // kept under a version it did not log in with.
        self.credentials.refresh();
        let fingerprint = self.credentials.fingerprint(&username);
        let role = match self
            .credentials
            .verify(&client_id, &username, &password)
            .await
        {
            AuthOutcome::Accepted { role } => {
                self.throttle
                    .succeeded(peer.ip(), &username, Instant::now());
                role
            }
            AuthOutcome::Refused { reason } => {
                let (refusal, code) = match reason {
                    RefuseReason::ClientIdMismatch | RefuseReason::ReservedClientId => (
                        Refusal::ClientId,
                        ConnectReturnCode::ClientIdentifierNotValid,
                    ),
                    RefuseReason::UnknownUser | RefuseReason::WrongPassword => {
                        (Refusal::LoginFailed, ConnectReturnCode::BadUserNamePassword)
                    }
                };
                self.refuse(refusal, peer, Some(&client_id), Some(&username));
                debug!(%peer, ?client_id, ?username, %reason, "login refused");
                return refuse_with(client, code).await;
            }
        };
        if let Some(will) = &will {
            let acl = self.acl.for_client(&username, &client_id, Some(role));
            let allowed = std::str::from_utf8(&will.topic).is_ok_and(|t| acl.may_publish(t));
            if !allowed {
                self.metrics.acl_denied(AclAction::Will);
                let topic = String::from_utf8_lossy(&will.topic);
                warn!(%peer, ?client_id, ?username, ?topic, action = %AclAction::Will, "ACL denied: refusing the connection");
                return refuse_with(client, ConnectReturnCode::NotAuthorized).await;
            }
        }
        let Some(fingerprint) = fingerprint else {
            // Added between the check and now: let it log in again.
            self.refuse(
                Refusal::LoginFailed,
                peer,
                Some(&client_id),
                Some(&username),
            );
            return refuse_with(client, ConnectReturnCode::ServiceUnavailable).await;
        };
        // rumqttd gets the CONNECT with the internal secret as password
        // (the login was checked here, once) and, for a client that asked
        // for no keep alive (MQTT-3.1.2-10), the idle limit as keep alive:
        // rumqttd refuses keep alive 0.
        if connect.keep_alive == 0 {
            connect.keep_alive = self.limits.zero_keep_alive_secs;
        }
        let forwarded = Packet::Connect(
            connect,
            props,
            will,
            will_props,
            Some(Login {
                username: username.clone(),
                password: self.internal_secret.expose().to_owned(),
            }),
        );
        let mut bytes = BytesMut::with_capacity(128 + pipelined.len());
        if V4.write(forwarded, &mut bytes).is_err() {
            return self.refuse(Refusal::Protocol, peer, Some(&client_id), Some(&username));
        }
        bytes.extend_from_slice(&pipelined);
        // rumqttd admits about one connection per listener and timer tick;
        // a client that cannot be handed over in time gets 0x03 and retries.
        let handover = tokio::time::timeout(
            self.limits.connect_timeout,
            self.connect_upstream(&client_id, &bytes),
        );
        let upstream = match handover.await {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(e)) => {
                warn!(%peer, error = %e, "cannot reach rumqttd's internal listener");
                self.refuse(Refusal::Upstream, peer, Some(&client_id), Some(&username));
                return refuse_with(client, ConnectReturnCode::ServiceUnavailable).await;
            }
            Err(_) => {
                self.refuse(Refusal::Upstream, peer, Some(&client_id), Some(&username));
                return refuse_with(client, ConnectReturnCode::ServiceUnavailable).await;
            }
        };
        info!(%peer, ?client_id, ?username, %role, "MQTT login accepted");
        let token = self.shutdown.child_token();
        let revoked_meanwhile = {
            let username = username.clone();
            move |credentials: &CredentialStore| {
                credentials.refresh();
                credentials.fingerprint(&username) != Some(fingerprint)
            }
        };
        let (id, taken_over) = self.sessions.insert(Live {
            username: username.clone(),
            client_id: client_id.clone(),
            peer,
            fingerprint,
            token: token.clone(),
        });
        if let Some(old_peer) = taken_over {
            // MQTT-3.1.4-2: rumqttd closes the older connection. The same
            // identity on two links is a reconnect racing its old link, or
            // one credential used twice.
            self.metrics.took_over();
            warn!(new_peer = %peer, %old_peer, ?client_id, ?username,
                "session taken over: a new connection with the same client id replaces the live one");
        }
        // The watcher may have swept between the check and the insert.
        if revoked_meanwhile(&self.credentials) {
            token.cancel();
        }
        self.metrics.opened();
        splice(client, upstream, &token).await;
        self.metrics.closed();
        self.sessions.remove(id);
        drop(permit);
    }

    async fn connect_upstream(&self, client_id: &str, connect: &[u8]) -> io::Result<Upstream> {
        let index = upstream_index(client_id, self.upstreams.len());
        let (addr, slots) = self
            .upstreams
            .get(index)
            .ok_or_else(|| io::Error::other("no upstream listener"))?;
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| io::Error::other("upstream closed"))?;
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(connect).await?;
        Ok(Upstream {
            stream,
            slot: Some(slot),
        })
    }
}

/// Why no CONNECT could be read.
enum ConnectError {
    Closed,
    Io(io::Error),
    TooLarge,
    ProtocolVersion,
    Protocol,
}

/// Largest CONNECT packet read, in bytes.
const MAX_CONNECT_BYTES: usize = 64 * 1024;

/// Reads until one whole packet is buffered and decodes it with rumqttd's
/// v4 codec. Returns the packet and the bytes the client pipelined after
/// it (for rumqttd).
async fn read_connect(
    io: &mut Box<dyn Io>,
    max_packet: usize,
) -> Result<(Packet, BytesMut), ConnectError> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        match v4::check(buf.iter(), max_packet) {
            Ok(_) => {
                // Decoding consumes the frame; the rest is pipelined.
                return match V4.read_mut(&mut buf, max_packet) {
                    Ok(packet) => Ok((packet, buf)),
                    Err(protocol::Error::InvalidProtocolLevel(_)) => {
                        Err(ConnectError::ProtocolVersion)
                    }
                    Err(_) => Err(ConnectError::Protocol),
                };
            }
            Err(protocol::Error::InsufficientBytes(_)) => {}
            Err(protocol::Error::PayloadSizeLimitExceeded(_)) => {
                return Err(ConnectError::TooLarge);
            }
            Err(_) => return Err(ConnectError::Protocol),
        }
        match io.read_buf(&mut buf).await {
            Ok(0) => return Err(ConnectError::Closed),
            Ok(_) => {}
            Err(e) => return Err(ConnectError::Io(e)),
        }
    }
}

/// Answers CONNECT with a refusing CONNACK and closes the connection.
async fn refuse_with(mut client: Box<dyn Io>, code: ConnectReturnCode) {
    let mut out = BytesMut::with_capacity(4);
    let connack = Packet::ConnAck(
        ConnAck {
            session_present: false,
            code,
        },
        None,
    );
    if V4.write(connack, &mut out).is_err() {
        return;
    }
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        client.write_all(&out).await?;
        client.flush().await?;
        client.shutdown().await
    })
    .await;
}

/// The rumqttd listener of `client_id` among `n`: the same for every
/// connection of one client.
///
/// rumqttd keeps the handles that cancel a last will per listener, and one
/// last will per client id in the router. When a client reconnects while
/// the broker still holds its old connection (NAT rebinding, a router
/// reboot), the new connection takes the old one over; on the same
/// listener that cancels the old will, on another one the old connection's
/// end publishes the will the router holds, which by then is the *new*
/// connection's: the kiosk is shown offline while connected, and its live
/// connection has no will left.
fn upstream_index(client_id: &str, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    // Stable within the process, which is all that matters: rumqttd's
    // state does not outlive it.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    client_id.hash(&mut h);
    (h.finish() % n.max(1) as u64) as usize
}

/// Copies bytes both ways until the broker closes, the client closed and
/// the grace period passed, or `token` is cancelled.
async fn splice(mut client: Box<dyn Io>, mut upstream: Upstream, token: &CancellationToken) {
    /// What ended the copying.
    enum Ended {
        /// The client closed its side (or failed): the broker gets a grace
        /// period to send what is left.
        Client,
        /// The broker closed or failed: the connection is over.
        Broker,
    }
    let mut to_broker = Pump::default();
    let mut to_client = Pump::default();
    let mut client_side_done = false;
    let copying = std::future::poll_fn(|cx| {
        if !client_side_done
            && to_broker
                .poll(cx, Pin::new(&mut client), Pin::new(&mut upstream))
                .is_ready()
        {
            client_side_done = true;
            return Poll::Ready(Ended::Client);
        }
        if to_client
            .poll(cx, Pin::new(&mut upstream), Pin::new(&mut client))
            .is_ready()
        {
            return Poll::Ready(Ended::Broker);
        }
        Poll::Pending
    });
    tokio::pin!(copying);
    let mut client_closed = false;
    // Armed when the client closes its side.
    let grace = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            ended = &mut copying => match ended {
                Ended::Broker => return,
                Ended::Client => {
                    client_closed = true;
                    grace.as_mut().reset(tokio::time::Instant::now() + HALF_CLOSE_GRACE);
                }
            },
            () = &mut grace, if client_closed => return,
        }
    }
}

/// Bytes read per poll, on the stack of the poll: an idle connection holds
/// no copy buffer at all.
const PUMP_CHUNK: usize = 8 * 1024;
/// Reads per poll before yielding, so one busy connection cannot hold a
/// worker thread.
const PUMP_READS_PER_POLL: usize = 16;

/// One direction of [`splice`]: reads into a buffer on the stack and writes
/// it on at once; only what the other side cannot take yet is kept, in a
/// heap buffer freed as soon as it is written. Idle connections (almost
/// all of a fleet's) so cost no copy buffers, where `tokio::io::copy`
/// keeps 8 KiB per direction for the connection's whole life.
#[derive(Debug, Default)]
struct Pump {
    /// Read but not yet written.
    pending: Vec<u8>,
    /// Bytes of `pending` written.
    written: usize,
    /// Written since the last flush (TLS buffers writes).
    unflushed: bool,
    /// The reader reached end of stream.
    eof: bool,
}

impl Pump {
    /// Copies until `from` ends (then shuts `to` down) or fails: then
    /// `Ready`, with the error, if any, already irrelevant to the caller
    /// (the direction is over either way).
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        mut from: Pin<&mut impl AsyncRead>,
        mut to: Pin<&mut impl AsyncWrite>,
    ) -> Poll<io::Result<()>> {
        for _ in 0..PUMP_READS_PER_POLL {
            while self.written < self.pending.len() {
                match std::task::ready!(to.as_mut().poll_write(cx, &self.pending[self.written..])) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => self.written += n,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if !self.pending.is_empty() {
                self.pending = Vec::new();
                self.written = 0;
                self.unflushed = true;
            }
            if self.unflushed {
                std::task::ready!(to.as_mut().poll_flush(cx))?;
                self.unflushed = false;
            }
            if self.eof {
                return to.as_mut().poll_shutdown(cx);
            }
            let mut chunk = [0u8; PUMP_CHUNK];
            let mut buf = ReadBuf::new(&mut chunk);
            std::task::ready!(from.as_mut().poll_read(cx, &mut buf))?;
            let data = buf.filled();
            if data.is_empty() {
                self.eof = true;
                continue;
            }
            let mut written = 0;
            while written < data.len() {
                match to.as_mut().poll_write(cx, &data[written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Keep the rest; the writer wakes us.
                        self.pending = data[written..].to_vec();
                        return Poll::Pending;
                    }
                }
            }
            self.unflushed = true;
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The connection to rumqttd. Holds an upstream slot until rumqttd first
/// answers (its CONNACK) or closes, i.e. until it has accepted the
/// connection.
struct Upstream {
    stream: TcpStream,
    slot: Option<OwnedSemaphorePermit>,
}

impl AsyncRead for Upstream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if polled.is_ready() {
            self.slot = None;
            quick_ack(&self.stream);
        }
        polled
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Acknowledges what rumqttd sent at once. rumqttd leaves Nagle's
/// algorithm on for the sockets it accepts, so a small packet it writes
/// while an earlier one is unacknowledged waits for our ACK, which Linux
/// delays by up to 40 ms; TCP_QUICKACK (not sticky, hence after every read)
/// takes that stall off the broker → kiosk path.
#[cfg(target_os = "linux")]
fn quick_ack(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

#[cfg(not(target_os = "linux"))]
fn quick_ack(_stream: &TcpStream) {}

/// One live client connection.
#[derive(Debug)]
struct Live {
    username: String,
    client_id: String,
    peer: SocketAddr,
    fingerprint: u64,
    token: CancellationToken,
}

/// Live connections by id, and the newest by client id.
#[derive(Debug, Default)]
struct Sessions {
    next: AtomicU64,
    live: Mutex<LiveTable>,
}

#[derive(Debug, Default)]
struct LiveTable {
    by_id: HashMap<u64, Live>,
    /// The newest connection of each client id: a login is a lookup here,
    /// not a scan of every connection (a fleet reconnecting at once).
    by_client: HashMap<String, u64>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, LiveTable> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `live`; returns its id and, when a live connection with
    /// the same client id exists, that connection's address.
    fn insert(&self, live: Live) -> (u64, Option<SocketAddr>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut table = self.lock();
        // An empty client id gets a unique one from rumqttd.
        let taken_over = if live.client_id.is_empty() {
            None
        } else {
            table
                .by_client
                .insert(live.client_id.clone(), id)
                .and_then(|old| table.by_id.get(&old))
                .map(|old| old.peer)
        };
        table.by_id.insert(id, live);
        (id, taken_over)
    }

    fn remove(&self, id: u64) {
        self.lock().take(id);
    }

    /// Removes and returns the sessions whose credentials changed.
    fn revoked(&self, credentials: &CredentialStore) -> Vec<Live> {
        let mut table = self.lock();
        let gone: Vec<u64> = table
            .by_id
            .iter()
            .filter(|(_, l)| credentials.fingerprint(&l.username) != Some(l.fingerprint))
            .map(|(id, _)| *id)
            .collect();
        gone.into_iter().filter_map(|id| table.take(id)).collect()
    }
}

impl LiveTable {
    /// Removes connection `id` (and its client id's entry, if it is the
    /// newest).
    fn take(&mut self, id: u64) -> Option<Live> {
        let live = self.by_id.remove(&id)?;
        if self.by_client.get(&live.client_id) == Some(&id) {
            self.by_client.remove(&live.client_id);
        }
        Some(live)
    }
}

/// Binds a listener with a large accept backlog (a fleet reconnecting at
/// once must queue in our process, not be dropped by the kernel).
///
/// # Errors
/// The bind or listen error.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Logs where the front door listens.
pub(crate) fn log_listening(
    plain: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    internal: &[SocketAddr],
) {
    info!(?plain, ?tls, ?internal, "MQTT front door listening");
}

/// `max_connections`, lowered (with a warning) to what the open-files
/// limit allows after `reserved_fds` the host process needs for itself
/// (the gateway's HTTP connections): running out of descriptors would make
/// rumqttd's accept loop spin on `EMFILE`.
pub(crate) fn effective_max_connections(max_connections: usize, reserved_fds: u64) -> usize {
    let Some(limit) = fds::open_files_limit() else {
        return max_connections;
    };
    let fits = fds::connections_fitting(limit, reserved_fds, fds::BROKER_FDS_PER_CONNECTION);
    if fits < max_connections {
        warn!(
            limit,
            reserved_fds,
            max_connections,
            capped_to = fits,
            "the open-files limit is too low for max_connections (3 descriptors per connection): raise it (systemd LimitNOFILE) or lower max_connections"
        );
        return fits;
    }
    max_connections
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A megabyte through a writer that takes 61 bytes at a time arrives
    /// whole and in order; the end of the reader shuts the writer down; the
    /// pending buffer is gone once written.
    #[tokio::test]
    async fn pump_copies_everything_in_order_through_a_slow_writer() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut source, mut from) = tokio::io::duplex(64 * 1024);
        let (mut to, mut sink) = tokio::io::duplex(61);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            source.write_all(&sent).await.unwrap();
            source.shutdown().await.unwrap();
        });
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            sink.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut pump = Pump::default();
        std::future::poll_fn(|cx| pump.poll(cx, Pin::new(&mut from), Pin::new(&mut to)))
            .await
            .unwrap();
        assert!(pump.pending.capacity() == 0, "no buffer kept");
        drop(to);
        writer.await.unwrap();
        assert_eq!(reader.await.unwrap(), data);
    }

    /// An idle pump holds no buffer: a read that is pending allocates
    /// nothing.
    #[tokio::test]
    async fn an_idle_pump_holds_no_buffer() {
        let (_source, mut from) = tokio::io::duplex(1024);
        let (mut to, _sink) = tokio::io::duplex(1024);
        let mut pump = Pump::default();
        let polled = std::future::poll_fn(|cx| {
            Poll::Ready(pump.poll(cx, Pin::new(&mut from), Pin::new(&mut to)))
        })
        .await;
        assert!(polled.is_pending());
        assert_eq!(pump.pending.capacity(), 0);
    }
}
