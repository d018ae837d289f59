//! Errors of the broker layer.
//!
//! Messages include their cause, so causes are not also chained as
//! `source()` (that would print them twice in `anyhow` reports).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::CredentialsError;

/// Why the broker could not be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The configuration file or environment could not be read or
    /// deserialized; the message names the file or key.
    #[error("cannot load broker config: {0}")]
    Load(config::ConfigError),
    /// A configuration value is out of range.
    #[error("invalid broker config: {key}: {reason}")]
    Config {
        /// The offending key, e.g. `max_segment_size`.
        key: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The credentials file is missing or invalid.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The ACL file is missing or invalid (names file and line).
    #[error(transparent)]
    Acl(#[from] crate::acl::AclFileError),
    /// The TLS certificate, key or client CA cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The listener address cannot be bound (in use, not local, no
    /// permission).
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address asked for (after resolving port 0).
        addr: SocketAddr,
        /// The I/O error.
        error: io::Error,
    },
    /// The server thread or its runtime cannot be created.
    #[error("cannot start the broker thread: {0}")]
    Thread(io::Error),
    /// The server thread did not report that it listens in time, or died
    /// before doing so.
    #[error("broker did not start listening on {addr} within {timeout:?}")]
    StartupTimeout {
        /// The listener address.
        addr: SocketAddr,
        /// How long [`EmbeddedBroker::start`](crate::EmbeddedBroker::start)
        /// waited.
        timeout: Duration,
    },
}

impl From<config::ConfigError> for BrokerError {
    fn from(error: config::ConfigError) -> Self {
        BrokerError::Load(error)
    }
}
