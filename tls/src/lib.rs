//! kiosk-tls: TLS configurations (rustls with the `ring` provider) from PEM
//! files: the broker's and the HTTP API's server side, and the client side
//! of every `mqtts://` connection (the agent's, and the gateway's to an
//! external broker).
//!
//! Certificates and keys are PEM files as `openssl` and certbot write them:
//! the certificate file may hold the whole chain (leaf first, as certbot's
//! `fullchain.pem`), the key file one PKCS#8, PKCS#1 (RSA) or SEC1 (EC)
//! private key. Error messages name the file, never its content.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds no usable item.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never its content).
        reason: String,
    },
    /// rustls refused the combination (e.g. key does not match the
    /// certificate, or a CA file without CA certificates).
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The crypto provider of every configuration made here.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file, in file order.
///
/// # Errors
/// [`TlsError::File`] when it cannot be read or holds no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no CERTIFICATE in PEM file"));
    }
    Ok(certs)
}

/// The private key of a PEM file.
///
/// # Errors
/// [`TlsError::File`] when it cannot be read or holds no private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

/// A store holding the certificates of `path` as trust anchors.
///
/// # Errors
/// [`TlsError::File`] when unreadable or empty, [`TlsError::Config`] when
/// no certificate is usable as a trust anchor.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(load_certs(path)?);
    if added == 0 {
        return Err(file_error(path, "no usable CA certificate"));
    }
    Ok(roots)
}

/// The broker's TLS server configuration: `cert` (chain) and `key`; with
/// `client_ca`, clients must present a certificate issued by that CA
/// (mutual TLS) in addition to their MQTT username and password.
///
/// # Errors
/// [`TlsError`] naming the file at fault, or a key that does not match.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_certs(cert)?;
    let key = load_key(key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider)
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// A TLS client configuration that trusts only the certificates of
/// `ca_file` (pinning a private CA), or the operating system's trust store
/// when `None` (a public CA such as Let's Encrypt); with `identity`
/// (certificate, key) it presents a client certificate.
///
/// # Errors
/// [`TlsError`] naming the file at fault.
pub fn client_config(
    ca_file: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca_file {
        Some(path) => load_roots(path)?,
        None => {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(TlsError::Config(
                    "no CA file given and no system CA certificates found".to_owned(),
                ));
            }
            roots
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Config(e.to_string()))?,
    };
    Ok(Arc::new(config))
}
