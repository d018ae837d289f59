//! rumqttd's router and server, run on our terms: a dedicated thread with its
//! own runtime, so the broker can be stopped (rumqttd's own `Broker::start`
//! blocks forever), and an authentication handler backed by the
//! [`CredentialStore`].
//!
//! What a client sees: rumqttd answers a refused login (unknown user, wrong
//! password, anonymous, kiosk with a foreign client id), a CONNECT with keep
//! alive 0 and a CONNECT beyond `max_connections` by closing the TCP
//! connection **without a CONNACK**: rumqttc reports
//! `MqttState(ConnectionAborted)`, mosquitto clients "The connection was
//! lost", never a CONNACK return code such as "not authorized". The reason is
//! only in the broker's log.
//!
//! Connection storms: rumqttd accepts connections one at a time in a single
//! loop that sleeps after each accept (even with a delay of 0 ms, a tokio
//! sleep rounds up to the next 1 ms timer tick), on a listener bound with
//! tokio's default backlog of 128. About 1,000 connects per second get
//! through; beyond the backlog the kernel drops handshakes and clients retry
//! their SYN after 1 s, 3 s, 7 s. The kiosks' reconnect jitter is what
//! spreads a fleet-wide reconnection (`benches/auth.rs` measures it).

use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::thread;
use std::time::Duration;

use kiosk_schemas::Secret;
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::{AuthOutcome, BrokerConfig, BrokerError, CredentialStore, FleetProtocol};

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
    /// Loads the credentials file, then starts a rumqttd router and an MQTT
    /// 3.1.1 listener on `config.listen`, and returns once the listener
    /// accepts connections.
    ///
    /// Each call creates a fresh router, so a restarted broker has forgotten
    /// sessions, queued and retained messages, like a restarted process.
    /// rumqttd's router thread cannot be stopped: it stays behind, idle and
    /// with its memory, after [`BrokerHandle::shutdown`]. That costs one
    /// thread per start and is meant for tests that restart the broker, not
    /// for a loop.
    ///
    /// With port 0 a free port is chosen first (rumqttd binds the address
    /// itself and cannot report an ephemeral port), so another process could
    /// in principle take it in between; the start then fails with
    /// [`BrokerError::Bind`].
    ///
    /// # Errors
    /// [`BrokerError::Config`] for invalid values,
    /// [`BrokerError::Credentials`] when the credentials file is missing or
    /// invalid (naming file and line), [`BrokerError::Bind`] when the address
    /// cannot be bound, [`BrokerError::Thread`] / [`BrokerError::StartupTimeout`]
    /// when the server thread cannot start.
    pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
        config.validate()?;
        let credentials = Arc::new(CredentialStore::open(&config.credentials)?);
        let listen = resolve_port(config.listen)?;

        let router_tx = Router::new(0, router_config(&config)).spawn();
        let settings = server_settings(&config, listen, credentials.clone());
        let server = Server::new(settings, router_tx, FleetProtocol::new());

        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let token = shutdown.clone();
        thread::Builder::new()
            .name(NAME.to_owned())
            .spawn(move || serve(server, listen, token, ready_tx, done_tx))
            .map_err(BrokerError::Thread)?;

        let startup_failed = BrokerError::StartupTimeout {
            addr: listen,
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
        info!(%listen, users = credentials.len(), "MQTT broker listening");
        Ok(BrokerHandle {
            local_addr: listen,
            credentials,
            shutdown,
            done: Some(done_rx),
        })
    }
}

/// A running embedded broker. Dropping it stops the broker too, in the
/// background; call [`BrokerHandle::shutdown`] to wait until it is gone.
#[derive(Debug)]
pub struct BrokerHandle {
    local_addr: SocketAddr,
    credentials: Arc<CredentialStore>,
    shutdown: CancellationToken,
    done: Option<oneshot::Receiver<()>>,
}

impl BrokerHandle {
    /// The address the listener is bound to, with the actual port when the
    /// configuration asked for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
        max_connections: config.max_connections,
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
        async move { authenticate(&credentials, client_id, username, password).await }
    });
    ServerSettings {
        name: NAME.to_owned(),
        listen,
        tls: None,
        // rumqttd sleeps this long after each accept; any delay caps the
        // reconnect rate of the fleet after a restart.
        next_connection_delay_ms: 0,
        connections,
    }
}

/// rumqttd's authentication handler. rumqttd only calls it when the CONNECT
/// carries a username; anonymous CONNECTs are refused before (and logged by
/// [`FleetProtocol`]).
async fn authenticate(
    credentials: &CredentialStore,
    client_id: String,
    username: String,
    password: String,
) -> bool {
    let password = Secret::new(password);
    // Debug formatting quotes and escapes client-chosen strings, so they
    // cannot forge log lines.
    match credentials.verify(&client_id, &username, &password).await {
        AuthOutcome::Accepted { role } => {
            debug!(?client_id, ?username, %role, "login accepted");
            true
        }
        AuthOutcome::Refused { reason } => {
            warn!(?client_id, ?username, %reason, "login refused");
            false
        }
    }
}

/// Body of the server thread: runs rumqttd's server until `shutdown`, then
/// shuts its runtime down, which closes the listener and every connection.
fn serve(
    mut server: Server<FleetProtocol>,
    listen: SocketAddr,
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
        let mut start = pin!(server.start(LinkType::Remote));
        // rumqttd binds its listener synchronously within the first poll of
        // `start`; after that poll the socket listens (connections queue in
        // the backlog) or binding failed. This avoids probing with a TCP
        // connection, which rumqttd would log as an error.
        match poll_fn(|cx| Poll::Ready(start.as_mut().poll(cx))).await {
            Poll::Ready(result) => {
                let _ = ready.send(Err(bind_error(listen, result)));
                return;
            }
            Poll::Pending => {
                let _ = ready.send(Ok(()));
            }
        }
        tokio::select! {
            result = start => error!(?result, "MQTT server stopped by itself"),
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
