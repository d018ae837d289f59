//! The session: one rumqttc event loop, polled by one task that never
//! blocks on anything but the network and the bounded channel it feeds.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kiosk_schemas::backoff::Backoff;
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, Packet, Publish, SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::options::SessionOptions;
use crate::publisher::{Publisher, Shared};

/// A publish received on one connection. Its acknowledgement is only valid
/// on that same connection: acknowledging it after a reconnect is an
/// unsolicited PUBACK, for which rumqttd drops the client
/// ([`Publisher::ack`] checks).
#[derive(Debug)]
pub struct Incoming {
    /// Which connection (counts CONNACKs, from 1) it arrived on.
    pub connection: u64,
    /// The message.
    pub publish: Publish,
}

/// How a session leaves once its shutdown token fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Send what [`SessionHooks::stopping`] enqueued, then DISCONNECT
    /// (MQTT 3.1.1 §3.14: the broker discards the last will).
    Graceful,
    /// Drop the socket as a crash would (the broker publishes the will).
    Abrupt,
}

/// What an owner adds to a session; every method has a default that does
/// nothing. Called from the session task: they must not block.
pub trait SessionHooks: Send + 'static {
    /// Before every connection attempt (the first, and after each failure):
    /// `Some` replaces the last will (§3.1.2.5) that rumqttc sends with the
    /// next CONNECT.
    fn next_last_will(&mut self) -> Option<LastWill> {
        None
    }

    /// After every CONNACK (§3.2), once the subscriptions are enqueued:
    /// `session_present` says whether the broker kept the session
    /// (§3.2.2.2).
    fn connected(&mut self, session_present: bool, publisher: &Publisher) {
        let _ = (session_present, publisher);
    }

    /// After a connection attempt failed or a connection was lost.
    fn disconnected(&mut self) {}

    /// Once, when the session stops. With [`Stop::Graceful`], what this
    /// enqueues on `publisher` goes out before the DISCONNECT (within
    /// [`SessionOptions::disconnect_drain`]).
    fn stopping(&mut self, publisher: &Publisher) -> Stop {
        let _ = publisher;
        Stop::Graceful
    }
}

/// No hooks: subscriptions, backoff and a graceful stop only.
impl SessionHooks for () {}

/// One event loop and its reconnect policy: exponential backoff with
/// jitter between attempts ([`Backoff`]; rumqttc would retry at once,
/// DESIGN.md pitfalls), each attempt to the next broker of the list when
/// there are several (the backoff runs across the list and is reset by a
/// CONNACK), the subscriptions on every CONNACK, connection numbers on
/// incoming publishes. Made by [`Session::new`]; run it with
/// [`Session::run`] or [`Session::run_publisher`].
pub struct Session<H: SessionHooks = ()> {
    client_id: String,
    client: AsyncClient,
    eventloop: EventLoop,
    publisher: Publisher,
    shared: Arc<Shared>,
    filters: Vec<SubscribeFilter>,
    backoff: Backoff,
    /// The options, for rumqttc's options at another broker.
    options: SessionOptions,
    /// Every broker ([`SessionOptions::brokers`]) and the index of the one
    /// the next connection attempt goes to.
    brokers: Vec<(String, u16)>,
    current: usize,
    jitter: fn() -> f64,
    drain: Duration,
    connects: watch::Sender<u64>,
    /// When to subscribe again after a SUBACK refused a filter, and the
    /// delays of such retries (the reconnect delays, reset by a SUBACK
    /// that grants every filter).
    resubscribe_at: Option<tokio::time::Instant>,
    resubscribe_backoff: Backoff,
    hooks: H,
}

impl<H: SessionHooks> Session<H> {
    /// The session for `options`, and the handle that publishes on it.
    /// Nothing connects before [`Session::run`].
    pub fn new(options: &SessionOptions, hooks: H) -> (Publisher, Session<H>) {
        let (client, mut eventloop) =
            AsyncClient::new(options.mqtt_options(), options.request_capacity);
        eventloop.set_network_options(options.network_options());
        let shared = Arc::new(Shared::default());
        let publisher = Publisher::new(client.clone(), shared.clone());
        let session = Session {
            client_id: options.client_id.clone(),
            client,
            eventloop,
            publisher: publisher.clone(),
            shared,
            filters: options.filters(),
            backoff: Backoff::new(options.backoff_min, options.backoff_max),
            options: options.clone(),
            brokers: options.brokers(),
            current: 0,
            jitter: rand::random::<f64>,
            drain: options.disconnect_drain,
            connects: watch::channel(0).0,
            resubscribe_at: None,
            resubscribe_backoff: Backoff::new(options.backoff_min, options.backoff_max),
            hooks,
        };
        (publisher, session)
    }

    /// A receiver woken after every CONNACK (once the subscriptions and
    /// [`SessionHooks::connected`] are enqueued); the value is the
    /// connection's number.
    pub fn connects(&self) -> watch::Receiver<u64> {
        self.connects.subscribe()
    }

    /// The hooks, to finish setting them up before [`Session::run`].
    pub fn hooks_mut(&mut self) -> &mut H {
        &mut self.hooks
    }

    /// Replaces the jitter source: a function returning a number in
    /// `[0, 1)` that places each delay between `backoff_min` and the
    /// current ceiling (uniform random by default; tests fix it).
    pub fn set_jitter(&mut self, jitter: fn() -> f64) {
        self.jitter = jitter;
    }

    /// Polls until `shutdown` (or until `tx` is closed), forwarding every
    /// incoming publish to `tx`, waiting when it is full: give it room for
    /// more than the broker's window of unacknowledged messages (rumqttd
    /// 100, mosquitto 20) so the loop never waits on its consumer. Then
    /// stops as [`SessionHooks::stopping`] says.
    pub async fn run(self, tx: mpsc::Sender<Incoming>, shutdown: CancellationToken) {
        self.run_inner(Some(tx), shutdown).await;
    }

