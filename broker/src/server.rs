//! rumqttd's router and servers, run on our terms: a dedicated thread with
//! its own runtime, so the broker can be stopped (rumqttd's own
//! `Broker::start` blocks forever), rumqttd's listeners on loopback only,
//! and our [front door](crate::front) on the public addresses.
//!
//! ```text
//!  clients ──► front door (plain :1883, TLS :8883)      ──► rumqttd Server<FleetProtocol> ×4 ──► Router
//!              limits, TLS, CONNECT + login + CONNACK       127.0.0.1:<ephemeral>, auth + ACL
//!  gateway (in-process) ─────────────────────────────────►  (BrokerHandle::internal_addr)
//! ```
//!
//! Why a front door: rumqttd accepts one connection at a time and sleeps at
//! least one timer tick after each, with the default listen backlog of 128
//! (a fleet-wide reconnect overflows the kernel's queue), runs TLS
//! handshakes inside that loop without a timeout (one silent client stops
//! every new connection), never sees the client's address (so failed logins
//! cannot be throttled per address), refuses logins by closing the
//! connection without a CONNACK, and leaves Nagle's algorithm on. The front
//! door does all of that itself and splices each accepted connection to one
//! of several rumqttd listeners (one accept loop each) on loopback.
//!
//! rumqttd stays the router and the MQTT engine: every connection still goes
//! through the topic ACL in [`FleetProtocol`], also the gateway's own
//! connections, which skip only the front door's limits so that a
//! reconnect storm never locks the gateway out. Logins are checked once, by
//! the front door; rumqttd's listeners accept only a random internal
//! password made at each start ([`BrokerHandle::internal_password`]), so a
//! client on the VPS cannot bypass the front door (its client-id rule,
//! throttling and revocation) by connecting to them directly.

use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::task::Poll;
use std::thread;
use std::time::Duration;

use kiosk_schemas::Secret;
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::acl::Acl;
use crate::front::{self, FrontDoor, FrontLimits};
use crate::metrics::BrokerMetrics;
use crate::{BrokerConfig, BrokerError, CredentialStore, FleetProtocol};

/// rumqttd listeners behind the front door; each has its own accept loop,
/// which admits roughly one connection per timer tick (1 ms).
const INTERNAL_LISTENERS: usize = 4;
/// Router connections beyond `max_connections`: the gateway's own sessions
/// and other in-process clients that skip the front door.
const INTERNAL_HEADROOM: usize = 64;

/// How long [`EmbeddedBroker::start`] waits for the server thread to listen.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for blocking work (argon2 checks, tens of ms each).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages the router hands a connection per batch for QoS 0 (rumqttd's
/// sample configuration uses 200).
const MAX_OUTGOING_PACKET_COUNT: u64 = 200;
/// Name of the listener in rumqttd's logs and of the server thread.
const NAME: &str = "kiosk-broker";

/// Starts the embedded MQTT broker; see [`EmbeddedBroker::start`].
#[derive(Debug)]
pub struct EmbeddedBroker;

