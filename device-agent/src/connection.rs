//! The kiosk's one outbound MQTT session ([`kiosk_mqtt::Session`]), polled
//! by one task that never blocks on anything but the network.
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

use std::time::Duration;

use kiosk_mqtt::{
    AckOutcome, LastWill, PublishError, PublishFailure, QoS, Session, SessionHooks, SessionOptions,
};
use kiosk_schemas::{JobResult, KioskId, KioskStatus, Topic, wire};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use kiosk_mqtt::{Incoming, Stop};

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
/// On a clean shutdown, how long the loop is still driven so that `offline`
/// and DISCONNECT actually go out.
const DISCONNECT_DRAIN: Duration = Duration::from_secs(1);

/// Results waiting for the MQTT session, at most this many; beyond that a
/// result is dropped (logged) and recovered when the cloud asks again.
const RESULT_QUEUE: usize = 4096;

/// Handle for publishing; cheap to clone. Publishing never waits, so a
/// printer keeps printing while the link is down: results go through a
/// bounded queue to [`ResultForwarder`], everything else is enqueued or
/// handed back. The durable inbox is the source of truth: the cloud re-sends
/// unfinished jobs and the agent answers with the stored state.
#[derive(Clone)]
pub struct Publisher {
    session: kiosk_mqtt::Publisher,
    kiosk: KioskId,
    results: mpsc::Sender<JobResult>,
}

/// Feeds queued job results into the MQTT session, waiting for room in
/// rumqttc's request queue (so results never crowd out acknowledgements).
pub struct ResultForwarder {
    session: kiosk_mqtt::Publisher,
    kiosk: KioskId,
    results: mpsc::Receiver<JobResult>,
}

impl ResultForwarder {
    /// Runs until `shutdown` or until the session ends.
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
                r = self.session.publish(&topic, false, wire::encode(&result)) => r,
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

    /// Enqueues a QoS 1 publish without waiting.
    ///
    /// # Errors
    /// [`PublishError`] with the message when the request queue is full or
    /// the session has ended.
    pub fn try_publish(
        &self,
        topic: &Topic,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), PublishError> {
        self.session.try_publish(topic, retain, payload)
    }

    /// Queues a job result for `kiosk/<id>/print/result` (QoS 1), to be
    /// published by the [`ResultForwarder`].
    ///
    /// # Errors
    /// [`PublishError`] with the encoded result when the queue is full
    /// ([`PublishFailure::QueueFull`]; the cloud asks again) or the
    /// forwarder has ended.
    pub fn publish_result(&self, result: JobResult) -> Result<(), PublishError> {
        self.results.try_send(result).map_err(|e| {
            let (reason, result) = match e {
                mpsc::error::TrySendError::Full(r) => (PublishFailure::QueueFull, r),
                mpsc::error::TrySendError::Closed(r) => (PublishFailure::SessionEnded, r),
            };
            PublishError {
                topic: Topic::print_result(&self.kiosk).to_string(),
                payload: wire::encode(&result).into(),
                retain: false,
                reason,
            }
        })
    }

    /// Publishes a credit on `kiosk/<id>/cash` (QoS 1), waiting for room in
    /// the request queue.
    ///
    /// # Errors
    /// [`PublishError`] with the message when the session has ended.
    pub async fn publish_cash(&self, event: &kiosk_schemas::CashEvent) -> Result<(), PublishError> {
        self.session
            .publish(&Topic::cash(&self.kiosk), false, wire::encode(event))
            .await
    }

    /// Publishes `status` retained on `kiosk/<id>/status` without waiting.
    ///
    /// # Errors
    /// As [`Publisher::try_publish`].
    pub fn publish_status(&self, status: &KioskStatus) -> Result<(), PublishError> {
        self.try_publish(&Topic::status(&self.kiosk), true, wire::encode(status))
    }

    /// Acknowledges an incoming QoS 1 publish, waiting for room in the
    /// request queue: acknowledgements must not be lost, and must go out in
    /// the order the publishes came (rumqttd disconnects a client that
    /// acknowledges out of order, and stops sending once 100 are unacked).
    /// A message from an earlier connection is not acknowledged
    /// ([`AckOutcome::EarlierConnection`]): the broker redelivers it if it
    /// kept the session, and the cloud re-sends it otherwise.
    pub async fn ack(&self, incoming: &Incoming) -> AckOutcome {
        self.session.ack(incoming).await
    }
}

