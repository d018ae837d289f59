//! kiosk-gateway: the cloud side of kiosk-fleet.
//!
//! An HTTP API (axum) that turns print jobs into MQTT publishes and tracks
//! every job durably in sled, an MQTT client session (rumqttc) that records
//! results and kiosk statuses, and, by default, the broker itself (rumqttd,
//! via `kiosk-broker`) in the same process.
//!
//! [`Gateway::start`] brings everything up on the configured addresses
//! (port 0 picks free ports, which tests use) and [`Gateway::shutdown`]
//! stops it cleanly; [`run`] does both around a cancellation token, for
//! `main`.

pub mod admin;
pub mod api_keys;
pub mod broker_config;
pub mod cash;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod echo;
pub mod error;
pub mod events;
pub mod fleet;
pub mod http_server;
pub mod ingest;
pub mod metrics;
pub mod mqtt;
pub mod operators;
pub mod presence;
pub mod rate_limit;
pub mod routes;
pub mod state;
pub mod store;
pub mod tls;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use kiosk_broker::{BrokerConfig, BrokerHandle, CredentialStore, EmbeddedBroker};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::GatewayConfig;
use config::{BrokerMode, CLIENT_DEFAULTS};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The store could not be opened.
    #[error("opening store: {0}")]
    Store(#[from] store::StoreError),
    /// The API key file could not be read.
    #[error(transparent)]
    ApiKeys(#[from] api_keys::ApiKeyError),
    /// The embedded broker could not start.
    #[error("embedded broker: {0}")]
    Broker(#[from] kiosk_broker::BrokerError),
    /// The credentials file (external broker mode) could not be read.
    #[error("credentials: {0}")]
    Credentials(#[from] kiosk_broker::CredentialsError),
    /// A TLS certificate, key or CA file could not be used.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The HTTP listener could not be bound.
    #[error("binding HTTP listener {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// A running gateway.
pub struct Gateway {
    http_addr: SocketAddr,
    mqtt_addr: Option<SocketAddr>,
    mqtt_tls_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    broker: Option<BrokerHandle>,
    store: store::Store,
}

/// Where a client on this host reaches a listener bound to `addr`.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

impl Gateway {
    /// Opens the store, starts the embedded broker (unless
    /// `broker.embedded = false`), connects the MQTT session, and serves
    /// HTTP. Returns once the listeners are bound; the MQTT session connects
    /// in the background (see `GET /healthz`). `config` was checked when it
    /// was loaded ([`GatewayConfig::load`]).
    ///
    /// # Errors
    /// [`GatewayError`] naming what could not be opened or bound.
    pub async fn start(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        let config = Arc::new(config);
        let store = store::Store::open(&config.store.path)?;
        let api_keys = api_keys::ApiKeys::open(config.http.api_keys.as_deref())?;
        let http_max_connections =
            http_server::effective_max_connections(config.http.max_connections);

        let (broker, credentials, mqtt_brokers, mqtt_tls, internal_password) =
            match &config.broker.mode {
                BrokerMode::Embedded(broker_config) => {
                    let mut broker_config = BrokerConfig::clone(broker_config);
                    // The descriptors HTTP may take are not the broker's.
                    broker_config.reserved_fds =
                        u64::try_from(http_max_connections).unwrap_or(u64::MAX);
                    let handle = EmbeddedBroker::start(broker_config).await?;
                    // The gateway's own sessions skip the front door's limits
                    // (role `gateway`, same ACL) and log in with the broker's
                    // internal password.
                    let addr = connectable(handle.internal_addr());
                    let creds = handle.credentials();
                    let password = handle.internal_password();
                    (
                        Some(handle),
                        Some(creds),
                        vec![(addr.ip().to_string(), addr.port())],
                        None,
                        Some(password),
                    )
                }
                BrokerMode::External(external) => {
                    let creds = match &external.credentials {
                        Some(path) => Some(Arc::new(CredentialStore::open(path)?)),
                        None => None,
                    };
                    let tls = if external.urls.iter().any(|u| u.tls) {
                        Some(config.broker.client.tls_config()?)
                    } else {
                        None
                    };
                    let brokers = external
                        .urls
                        .iter()
                        .map(|u| (u.host.clone(), u.port))
                        .collect();
                    (None, creds, brokers, tls, None)
                }
            };
        let mqtt_addr = broker.as_ref().map(BrokerHandle::local_addr);
        let mqtt_tls_addr = broker.as_ref().and_then(BrokerHandle::tls_addr);

        let client = &config.broker.client;
        let settings = mqtt::MqttSettings {
            brokers: mqtt_brokers,
            client_id: config.broker.client_id.clone(),
            username: client.username(CLIENT_DEFAULTS).to_owned(),
            password: internal_password.unwrap_or_else(|| client.password.clone()),
            keep_alive: client.keep_alive,
            backoff: client.backoff(CLIENT_DEFAULTS),
            tls: mqtt_tls,
            // Room for the largest job plus MQTT framing.
            max_packet_bytes: config
                .broker
                .max_payload_bytes()
                .max(config.delivery.max_job_bytes)
                + 4096,
        };
        let (link, consumer, producer) = mqtt::connect(&settings);
        let fleet = Arc::new(fleet::Fleet::new(
            store.clone(),
            credentials,
            config.kiosks.iter().cloned(),
            config.fleet.heartbeat,
        ));
        let metrics = Arc::new(metrics::Metrics::new());
        metrics.attach_store(store.commit_stats());
        if let Some(handle) = &broker {
            metrics.attach_broker(handle.metrics());
        }
        let echoes = Arc::new(echo::Echoes::default());
        let delivery = Arc::new(delivery::Delivery::new(
            store.clone(),
            fleet.clone(),
            link.clone(),
            config.delivery.clone(),
            config.store.retention,
            echoes.clone(),
        ));

        let cursor = cash::webhooks::Cursor::open(store.db(), store.events())?;
        let cash_store = cash::store::CashStore::open(&store)?;
        let tokens = cash::token::ViewTokens::open(&store)?;
        let live = Arc::new(cash::live::Live::default());

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        {
            let webhooks_on = config.webhooks.url.is_some();
            let cursor = cursor.clone();
            tasks.spawn(events::purge_old(
                store.events().clone(),
                config.events.retention,
                move || match (webhooks_on, cursor.get()) {
                    (false, _) => u64::MAX,
                    (true, Ok(at)) => at.unwrap_or(0),
                    // Unknown: keep everything.
                    (true, Err(_)) => 0,
                },
                shutdown.clone(),
            ));
        }
        if let Some(url) = &config.webhooks.url {
            let sender = cash::webhooks::Sender::new(
                store.events().clone(),
                cursor.clone(),
                config.webhooks.clone(),
                url.clone(),
            );
            tasks.spawn(sender.run(shutdown.clone()));
        }
        let (inbound_tx, inbound_rx) = mpsc::channel(1024);
        let (online_tx, online_rx) = mpsc::channel(1024);
        tasks.spawn(consumer.run(inbound_tx, shutdown.clone()));
        tasks.spawn(producer.run_publisher(shutdown.clone()));
        let ingest = ingest::Ingest {
            store: store.clone(),
            fleet: fleet.clone(),
            metrics: metrics.clone(),
            link: link.clone(),
            online: online_tx,
            max_job_bytes: config.delivery.max_job_bytes,
            cash: cash_store.clone(),
            live: live.clone(),
            warnings: ingest::WarnLimit::default(),
            echoes,
        };
        tasks.spawn(ingest.run(inbound_rx, shutdown.clone()));
        tasks.spawn(
            fleet
                .clone()
                .watch_heartbeats(metrics.clone(), shutdown.clone()),
        );
        let resend = cash::resend::Resend {
            cash: cash_store.clone(),
            fleet: fleet.clone(),
            link: link.clone(),
            live: live.clone(),
            metrics: metrics.clone(),
            interval: config.delivery.republish_interval,
        };
        tasks.spawn(resend.run(shutdown.clone()));
        tasks.spawn(delivery.clone().run(online_rx, shutdown.clone()));

        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: config.http.listen,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            addr: config.http.listen,
            source,
        })?;
        let http_limits =
            http_server::Limits::new(&config.http, http_max_connections, metrics.clone());
        let app = routes::router(routes::AppState::new(routes::AppInner {
            store: store.clone(),
            fleet,
            delivery,
            api_keys,
            rate_limits: rate_limit::RateLimits::new(
                config.http.rate_limit_per_second,
                config.http.rate_limit_burst,
            ),
            metrics,
            link,
            config: config.clone(),
            cash: cash_store,
            live,
            tokens,
            shutdown: shutdown.clone(),
            http_limits: http_limits.clone(),
            operators: Arc::new(operators::Operators::new(config.http.operators.clone())),
        }));
        let https = tls::https_config(&config)?;
        tasks.spawn(http_server::serve(
            listener,
            https,
            app,
            http_limits,
            shutdown.clone(),
        ));
        tasks.close();
        tracing::info!(http = %http_addr, mqtt = ?mqtt_addr, embedded = broker.is_some(), "gateway started");
        Ok(Gateway {
            http_addr,
            mqtt_addr,
            mqtt_tls_addr,
            shutdown,
            tasks,
            broker,
            store,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The embedded broker's MQTT address (`None` with an external broker).
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    /// rumqttd's loopback listener behind the embedded broker's front door
    /// (`None` with an external broker). It accepts only the broker's
    /// internal password, made at each start, so outside clients on the
    /// VPS cannot use it to bypass the front door; for diagnostics and
    /// tests.
    pub fn internal_mqtt_addr(&self) -> Option<SocketAddr> {
        self.broker.as_ref().map(BrokerHandle::internal_addr)
    }

    /// The embedded broker's MQTT-over-TLS address, when configured.
    pub fn mqtt_tls_addr(&self) -> Option<SocketAddr> {
        self.mqtt_tls_addr
    }

    /// Stops HTTP, the MQTT session and the embedded broker, flushes and
    /// closes the store. Returns when the store directory can be reopened.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.wait().await;
        if let Some(broker) = self.broker {
            broker.shutdown().await;
        }
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "final store flush failed");
        }
        tracing::info!("gateway stopped");
    }
}

/// Runs the gateway until `shutdown` is cancelled (SIGTERM, ctrl-c).
///
/// # Errors
/// [`GatewayError`] when it cannot start.
pub async fn run(config: GatewayConfig, shutdown: CancellationToken) -> Result<(), GatewayError> {
    let gateway = Gateway::start(config).await?;
    shutdown.cancelled().await;
    gateway.shutdown().await;
    Ok(())
}
