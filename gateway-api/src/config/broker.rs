//! `[broker]`: the gateway's MQTT client, and the embedded broker or an
//! external one. [`BrokerSection`] is the section as written; its check
//! gives [`BrokerSettings`] with a [`BrokerMode`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiosk_broker::BrokerConfig;
use kiosk_mqtt::{ClientDefaults, ClientSection};
use kiosk_schemas::MqttUrl;
use kiosk_schemas::settings::{ConfigError, invalid};
use serde::Deserialize;

/// `[broker]`, checked.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// The gateway's MQTT client id (`broker.client_id`); its producer
    /// connects as `<client_id>-pub`. Not empty.
    pub client_id: String,
    /// `broker.username` (default `gateway`), `password` (not empty; with
    /// the embedded broker the gateway logs in with the broker's internal
    /// password instead), `keep_alive` (at least 1 s), `reconnect_min`
    /// (default 200 ms), `reconnect_max` (default 10 s), and for an
    /// external `mqtts://` broker `ca_file`, `client_cert`, `client_key`:
    /// checked ([`ClientSection::check`]).
    pub client: ClientSection,
    /// Which broker.
    pub mode: BrokerMode,
}

/// Where the broker is: `broker.embedded`.
#[derive(Debug, Clone)]
pub enum BrokerMode {
    /// `broker.embedded = true`: rumqttd in this process, with this
    /// configuration (validated; `gateway_client_ids` reserve
    /// `broker.client_id` and `<client_id>-pub`).
    Embedded(Box<BrokerConfig>),
    /// `broker.embedded = false`: connect to another broker.
    External(ExternalBroker),
}

/// An external broker (`broker.embedded = false`).
#[derive(Debug, Clone)]
pub struct ExternalBroker {
    /// `broker.url`, or the brokers of `broker.urls` in their order (the
    /// gateway starts with the first and moves down the list on failure).
    pub urls: Vec<MqttUrl>,
    /// `broker.credentials`: its `kiosk` entries are known kiosks.
    pub credentials: Option<PathBuf>,
    /// `broker.acl`: the topic ACL that `kiosk-gateway broker-config`
    /// writes into the external broker's own configuration; `None` for the
    /// built-in policy.
    pub acl: Option<PathBuf>,
    /// `broker.max_payload_bytes`: largest MQTT payload, in bytes.
    pub max_payload_bytes: usize,
}

/// What the gateway assumes for the `[broker]` client keys left out: user
/// name `gateway`, reconnect delays from 200 ms to 10 s (one client, which
/// every kiosk waits for, comes back fast).
pub const CLIENT_DEFAULTS: ClientDefaults<'static> = ClientDefaults {
    username: "gateway",
    reconnect_min: Duration::from_millis(200),
    reconnect_max: Duration::from_secs(10),
};

impl BrokerSettings {
    /// The embedded broker's configuration; `None` with an external broker.
    pub fn embedded(&self) -> Option<&BrokerConfig> {
        match &self.mode {
            BrokerMode::Embedded(b) => Some(b.as_ref()),
            BrokerMode::External(_) => None,
        }
    }

    /// The embedded broker's configuration, to change (tests pin ports
    /// found at the first start); `None` with an external broker.
    pub fn embedded_mut(&mut self) -> Option<&mut BrokerConfig> {
        match &mut self.mode {
            BrokerMode::Embedded(b) => Some(b.as_mut()),
            BrokerMode::External(_) => None,
        }
    }

    /// The external broker; `None` when embedded.
    pub fn external(&self) -> Option<&ExternalBroker> {
        match &self.mode {
            BrokerMode::Embedded(_) => None,
            BrokerMode::External(e) => Some(e),
        }
    }

    /// `broker.credentials`: always set for the embedded broker, optional
    /// for an external one.
    pub fn credentials(&self) -> Option<&Path> {
        match &self.mode {
            BrokerMode::Embedded(b) => Some(&b.credentials),
            BrokerMode::External(e) => e.credentials.as_deref(),
        }
    }

    /// `broker.acl`: the topic ACL file; `None` for the built-in policy.
    pub fn acl(&self) -> Option<&Path> {
        match &self.mode {
            BrokerMode::Embedded(b) => b.acl.as_deref(),
            BrokerMode::External(e) => e.acl.as_deref(),
        }
    }

    /// `broker.max_payload_bytes`: largest MQTT payload, in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        match &self.mode {
            BrokerMode::Embedded(b) => b.max_payload_bytes,
            BrokerMode::External(e) => e.max_payload_bytes,
        }
    }
}

