//! The connection facts of one MQTT session, and how they become rumqttc's
//! options.

use std::sync::Arc;
use std::time::Duration;

use kiosk_schemas::{MqttUrl, Secret};
use rumqttc::{MqttOptions, NetworkOptions, QoS, SubscribeFilter};

/// Where and how one session connects. Build with [`SessionOptions::new`]
/// or [`SessionOptions::from_url`], then set the fields that differ from
/// the defaults.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// MQTT client id (MQTT 3.1.1 §3.1.3.1).
    pub client_id: String,
    /// Broker host name or address.
    pub host: String,
    /// Broker TCP port.
    pub port: u16,
    /// More brokers of the same cluster, `(host, port)`, tried in turn
    /// after `host:port` whenever a connection attempt fails or a
    /// connection is lost, round the list (all with `tls`). Default none.
    pub alternates: Vec<(String, u16)>,
    /// TLS with this configuration; plain TCP when `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// User name and password (§3.1.3.4, §3.1.3.5); none when `None`.
    pub credentials: Option<(String, Secret)>,
    /// Keep alive (§3.1.2.10). Default 60 s (rumqttc's).
    pub keep_alive: Duration,
    /// Clean session (§3.1.2.4). Default true (rumqttc's).
    pub clean_session: bool,
    /// Acknowledge incoming QoS 1 publishes only through
    /// [`crate::Publisher::ack`] (after their effects are durable), not as
    /// they arrive. Default false.
    pub manual_acks: bool,
    /// Our publishes awaiting PUBACK, at most. Default 100 (rumqttc's).
    pub inflight: u16,
    /// Capacity of rumqttc's request queue (publishes, acknowledgements,
    /// subscriptions waiting for the event loop). Default 10 (rumqttc's).
    pub request_capacity: usize,
    /// Largest packet read or written, in bytes. Default 10 KiB (rumqttc's),
    /// which is too small for print jobs (DESIGN.md pitfalls): set it.
    pub max_packet_bytes: usize,
    /// Disable Nagle's algorithm. Default true: small packets (acks,
    /// results) must not wait for Nagle + delayed ACK.
    pub tcp_nodelay: bool,
    /// First reconnect delay (and the floor of every delay). Default 200 ms.
    pub backoff_min: Duration,
    /// Ceiling of the reconnect delay. Default 10 s.
    pub backoff_max: Duration,
    /// Filters subscribed (QoS 1) after every CONNACK. Default none.
    pub subscriptions: Vec<String>,
    /// On a graceful stop, how long the event loop is still driven so that
    /// final publishes and the DISCONNECT actually go out. Default 500 ms.
    pub disconnect_drain: Duration,
}

/// Why [`SessionOptions::from_url`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// The URL is `mqtts://` and no TLS configuration was given.
    #[error("{url} needs a TLS configuration")]
    TlsMissing {
        /// The broker URL.
        url: String,
    },
    /// The URL is `mqtt://` and a TLS configuration was given.
    #[error("{url} is plain MQTT but a TLS configuration was given")]
    TlsUnexpected {
        /// The broker URL.
        url: String,
    },
}

impl SessionOptions {
    /// Defaults (see each field) for `client_id` at `host:port`, plain TCP.
    pub fn new(client_id: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        SessionOptions {
            client_id: client_id.into(),
            host: host.into(),
            port,
            alternates: Vec::new(),
            tls: None,
            credentials: None,
            keep_alive: Duration::from_secs(60),
            clean_session: true,
            manual_acks: false,
            inflight: 100,
            request_capacity: 10,
            max_packet_bytes: 10 * 1024,
            tcp_nodelay: true,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            subscriptions: Vec::new(),
            disconnect_drain: Duration::from_millis(500),
        }
    }

    /// Defaults for `client_id` at the brokers of `urls` (the first is
    /// tried first, the others are [`SessionOptions::alternates`]), with
    /// `tls` for `mqtts://` URLs.
    ///
    /// # Errors
    /// [`OptionsError`] as [`SessionOptions::from_url`] for any of them.
    ///
    /// # Panics
    /// When `urls` is empty.
    pub fn from_urls(
        client_id: impl Into<String>,
        urls: &[MqttUrl],
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, OptionsError> {
        let (first, rest) = urls.split_first().expect("at least one broker URL");
        for url in rest {
            Self::from_url("", url, tls.clone())?;
        }
        let mut options = Self::from_url(client_id, first, tls)?;
        options.alternates = rest.iter().map(|u| (u.host.clone(), u.port)).collect();
        Ok(options)
    }

    /// Defaults for `client_id` at `url`'s host and port, with `tls` for an
    /// `mqtts://` URL.
    ///
    /// # Errors
    /// [`OptionsError`] when `tls` is given for `mqtt://` or missing for
    /// `mqtts://`.
    pub fn from_url(
        client_id: impl Into<String>,
        url: &MqttUrl,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, OptionsError> {
        match (url.tls, tls.is_some()) {
            (true, false) => Err(OptionsError::TlsMissing {
                url: url.to_string(),
            }),
            (false, true) => Err(OptionsError::TlsUnexpected {
                url: url.to_string(),
            }),
            _ => {
                let mut options = Self::new(client_id, url.host.clone(), url.port);
                options.tls = tls;
                Ok(options)
            }
        }
    }

    /// Every broker, `host:port` first, then the alternates.
    pub(crate) fn brokers(&self) -> Vec<(String, u16)> {
        std::iter::once((self.host.clone(), self.port))
            .chain(self.alternates.iter().cloned())
            .collect()
    }

    pub(crate) fn mqtt_options(&self) -> MqttOptions {
        self.mqtt_options_at(&self.host, self.port)
    }

    /// rumqttc's options for the broker at `host:port`.
    pub(crate) fn mqtt_options_at(&self, host: &str, port: u16) -> MqttOptions {
        let mut opts = MqttOptions::new(&self.client_id, host, port);
        if let Some((user, password)) = &self.credentials {
            opts.set_credentials(user, password.expose());
        }
        if let Some(tls) = &self.tls {
            opts.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        opts.set_keep_alive(self.keep_alive)
            .set_clean_session(self.clean_session)
            .set_manual_acks(self.manual_acks)
            .set_inflight(self.inflight)
            .set_max_packet_size(self.max_packet_bytes, self.max_packet_bytes);
        opts
    }

    pub(crate) fn network_options(&self) -> NetworkOptions {
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(self.tcp_nodelay);
        network
    }

    pub(crate) fn filters(&self) -> Vec<SubscribeFilter> {
        self.subscriptions
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_must_match_the_url() {
        let plain: MqttUrl = "mqtt://broker.example:1884".parse().unwrap();
        let secure: MqttUrl = "mqtts://broker.example".parse().unwrap();
        let o = SessionOptions::from_url("k1", &plain, None).unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.tls.is_none()),
            ("broker.example", 1884, true)
        );
        assert!(matches!(
            SessionOptions::from_url("k1", &secure, None),
            Err(OptionsError::TlsMissing { .. })
        ));
    }
}
