//! The handle for publishing and acknowledging on a [`crate::Session`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use kiosk_schemas::Topic;
use rumqttc::{AsyncClient, ClientError, QoS, Request};

use crate::session::Incoming;

/// What the session task and its handles share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// CONNACKs received so far: the number of the current connection.
    pub(crate) connection: AtomicU64,
    /// A CONNACK was received and no error since.
    pub(crate) connected: AtomicBool,
    /// The session task has ended (or was dropped): nothing is sent any more.
    pub(crate) ended: AtomicBool,
    /// `host:port` of the broker of the current (or last) connection.
    pub(crate) broker: std::sync::Mutex<Option<String>>,
}

/// Handle for publishing and acknowledging; cheap to clone. Every publish
/// is QoS 1 (MQTT 3.1.1 §4.3.2).
#[derive(Debug, Clone)]
pub struct Publisher {
    client: AsyncClient,
    shared: Arc<Shared>,
}

/// Why a message was not handed to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishFailure {
    /// rumqttc's request queue is full (the link is down or slow).
    QueueFull,
    /// The session task has ended.
    SessionEnded,
    /// The topic name is not valid for PUBLISH (MQTT 3.1.1 §4.7.3: empty,
    /// or with a wildcard).
    InvalidTopic,
}

impl std::fmt::Display for PublishFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PublishFailure::QueueFull => "request queue full",
            PublishFailure::SessionEnded => "session ended",
            PublishFailure::InvalidTopic => "invalid topic name",
        })
    }
}

/// A publish that was not enqueued; hands the message back (as rumqttc's
/// `ClientError::Request` does) so the caller can keep or retry it.
#[derive(Debug, thiserror::Error)]
#[error("MQTT publish to {topic} not enqueued: {reason}")]
pub struct PublishError {
    /// The topic it was for.
    pub topic: String,
    /// The payload, untouched.
    pub payload: Bytes,
    /// Whether it was to be retained.
    pub retain: bool,
    /// Why it was not enqueued.
    pub reason: PublishFailure,
}

/// What became of an acknowledgement ([`Publisher::ack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum AckOutcome {
    /// Queued for the connection the message arrived on.
    Queued,
    /// Not sent: the message arrived on an earlier connection, and a PUBACK
    /// for it now would be unsolicited (rumqttd drops the client for one).
    /// The broker redelivers it if it kept the session.
    EarlierConnection,
    /// Not sent: the session task has ended.
    SessionEnded,
}

impl Publisher {
    pub(crate) fn new(client: AsyncClient, shared: Arc<Shared>) -> Self {
        Publisher { client, shared }
    }

    /// Enqueues a QoS 1 publish without waiting.
    ///
    /// # Errors
    /// [`PublishError`] with the message when the request queue is full,
    /// the session has ended, or the topic is invalid.
    pub fn try_publish(
        &self,
        topic: &Topic,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), PublishError> {
        let payload = checked(topic, retain, payload.into())?;
        self.client
            .try_publish(topic.as_str(), QoS::AtLeastOnce, retain, payload)
            .map_err(|e| self.handed_back(e))
    }

    /// Enqueues a QoS 1 publish, waiting for room in the request queue.
    ///
    /// # Errors
    /// [`PublishError`] with the message when the session has ended or the
    /// topic is invalid.
    pub async fn publish(
        &self,
        topic: &Topic,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), PublishError> {
        let payload = checked(topic, retain, payload.into())?;
        self.client
            .publish(topic.as_str(), QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|e| self.handed_back(e))
    }

    /// Acknowledges an incoming QoS 1 publish (PUBACK, MQTT 3.1.1 §3.4),
    /// waiting for room in the request queue: acknowledgements must not be
    /// lost and must go out in arrival order (rumqttd disconnects a client
    /// that acknowledges out of order, and stops sending once 100 are
    /// unacknowledged). A message from an earlier connection is not
    /// acknowledged ([`AckOutcome::EarlierConnection`]).
    pub async fn ack(&self, incoming: &Incoming) -> AckOutcome {
        if incoming.connection != self.connection() {
            return AckOutcome::EarlierConnection;
        }
        match self.client.ack(&incoming.publish).await {
            Ok(()) => AckOutcome::Queued,
            Err(_) => AckOutcome::SessionEnded,
        }
    }

