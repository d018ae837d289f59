//! Broker configuration: listeners (plain and TLS), credentials and ACL
//! files, limits and rumqttd's in-memory log sizing, with defaults for
//! everything but the credentials file.
//!
//! As a standalone program the configuration is a TOML file whose top-level
//! keys are [`BrokerConfig`]'s fields, overridden by environment variables
//! `KIOSK_BROKER__<FIELD>` (e.g. `KIOSK_BROKER__LISTEN=0.0.0.0:1883`); see
//! [`BrokerConfig::load`]. Embedded in the gateway it is a section of the
//! gateway's configuration.
//!
//! ```toml
//! listen = "127.0.0.1:1883"          # plain MQTT; "off" disables it
//! tls_cert = "/etc/kiosk-broker/server.crt"
//! tls_key = "/etc/kiosk-broker/server.key"
//! tls_listen = "0.0.0.0:8883"         # the default when tls_cert is set
//! # tls_client_ca = "/etc/kiosk-broker/clients-ca.crt"
//! credentials = "/etc/kiosk-broker/credentials"
//! # acl = "/etc/kiosk-broker/acl"     # default: the built-in policy
//! max_payload_bytes = 1048576
//! max_connections = 20000
//! connections_per_second = 1000
//! failed_logins_per_minute = 10       # per (address, user name)
//! failed_logins_per_address_per_minute = 100
//! connect_timeout = "5s"
//! idle_timeout = "10m"                # for clients with keep alive 0
//! gateway_client_ids = ["kiosk-gateway", "kiosk-gateway-pub"]
//! max_inflight = 100
//! max_segment_size = 262144
//! max_segment_count = 4
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::BrokerError;

/// Prefix of the environment variables that override the config file.
pub const ENV_PREFIX: &str = "KIOSK_BROKER";
/// Separator between the prefix and the field name of those variables.
pub const ENV_SEPARATOR: &str = "__";

/// rumqttd refuses (panics on) segments below 1 KiB.
const MIN_SEGMENT_SIZE: usize = 1024;

