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
//!
//! One file per section: `http.rs` (`[http]`), `broker.rs` (`[broker]` as
//! written and its check into [`BrokerMode`]), `store.rs`, `delivery.rs`,
//! `webhooks.rs`, `fleet.rs`; the whole file (`GatewayFile`) and its
//! check are here.

mod broker;
mod delivery;
mod fleet;
mod http;
mod store;
#[cfg(test)]
mod tests;
mod webhooks;

use std::time::Duration;

use kiosk_schemas::KioskId;
use kiosk_schemas::settings::invalid;
pub use kiosk_schemas::settings::{Checked, ConfigError};
use serde::Deserialize;

use broker::BrokerSection;
pub use broker::{BrokerMode, BrokerSettings, CLIENT_DEFAULTS, ExternalBroker};
pub use delivery::DeliveryConfig;
pub use fleet::FleetConfig;
pub use http::HttpConfig;
pub use store::StoreConfig;
pub use webhooks::{EventsConfig, WebhookConfig};

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
    /// `[webhooks]`: events POSTed to the backend.
    pub webhooks: WebhookConfig,
    /// `[events]`: the event log.
    pub events: EventsConfig,
    /// `[fleet]`: kiosk presence.
    pub fleet: FleetConfig,
    /// Kiosks known in addition to the `kiosk` entries of the broker's
    /// credentials file (useful with an external broker). A kiosk that
    /// publishes its status is known from then on as well.
    pub kiosks: Vec<KioskId>,
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
    events: EventsConfig,
    #[serde(default)]
    fleet: FleetConfig,
    #[serde(default)]
    kiosks: Vec<KioskId>,
}

impl GatewayConfig {}

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
        if self.http.rate_limit_per_second > 0 && self.http.rate_limit_burst == 0 {
            return Err(invalid(
                "http.rate_limit_burst",
                "must be at least 1 while http.rate_limit_per_second is not 0",
            ));
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
        if let Some(bad) = self
            .webhooks
            .events
            .iter()
            .find(|p| !crate::events::is_pattern(p))
        {
            return Err(invalid(
                "webhooks.events",
                format!("{bad:?} is not an event type, a family such as \"print_job.*\", or \"*\""),
            ));
        }
        if self.events.retention < Duration::from_secs(60) {
            return Err(invalid("events.retention", "must be at least 1m"));
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
            events: self.events,
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
