//! TLS to the broker (`mqtts://`): rustls with the `ring` provider, trusting
//! only `broker.ca_file` when it is set (pinning the fleet's private CA, the
//! normal case), or the operating system's trust store otherwise (a broker
//! with a public certificate, e.g. Let's Encrypt). The server's certificate
//! must match the host name (or IP address) of `broker.url`, or the
//! connection is refused. `broker.client_cert` and `broker.client_key`
//! present a client certificate to a broker that asks for one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::AgentConfig;

/// Why the TLS configuration could not be built. Names the file, never its
/// content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds no usable item.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the combination, or no trust anchor was found.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no CERTIFICATE in PEM file"));
    }
    Ok(certs)
}

/// The rustls client configuration of the agent's MQTT session.
///
/// # Errors
/// [`TlsError`] naming `broker.ca_file`, `broker.client_cert` or
/// `broker.client_key` when unusable, or when no CA is available at all.
pub fn client_config(config: &AgentConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match &config.broker.ca_file {
        Some(path) => {
            let (added, _) = roots.add_parsable_certificates(certs(path)?);
            if added == 0 {
                return Err(file_error(path, "no usable CA certificate"));
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                return Err(TlsError::Config(
                    "broker.ca_file is not set and the system has no CA certificates".to_owned(),
                ));
            }
        }
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
    let tls = match (&config.broker.client_cert, &config.broker.client_key) {
        (Some(cert), Some(key)) => {
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
            builder
                .with_client_auth_cert(certs(cert)?, key)
                .map_err(|e| TlsError::Config(e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(tls))
}

/// rumqttc's TLS transport with [`client_config`].
///
/// # Errors
/// As [`client_config`].
pub fn transport(config: &AgentConfig) -> Result<rumqttc::Transport, TlsError> {
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(client_config(config)?),
    ))
}
