//! The gateway's MQTT client session: one rumqttc event loop, polled by one
//! task that never blocks on anything but the network.
//!
//! - `clean_session = false` and manual acknowledgements: a result or a
//!   credit is acknowledged (PUBACK) only after it is flushed to the store,
//!   by the ingest task.
//! - Subscriptions are (re)made whenever the broker answers
//!   `session_present = 0` (first connect, broker restart).
//! - Connection errors are followed by exponential backoff with jitter
//!   (rumqttc itself would reconnect at once, DESIGN.md pitfalls).
//! - Publishing never waits: [`MqttLink::publish`] enqueues or fails, and a
//!   job that could not be enqueued stays `queued` for the next republish.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiosk_schemas::backoff::Backoff;
use kiosk_schemas::{Topic, TopicKind};
use rand::Rng as _;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Filters the gateway subscribes to (QoS 1).
pub const SUBSCRIPTIONS: [TopicKind; 3] =
    [TopicKind::Status, TopicKind::PrintResult, TopicKind::Print];

/// Capacity of rumqttc's request channel (publishes and acks waiting for the
/// event loop).
const REQUEST_CAPACITY: usize = 4096;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id.
    pub client_id: String,
    /// Username.
    pub username: String,
    /// Password.
    pub password: kiosk_schemas::Secret,
    /// Keep alive.
    pub keep_alive: Duration,
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
    client: AsyncClient,
    connected: Arc<AtomicBool>,
}

impl MqttLink {
    /// Enqueues a QoS 1 publish without waiting.
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
        self.client
            .try_publish(topic.as_str(), QoS::AtLeastOnce, retain, payload)
            .map_err(|e| PublishError {
                topic: topic.to_string(),
                reason: e.to_string(),
            })
    }

    /// Acknowledges an incoming QoS 1 publish (after its effects are durable).
    /// A failed ack is harmless: the broker redelivers and the handlers are
    /// idempotent.
    pub fn ack(&self, publish: &Publish) {
        if let Err(e) = self.client.try_ack(publish) {
            tracing::debug!(error = %e, topic = %publish.topic, "ack not enqueued; broker will redeliver");
        }
    }

    /// True between a CONNACK and the next connection error.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// Creates the client; run the returned [`Session`] to drive it.
pub fn connect(settings: &MqttSettings) -> (MqttLink, Session) {
    let mut opts = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    opts.set_credentials(&settings.username, settings.password.expose())
        .set_keep_alive(settings.keep_alive)
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(settings.max_packet_bytes, settings.max_packet_bytes)
        .set_inflight(100);
    let (client, eventloop) = AsyncClient::new(opts, REQUEST_CAPACITY);
    let connected = Arc::new(AtomicBool::new(false));
    let link = MqttLink {
        client: client.clone(),
        connected: connected.clone(),
    };
    let session = Session {
        client,
        eventloop,
        connected,
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
    };
    (link, session)
}

/// The event loop and its reconnect policy.
pub struct Session {
    client: AsyncClient,
    eventloop: EventLoop,
    connected: Arc<AtomicBool>,
    backoff: Backoff,
}

/// What the session reports to the rest of the gateway.
#[derive(Debug)]
pub enum Inbound {
    /// A publish on one of [`SUBSCRIPTIONS`]; acknowledge it when done.
    Publish(Publish),
    /// A new CONNACK: the session may have been lost, resend what matters.
    Connected {
        /// The broker kept our session.
        session_present: bool,
    },
}

impl Session {
    /// Polls until `shutdown`, forwarding publishes to `tx` (waiting when
    /// it is full, which throttles the broker through unacknowledged
    /// messages). On shutdown, disconnects cleanly.
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
                    tracing::info!(
                        session_present = ack.session_present,
                        "connected to MQTT broker"
                    );
                    if !ack.session_present {
                        let filters = SUBSCRIPTIONS.map(|k| {
                            rumqttc::SubscribeFilter::new(k.all_kiosks_filter(), QoS::AtLeastOnce)
                        });
                        if let Err(e) = self.client.try_subscribe_many(filters) {
                            tracing::error!(error = %e, "could not enqueue subscriptions");
                        }
                    }
                    let msg = Inbound::Connected {
                        session_present: ack.session_present,
                    };
                    if tx.send(msg).await.is_err() {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(Inbound::Publish(p)).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let was = self.connected.swap(false, Ordering::Relaxed);
                    let delay = self.backoff.next_delay(rand::thread_rng().r#gen());
                    if was || self.backoff.attempts() == 1 {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost");
                    } else {
                        tracing::debug!(error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT reconnect failed");
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
