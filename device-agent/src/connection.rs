//! The kiosk's one outbound MQTT session (rumqttc), polled by one task that
//! never blocks on anything but the network.
//!
//! - client id = username = kiosk id, `clean_session = false`, manual
//!   acknowledgements: a job is acknowledged only once it is in the inbox.
//! - Last will: `{"v":1,"state":"offline","connection_id":"<id>"}`,
//!   retained, QoS 1, on `kiosk/<id>/status`, with a fresh `connection_id`
//!   (a ULID) for every connection attempt: rumqttc sends the will held in
//!   its options with each CONNECT, so it is replaced before each attempt.
//!   An `online` status with the same `connection_id` is published retained
//!   on every connect, and `offline` with it before a clean shutdown (a
//!   clean DISCONNECT does not fire the will). The gateway ignores an
//!   `offline` of a connection other than the kiosk's current one.
//! - Subscriptions are made on every connect (also when the broker reports
//!   a session present: it may lack them).
//! - Exponential backoff with jitter between connection attempts (rumqttc
//!   would retry at once).
//! - Incoming packets up to 16 MiB are read (so an oversized job is answered
//!   `failed` by the intake instead of breaking the connection in a loop);
//!   `print.max_job_bytes` is the real limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kiosk_schemas::backoff::Backoff;
use kiosk_schemas::{JobResult, KioskId, KioskStatus, Topic, wire};
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
/// Our publishes awaiting PUBACK. rumqttd holds back PUBACKs to a client
/// while 100 of its own publishes to that client are unacknowledged, and
/// rumqttc stops reading its request channel (where our acknowledgements
/// wait) while this window is full; a window far larger than anything we
/// queue (results, channel) keeps the channel moving so our
/// acknowledgements always get out, and the two cannot deadlock.
const OUTGOING_INFLIGHT: u16 = 8192;

/// Results waiting for the MQTT session, at most this many; beyond that a
/// result is dropped (logged) and recovered when the cloud asks again.
const RESULT_QUEUE: usize = 4096;

/// A publish received on one connection. Its acknowledgement is only
/// valid on that same connection: acknowledging it after a reconnect is an
/// unsolicited PUBACK, for which rumqttd drops the client.
#[derive(Debug)]
pub struct Incoming {
    /// Which connection (counts CONNACKs) it arrived on.
    pub connection: u64,
    /// The message.
    pub publish: Publish,
}

/// Handle for publishing; cheap to clone. Publishing never waits, so a
/// printer keeps printing while the link is down: results go through a
/// bounded queue to [`ResultForwarder`], everything else is enqueued or
/// dropped. The durable inbox is the source of truth: the cloud re-sends
/// unfinished jobs and the agent answers with the stored state.
#[derive(Clone)]
pub struct Publisher {
    client: AsyncClient,
    kiosk: KioskId,
    results: mpsc::Sender<JobResult>,
    connection: Arc<AtomicU64>,
}

/// Feeds queued job results into the MQTT session, waiting for room in
/// rumqttc's request queue (so results never crowd out acknowledgements).
pub struct ResultForwarder {
    client: AsyncClient,
    kiosk: KioskId,
    results: mpsc::Receiver<JobResult>,
}

impl ResultForwarder {
    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let topic = Topic::print_result(&self.kiosk);
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.results.recv() => match r {
                    Some(r) => r,
                    None => break,
                },
            };
            let sent = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.client.publish(topic.as_str(), QoS::AtLeastOnce, false, wire::encode(&result)) => r,
            };
            if sent.is_err() {
                break;
            }
        }
    }
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

    /// Queues a job result for `kiosk/<id>/print/result` (QoS 1). When the
    /// queue is full the result is dropped and logged: the cloud asks again.
    pub fn publish_result(&self, result: JobResult) {
        if let Err(e) = self.results.try_send(result) {
            tracing::warn!(error = %e, "result queue full; the cloud will ask again");
        }
    }

    /// Publishes a credit on `kiosk/<id>/cash` (QoS 1), waiting for room in
    /// the request queue.
    pub async fn publish_cash(&self, event: &kiosk_schemas::CashEvent) {
        let topic = Topic::cash(&self.kiosk);
        if let Err(e) = self
            .client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, wire::encode(event))
            .await
        {
            tracing::debug!(error = %e, "credit not enqueued: session ended");
        }
    }

    /// Publishes `status` retained on `kiosk/<id>/status`.
    pub fn publish_status(&self, status: &KioskStatus) -> bool {
        self.publish(&Topic::status(&self.kiosk), true, wire::encode(status))
    }

    /// Acknowledges an incoming QoS 1 publish, waiting for room in the
    /// request queue: acknowledgements must not be lost, and must go out in
    /// the order the publishes came (rumqttd disconnects a client that
    /// acknowledges out of order, and stops sending once 100 are unacked).
    /// A message from an earlier connection is not acknowledged: the
    /// broker redelivers it if it kept the session, and the cloud re-sends
    /// it otherwise.
    pub async fn ack(&self, incoming: &Incoming) {
        if incoming.connection != self.connection.load(Ordering::SeqCst) {
            tracing::debug!("not acknowledging a message from an earlier connection");
            return;
        }
        if let Err(e) = self.client.ack(&incoming.publish).await {
            tracing::debug!(error = %e, "ack not enqueued: session ended");
        }
    }
}

