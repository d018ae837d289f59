//! The fleet's MQTT broker: rumqttd embedded as a library, plus what rumqttd
//! lacks (DESIGN.md, "The VPS process").
//!
//! - [`server`]: [`EmbeddedBroker::start`] runs rumqttd's router, its
//!   loopback listeners and the front door on a dedicated thread and runtime
//!   and returns a [`BrokerHandle`] that can stop it (rumqttd's own `Broker`
//!   cannot be stopped).
//! - [`credentials`]: per-client logins from a credentials file
//!   (`<user>:<role>:<hash>` lines), checked in rumqttd's authentication
//!   handler, reloaded when the file changes.
//! - [`hash`]: fast salted SHA-256 for generated secrets, argon2id for chosen
//!   passwords.
//! - [`acl`]: the topic ACL file (mosquitto style) and its decisions;
//!   [`protocol`]: [`FleetProtocol`], the per-connection codec wrapper of
//!   rumqttd that enforces it on CONNECT (will), SUBSCRIBE and PUBLISH.
//! - `front` (private, see [`server`]): the front door on the public listeners: TLS
//!   ([`tls`]), connection limits and login throttling ([`limits`]), real
//!   CONNACK refusals, revocation of live sessions; [`metrics`] counts
//!   every refusal.
//! - [`fds`]: the open-files limit and how many connections fit in it,
//!   shared with the gateway's HTTP server.
//! - [`external`]: the same credentials and ACL written as another
//!   broker's own (mosquitto, NATS), for `kiosk-gateway broker-config`.
//! - [`config`]: [`BrokerConfig`], loaded from TOML and `KIOSK_BROKER__*`
//!   environment variables.
//!
//! The gateway runs the broker in-process with [`EmbeddedBroker::start`];
//! the `kiosk-broker` binary runs it alone with [`run`].

pub mod acl;
pub mod config;
pub mod credentials;
pub mod error;
pub mod external;
pub mod fds;
mod front;
pub mod hash;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod passwd;
pub mod protocol;
pub mod server;
pub use kiosk_tls as tls;

pub use acl::{Acl, ClientAcl, DEFAULT_ACL, UserRule};
pub use config::BrokerConfig;
pub use credentials::{
    AuthOutcome, Change, CredentialStore, CredentialsError, LineError, RefuseReason, Role,
    UserEntry, delete_user, read_users, set_password,
};
pub use error::BrokerError;
pub use hash::{HashError, generate_secret, hash_chosen_password, hash_generated_secret};
pub use metrics::{AclAction, BrokerMetrics, BrokerStats, Refusal};
pub use protocol::FleetProtocol;
pub use server::{BrokerHandle, EmbeddedBroker};

use tokio_util::sync::CancellationToken;

/// Runs the broker until `shutdown` is cancelled, then stops it and waits
/// until every connection is closed. Used by the `kiosk-broker` binary.
///
/// # Errors
/// As [`EmbeddedBroker::start`]; once started, the broker does not fail.
pub async fn run(config: BrokerConfig, shutdown: CancellationToken) -> Result<(), BrokerError> {
    let broker = EmbeddedBroker::start(config).await?;
    shutdown.cancelled().await;
    broker.shutdown().await;
    Ok(())
}
