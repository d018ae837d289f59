//! The gateway's MQTT client sessions ([`kiosk_mqtt::Session`]), each polled
//! by one task that never blocks on anything but the network.
//!
//! The gateway opens two connections with its credentials:
//!
//! - the **consumer** (`<client_id>`, `clean_session = false`, manual
//!   acknowledgements) subscribes to kiosk statuses, results and print
//!   topics and never publishes: a result is acknowledged (PUBACK) only after
//!   it is flushed to the store, by the ingest task;
//! - the **producer** (`<client_id>-pub`, clean session) publishes jobs and
//!   never subscribes.
//!
//! Why two: rumqttd holds back its PUBACKs to a client while its own window
//! of 100 unacknowledged publishes to that client is full, and rumqttc
//! stops reading its request queue (where our PUBACKs wait, behind our
//! publishes) while its own window is full. One connection that both
//! publishes and consumes heavily can therefore deadlock under load (seen
//! here with 2,000 jobs in a burst). A connection that only consumes, and
//! one that only produces, cannot.
//!
//! Both reconnect with exponential backoff and jitter (rumqttc would retry
//! at once, DESIGN.md pitfalls); the consumer subscribes on every connect.
//! Publishing never waits: [`MqttLink::try_publish`] enqueues or fails, and
//! a job that could not be enqueued stays `queued` for the next republish.

use std::sync::Arc;
use std::time::Duration;

use kiosk_mqtt::{AckOutcome, Incoming, PublishError, Publisher, Session, SessionOptions};
use kiosk_schemas::{Topic, TopicKind};

/// Filters the consumer subscribes to (QoS 1).
pub const SUBSCRIPTIONS: [TopicKind; 5] = [
    TopicKind::Status,
    TopicKind::PrintResult,
    TopicKind::Print,
    TopicKind::Cash,
    TopicKind::CashState,
];

/// Capacity of rumqttc's request queues (publishes, acks).
const REQUEST_CAPACITY: usize = 4096;
/// Publishes of the producer awaiting PUBACK.
const PRODUCER_INFLIGHT: u16 = 1000;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// The brokers, `(host, port)`, at least one: both sessions start with
    /// the first and move to the next whenever a connection fails
    /// ([`SessionOptions::alternates`]).
    pub brokers: Vec<(String, u16)>,
    /// Client id of the consumer; the producer appends `-pub`.
    pub client_id: String,
    /// Username.
    pub username: String,
    /// Password.
    pub password: kiosk_schemas::Secret,
    /// Keep alive.
    pub keep_alive: Duration,
    /// First reconnect delay and its ceiling (`broker.reconnect_min`,
    /// `broker.reconnect_max`).
    pub backoff: (Duration, Duration),
    /// TLS (`mqtts://`) with this configuration; plain TCP when `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Largest packet accepted or sent, in bytes.
    pub max_packet_bytes: usize,
}

/// Handle for publishing (on the producer) and acknowledging (on the
/// consumer); cheap to clone.
#[derive(Debug, Clone)]
pub struct MqttLink {
    producer: Publisher,
    consumer: Publisher,
}

impl MqttLink {
    /// Enqueues a QoS 1 publish on the producer without waiting.
    ///
    /// # Errors
    /// [`PublishError`] (with the message) when the request queue is full
    /// or the session has ended; the caller's durable state decides whether
    /// to retry.
    pub fn try_publish(
        &self,
        topic: &Topic,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), PublishError> {
        self.producer.try_publish(topic, retain, payload)
    }

    /// Acknowledges an incoming QoS 1 publish on the consumer (after its
    /// effects are durable), waiting for room in the request queue; a
    /// message from an earlier connection is not acknowledged
    /// ([`Publisher::ack`]). The broker redelivers it if it kept the
    /// session.
    pub async fn ack(&self, incoming: &Incoming) -> AckOutcome {
        self.consumer.ack(incoming).await
    }

    /// True while both sessions are connected.
    pub fn is_connected(&self) -> bool {
        self.producer.is_connected() && self.consumer.is_connected()
    }

    /// `host:port` of the broker the consumer session is on (the last one
    /// while reconnecting); `None` before its first connection.
    pub fn broker(&self) -> Option<String> {
        self.consumer.broker()
    }
}

fn options(settings: &MqttSettings, client_id: String) -> SessionOptions {
    let (host, port) = settings.brokers.first().cloned().unwrap_or_default();
    let mut opts = SessionOptions::new(client_id, host, port);
    opts.alternates = settings.brokers.iter().skip(1).cloned().collect();
    opts.tls = settings.tls.clone();
    opts.credentials = Some((settings.username.clone(), settings.password.clone()));
    opts.keep_alive = settings.keep_alive;
    opts.max_packet_bytes = settings.max_packet_bytes;
    opts.request_capacity = REQUEST_CAPACITY;
    (opts.backoff_min, opts.backoff_max) = settings.backoff;
    opts
}

/// Creates both sessions and the link over them: run the consumer with
/// [`Session::run`] (its publishes go to the ingest task) and the producer
/// with [`Session::run_publisher`].
pub fn connect(settings: &MqttSettings) -> (MqttLink, Session, Session) {
    let mut consumer = options(settings, settings.client_id.clone());
    consumer.clean_session = false;
    consumer.manual_acks = true;
    consumer.subscriptions = SUBSCRIPTIONS
        .iter()
        .map(|k| k.all_kiosks_filter())
        .collect();
    let mut producer = options(settings, format!("{}-pub", settings.client_id));
    producer.clean_session = true;
    producer.inflight = PRODUCER_INFLIGHT;
    let (consumer_publisher, consumer_session) = Session::new(&consumer, ());
    let (producer_publisher, producer_session) = Session::new(&producer, ());
    let link = MqttLink {
        producer: producer_publisher,
        consumer: consumer_publisher,
    };
    (link, consumer_session, producer_session)
}