/// The event loop and its reconnect policy.
pub struct Connection {
    connection: Arc<AtomicU64>,
    client: AsyncClient,
    eventloop: EventLoop,
    kiosk: KioskId,
    backoff: Backoff,
    board: StatusBoard,
    connects: watch::Sender<u64>,
    /// The `connection_id` of the connection being made or up: the one in
    /// the last will of the options rumqttc connects with.
    connection_id: String,
}

/// A new connection id: a ULID (unique, and sorts by time in logs).
fn new_connection_id() -> String {
    ulid::Ulid::new().to_string()
}

/// The last will of the connection `connection_id` of `kiosk`.
fn last_will(kiosk: &KioskId, connection_id: &str) -> LastWill {
    LastWill::new(
        Topic::status(kiosk).as_str(),
        wire::encode(&KioskStatus::offline_for(connection_id)),
        QoS::AtLeastOnce,
        true,
    )
}

/// Builds the session from the configuration.
///
/// # Errors
/// A message when `broker.url` is not usable by this build.
pub fn connect(
    config: &AgentConfig,
    board: StatusBoard,
) -> Result<(Publisher, Connection, ResultForwarder), String> {
    let url = config.broker.url.clone();
    let kiosk = config.kiosk_id.clone();
    let mut opts = MqttOptions::new(kiosk.as_str(), url.host, url.port);
    if url.tls {
        opts.set_transport(crate::tls::transport(config).map_err(|e| e.to_string())?);
    }
    opts.set_credentials(config.username(), config.broker.password.expose())
        .set_keep_alive(config.broker.keep_alive)
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_INCOMING_PACKET)
        .set_inflight(OUTGOING_INFLIGHT);
    let connection_id = new_connection_id();
    opts.set_last_will(last_will(&kiosk, &connection_id));
    let (client, mut eventloop) = AsyncClient::new(opts, REQUEST_CAPACITY);
    // Small packets (acks, results) must not wait for Nagle + delayed ACK.
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (results_tx, results_rx) = mpsc::channel(RESULT_QUEUE);
    let generation = Arc::new(AtomicU64::new(0));
    let publisher = Publisher {
        client: client.clone(),
        kiosk: kiosk.clone(),
        results: results_tx,
        connection: generation.clone(),
    };
    let forwarder = ResultForwarder {
        client: client.clone(),
        kiosk: kiosk.clone(),
        results: results_rx,
    };
    let connection = Connection {
        connection: generation,
        client,
        eventloop,
        kiosk,
        backoff: Backoff::new(config.broker.reconnect_min, config.broker.reconnect_max),
        board,
        connects: watch::channel(0).0,
        connection_id,
    };
    Ok((publisher, connection, forwarder))
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
        tx: mpsc::Sender<Incoming>,
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
                    self.connection.fetch_add(1, Ordering::SeqCst);
                    // Subscribe on every connect, not only when the broker
                    // reports no session: a session can be present without
                    // our subscriptions (a connection dropped before its
                    // SUBSCRIBE was handled), and subscribing again is
                    // harmless.
                    if let Err(e) = self.client.try_subscribe_many(self.subscriptions()) {
                        tracing::error!(error = %e, "could not enqueue subscriptions");
                    }
                    tracing::info!(connection_id = %self.connection_id, "connection id");
                    self.board
                        .set_connected(chrono::Utc::now(), self.connection_id.clone());
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
                    let connection = self.connection.load(Ordering::SeqCst);
                    if tx
                        .send(Incoming {
                            connection,
                            publish: p,
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // rumqttc makes a new connection on the next poll, with
                    // the will in its options: give it a new id.
                    self.board.set_disconnected();
                    self.connection_id = new_connection_id();
                    self.eventloop
                        .mqtt_options
                        .set_last_will(last_will(&self.kiosk, &self.connection_id));
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
        let offline = wire::encode(&KioskStatus::offline_for(&self.connection_id));
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
