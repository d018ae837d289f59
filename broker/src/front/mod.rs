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
//!    `failed_logins_per_minute`) and the **credentials** check, whose
//!    verdicts [`admit`] (pure, `admit.rs`) turns into admission or a
//!    [`Refusal`], answered with a real CONNACK return code
//!    ([`Refusal::return_code`]): 0x04 bad username or password, 0x05 not
//!    authorized (no credentials, throttled address, last will topic
//!    forbidden by the ACL), 0x02 identifier rejected (a kiosk with a
//!    foreign client id), 0x03 server unavailable (user added during the
//!    check, rumqttd unreachable), 0x01 for a protocol other than MQTT
//!    3.1.1;
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
//!
//! Files: this one has the accept loops and the connection task (the I/O);
//! `admit` the admission decision; `connect` reading the CONNECT and the
//! refusing CONNACK; `sessions` the live connections (takeovers,
//! revocation); `splice` the copying between client and rumqttd.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kiosk_schemas::Secret;
use kiosk_schemas::log_limit::SharedLogLimiter;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::{Login, Packet, Protocol};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::acl::Acl;
use crate::credentials::{AuthOutcome, CredentialStore, Role};
use crate::limits::{LoginThrottle, RateLimiter};
use crate::metrics::{self, AclAction, BrokerMetrics};

mod admit;
mod connect;
mod listen;
mod sessions;
mod splice;

use admit::{Attempt, Counted, LoginCheck, Refusal, admit};
use connect::{ConnectError, MAX_CONNECT_BYTES, connack, read_connect};
pub(crate) use listen::{bind, effective_max_connections, log_listening};
use sessions::{Live, Sessions};
use splice::{Upstream, splice};

/// Connects in flight to one rumqttd listener: below its listen backlog
/// (128), so connections queue in our process, not in the kernel.
pub(crate) const UPSTREAM_SLOTS: usize = 64;
/// How often the credentials file is checked for revoked users.
pub(crate) const CREDENTIALS_CHECK: Duration = Duration::from_secs(1);
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