/// How to run the broker.
///
/// rumqttd keeps one log per subscription filter (and per topic published to
/// without any matching filter) **in memory**: up to `max_segment_count`
/// segments of `max_segment_size` bytes each. The log is what lets a
/// subscriber that fell behind, or reconnected with a persistent session,
/// catch up. When it is full rumqttd drops the oldest segment silently, and a
/// log is never freed while the broker runs, so the worst case is about
/// `filters x max_segment_size x max_segment_count` bytes: with 10,000 kiosks
/// each subscribed to a few filters, even 1 MiB per filter adds up to tens of
/// GiB. The defaults (256 KiB x 4, about 1 MiB per filter) favour memory over
/// depth, which is safe because the fleet never relies on the broker to keep
/// messages: print jobs and credits are acknowledged at application level
/// from durable stores and re-sent (DESIGN.md, "Delivery").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address of the plain-TCP MQTT listener, or `None` (`"off"` in files
    /// and environment) for none. Port 0 picks a free port; read it back
    /// with [`BrokerHandle::plain_addr`](crate::BrokerHandle::plain_addr).
    /// Default `127.0.0.1:1883`: with TLS on the internet, keep plain MQTT
    /// on loopback (for local tools) or off.
    #[serde(default = "default_listen", deserialize_with = "listen_or_off")]
    pub listen: Option<SocketAddr>,
    /// Address of the MQTT-over-TLS listener. Default `0.0.0.0:8883` when
    /// `tls_cert` is set; setting it without `tls_cert` is an error.
    #[serde(default)]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain of the TLS listener (leaf first, e.g.
    /// certbot's `fullchain.pem`). Enables TLS; needs `tls_key`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): when set, TLS clients must present a
    /// certificate issued by it (mutual TLS), on top of their MQTT login.
    #[serde(default)]
    pub tls_client_ca: Option<PathBuf>,
    /// Topic ACL file (format in [`crate::acl`]). Default: the built-in
    /// policy [`DEFAULT_ACL`](crate::acl::DEFAULT_ACL), also shipped as
    /// `examples/acl`.
    #[serde(default)]
    pub acl: Option<PathBuf>,
    /// Path of the credentials file (format in [`crate::credentials`]).
    /// Required: there is no default, so a broker never starts against a file
    /// nobody meant.
    pub credentials: PathBuf,
    /// Largest accepted MQTT packet, in bytes; a client sending a bigger one
    /// is disconnected. Maps to rumqttd `max_payload_size`. Default 1 MiB.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// Most simultaneous client connections on the public listeners; a
    /// connection beyond it is closed right after accept. Default 20,000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// File descriptors the host process keeps for itself beyond the
    /// broker's own reserve, e.g. the gateway's HTTP connections: the
    /// broker lowers `max_connections` to what fits in the open-files limit
    /// after them (see [`crate::fds`]). Not a configuration key; 0 for the
    /// standalone broker.
    #[serde(skip)]
    pub reserved_fds: u64,
    /// New connections admitted per second, with a burst of one second's
    /// worth; later ones wait (up to `connect_timeout`) or are closed, so a
    /// whole fleet reconnecting after a restart is let in at this pace.
    /// Default 1,000.
    #[serde(default = "default_connections_per_second")]
    pub connections_per_second: u32,
    /// Failed logins allowed per (client address, user name) and minute
    /// (IPv6: per /64); beyond, logins of that user name from that address
    /// are refused with CONNACK 0x05 without checking the password, until
    /// tokens come back at this rate. Other users behind the same address
    /// (a kiosk on the restaurant's Wi-Fi) are not affected. Default 10.
    #[serde(default = "default_failed_logins_per_minute")]
    pub failed_logins_per_minute: u32,
    /// Failed logins allowed per client address and minute, all user names
    /// together: the cap on guessing across many user names. Default 100.
    #[serde(default = "default_failed_logins_per_address_per_minute")]
    pub failed_logins_per_address_per_minute: u32,
    /// How long a client that connected with keep alive 0 ("no keep alive",
    /// allowed by MQTT-3.1.2-10) may stay silent before the broker closes
    /// its connection (the server-side limit MQTT 3.1.1 section 3.1.2.10
    /// leaves to the server). Clients with a keep alive are closed after
    /// 1.5 times their own. Default 10 min.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Client ids reserved to users of role `gateway` (the gateway's
    /// `broker.client_id` and its producer `<client_id>-pub`): nobody else
    /// may use them, so no one can take over the gateway's sessions.
    /// Default `["kiosk-gateway", "kiosk-gateway-pub"]`; the embedded broker
    /// takes them from the gateway's `broker.client_id`.
    #[serde(default = "default_gateway_client_ids")]
    pub gateway_client_ids: Vec<String>,
    /// How long a new connection has to finish its TLS handshake and send
    /// its CONNECT packet before it is closed (guards against idle sockets
    /// filling the broker), and the longest wait in the connection-rate
    /// queue. Sent to rumqttd in ms as a `u16`, so values above 65.535 s are
    /// clamped there. Default 5 s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Most packets read from one connection in a batch before handing them
    /// to the router (rumqttd `max_inflight_count`). Default 100.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// Size of one segment of a filter's in-memory log, in bytes (at least
    /// 1024). A segment holds at least one message whatever its size.
    /// Default 256 KiB.
    #[serde(default = "default_max_segment_size")]
    pub max_segment_size: usize,
    /// Segments kept per filter log before the oldest is dropped (at least 1).
    /// Default 4.
    #[serde(default = "default_max_segment_count")]
    pub max_segment_count: usize,
}

fn default_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 1883)))
}
/// Default TLS listener when `tls_cert` is set.
pub const DEFAULT_TLS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8883);
fn default_connections_per_second() -> u32 {
    1000
}
fn default_failed_logins_per_minute() -> u32 {
    10
}
fn default_failed_logins_per_address_per_minute() -> u32 {
    100
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(600)
}
/// The gateway's default client ids: `kiosk-gateway` and its producer's.
pub fn default_gateway_client_ids() -> Vec<String> {
    vec!["kiosk-gateway".to_owned(), "kiosk-gateway-pub".to_owned()]
}

