//! kiosk-mqtt: the fleet's one MQTT session layer over rumqttc (MQTT 3.1.1),
//! shared by the agent and the gateway the way drogue-cloud's
//! `endpoint-common` serves every endpoint.
//!
//! - [`SessionOptions`]: the connection facts (broker, client id,
//!   credentials, keep alive, clean session, manual acks, windows, packet
//!   size, backoff, subscriptions).
//! - [`Session`]: the event loop task. It reconnects with exponential
//!   backoff and jitter (rumqttc would retry at once, DESIGN.md pitfalls),
//!   subscribes on every CONNACK, counts connections and tags each incoming
//!   publish with the one it arrived on ([`Incoming`]), and forwards them
//!   into a bounded channel. [`SessionHooks`] let the owner replace the last
//!   will before each connection attempt, publish on each CONNACK and choose
//!   how to stop ([`Stop`]).
//! - [`Publisher`]: a cheap-to-clone handle with one outcome convention:
//!   [`Publisher::try_publish`] and [`Publisher::publish`] return
//!   `Result<(), PublishError>`, and a [`PublishError`] hands the message
//!   back; [`Publisher::ack`] answers an [`AckOutcome`].
//! - [`ClientSection`]: the `[broker]` keys every client reads the same
//!   way (user name, password, keep alive, reconnect delays, TLS files).
//! - [`next_batch`]: the batching intake loop (wait for one, take what else
//!   is queued) of the gateway's ingest and the agent's intake.

mod batch;
mod options;
mod publisher;
mod session;
mod settings;

pub use batch::next_batch;
pub use options::{OptionsError, SessionOptions};
pub use publisher::{AckOutcome, PublishError, PublishFailure, Publisher};
pub use session::{Incoming, Session, SessionHooks, Stop};
pub use settings::{ClientDefaults, ClientSection};

/// rumqttc types that appear in this crate's API.
pub use rumqttc::{LastWill, Publish, QoS};
