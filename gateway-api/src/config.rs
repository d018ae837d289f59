//! Gateway configuration: a TOML file, then environment variables
//! `KIOSK_GATEWAY__<SECTION>__<KEY>` (e.g. `KIOSK_GATEWAY__HTTP__LISTEN`,
//! `KIOSK_GATEWAY__BROKER__LISTEN`), then validation with errors that name
//! the bad key.
//!
//! The file form (`GatewayFile`, private) is checked once, by
//! [`GatewayConfig::load`] and [`GatewayConfig::from_toml`], into
//! [`GatewayConfig`]: `[broker]` becomes [`BrokerSettings`], whose
//! [`BrokerMode`] is either the embedded broker's own
//! [`kiosk_broker::BrokerConfig`] or an external broker's parsed URL. The rest
//! of the gateway uses the result as it is and checks nothing again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kiosk_broker::BrokerConfig;
use kiosk_mqtt::{ClientDefaults, ClientSection};
use std::time::Duration;

use kiosk_schemas::settings::invalid;
pub use kiosk_schemas::settings::{Checked, ConfigError};
use kiosk_schemas::{KioskId, MqttUrl, Secret};
use serde::Deserialize;

/// Prefix of environment overrides; `__` separates levels.
pub const ENV_PREFIX: &str = "KIOSK_GATEWAY";

/// The whole gateway configuration, checked: what [`GatewayConfig::load`]
/// returns and [`crate::Gateway::start`] takes.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `[http]`: the HTTP API.
    pub http: HttpConfig,
    /// `[broker]`: the gateway's MQTT client, and the embedded broker or the
    /// external one.
    pub broker: BrokerSettings,
    /// `[store]`: the sled directory.
    pub store: StoreConfig,
    /// `[delivery]`: republish and expiry policy.
    pub delivery: DeliveryConfig,
    /// `[webhooks]`: cash events POSTed to the backend.
    pub webhooks: WebhookConfig,
    /// `[fleet]`: kiosk presence.
    pub fleet: FleetConfig,
    /// Kiosks known in addition to the `kiosk` entries of the broker's
    /// credentials file (useful with an external broker). A kiosk that
    /// publishes its status is known from then on as well.
    pub kiosks: Vec<KioskId>,
}

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
    /// `broker.url`.
    pub url: MqttUrl,
    /// `broker.credentials`: its `kiosk` entries are known kiosks.
    pub credentials: Option<PathBuf>,
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

    /// `broker.max_payload_bytes`: largest MQTT payload, in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        match &self.mode {
            BrokerMode::Embedded(b) => b.max_payload_bytes,
            BrokerMode::External(e) => e.max_payload_bytes,
        }
    }
}

/// The configuration file's form, before [`GatewayFile::check`].
#[derive(Debug, Deserialize)]
pub struct GatewayFile {
    #[serde(default)]
    http: HttpConfig,
    broker: BrokerSection,
    store: StoreConfig,
    #[serde(default)]
    delivery: DeliveryConfig,
    #[serde(default)]
    webhooks: WebhookConfig,
    #[serde(default)]
    fleet: FleetConfig,
    #[serde(default)]
    kiosks: Vec<KioskId>,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    /// Listen address. Default `127.0.0.1:8080`; port 0 picks a free port.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes. Default 1 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// File of API keys, one `name:sha256-hex-of-key` per line (see
    /// `kiosk-gateway apikey add`). Every `/v1` route needs
    /// `Authorization: Bearer <key>`.
    pub api_keys: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS instead of HTTP. Needs `tls_key`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// How long a new connection has to finish its TLS handshake and send
    /// the headers of its first request, and a keep-alive connection the
    /// headers of its next request once their first byte arrived; then it
    /// is closed. Default 10 s.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a connection may go without a byte read or written: a
    /// keep-alive connection between requests, a request whose body
    /// stalls, an event stream whose client stopped reading. Then it is
    /// closed. Event streams send a keep-alive comment at least every
    /// half of it. Default 60 s.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most open HTTP connections; beyond it a new connection is closed
    /// right after accept. Lowered at start to a quarter of what the
    /// open-files limit leaves, so the embedded broker keeps its
    /// descriptors. Default 2048.
    #[serde(default = "default_http_max_connections")]
    pub max_connections: usize,
    /// Most open HTTP connections from one client address (IPv6: one /64);
    /// beyond it a new connection is closed right after accept. Kiosks and
    /// backends behind one NAT share an address: keep it generous.
    /// Default 256.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Most open event streams (`GET /v1/cash-sessions/{id}/events`);
    /// beyond it the request gets `503 too_many_streams`. Default 1024.
    #[serde(default = "default_max_sse_streams")]
    pub max_sse_streams: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            max_body_bytes: default_max_body_bytes(),
            api_keys: None,
            tls_cert: None,
            tls_key: None,
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_http_max_connections(),
            max_connections_per_address: default_max_connections_per_address(),
            max_sse_streams: default_max_sse_streams(),
        }
    }
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_http_max_connections() -> usize {
    2048
}
fn default_max_connections_per_address() -> usize {
    256
}
fn default_max_sse_streams() -> usize {
    1024
}

