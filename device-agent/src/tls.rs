//! TLS to the broker (`mqtts://`): rustls with the `ring` provider, trusting
//! only `broker.ca_file` when it is set (pinning the fleet's private CA, the
//! normal case), or the operating system's trust store otherwise (a broker
//! with a public certificate, e.g. Let's Encrypt). The server's certificate
//! must match the host name (or IP address) of `broker.url`, or the
//! connection is refused. `broker.client_cert` and `broker.client_key`
//! present a client certificate to a broker that asks for one.

use std::sync::Arc;

use rustls::ClientConfig;

pub use kiosk_tls::TlsError;

use crate::config::AgentConfig;

/// The rustls client configuration of the agent's MQTT session
/// ([`kiosk_tls::client_config`] with the `broker.*` files).
///
/// # Errors
/// [`TlsError`] naming `broker.ca_file`, `broker.client_cert` or
/// `broker.client_key` when unusable, or when no CA is available at all.
pub fn client_config(config: &AgentConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let b = &config.broker;
    kiosk_tls::client_config(
        b.ca_file.as_deref(),
        b.client_cert.as_deref().zip(b.client_key.as_deref()),
    )
}