/// Deserializes a listen address, or `None` from `"off"` or `""`: for
/// listeners that can be disabled.
///
/// # Errors
/// A message naming the value when it is neither.
pub fn listen_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid listen address {text:?}: expected host:port or \"off\""
        ))
    })
}
fn default_max_payload_bytes() -> usize {
    1024 * 1024
}
fn default_max_connections() -> usize {
    20_000
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_inflight() -> usize {
    100
}
fn default_max_segment_size() -> usize {
    256 * 1024
}
fn default_max_segment_count() -> usize {
    4
}

impl BrokerConfig {
    /// The default configuration with the given credentials file.
    pub fn new(credentials: impl Into<PathBuf>) -> Self {
        BrokerConfig {
            listen: default_listen(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            acl: None,
            credentials: credentials.into(),
            max_payload_bytes: default_max_payload_bytes(),
            max_connections: default_max_connections(),
            reserved_fds: 0,
            connections_per_second: default_connections_per_second(),
            failed_logins_per_minute: default_failed_logins_per_minute(),
            failed_logins_per_address_per_minute: default_failed_logins_per_address_per_minute(),
            idle_timeout: default_idle_timeout(),
            gateway_client_ids: default_gateway_client_ids(),
            connect_timeout: default_connect_timeout(),
            max_inflight: default_max_inflight(),
            max_segment_size: default_max_segment_size(),
            max_segment_count: default_max_segment_count(),
        }
    }

    /// Loads the configuration of the standalone broker: the TOML file at
    /// `file` if given, then `KIOSK_BROKER__<FIELD>` environment variables,
    /// then [`BrokerConfig::validate`].
    ///
    /// # Errors
    /// [`BrokerError::Load`] when the file is missing or unreadable, a key is
    /// unknown, a value has the wrong type or `credentials` is missing (the
    /// message names the key); [`BrokerError::Config`] from validation.
    pub fn load(file: Option<&Path>) -> Result<Self, BrokerError> {
        Self::load_with(file, config::Environment::with_prefix(ENV_PREFIX))
    }

    fn load_with(file: Option<&Path>, env: config::Environment) -> Result<Self, BrokerError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let config: BrokerConfig = builder
            .add_source(env.separator(ENV_SEPARATOR))
            .build()?
            .try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that serde cannot: non-zero limits and rumqttd's
    /// own lower bounds.
    ///
    /// # Errors
    /// [`BrokerError::Config`] naming the first invalid key.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let invalid = |key: &'static str, reason: &str| {
            Err(BrokerError::Config {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.credentials.as_os_str().is_empty() {
            return invalid("credentials", "must be the path of the credentials file");
        }
        if self.max_payload_bytes == 0 {
            return invalid("max_payload_bytes", "must be at least 1");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.connections_per_second == 0 {
            return invalid("connections_per_second", "must be at least 1");
        }
        if self.failed_logins_per_minute == 0 {
            return invalid("failed_logins_per_minute", "must be at least 1");
        }
        if self.failed_logins_per_address_per_minute == 0 {
            return invalid("failed_logins_per_address_per_minute", "must be at least 1");
        }
        if self.idle_timeout < Duration::from_secs(2) {
            return invalid("idle_timeout", "must be at least 2s");
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return invalid("tls_key", "required with tls_cert"),
            (None, Some(_)) => return invalid("tls_cert", "required with tls_key"),
            (None, None) if self.tls_listen.is_some() => {
                return invalid("tls_listen", "needs tls_cert and tls_key");
            }
            (None, None) if self.tls_client_ca.is_some() => {
                return invalid("tls_client_ca", "needs tls_cert and tls_key");
            }
            _ => {}
        }
        if self.listen.is_none() && self.tls_cert.is_none() {
            return invalid(
                "listen",
                "is off and no TLS listener is configured (tls_cert, tls_key): the broker would accept no clients",
            );
        }
        if self.connect_timeout < Duration::from_millis(1) {
            return invalid("connect_timeout", "must be at least 1ms");
        }
        if self.max_inflight == 0 {
            return invalid("max_inflight", "must be at least 1");
        }
        if self.max_segment_size < MIN_SEGMENT_SIZE {
            return invalid("max_segment_size", "must be at least 1024 (bytes)");
        }
        if self.max_segment_count == 0 {
            return invalid("max_segment_count", "must be at least 1");
        }
        Ok(())
    }

    /// The TLS listener's address: `tls_listen`, or [`DEFAULT_TLS_LISTEN`],
    /// when a certificate is configured; `None` without TLS.
    pub fn tls_listen_addr(&self) -> Option<SocketAddr> {
        self.tls_cert
            .as_ref()
            .map(|_| self.tls_listen.unwrap_or(DEFAULT_TLS_LISTEN))
    }

    /// The keep alive, in seconds, the front door gives rumqttd for a client
    /// that asked for none: rumqttd closes a connection silent for 1.5 times
    /// its keep alive, so this is `idle_timeout / 1.5`, at least 1.
    pub(crate) fn zero_keep_alive_secs(&self) -> u16 {
        let secs = (self.idle_timeout.as_secs_f64() / 1.5).floor();
        u16::try_from(secs as u64).unwrap_or(u16::MAX).max(1)
    }

    /// [`BrokerConfig::connect_timeout`] in ms, clamped to rumqttd's `u16`.
    pub(crate) fn connect_timeout_ms(&self) -> u16 {
        u16::try_from(self.connect_timeout.as_millis()).unwrap_or(u16::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> config::Environment {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        config::Environment::with_prefix(ENV_PREFIX).source(Some(map))
    }

    fn toml(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn defaults() {
        let (_dir, path) = toml("credentials = \"/etc/creds\"\n");
        let config = BrokerConfig::load_with(Some(&path), env(&[])).unwrap();
        assert_eq!(config.listen, Some("127.0.0.1:1883".parse().unwrap()));
        assert_eq!(config.tls_listen_addr(), None);
        assert_eq!(config.acl, None);
        assert_eq!(config.connections_per_second, 1000);
        assert_eq!(config.failed_logins_per_minute, 10);
        assert_eq!(config.credentials, PathBuf::from("/etc/creds"));
        assert_eq!(config.max_payload_bytes, 1_048_576);
        assert_eq!(config.max_connections, 20_000);
        assert_eq!(config.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.max_inflight, 100);
        assert_eq!(config.max_segment_size, 262_144);
        assert_eq!(config.max_segment_count, 4);
        assert_eq!(config.connect_timeout_ms(), 5000);
    }

    #[test]
    fn file_then_environment() {
        let (_dir, path) = toml(
            "listen = \"0.0.0.0:8883\"\ncredentials = \"c\"\nconnect_timeout = \"1m 30s\"\nmax_connections = 5\n",
        );
        let config = BrokerConfig::load_with(
            Some(&path),
            env(&[
                ("KIOSK_BROKER__MAX_CONNECTIONS", "7"),
                ("KIOSK_BROKER__LISTEN", "127.0.0.1:0"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(config.max_connections, 7);
        assert_eq!(config.connect_timeout, Duration::from_secs(90));
        assert_eq!(config.connect_timeout_ms(), u16::MAX);

        let config =
            BrokerConfig::load_with(None, env(&[("KIOSK_BROKER__CREDENTIALS", "/x")])).unwrap();
        assert_eq!(config.credentials, PathBuf::from("/x"));
    }

    #[test]
    fn tls_and_listener_keys() {
        let (_dir, path) = toml(
            "credentials = \"c\"\nlisten = \"off\"\ntls_cert = \"s.crt\"\ntls_key = \"s.key\"\n",
        );
        let config = BrokerConfig::load_with(Some(&path), env(&[])).unwrap();
        assert_eq!(config.listen, None);
        assert_eq!(config.tls_listen_addr(), Some(DEFAULT_TLS_LISTEN));
        let config = BrokerConfig::load_with(
            Some(&path),
            env(&[
                ("KIOSK_BROKER__TLS_LISTEN", "127.0.0.1:0"),
                ("KIOSK_BROKER__LISTEN", "127.0.0.1:1884"),
                ("KIOSK_BROKER__ACL", "/etc/acl"),
                ("KIOSK_BROKER__CONNECTIONS_PER_SECOND", "50"),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.tls_listen_addr(),
            Some("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(config.listen, Some("127.0.0.1:1884".parse().unwrap()));
        assert_eq!(config.acl, Some(PathBuf::from("/etc/acl")));
        assert_eq!(config.connections_per_second, 50);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("max_connections = 5\n", "credentials"),
            (
                "credentials = \"c\"\nmax_conections = 5\n",
                "max_conections",
            ),
            ("credentials = \"c\"\nlisten = \"nowhere\"\n", "listen"),
            (
                "credentials = \"c\"\nconnect_timeout = \"soon\"\n",
                "connect_timeout",
            ),
            (
                "credentials = \"c\"\nmax_connections = 0\n",
                "max_connections",
            ),
            (
                "credentials = \"c\"\nmax_segment_size = 100\n",
                "max_segment_size",
            ),
            (
                "credentials = \"c\"\nmax_segment_count = 0\n",
                "max_segment_count",
            ),
            (
                "credentials = \"c\"\nconnect_timeout = \"0s\"\n",
                "connect_timeout",
            ),
            ("credentials = \"c\"\nlisten = \"off\"\n", "listen"),
            ("credentials = \"c\"\nlisten = \"1883\"\n", "listen"),
            ("credentials = \"c\"\ntls_cert = \"a\"\n", "tls_key"),
            ("credentials = \"c\"\ntls_key = \"a\"\n", "tls_cert"),
            (
                "credentials = \"c\"\ntls_listen = \"0.0.0.0:8883\"\n",
                "tls_listen",
            ),
            (
                "credentials = \"c\"\ntls_client_ca = \"a\"\n",
                "tls_client_ca",
            ),
            (
                "credentials = \"c\"\nconnections_per_second = 0\n",
                "connections_per_second",
            ),
            (
                "credentials = \"c\"\nfailed_logins_per_minute = 0\n",
                "failed_logins_per_minute",
            ),
        ];
        for (text, key) in cases {
            let (_dir, path) = toml(text);
            let err = BrokerConfig::load_with(Some(&path), env(&[])).unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        let err = BrokerConfig::load_with(
            None,
            env(&[
                ("KIOSK_BROKER__CREDENTIALS", "c"),
                ("KIOSK_BROKER__MAX_INFLIGHT", "many"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_inflight"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = BrokerConfig::load_with(Some(Path::new("/nonexistent/broker.toml")), env(&[]))
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/broker.toml"),
            "{err}"
        );
    }
}