/// `[broker]` as written; see [`BrokerSettings`] for the checked form.
#[derive(Debug, Deserialize)]
struct BrokerSection {
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
    url: Option<String>,
    /// The gateway's MQTT client id. Default `kiosk-gateway`.
    #[serde(default = "default_client_id")]
    client_id: String,
    /// The keys every MQTT client of the fleet reads the same way
    /// (`username`, `password`, `keep_alive`, `reconnect_min`,
    /// `reconnect_max`, `ca_file`, `client_cert`, `client_key`).
    #[serde(flatten)]
    client: ClientSection,
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
    /// Topic ACL file of the embedded broker; default the built-in policy
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

/// `[fleet]`: kiosk presence (see [`crate::presence`]).
#[derive(Debug, Clone, Deserialize)]
pub struct FleetConfig {
    /// Heartbeat assumed for a kiosk whose status does not announce its own
    /// (`heartbeat_ms`, agent `status.heartbeat`): an online kiosk is
    /// marked offline after three heartbeats without any message from it.
    /// Default 30 s, the agents' default.
    #[serde(default = "default_fleet_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            heartbeat: default_fleet_heartbeat(),
        }
    }
}

fn default_fleet_heartbeat() -> Duration {
    Duration::from_secs(30)
}

/// `[webhooks]`: where cash session and credit events go (see
/// [`crate::cash::webhooks`]). Off when `url` is not set.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL that receives the POSTs.
    pub url: Option<String>,
    /// HMAC-SHA256 key of the `X-Kiosk-Signature` header.
    #[serde(default)]
    pub secret: Secret,
    /// Timeout of one delivery attempt. Default 10 s.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest pause between attempts. Default 10 min.
    #[serde(default = "default_webhook_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: None,
            secret: Secret::default(),
            timeout: default_webhook_timeout(),
            max_backoff: default_webhook_backoff(),
        }
    }
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_webhook_backoff() -> Duration {
    Duration::from_secs(600)
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
pub struct StoreConfig {
    /// Directory of the sled database; created if missing.
    pub path: PathBuf,
    /// Finished jobs older than this are deleted. Default 30 days.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
}

/// `[delivery]`
#[derive(Debug, Clone, Deserialize)]
pub struct DeliveryConfig {
    /// How often unfinished jobs are re-sent to online kiosks. Default 30 s.
    #[serde(default = "default_republish_interval", with = "humantime_serde")]
    pub republish_interval: Duration,
    /// Lifetime of a job when the request gives no `expires_in_s`, and of a
    /// job published over MQTT without `expires_at`. Default 24 h.
    #[serde(default = "default_expires_in", with = "humantime_serde")]
    pub default_expires_in: Duration,
    /// Longest `expires_in_s` accepted. Default 7 days.
    #[serde(default = "default_max_expires_in", with = "humantime_serde")]
    pub max_expires_in: Duration,
    /// How long after a received job's expiry the gateway keeps asking the
    /// kiosk for its outcome. Default 24 h.
    #[serde(default = "default_result_grace", with = "humantime_serde")]
    pub result_grace: Duration,
    /// Largest print job, as encoded JSON, in bytes; larger requests get
    /// 413. Keep it at or below the agents' `print.max_job_bytes`. Default
    /// 512 KiB.
    #[serde(default = "default_max_job_bytes")]
    pub max_job_bytes: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            republish_interval: default_republish_interval(),
            default_expires_in: default_expires_in(),
            max_expires_in: default_max_expires_in(),
            result_grace: default_result_grace(),
            max_job_bytes: default_max_job_bytes(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_mqtt_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 1883)))
}
fn default_connections_per_second() -> u32 {
    1000
}
fn default_failed_logins_per_minute() -> u32 {
    10
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
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
fn default_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_republish_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_expires_in() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_expires_in() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_result_grace() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_job_bytes() -> usize {
    512 * 1024
}

impl GatewayConfig {}

impl BrokerSection {
    /// Which broker, from `embedded`, `url`, `ca_file` and `credentials`;
    /// the embedded broker's configuration is built here and validated by
    /// [`GatewayFile::check`].
    fn mode(&self) -> Result<BrokerMode, ConfigError> {
        if !self.embedded {
            let url = self
                .url
                .as_deref()
                .ok_or_else(|| invalid("broker.url", "required when broker.embedded = false"))?;
            let url = url
                .parse::<MqttUrl>()
                .map_err(|e| invalid("broker.url", e.to_string()))?;
            self.client.check(Some(&url), CLIENT_DEFAULTS)?;
            return Ok(BrokerMode::External(ExternalBroker {
                url,
                credentials: self.credentials.clone(),
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

impl GatewayFile {
    /// Checks values the types accept but the gateway cannot use, and
    /// combinations of keys, into the checked [`GatewayConfig`].
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    fn check(self) -> Result<GatewayConfig, ConfigError> {
        let mode = self.broker.mode()?;
        if self.broker.client_id.is_empty() {
            return Err(invalid("broker.client_id", "must not be empty"));
        }
        if self.http.max_body_bytes == 0 {
            return Err(invalid("http.max_body_bytes", "must be > 0"));
        }
        if self.http.header_read_timeout < Duration::from_millis(100) {
            return Err(invalid(
                "http.header_read_timeout",
                "must be at least 100ms",
            ));
        }
        if self.http.idle_timeout < Duration::from_secs(1) {
            return Err(invalid("http.idle_timeout", "must be at least 1s"));
        }
        for (key, value) in [
            ("http.max_connections", self.http.max_connections),
            (
                "http.max_connections_per_address",
                self.http.max_connections_per_address,
            ),
            ("http.max_sse_streams", self.http.max_sse_streams),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        match (&self.http.tls_cert, &self.http.tls_key) {
            (Some(_), None) => return Err(invalid("http.tls_key", "required with http.tls_cert")),
            (None, Some(_)) => return Err(invalid("http.tls_cert", "required with http.tls_key")),
            _ => {}
        }
        if let BrokerMode::Embedded(broker) = &mode {
            // The credentials file itself is read when the broker starts.
            broker.validate().map_err(|e| match e {
                kiosk_broker::BrokerError::Config { key, reason } => {
                    invalid(format!("broker.{key}"), reason)
                }
                other => invalid("broker", other.to_string()),
            })?;
        }
        if self.delivery.republish_interval < Duration::from_millis(10) {
            return Err(invalid(
                "delivery.republish_interval",
                "must be at least 10ms",
            ));
        }
        if self.delivery.default_expires_in.is_zero() {
            return Err(invalid("delivery.default_expires_in", "must be > 0"));
        }
        if self.delivery.max_expires_in < self.delivery.default_expires_in {
            return Err(invalid(
                "delivery.max_expires_in",
                "must be >= delivery.default_expires_in",
            ));
        }
        if let Some(url) = &self.webhooks.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "webhooks.url",
                    "must start with http:// or https://",
                ));
            }
            if self.webhooks.secret.is_empty() {
                return Err(invalid(
                    "webhooks.secret",
                    "required when webhooks.url is set (it signs every delivery)",
                ));
            }
        }
        if self.fleet.heartbeat < Duration::from_millis(100) {
            return Err(invalid("fleet.heartbeat", "must be at least 100ms"));
        }
        if self.delivery.max_job_bytes == 0 {
            return Err(invalid("delivery.max_job_bytes", "must be > 0"));
        }
        let BrokerSection {
            client_id, client, ..
        } = self.broker;
        Ok(GatewayConfig {
            http: self.http,
            broker: BrokerSettings {
                client_id,
                client,
                mode,
            },
            store: self.store,
            delivery: self.delivery,
            webhooks: self.webhooks,
            fleet: self.fleet,
            kiosks: self.kiosks,
        })
    }
}

impl Checked for GatewayConfig {
    type File = GatewayFile;
    const ENV_PREFIX: &'static str = ENV_PREFIX;

    fn check(file: GatewayFile) -> Result<Self, ConfigError> {
        file.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [broker]
        credentials = "credentials"
        password = "pw"
        [store]
        path = "/tmp/store"
    "#;

    #[test]
    fn defaults() {
        let c = GatewayConfig::from_toml(MINIMAL).unwrap();
        let b = c.broker.embedded();
        assert!(b.is_some());
        let b = b.unwrap();
        assert_eq!(c.http.listen, default_http_listen());
        assert_eq!(b.listen, default_mqtt_listen());
        assert_eq!(c.broker.client.username(CLIENT_DEFAULTS), "gateway");
        assert_eq!(b.connections_per_second, 1000);
        assert_eq!(b.failed_logins_per_minute, 10);
        assert_eq!(c.fleet.heartbeat, Duration::from_secs(30));
        assert!(c.http.tls_cert.is_none() && b.tls_cert.is_none());
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.http.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.http.max_connections, 2048);
        assert_eq!(c.http.max_connections_per_address, 256);
        assert_eq!(c.http.max_sse_streams, 1024);
        assert!(!format!("{c:?}").contains("pw\""));
    }

    #[test]
    fn env_overrides_named_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, MINIMAL).unwrap();
        let env = [
            ("KIOSK_GATEWAY__HTTP__LISTEN", "0.0.0.0:9000"),
            ("KIOSK_GATEWAY__BROKER__LISTEN", "0.0.0.0:1884"),
            ("KIOSK_GATEWAY__HTTP__HEADER_READ_TIMEOUT", "2s 500ms"),
            ("KIOSK_GATEWAY__HTTP__IDLE_TIMEOUT", "90s"),
            ("KIOSK_GATEWAY__HTTP__MAX_CONNECTIONS", "100"),
            ("KIOSK_GATEWAY__HTTP__MAX_CONNECTIONS_PER_ADDRESS", "10"),
            ("KIOSK_GATEWAY__HTTP__MAX_SSE_STREAMS", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let c = GatewayConfig::load_with_env(&file, Some(env)).unwrap();
        assert_eq!(c.http.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(
            c.broker.embedded().unwrap().listen,
            Some("0.0.0.0:1884".parse().unwrap())
        );
        assert_eq!(c.http.header_read_timeout, Duration::from_millis(2500));
        assert_eq!(c.http.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.http.max_connections, 100);
        assert_eq!(c.http.max_connections_per_address, 10);
        assert_eq!(c.http.max_sse_streams, 5);
    }

    #[test]
    fn tls_keys() {
        let tls = MINIMAL.replace(
            "[broker]",
            "[broker]\nlisten = \"off\"\ntls_cert = \"s.crt\"\ntls_key = \"s.key\"",
        );
        let c = GatewayConfig::from_toml(&tls).unwrap();
        let b = c.broker.embedded().unwrap();
        assert_eq!(b.listen, None);
        assert_eq!(b.tls_listen_addr(), Some("0.0.0.0:8883".parse().unwrap()));

        let ext = MINIMAL.replace(
            "[broker]",
            "[broker]\nembedded = false\nurl = \"mqtts://vps.example.com\"\nca_file = \"ca.crt\"",
        );
        let c = GatewayConfig::from_toml(&ext).unwrap();
        assert_eq!(c.broker.external().unwrap().url.port, 8883);
    }

    #[test]
    fn errors_name_the_key() {
        let ext = MINIMAL.replace("[broker]", "[broker]\nembedded = false");
        let err = GatewayConfig::from_toml(&ext).unwrap_err().to_string();
        assert!(err.contains("broker.url"), "{err}");

        let bad = ext.replace("embedded = false", "embedded = false\nurl = \"http://x\"");
        let err = GatewayConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("broker.url"), "{err}");

        let bad = MINIMAL.replace("credentials = \"credentials\"", "");
        let err = GatewayConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("broker.credentials"), "{err}");

        for (extra, key) in [
            ("listen = \"off\"", "broker.listen"),
            ("tls_cert = \"a\"", "broker.tls_key"),
            (
                "connections_per_second = 0",
                "broker.connections_per_second",
            ),
            (
                "failed_logins_per_minute = 0",
                "broker.failed_logins_per_minute",
            ),
        ] {
            let bad = MINIMAL.replace("[broker]", &format!("[broker]\n{extra}"));
            let err = GatewayConfig::from_toml(&bad).unwrap_err().to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
        for (extra, key) in [
            ("header_read_timeout = \"10ms\"", "http.header_read_timeout"),
            ("idle_timeout = \"0s\"", "http.idle_timeout"),
            ("max_connections = 0", "http.max_connections"),
            (
                "max_connections_per_address = 0",
                "http.max_connections_per_address",
            ),
            ("max_sse_streams = 0", "http.max_sse_streams"),
        ] {
            let bad = MINIMAL.replace("[broker]", &format!("[http]\n{extra}\n[broker]"));
            let err = GatewayConfig::from_toml(&bad).unwrap_err().to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
        let bad = MINIMAL.replace("[broker]", "[http]\ntls_cert = \"a\"\n[broker]");
        let err = GatewayConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("http.tls_key"), "{err}");
    }
}