    /// As [`Session::run`], for a session that only publishes (subscribes
    /// to nothing): an incoming publish, which the broker should not send,
    /// is dropped.
    pub async fn run_publisher(self, shutdown: CancellationToken) {
        self.run_inner(None, shutdown).await;
    }

    /// Enqueues one SUBSCRIBE with every filter.
    fn subscribe(&self) {
        if !self.filters.is_empty()
            && let Err(e) = self.client.try_subscribe_many(self.filters.clone())
        {
            tracing::error!(client_id = %self.client_id, error = %e,
                "could not enqueue subscriptions");
        }
    }

    async fn run_inner(mut self, tx: Option<mpsc::Sender<Incoming>>, shutdown: CancellationToken) {
        if let Some(will) = self.hooks.next_last_will() {
            self.eventloop.mqtt_options.set_last_will(will);
        }
        loop {
            let resubscribe_at = self.resubscribe_at;
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = self.eventloop.poll() => ev,
                () = async {
                    match resubscribe_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.resubscribe_at = None;
                    self.subscribe();
                    continue;
                }
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    self.backoff.reset();
                    self.shared.connected.store(true, Ordering::Relaxed);
                    let connection = self.shared.connection.fetch_add(1, Ordering::SeqCst) + 1;
                    let (host, port) = &self.brokers[self.current];
                    let broker = format!("{host}:{port}");
                    tracing::info!(client_id = %self.client_id, connection, broker = %broker,
                        session_present = ack.session_present, "connected to MQTT broker");
                    *self.shared.broker.lock().unwrap_or_else(|e| e.into_inner()) = Some(broker);
                    // Subscribe on every connect, not only when the broker
                    // reports no session: a session can be present without
                    // our subscriptions (a connection dropped before its
                    // SUBSCRIBE was handled), and subscribing again is
                    // harmless.
                    self.resubscribe_at = None;
                    self.resubscribe_backoff.reset();
                    self.subscribe();
                    self.hooks.connected(ack.session_present, &self.publisher);
                    self.connects.send_replace(connection);
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    // MQTT 3.1.1 §3.9.3: one return code per filter, in
                    // order; every SUBSCRIBE of this session carries all
                    // of them. A broker can refuse one (0x80): an ACL, or
                    // NATS while JetStream elects a leader. Without it the
                    // session would miss that filter's messages for good.
                    let refused: Vec<&str> = ack
                        .return_codes
                        .iter()
                        .zip(&self.filters)
                        .filter(|(code, _)| matches!(code, SubscribeReasonCode::Failure))
                        .map(|(_, f)| f.path.as_str())
                        .collect();
                    if refused.is_empty() {
                        self.resubscribe_backoff.reset();
                    } else {
                        let delay = self.resubscribe_backoff.next_delay((self.jitter)());
                        let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                        tracing::warn!(client_id = %self.client_id, filters = ?refused, retry_in_ms,
                            "the broker refused subscriptions; subscribing again");
                        self.resubscribe_at = Some(tokio::time::Instant::now() + delay);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let Some(tx) = &tx else {
                        tracing::debug!(client_id = %self.client_id, topic = %publish.topic,
                            "publish to a session that only publishes dropped");
                        continue;
                    };
                    let connection = self.shared.connection.load(Ordering::SeqCst);
                    if tx
                        .send(Incoming {
                            connection,
                            publish,
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let was_connected = self.shared.connected.swap(false, Ordering::Relaxed);
                    self.hooks.disconnected();
                    // rumqttc makes a new connection on the next poll, with
                    // the broker and the will in its options. With several
                    // brokers, the next attempt goes to the next one: a
                    // dead node is left at once, and its session (kept by
                    // the cluster) is resumed on another.
                    if self.brokers.len() > 1 {
                        self.current = (self.current + 1) % self.brokers.len();
                        let (host, port) = &self.brokers[self.current];
                        let mut next = self.options.mqtt_options_at(host, *port);
                        if let Some(will) = self.eventloop.mqtt_options.last_will() {
                            next.set_last_will(will);
                        }
                        self.eventloop.mqtt_options = next;
                    }
                    if let Some(will) = self.hooks.next_last_will() {
                        self.eventloop.mqtt_options.set_last_will(will);
                    }
                    let delay = self.backoff.next_delay((self.jitter)());
                    let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    let (host, port) = &self.brokers[self.current];
                    let next_broker = format!("{host}:{port}");
                    if was_connected || self.backoff.attempts() == 1 {
                        tracing::warn!(client_id = %self.client_id, error = %e, retry_in_ms,
                            next_broker = %next_broker, "MQTT connection lost");
                    } else {
                        tracing::debug!(client_id = %self.client_id, error = %e, retry_in_ms,
                            next_broker = %next_broker, "MQTT reconnect failed");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.shared.connected.store(false, Ordering::Relaxed);
        if self.hooks.stopping(&self.publisher) == Stop::Abrupt {
            return;
        }
        if let Err(e) = self.client.try_disconnect() {
            tracing::debug!(client_id = %self.client_id, error = %e, "DISCONNECT not enqueued");
        }
        // Drive the loop briefly so the final publishes and the DISCONNECT
        // actually go out.
        let _ = tokio::time::timeout(self.drain, async {
            while let Ok(ev) = self.eventloop.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
}

impl<H: SessionHooks> Drop for Session<H> {
    fn drop(&mut self) {
        self.shared.connected.store(false, Ordering::Relaxed);
        self.shared.ended.store(true, Ordering::SeqCst);
    }
}