impl EmbeddedBroker {
    /// Loads the credentials and ACL files and the TLS certificate, starts
    /// a rumqttd router with its loopback listeners and the front door on
    /// `config.listen` (plain) and the TLS listener, and returns once all
    /// accept connections.
    ///
    /// Each call creates a fresh router, so a restarted broker has forgotten
    /// sessions, queued and retained messages, like a restarted process.
    /// rumqttd's router thread cannot be stopped: it stays behind, idle and
    /// with its memory, after [`BrokerHandle::shutdown`]. That costs one
    /// thread per start and is meant for tests that restart the broker, not
    /// for a loop.
    ///
    /// The public listeners are bound here, so port 0 is reported exactly.
    /// rumqttd binds its loopback listeners itself and cannot report an
    /// ephemeral port, so free ports are chosen first; another process could
    /// in principle take one in between, and the start then fails with
    /// [`BrokerError::Bind`].
    ///
    /// # Errors
    /// [`BrokerError::Config`] for invalid values,
    /// [`BrokerError::Credentials`] when the credentials file is missing or
    /// invalid (naming file and line), [`BrokerError::Acl`] likewise for the
    /// ACL file, [`BrokerError::Tls`] when the certificate, key or client CA
    /// cannot be used, [`BrokerError::Bind`] when an address cannot be
    /// bound, [`BrokerError::Thread`] / [`BrokerError::StartupTimeout`]
    /// when the server thread cannot start.
    pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
        config.validate()?;
        let credentials = Arc::new(
            CredentialStore::open(&config.credentials)?
                .with_gateway_client_ids(config.gateway_client_ids.iter().cloned()),
        );
        // Made anew at each start, never written anywhere: the only
        // password rumqttd's loopback listeners accept.
        let internal_secret = crate::generate_secret();
        let acl = Arc::new(match &config.acl {
            Some(path) => Acl::load(path)?,
            None => Acl::default_policy(),
        });
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(TlsAcceptor::from(crate::tls::server_config(
                cert,
                key,
                config.tls_client_ca.as_deref(),
            )?)),
            _ => None,
        };
        let metrics = Arc::new(BrokerMetrics::new());
        let bind =
            |addr: SocketAddr| front::bind(addr).map_err(|error| BrokerError::Bind { addr, error });
        let plain = config.listen.map(bind).transpose()?;
        let secure = match (config.tls_listen_addr(), &tls) {
            (Some(addr), Some(acceptor)) => Some((bind(addr)?, acceptor.clone())),
            _ => None,
        };
        let local = |l: &std::net::TcpListener| l.local_addr().ok();
        let plain_addr = plain.as_ref().and_then(local);
        let tls_addr = secure.as_ref().and_then(|(l, _)| local(l));
        let internal = (0..INTERNAL_LISTENERS)
            .map(|_| resolve_port(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))))
            .collect::<Result<Vec<_>, _>>()?;

        let router_tx = Router::new(0, router_config(&config)).spawn();
        let protocol = FleetProtocol::new(acl.clone(), credentials.clone(), metrics.clone());
        let servers = internal
            .iter()
            .map(|addr| {
                let settings =
                    server_settings(&config, *addr, credentials.clone(), internal_secret.clone());
                Server::new(settings, router_tx.clone(), protocol.clone())
            })
            .collect();

        let shutdown = CancellationToken::new();
        let limits = FrontLimits {
            max_connections: front::effective_max_connections(
                config.max_connections,
                config.reserved_fds,
            ),
            connections_per_second: config.connections_per_second,
            failed_logins_per_minute: config.failed_logins_per_minute,
            failed_logins_per_address_per_minute: config.failed_logins_per_address_per_minute,
            connect_timeout: config.connect_timeout,
            max_packet: config.max_payload_bytes,
            zero_keep_alive_secs: config.zero_keep_alive_secs(),
        };
        let front = FrontDoor::new(
            credentials.clone(),
            acl,
            metrics.clone(),
            limits,
            &internal,
            internal_secret.clone(),
            shutdown.clone(),
        );
        let listeners = Listeners {
            plain,
            secure,
            front,
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let token = shutdown.clone();
        let first = internal[0];
        thread::Builder::new()
            .name(NAME.to_owned())
            .spawn(move || serve(servers, listeners, first, token, ready_tx, done_tx))
            .map_err(BrokerError::Thread)?;

        let startup_failed = BrokerError::StartupTimeout {
            addr: first,
            timeout: STARTUP_TIMEOUT,
        };
        match tokio::time::timeout(STARTUP_TIMEOUT, ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) | Err(_) => {
                shutdown.cancel();
                return Err(startup_failed);
            }
        }
        front::log_listening(plain_addr, tls_addr, &internal);
        info!(users = credentials.len(), "MQTT broker started");
        Ok(BrokerHandle {
            local_addr: plain_addr.or(tls_addr).unwrap_or(first),
            plain_addr,
            tls_addr,
            internal,
            internal_secret,
            credentials,
            metrics,
            shutdown,
            done: Some(done_rx),
        })
    }
}

/// The public listeners and the front door that serves them.
struct Listeners {
    plain: Option<std::net::TcpListener>,
    secure: Option<(std::net::TcpListener, TlsAcceptor)>,
    front: Arc<FrontDoor>,
}