    /// The number of the current connection (CONNACKs so far; 0 before the
    /// first).
    pub fn connection(&self) -> u64 {
        self.shared.connection.load(Ordering::SeqCst)
    }

    /// True between a CONNACK and the next connection error.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// `host:port` of the broker the current connection is to (the last
    /// one's while reconnecting); `None` before the first CONNACK.
    pub fn broker(&self) -> Option<String> {
        self.shared
            .broker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn handed_back(&self, e: ClientError) -> PublishError {
        let (ClientError::Request(request) | ClientError::TryRequest(request)) = e;
        let reason = if self.shared.ended.load(Ordering::SeqCst) {
            PublishFailure::SessionEnded
        } else {
            PublishFailure::QueueFull
        };
        match request {
            Request::Publish(p) => PublishError {
                topic: p.topic,
                payload: p.payload,
                retain: p.retain,
                reason,
            },
            // rumqttc hands back the request it was given: a publish.
            _ => PublishError {
                topic: String::new(),
                payload: Bytes::new(),
                retain: false,
                reason,
            },
        }
    }
}

/// `payload`, unless `topic` is not one rumqttc would publish to
/// (MQTT 3.1.1 §4.7: no wildcards); then the message, handed back.
fn checked(topic: &Topic, retain: bool, payload: Vec<u8>) -> Result<Vec<u8>, PublishError> {
    if rumqttc::valid_topic(topic.as_str()) {
        Ok(payload)
    } else {
        Err(invalid_topic(topic, retain, payload))
    }
}

fn invalid_topic(topic: &Topic, retain: bool, payload: Vec<u8>) -> PublishError {
    PublishError {
        topic: topic.to_string(),
        payload: payload.into(),
        retain,
        reason: PublishFailure::InvalidTopic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Session, SessionOptions};
    use kiosk_schemas::KioskId;

    fn topic() -> Topic {
        Topic::print(&KioskId::new("k1").unwrap())
    }

    fn unconnected(request_capacity: usize) -> (Publisher, Session) {
        let mut options = SessionOptions::new("k1", "127.0.0.1", 9);
        options.request_capacity = request_capacity;
        Session::new(&options, ())
    }

    #[test]
    fn a_full_queue_hands_the_message_back() {
        let (publisher, _session) = unconnected(1);
        publisher
            .try_publish(&topic(), false, b"one".to_vec())
            .unwrap();
        let e = publisher
            .try_publish(&topic(), true, b"two".to_vec())
            .unwrap_err();
        assert_eq!(e.reason, PublishFailure::QueueFull);
        assert_eq!(e.topic, "kiosk/k1/print");
        assert_eq!(&e.payload[..], b"two");
        assert!(e.retain);
    }

    #[tokio::test]
    async fn an_ended_session_hands_the_message_back() {
        let (publisher, session) = unconnected(4);
        drop(session);
        let e = publisher
            .try_publish(&topic(), false, b"x".to_vec())
            .unwrap_err();
        assert_eq!(
            (e.reason, &e.payload[..]),
            (PublishFailure::SessionEnded, &b"x"[..])
        );
        let e = publisher
            .publish(&topic(), false, b"y".to_vec())
            .await
            .unwrap_err();
        assert_eq!(
            (e.reason, &e.payload[..]),
            (PublishFailure::SessionEnded, &b"y"[..])
        );
        let incoming = Incoming {
            connection: 0,
            publish: rumqttc::Publish::new("kiosk/k1/print", QoS::AtLeastOnce, "z"),
        };
        assert_eq!(publisher.ack(&incoming).await, AckOutcome::SessionEnded);
    }

    #[tokio::test]
    async fn an_ack_from_an_earlier_connection_is_not_enqueued() {
        let (publisher, _session) = unconnected(1);
        publisher.shared.connection.store(2, Ordering::SeqCst);
        let mut publish = rumqttc::Publish::new("kiosk/k1/print", QoS::AtLeastOnce, "job");
        publish.pkid = 1;
        let old = Incoming {
            connection: 1,
            publish,
        };
        assert_eq!(publisher.ack(&old).await, AckOutcome::EarlierConnection);
        // The queue (room for one) is still empty.
        publisher
            .try_publish(&topic(), false, b"a".to_vec())
            .unwrap();
    }
}
