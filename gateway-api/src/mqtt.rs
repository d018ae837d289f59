//! The gateway's MQTT client sessions (rumqttc), each polled by one task
//! that never blocks on anything but the network.
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
//! at once, DESIGN.md pitfalls); the consumer subscribes on every connect. Publishing never waits:
//! [`MqttLink::publish`] enqueues or fails, and a job that could not be
//! enqueued stays `queued` for the next republish.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kiosk_schemas::backoff::Backoff;
use kiosk_schemas::{Topic, TopicKind};
use rand::Rng as _;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id of the consumer; the producer appends `-pub`.
    pub client_id: String,
    /// Username.
    pub username: String,
    /// Password.
    pub password: kiosk_schemas::Secret,
    /// Keep alive.
    pub keep_alive: Duration,
    /// TLS (`mqtts://`) with this configuration; plain TCP when `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Largest packet accepted or sent, in bytes.
    pub max_packet_bytes: usize,
}

/// Why a publish was not enqueued.
#[derive(Debug, thiserror::Error)]
#[error("MQTT publish to {topic} not enqueued: {reason}")]
pub struct PublishError {
    topic: String,
    reason: String,
}

/// Handle for publishing and acknowledging; cheap to clone.
#[derive(Clone)]
pub struct MqttLink {
    producer: AsyncClient,
    consumer: AsyncClient,
    consumer_connection: Arc<AtomicU64>,
    producer_up: Arc<AtomicBool>,
    consumer_up: Arc<AtomicBool>,
}

impl MqttLink {
    /// Enqueues a QoS 1 publish on the producer without waiting.
    ///
    /// # Errors
    /// [`PublishError`] when the request queue is full or the event loop is
    /// gone; the caller's durable state decides whether to retry.
    pub fn publish(
        &self,
        topic: &Topic,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), PublishError> {
        self.producer
            .try_publish(topic.as_str(), QoS::AtLeastOnce, retain, payload)
            .map_err(|e| PublishError {
                topic: topic.to_string(),
                reason: e.to_string(),
            })
    }

    /// Acknowledges an incoming QoS 1 publish (after its effects are
    /// durable). Acknowledgements must not be lost and must go out in
    /// arrival order: rumqttd disconnects a client that acknowledges out of
    /// order, and stops sending once 100 are unacknowledged.
    ///
    /// A message that arrived on an earlier connection is not acknowledged:
    /// that would be an unsolicited PUBACK, for which rumqttd drops the
    /// client. The broker redelivers it if it kept the session.
    pub async fn ack(&self, incoming: &Incoming) {
        if incoming.connection != self.consumer_connection.load(Ordering::SeqCst) {
            tracing::debug!(topic = %incoming.publish.topic, "not acknowledging a message from an earlier connection");
            return;
        }
        if let Err(e) = self.consumer.ack(&incoming.publish).await {
            tracing::debug!(error = %e, topic = %incoming.publish.topic, "ack not enqueued: session ended");
        }
    }

    /// True while both sessions are connected.
    pub fn is_connected(&self) -> bool {
        self.producer_up.load(Ordering::Relaxed) && self.consumer_up.load(Ordering::Relaxed)
    }
}

/// Which of the two connections a [`Session`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Subscribes and acknowledges; never publishes.
    Consumer,
    /// Publishes; never subscribes.
    Producer,
}

fn session(
    settings: &MqttSettings,
    role: Role,
) -> (AsyncClient, Session, Arc<AtomicBool>, Arc<AtomicU64>) {
    let client_id = match role {
        Role::Consumer => settings.client_id.clone(),
        Role::Producer => format!("{}-pub", settings.client_id),
    };
    let mut opts = MqttOptions::new(client_id, &settings.host, settings.port);
    opts.set_credentials(&settings.username, settings.password.expose())
        .set_keep_alive(settings.keep_alive)
        .set_max_packet_size(settings.max_packet_bytes, settings.max_packet_bytes);
    if let Some(tls) = &settings.tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    match role {
        Role::Consumer => opts.set_clean_session(false).set_manual_acks(true),
        Role::Producer => opts.set_clean_session(true).set_inflight(PRODUCER_INFLIGHT),
    };
    let (client, mut eventloop) = AsyncClient::new(opts, REQUEST_CAPACITY);
    // Small packets (acks) must not wait for Nagle + delayed ACK.
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let up = Arc::new(AtomicBool::new(false));
    let generation = Arc::new(AtomicU64::new(0));
    let session = Session {
        connection: generation.clone(),
        role,
        client: client.clone(),
        eventloop,
        connected: up.clone(),
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
    };
    (client, session, up, generation)
}

