//! HTTPS for the API (`http.tls_cert`, `http.tls_key`), with rustls and
//! the `ring` provider through [`kiosk_broker::tls`]. TLS for the
//! gateway's own MQTT sessions to an external `mqtts://` broker is
//! [`kiosk_mqtt::ClientSection::tls_config`], the agent's too.
//!
//! The HTTPS server itself is [`crate::http_server`]: TLS handshakes run in
//! each connection's task within `http.header_read_timeout`, never in the
//! accept loop.

use std::sync::Arc;

use crate::config::GatewayConfig;

/// Why a TLS configuration could not be built.
pub type TlsError = kiosk_broker::tls::TlsError;

/// The HTTPS server configuration, when `http.tls_cert` is set.
///
/// # Errors
/// [`TlsError`] naming the certificate or key file at fault.
pub fn https_config(config: &GatewayConfig) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => {
            let server = kiosk_broker::tls::server_config(cert, key, None)?;
            let mut server = Arc::unwrap_or_clone(server);
            server.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Some(Arc::new(server)))
        }
        _ => Ok(None),
    }
}
