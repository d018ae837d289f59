//! The kiosk's one outbound MQTT session (rumqttc), polled by one task that
//! never blocks on anything but the network.
//!
//! - client id = username = kiosk id, `clean_session = false`, manual
//!   acknowledgements: a job is acknowledged only once it is in the inbox.
//! - Last will: `{"v":1,"state":"offline"}`, retained, QoS 1, on
//!   `kiosk/<id>/status`; an `online` status is published retained on every
//!   connect, and `offline` before a clean shutdown (a clean DISCONNECT
//!   does not fire the will).
//! - Subscriptions are made again whenever the broker answers
//!   `session_present = 0`.
//! - Exponential backoff with jitter between connection attempts (rumqttc
//!   would retry at once).
//! - Incoming packets up to 16 MiB are read (so an oversized job is answered
//!   `failed` by the intake instead of breaking the connection in a loop);
//!   `print.max_job_bytes` is the real limit.

use std::time::Duration;

use kiosk_schemas::backoff::Backoff;
use kiosk_schemas::{KioskId, KioskStatus, Topic, wire};
use rand::Rng as _;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::status::StatusBoard;

/// Largest incoming packet rumqttc accepts, in bytes.
const MAX_INCOMING_PACKET: usize = 16 * 1024 * 1024;
/// Capacity of rumqttc's request channel.
const REQUEST_CAPACITY: usize = 1024;

/// Handle for publishing; cheap to clone. Publishing never waits: the
/// durable inbox/outbox is the source of truth and anything not enqueued
/// is sent again later.
#[derive(Clone)]
pub struct Publisher {
    client: AsyncClient,
    kiosk: KioskId,
}

impl Publisher {
    /// The kiosk this session belongs to.
    pub fn kiosk(&self) -> &KioskId {
        &self.kiosk
    }

    /// Enqueues a QoS 1 publish. Returns false (and logs) when the request
    /// queue is full.
    pub fn publish(&self, topic: &Topic, retain: bool, payload: Vec<u8>) -> bool {
        match self
            .client
            .try_publish(topic.as_str(), QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(topic = %topic, error = %e, "publish not enqueued");
                false
            }
        }
    }

    /// Publishes `status` retained on `kiosk/<id>/status`.
    pub fn publish_status(&self, status: &KioskStatus) -> bool {
        self.publish(&Topic::status(&self.kiosk), true, wire::encode(status))
    }

    /// Acknowledges an incoming QoS 1 publish. A failed ack is harmless:
    /// the broker redelivers and the inbox deduplicates.
    pub fn ack(&self, publish: &Publish) {
        if let Err(e) = self.client.try_ack(publish) {
            tracing::debug!(error = %e, "ack not enqueued; broker will redeliver");
        }
    }
}

/// The event loop and its reconnect policy.
pub struct Connection {
    client: AsyncClient,
    eventloop: EventLoop,
    kiosk: KioskId,
    backoff: Backoff,
    board: StatusBoard,
    connects: watch::Sender<u64>,
}

/// Builds the session from the configuration.
///
/// # Errors
/// A message when `broker.url` is not usable by this build.
pub fn connect(
    config: &AgentConfig,
    board: StatusBoard,
) -> Result<(Publisher, Connection), String> {
    let url = config.broker_url().map_err(|e| e.to_string())?;
    if url.tls {
        return Err(
            "broker.url: mqtts:// is not supported by this build yet; use mqtt://".to_owned(),
        );
    }
    let kiosk = config.kiosk_id.clone();
    let mut opts = MqttOptions::new(kiosk.as_str(), url.host, url.port);
    opts.set_credentials(config.username(), config.broker.password.expose())
        .set_keep_alive(config.broker.keep_alive)
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_INCOMING_PACKET)
        .set_last_will(LastWill::new(
            Topic::status(&kiosk).as_str(),
            wire::encode(&KioskStatus::offline()),
            QoS::AtLeastOnce,
            true,
        ));
    let (client, eventloop) = AsyncClient::new(opts, REQUEST_CAPACITY);
    let publisher = Publisher {
        client: client.clone(),
        kiosk: kiosk.clone(),
    };
    let connection = Connection {
        client,
        eventloop,
        kiosk,
        backoff: Backoff::new(config.broker.reconnect_min, config.broker.reconnect_max),
        board,
        connects: watch::channel(0).0,
    };
    Ok((publisher, connection))
}

/// How the session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Publish `offline`, DISCONNECT.
    Graceful,
    /// Drop the socket as a crash would (the broker publishes the will).
    Abrupt,
}

impl Connection {
    /// A receiver woken after every CONNACK (the value counts connects).
    pub fn connects(&self) -> watch::Receiver<u64> {
        self.connects.subscribe()
    }

    fn subscriptions(&self) -> Vec<rumqttc::SubscribeFilter> {
        [
            Topic::print(&self.kiosk),
            Topic::cmd(&self.kiosk),
            Topic::cash_ack(&self.kiosk),
            Topic::cash_control(&self.kiosk),
        ]
        .into_iter()
        .map(|t| rumqttc::SubscribeFilter::new(t.into(), QoS::AtLeastOnce))
        .collect()
    }

    /// Polls until `shutdown` fires, forwarding incoming publishes to `tx`.
    /// `stop` says how to leave once it does.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<Publish>,
        shutdown: CancellationToken,
        stop: watch::Receiver<Stop>,
    ) {
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = self.eventloop.poll() => ev,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    self.backoff.reset();
                    tracing::info!(
                        session_present = ack.session_present,
                        "connected to MQTT broker"
                    );
                    if !ack.session_present {
                        if let Err(e) = self.client.try_subscribe_many(self.subscriptions()) {
                            tracing::error!(error = %e, "could not enqueue subscriptions");
                        }
                    }
                    let status = wire::encode(&self.board.online_status());
                    if let Err(e) = self.client.try_publish(
                        Topic::status(&self.kiosk).as_str(),
                        QoS::AtLeastOnce,
                        true,
                        status,
                    ) {
                        tracing::warn!(error = %e, "online status not enqueued");
                    }
                    self.connects.send_modify(|n| *n += 1);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let delay = self.backoff.next_delay(rand::thread_rng().r#gen());
                    if self.backoff.attempts() == 1 {
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
        if *stop.borrow() == Stop::Abrupt {
            return;
        }
        let offline = wire::encode(&KioskStatus::offline());
        let _ = self.client.try_publish(
            Topic::status(&self.kiosk).as_str(),
            QoS::AtLeastOnce,
            true,
            offline,
        );
        let _ = self.client.try_disconnect();
        // Drive the loop briefly so `offline` and DISCONNECT actually go out.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(ev) = self.eventloop.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
}