/// Creates both clients; run the returned sessions (consumer, producer).
pub fn connect(settings: &MqttSettings) -> (MqttLink, Session, Session) {
    let (consumer, consumer_session, consumer_up, consumer_connection) =
        session(settings, Role::Consumer);
    let (producer, producer_session, producer_up, _) = session(settings, Role::Producer);
    let link = MqttLink {
        producer,
        consumer,
        consumer_connection,
        producer_up,
        consumer_up,
    };
    (link, consumer_session, producer_session)
}

/// One event loop and its reconnect policy.
pub struct Session {
    connection: Arc<AtomicU64>,
    role: Role,
    client: AsyncClient,
    eventloop: EventLoop,
    connected: Arc<AtomicBool>,
    backoff: Backoff,
}

/// A publish received on one connection of the consumer.
#[derive(Debug)]
pub struct Incoming {
    /// Which connection (counts CONNACKs) it arrived on.
    pub connection: u64,
    /// The message.
    pub publish: Publish,
}

/// What the consumer reports to the rest of the gateway.
#[derive(Debug)]
pub enum Inbound {
    /// A publish on one of [`SUBSCRIPTIONS`]; acknowledge it when done.
    Publish(Incoming),
    /// A new CONNACK: the session may have been lost, resend what matters.
    Connected {
        /// The broker kept our session.
        session_present: bool,
    },
}

impl Session {
    /// Polls until `shutdown`. The consumer forwards publishes to `tx`
    /// (waiting when it is full; the broker sends at most 100 unacknowledged
    /// messages, far below its capacity). On shutdown, disconnects cleanly.
    pub async fn run(mut self, tx: mpsc::Sender<Inbound>, shutdown: CancellationToken) {
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = self.eventloop.poll() => ev,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    self.connected.store(true, Ordering::Relaxed);
                    self.backoff.reset();
                    tracing::info!(role = ?self.role, session_present = ack.session_present,
                        "connected to MQTT broker");
                    self.connection.fetch_add(1, Ordering::SeqCst);
                    if self.role == Role::Producer {
                        continue;
                    }
                    // On every connect, not only without a session: a session
                    // can be present without our subscriptions (a connection
                    // dropped before its SUBSCRIBE was handled).
                    let filters = SUBSCRIPTIONS.map(|k| {
                        rumqttc::SubscribeFilter::new(k.all_kiosks_filter(), QoS::AtLeastOnce)
                    });
                    if let Err(e) = self.client.try_subscribe_many(filters) {
                        tracing::error!(error = %e, "could not enqueue subscriptions");
                    }
                    let msg = Inbound::Connected {
                        session_present: ack.session_present,
                    };
                    if tx.send(msg).await.is_err() {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) if self.role == Role::Consumer => {
                    let connection = self.connection.load(Ordering::SeqCst);
                    if tx
                        .send(Inbound::Publish(Incoming {
                            connection,
                            publish: p,
                        }))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let was = self.connected.swap(false, Ordering::Relaxed);
                    let delay = self.backoff.next_delay(rand::thread_rng().r#gen());
                    if was || self.backoff.attempts() == 1 {
                        tracing::warn!(role = ?self.role, error = %e,
                            retry_in_ms = delay.as_millis() as u64, "MQTT connection lost");
                    } else {
                        tracing::debug!(role = ?self.role, error = %e,
                            retry_in_ms = delay.as_millis() as u64, "MQTT reconnect failed");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.connected.store(false, Ordering::Relaxed);
        if self.client.try_disconnect().is_ok() {
            // Drive the loop briefly so the DISCONNECT actually goes out.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Ok(ev) = self.eventloop.poll().await {
                    if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}