/// What the kiosk adds to the session: the will, the `online` status on
/// every connect, `offline` on a clean stop, and the status board.
struct KioskHooks {
    kiosk: KioskId,
    board: StatusBoard,
    /// The `connection_id` of the connection being made or up: the one in
    /// the last will of the options rumqttc connects with.
    connection_id: String,
    /// How to leave; graceful until [`Connection::run`] is given one.
    stop: Option<watch::Receiver<Stop>>,
}

impl SessionHooks for KioskHooks {
    fn next_last_will(&mut self) -> Option<LastWill> {
        self.connection_id = new_connection_id();
        Some(last_will(&self.kiosk, &self.connection_id))
    }

    fn connected(&mut self, _session_present: bool, publisher: &kiosk_mqtt::Publisher) {
        tracing::info!(connection_id = %self.connection_id, "connection id");
        self.board.set_connected(
            chrono::Utc::now(),
            self.connection_id.clone(),
            publisher.broker(),
        );
        let status = wire::encode(&self.board.online_status());
        if let Err(e) = publisher.try_publish(&Topic::status(&self.kiosk), true, status) {
            tracing::warn!(error = %e, "online status not enqueued");
        }
    }

    fn disconnected(&mut self) {
        self.board.set_disconnected();
    }

    fn stopping(&mut self, publisher: &kiosk_mqtt::Publisher) -> Stop {
        if self
            .stop
            .as_ref()
            .is_some_and(|s| *s.borrow() == Stop::Abrupt)
        {
            return Stop::Abrupt;
        }
        let offline = wire::encode(&KioskStatus::offline_for(&self.connection_id));
        if let Err(e) = publisher.try_publish(&Topic::status(&self.kiosk), true, offline) {
            tracing::debug!(error = %e, "offline status not enqueued");
        }
        Stop::Graceful
    }
}

/// The event loop and its reconnect policy.
pub struct Connection {
    session: Session<KioskHooks>,
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

/// Builds the session from the configuration. With several brokers
/// (`broker.urls`), the first one tried is picked at random and the rest
/// follow in the list's order, so a fleet spreads over a cluster's nodes.
///
/// # Errors
/// A message when `broker.url` is not usable by this build.
pub fn connect(
    config: &AgentConfig,
    board: StatusBoard,
) -> Result<(Publisher, Connection, ResultForwarder), String> {
    let mut urls = config.broker_urls();
    if urls.len() > 1 {
        let start = rand::random::<u32>() as usize % urls.len();
        urls.rotate_left(start);
    }
    let kiosk = config.kiosk_id.clone();
    let tls = if urls.iter().any(|u| u.tls) {
        Some(
            config
                .broker
                .client
                .tls_config()
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let mut opts =
        SessionOptions::from_urls(kiosk.as_str(), &urls, tls).map_err(|e| e.to_string())?;
    config
        .broker
        .client
        .apply(&mut opts, config.client_defaults(), None);
    opts.clean_session = false;
    opts.manual_acks = true;
    opts.max_packet_bytes = MAX_INCOMING_PACKET;
    opts.inflight = OUTGOING_INFLIGHT;
    opts.request_capacity = REQUEST_CAPACITY;
    opts.disconnect_drain = DISCONNECT_DRAIN;
    opts.subscriptions = [
        Topic::print(&kiosk),
        Topic::cmd(&kiosk),
        Topic::cash_ack(&kiosk),
        Topic::cash_control(&kiosk),
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let hooks = KioskHooks {
        kiosk: kiosk.clone(),
        board,
        connection_id: new_connection_id(),
        stop: None,
    };
    let (session_publisher, session) = Session::new(&opts, hooks);
    let (results_tx, results_rx) = mpsc::channel(RESULT_QUEUE);
    let publisher = Publisher {
        session: session_publisher.clone(),
        kiosk: kiosk.clone(),
        results: results_tx,
    };
    let forwarder = ResultForwarder {
        session: session_publisher,
        kiosk,
        results: results_rx,
    };
    Ok((publisher, Connection { session }, forwarder))
}

impl Connection {
    /// A receiver woken after every CONNACK (the value counts connects).
    pub fn connects(&self) -> watch::Receiver<u64> {
        self.session.connects()
    }

    /// Polls until `shutdown` fires, forwarding incoming publishes to `tx`.
    /// `stop` says how to leave once it does.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<Incoming>,
        shutdown: CancellationToken,
        stop: watch::Receiver<Stop>,
    ) {
        self.session.hooks_mut().stop = Some(stop);
        self.session.run(tx, shutdown).await;
    }
}