/// A running embedded broker. Dropping it stops the broker too, in the
/// background; call [`BrokerHandle::shutdown`] to wait until it is gone.
#[derive(Debug)]
pub struct BrokerHandle {
    local_addr: SocketAddr,
    plain_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    internal: Vec<SocketAddr>,
    internal_secret: Secret,
    credentials: Arc<CredentialStore>,
    metrics: Arc<BrokerMetrics>,
    shutdown: CancellationToken,
    done: Option<oneshot::Receiver<()>>,
}

impl BrokerHandle {
    /// The public address clients connect to: the plain listener's, or the
    /// TLS listener's when plain MQTT is off; with the actual port when the
    /// configuration asked for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The plain-TCP listener's address, if it is on.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain_addr
    }

    /// The TLS listener's address, if TLS is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// A rumqttd listener on loopback, for in-process clients such as the
    /// gateway: plain MQTT with the same ACL, but without the front door's
    /// limits (connection rate, login throttling), so a reconnect storm of
    /// kiosks never locks them out. It accepts only
    /// [`BrokerHandle::internal_password`], with any user name of the
    /// credentials file (whose role the ACL applies): outside clients,
    /// which cannot know it, must use the front door.
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal[0]
    }

    /// The password of [`BrokerHandle::internal_addr`]: random, made at
    /// each start, kept in memory only.
    pub fn internal_password(&self) -> Secret {
        self.internal_secret.clone()
    }

    /// The broker's counters (refusals, ACL denials, connections).
    pub fn metrics(&self) -> Arc<BrokerMetrics> {
        self.metrics.clone()
    }

    /// The credential store the broker authenticates against (the gateway
    /// uses it to know which kiosks exist).
    pub fn credentials(&self) -> Arc<CredentialStore> {
        self.credentials.clone()
    }

    /// Stops the broker: closes the listener and drops every live
    /// connection (clients see their TCP connection closed, without
    /// DISCONNECT; their last wills are not published, as the router goes
    /// too). Returns once the server thread's runtime is shut down, so the
    /// port can be bound again.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(done) = self.done.take() {
            // An error means the thread is gone already, which is the goal.
            let _ = done.await;
        }
        info!(listen = %self.local_addr, "MQTT broker stopped");
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Replaces port 0 by a port that is free now.
fn resolve_port(listen: SocketAddr) -> Result<SocketAddr, BrokerError> {
    if listen.port() != 0 {
        return Ok(listen);
    }
    TcpListener::bind(listen)
        .and_then(|probe| probe.local_addr())
        .map_err(|error| BrokerError::Bind {
            addr: listen,
            error,
        })
}

fn router_config(config: &BrokerConfig) -> RouterConfig {
    RouterConfig {
        max_connections: config.max_connections + INTERNAL_HEADROOM,
        max_outgoing_packet_count: MAX_OUTGOING_PACKET_COUNT,
        max_segment_size: config.max_segment_size,
        max_segment_count: config.max_segment_count,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    }
}

fn server_settings(
    config: &BrokerConfig,
    listen: SocketAddr,
    credentials: Arc<CredentialStore>,
    internal_secret: Secret,
) -> ServerSettings {
    let mut connections = ConnectionSettings {
        connection_timeout_ms: config.connect_timeout_ms(),
        max_payload_size: config.max_payload_bytes,
        max_inflight_count: config.max_inflight,
        auth: None,
        external_auth: None,
        // Without it, a publish to a topic no one subscribed to disconnects
        // the publisher.
        dynamic_filters: true,
    };
    connections.set_auth_handler(move |client_id, username, password| {
        let credentials = credentials.clone();
        let secret = internal_secret.clone();
        async move { authenticate(&credentials, &secret, client_id, username, password) }
    });
    ServerSettings {
        name: NAME.to_owned(),
        listen,
        tls: None,
        // rumqttd sleeps this long after each accept (at least a timer tick
        // even at 0); the front door paces connections instead.
        next_connection_delay_ms: 0,
        connections,
    }
}