/// An admitted client on its way to, and in, its session.
struct Session {
    peer: SocketAddr,
    client_id: String,
    username: String,
    role: Role,
    /// See [`Admitted::fingerprint`].
    fingerprint: u64,
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
    log_limit: SharedLogLimiter<Counted>,
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
            log_limit: SharedLogLimiter::new(
                Duration::from_secs(1),
                metrics::Refusal::ALL.len() + AclAction::ALL.len(),
            ),
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
                self.drop_refused(metrics::Refusal::MaxConnections, peer, None, None);
                continue;
            };
            let Some(wait) = self
                .rate
                .reserve(Instant::now(), self.limits.connect_timeout)
            else {
                self.drop_refused(metrics::Refusal::RateLimited, peer, None, None);
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

    /// Counts a refusal and logs it with the client's address, user name
    /// and client id: at most one warning per counter and second (with the
    /// number held back since the last), the others at debug level.
    /// `refusal` adds the reason of a CONNACK refusal to the log.
    fn record(
        &self,
        counted: Counted,
        peer: SocketAddr,
        client_id: Option<&str>,
        username: Option<&str>,
        refusal: Option<&Refusal>,
    ) {
        match counted {
            Counted::Refused(reason) => self.metrics.refused(reason),
            Counted::AclDenied(action) => self.metrics.acl_denied(action),
        }
        let refusal = refusal.map(tracing::field::display);
        if let Some(suppressed) = self.log_limit.check(counted, Instant::now()) {
            warn!(%peer, ?client_id, ?username, reason = %counted, refusal, suppressed, "MQTT connection refused");
        } else {
            debug!(%peer, ?client_id, ?username, reason = %counted, refusal, "MQTT connection refused");
        }
    }

    /// Counts and logs a connection closed without a CONNACK: over a
    /// limit at accept, or no CONNECT to answer.
    fn drop_refused(
        &self,
        reason: metrics::Refusal,
        peer: SocketAddr,
        client_id: Option<&str>,
        username: Option<&str>,
    ) {
        self.record(Counted::Refused(reason), peer, client_id, username, None);
    }

    /// Counts and logs `refusal`, answers the CONNECT with a CONNACK of its
    /// [`Refusal::return_code`] (MQTT 3.1.1 section 3.2.2.3) and closes the
    /// connection; the client gets [`REFUSAL_LINGER`] to read it.
    async fn refuse(
        &self,
        mut client: Box<dyn Io>,
        refusal: Refusal,
        peer: SocketAddr,
        client_id: Option<&str>,
        username: Option<&str>,
    ) {
        self.record(refusal.counted(), peer, client_id, username, Some(&refusal));
        let connack = connack(refusal.return_code());
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            client.write_all(&connack).await?;
            client.flush().await?;
            client.shutdown().await
        })
        .await;
    }

    /// One client connection: the I/O around [`admit`]. Waits its turn,
    /// reads the CONNECT, asks the throttle and the credentials, and
    /// either refuses or hands the connection to rumqttd.
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
        let Some((client, packet, pipelined)) = self.first_packet(stream, peer, tls).await else {
            return;
        };
        let Packet::Connect(mut connect, props, will, will_props, login) = packet else {
            return self.drop_refused(metrics::Refusal::Protocol, peer, None, None);
        };
        let client_id = connect.client_id.clone();
        let (username, password) = match login {
            Some(login) => (Some(login.username), Secret::new(login.password)),
            None => (None, Secret::default()),
        };
        let check = match &username {
            Some(username) => Some(
                self.check_login(peer, &client_id, username, &password)
                    .await,
            ),
            None => None,
        };
        let attempt = Attempt {
            client_id: &client_id,
            login: username.as_deref().zip(check),
            will_topic: will.as_ref().map(|will| &will.topic[..]),
        };
        let admitted = match admit(&attempt, &self.acl) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                let username = username.as_deref();
                return self
                    .refuse(client, refusal, peer, Some(&client_id), username)
                    .await;
            }
        };
        let session = Session {
            peer,
            username: admitted.username.to_owned(),
            role: admitted.role,
            fingerprint: admitted.fingerprint,
            client_id,
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
                username: session.username.clone(),
                password: self.internal_secret.expose().to_owned(),
            }),
        );
        let mut bytes = BytesMut::with_capacity(128 + pipelined.len());
        if V4.write(forwarded, &mut bytes).is_err() {
            let (client_id, username) = (Some(&*session.client_id), Some(&*session.username));
            return self.drop_refused(metrics::Refusal::Protocol, peer, client_id, username);
        }
        bytes.extend_from_slice(&pipelined);
        self.serve(client, &bytes, session).await;
        drop(permit);
    }

    /// Finishes the TLS handshake (on the TLS listener) and reads the
    /// first packet, both within `connect_timeout`; returns the client
    /// stream, the packet and the bytes pipelined after it. `None` when
    /// the connection ended or was refused (counted, and answered with
    /// CONNACK 0x01 for another protocol version).
    async fn first_packet(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
    ) -> Option<(Box<dyn Io>, Packet, BytesMut)> {
        // Small packets (PUBACKs, jobs) must not wait for Nagle + delayed ACK.
        let _ = stream.set_nodelay(true);
        let deadline = tokio::time::Instant::now() + self.limits.connect_timeout;
        let refused = |reason| {
            self.drop_refused(reason, peer, None, None);
            None
        };
        let mut client: Box<dyn Io> = match tls {
            None => Box::new(stream),
            Some(acceptor) => {
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => Box::new(stream),
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "TLS handshake failed");
                        return refused(metrics::Refusal::TlsHandshake);
                    }
                    Err(_) => return refused(metrics::Refusal::ConnectTimeout),
                }
            }
        };
        // A CONNECT carries ids, a login and a last will: a small cap keeps
        // clients that have not logged in from holding large buffers.
        let max_connect = self.limits.max_packet.min(MAX_CONNECT_BYTES);
        let read = tokio::time::timeout_at(deadline, read_connect(&mut client, max_connect));
        match read.await {
            Ok(Ok((packet, pipelined))) => Some((client, packet, pipelined)),
            Ok(Err(ConnectError::Closed)) => None,
            Ok(Err(ConnectError::Io(e))) => {
                debug!(%peer, error = %e, "connection failed before CONNECT");
                None
            }
            Ok(Err(ConnectError::TooLarge)) => refused(metrics::Refusal::PayloadTooLarge),
            Ok(Err(ConnectError::ProtocolVersion)) => {
                self.refuse(client, Refusal::ProtocolVersion, peer, None, None)
                    .await;
                None
            }
            Ok(Err(ConnectError::Protocol)) => refused(metrics::Refusal::Protocol),
            Err(_) => refused(metrics::Refusal::ConnectTimeout),
        }
    }

    /// Hands an admitted client over to rumqttd (`connect`: the CONNECT
    /// to forward and what the client pipelined after it), registers its
    /// session and copies bytes until it ends or is revoked.
    async fn serve(&self, client: Box<dyn Io>, connect: &[u8], session: Session) {
        let Session {
            peer,
            client_id,
            username,
            role,
            fingerprint,
        } = session;
        // rumqttd admits about one connection per listener and timer tick;
        // a client that cannot be handed over in time gets 0x03 and retries.
        let handover = tokio::time::timeout(
            self.limits.connect_timeout,
            self.connect_upstream(&client_id, connect),
        );
        let upstream = match handover.await {
            Ok(Ok(upstream)) => upstream,
            failed => {
                if let Ok(Err(e)) = failed {
                    warn!(%peer, error = %e, "cannot reach rumqttd's internal listener");
                }
                let (client_id, username) = (Some(&*client_id), Some(&*username));
                return self
                    .refuse(client, Refusal::Upstream, peer, client_id, username)
                    .await;
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
    }

    /// The throttle's and the credentials' verdict on a login, for
    /// [`admit`]. A throttled attempt is not checked at all; one that is
    /// takes a throttle token first, so parallel attempts cannot all pass
    /// before the first failure counts, and gives it back on success.
    async fn check_login(
        &self,
        peer: SocketAddr,
        client_id: &str,
        username: &str,
        password: &Secret,
    ) -> LoginCheck {
        if !self.throttle.try_begin(peer.ip(), username, Instant::now()) {
            return LoginCheck::Throttled;
        }
        // Taken before the check: if the file changes in between, the
        // session is registered under the older version and revoked, never
        // kept under a version it did not log in with.
        self.credentials.refresh();
        let fingerprint = self.credentials.fingerprint(username);
        let outcome = self.credentials.verify(client_id, username, password).await;
        if let AuthOutcome::Accepted { .. } = outcome {
            self.throttle.succeeded(peer.ip(), username, Instant::now());
        }
        LoginCheck::Checked {
            outcome,
            fingerprint,
        }
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