/// `[broker]` as written; see [`BrokerSettings`] for the checked form.
#[derive(Debug, Deserialize)]
pub(super) struct BrokerSection {
    /// Run rumqttd in-process (default true). When false, connect to `url`.
    #[serde(default = "yes")]
    embedded: bool,
    /// Embedded broker's plain MQTT listener, or `"off"`. Default
    /// `127.0.0.1:1883`; kiosks on the internet use the TLS listener
    /// (`tls_cert`). Port 0 picks a free port.
    #[serde(
        default = "default_mqtt_listen",
        deserialize_with = "kiosk_broker::config::listen_or_off"
    )]
    listen: Option<SocketAddr>,
    /// Credentials file of the embedded broker (`user:role:hash` lines, see
    /// `kiosk-broker passwd`). Its `kiosk` entries are the known kiosks.
    credentials: Option<PathBuf>,
    /// Largest MQTT payload the embedded broker accepts, in bytes. Default 1 MiB.
    #[serde(default = "default_max_payload_bytes")]
    max_payload_bytes: usize,
    /// Most concurrent MQTT connections of the embedded broker. Default 20000.
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    /// External broker, `mqtt://host[:port]`; ignored when `embedded`.
    /// For a cluster, `broker.urls` (in [`ClientSection`]) lists its nodes
    /// instead.
    url: Option<String>,
    /// The gateway's MQTT client id. Default `kiosk-gateway`.
    #[serde(default = "default_client_id")]
    pub(super) client_id: String,
    /// The keys every MQTT client of the fleet reads the same way
    /// (`username`, `password`, `keep_alive`, `reconnect_min`,
    /// `reconnect_max`, `ca_file`, `client_cert`, `client_key`).
    #[serde(flatten)]
    pub(super) client: ClientSection,
    /// Embedded broker's MQTT-over-TLS listener; default `0.0.0.0:8883`
    /// when `tls_cert` is set.
    #[serde(default)]
    tls_listen: Option<SocketAddr>,
    /// Embedded broker's PEM certificate chain; enables its TLS listener.
    #[serde(default)]
    tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    tls_key: Option<PathBuf>,
    /// PEM CA: TLS clients must present a certificate it issued.
    #[serde(default)]
    tls_client_ca: Option<PathBuf>,
    /// Topic ACL file of the embedded broker (and what `broker-config`
    /// writes for an external one); default the built-in policy
    /// (`examples/acl`).
    #[serde(default)]
    acl: Option<PathBuf>,
    /// New MQTT connections admitted per second. Default 1000.
    #[serde(default = "default_connections_per_second")]
    connections_per_second: u32,
    /// Failed MQTT logins per (client address, user name) and minute
    /// before that user is refused from that address. Default 10.
    #[serde(default = "default_failed_logins_per_minute")]
    failed_logins_per_minute: u32,
    /// Failed MQTT logins per client address and minute, all user names
    /// together, before the address is refused. Default 100.
    #[serde(default = "default_failed_logins_per_address_per_minute")]
    failed_logins_per_address_per_minute: u32,
    /// How long an MQTT client with keep alive 0 may stay silent before the
    /// embedded broker closes it. Default 10 min.
    #[serde(default = "default_broker_idle_timeout", with = "humantime_serde")]
    idle_timeout: Duration,
}

impl BrokerSection {
    /// Which broker, from `embedded`, `url`, `ca_file` and `credentials`;
    /// the embedded broker's configuration is built here and validated by
    /// [`GatewayFile::check`](super::GatewayFile::check).
    pub(super) fn mode(&self) -> Result<BrokerMode, ConfigError> {
        if !self.embedded {
            let url = self
                .url
                .as_deref()
                .map(|u| {
                    u.parse::<MqttUrl>()
                        .map_err(|e| invalid("broker.url", e.to_string()))
                })
                .transpose()?;
            let urls = self.client.broker_urls(url.as_ref())?.ok_or_else(|| {
                invalid(
                    "broker.url",
                    "required when broker.embedded = false (or broker.urls for a cluster)",
                )
            })?;
            self.client.check(urls.first(), CLIENT_DEFAULTS)?;
            return Ok(BrokerMode::External(ExternalBroker {
                urls,
                credentials: self.credentials.clone(),
                acl: self.acl.clone(),
                max_payload_bytes: self.max_payload_bytes,
            }));
        }
        self.client.check(None, CLIENT_DEFAULTS)?;
        let credentials = self.credentials.clone().ok_or_else(|| {
            invalid(
                "broker.credentials",
                "required when broker.embedded = true (the embedded broker refuses anonymous clients)",
            )
        })?;
        Ok(BrokerMode::Embedded(Box::new(BrokerConfig {
            listen: self.listen,
            tls_listen: self.tls_listen,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            acl: self.acl.clone(),
            max_payload_bytes: self.max_payload_bytes,
            max_connections: self.max_connections,
            connections_per_second: self.connections_per_second,
            failed_logins_per_minute: self.failed_logins_per_minute,
            failed_logins_per_address_per_minute: self.failed_logins_per_address_per_minute,
            idle_timeout: self.idle_timeout,
            // The gateway's own client ids: nobody else may take them.
            gateway_client_ids: vec![self.client_id.clone(), format!("{}-pub", self.client_id)],
            ..BrokerConfig::new(credentials)
        })))
    }
}

fn yes() -> bool {
    true
}
pub(super) fn default_mqtt_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 1883)))
}
fn default_connections_per_second() -> u32 {
    1000
}
fn default_failed_logins_per_minute() -> u32 {
    10
}
fn default_max_payload_bytes() -> usize {
    1024 * 1024
}
fn default_max_connections() -> usize {
    20_000
}
fn default_failed_logins_per_address_per_minute() -> u32 {
    100
}
fn default_broker_idle_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_client_id() -> String {
    "kiosk-gateway".to_owned()
}