/// rumqttd's authentication handler: the login was checked by the front
/// door, which hands rumqttd every CONNECT with the internal secret as
/// password; a connection made directly to a loopback listener with any
/// other password (a kiosk's own, say) is refused, so these listeners are
/// no side door around the front door's checks and revocation. The user
/// must still be in the credentials file (its role selects the ACL).
/// rumqttd only calls it when the CONNECT carries a username; anonymous
/// CONNECTs are refused before (and logged by [`FleetProtocol`]).
fn authenticate(
    credentials: &CredentialStore,
    internal_secret: &Secret,
    client_id: String,
    username: String,
    password: String,
) -> bool {
    use subtle::ConstantTimeEq;
    let secret_ok: bool = password
        .as_bytes()
        .ct_eq(internal_secret.expose().as_bytes())
        .into();
    // Debug formatting quotes and escapes client-chosen strings, so they
    // cannot forge log lines.
    if !secret_ok {
        warn!(
            ?client_id,
            ?username,
            "login on the internal listener refused: use the front door"
        );
        return false;
    }
    match credentials.role(&username) {
        Some(role) => {
            debug!(?client_id, ?username, %role, "internal login accepted");
            true
        }
        None => {
            warn!(
                ?client_id,
                ?username,
                "internal login refused: unknown user"
            );
            false
        }
    }
}

/// Body of the server thread: runs rumqttd's servers and the front door
/// until `shutdown`, then shuts the runtime down, which closes every
/// listener and connection.
fn serve(
    servers: Vec<Server<FleetProtocol>>,
    listeners: Listeners,
    first: SocketAddr,
    shutdown: CancellationToken,
    ready: oneshot::Sender<Result<(), BrokerError>>,
    done: oneshot::Sender<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("kiosk-broker-io")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(BrokerError::Thread(e)));
            return;
        }
    };
    runtime.block_on(async {
        let mut servers = servers;
        let mut starts: Vec<_> = servers
            .iter_mut()
            .map(|server| Box::pin(server.start(LinkType::Remote)))
            .collect();
        // rumqttd binds its listener synchronously within the first poll of
        // `start`; after that poll the socket listens (connections queue in
        // the backlog) or binding failed. This avoids probing with a TCP
        // connection, which rumqttd would log as an error.
        for start in &mut starts {
            if let Poll::Ready(result) = poll_fn(|cx| Poll::Ready(start.as_mut().poll(cx))).await {
                let _ = ready.send(Err(bind_error(first, result)));
                return;
            }
        }
        let Listeners {
            plain,
            secure,
            front,
        } = listeners;
        let to_tokio = |l: std::net::TcpListener| tokio::net::TcpListener::from_std(l);
        let mut accept = Vec::new();
        if let Some(plain) = plain {
            match to_tokio(plain) {
                Ok(l) => accept.push((l, None)),
                Err(e) => {
                    let _ = ready.send(Err(BrokerError::Thread(e)));
                    return;
                }
            }
        }
        if let Some((secure, acceptor)) = secure {
            match to_tokio(secure) {
                Ok(l) => accept.push((l, Some(acceptor))),
                Err(e) => {
                    let _ = ready.send(Err(BrokerError::Thread(e)));
                    return;
                }
            }
        }
        for (listener, tls) in accept {
            tokio::spawn(front.clone().accept_loop(listener, tls));
        }
        tokio::spawn(front.revocation_watcher());
        let _ = ready.send(Ok(()));
        tokio::select! {
            (result, _, _) = futures::future::select_all(starts) => {
                error!(?result, "MQTT server stopped by itself");
            }
            () = shutdown.cancelled() => {}
        }
    });
    runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
    let _ = done.send(());
}

/// Turns the early exit of rumqttd's `Server::start` (whose error type is
/// not exported) into [`BrokerError::Bind`].
fn bind_error<E: std::error::Error>(listen: SocketAddr, result: Result<(), E>) -> BrokerError {
    let error = match result {
        Ok(()) => io::Error::other("server stopped before listening"),
        Err(e) => match std::error::Error::source(&e).and_then(|s| s.downcast_ref::<io::Error>()) {
            Some(io) => io::Error::new(io.kind(), io.to_string()),
            None => io::Error::other(e.to_string()),
        },
    };
    BrokerError::Bind {
        addr: listen,
        error,
    }
}
