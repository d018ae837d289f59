//! Live session events for Server-Sent-Event streams.
//!
//! After a change is flushed, the gateway publishes a [`LiveEvent`] to the
//! session's broadcast channel; every open `GET
//! /v1/cash-sessions/{id}/events` stream of that session receives it. A
//! stream that falls behind by more than the channel's capacity is told to
//! reload (the stored session is the truth; events are only a
//! notification).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

use super::{SessionCredit, SessionRecord, SessionView};

/// Events buffered per session for slow readers.
const CAPACITY: usize = 64;

/// One event on a session's stream.
#[derive(Debug, Clone, Serialize)]
pub struct LiveEvent {
    /// SSE event name: `session` (the current state, first on every
    /// stream), `credit`, `paid` or `cancelled`.
    #[serde(skip)]
    pub name: &'static str,
    /// The session after the change.
    pub session: SessionView,
    /// The credit, for `credit` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credit: Option<SessionCredit>,
}

impl LiveEvent {
    /// The `session` event: current state.
    pub fn snapshot(s: &SessionRecord) -> Self {
        LiveEvent {
            name: "session",
            session: s.into(),
            credit: None,
        }
    }

    /// True for the last event of a session (`paid`, `cancelled`).
    pub fn is_final(&self) -> bool {
        matches!(self.name, "paid" | "cancelled")
    }
}

/// The fan-out hub.
#[derive(Default)]
pub struct Live {
    channels: Mutex<HashMap<String, broadcast::Sender<LiveEvent>>>,
}

impl Live {
    /// A receiver of `session_id`'s future events. Forgets the channels
    /// whose streams have all ended (sessions that were already closed or
    /// unknown when opened, clients that went away), so the hub holds only
    /// live streams.
    pub fn subscribe(&self, session_id: &str) -> broadcast::Receiver<LiveEvent> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, tx| tx.receiver_count() > 0);
        map.entry(session_id.to_owned())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// Sends `event` to `session_id`'s streams; forgets channels nobody
    /// listens to.
    pub fn publish(&self, session_id: &str, event: LiveEvent) {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.get(session_id) {
            let last = event.is_final();
            if tx.send(event).is_err() || last {
                map.remove(session_id);
            }
        }
    }

    /// The events a credit applied to `session` produces: `credit`, then
    /// `paid` if it completed the payment.
    pub fn credit_events(
        session: &SessionRecord,
        credit: &SessionCredit,
        paid: bool,
    ) -> Vec<LiveEvent> {
        let mut out = vec![LiveEvent {
            name: "credit",
            session: session.into(),
            credit: Some(credit.clone()),
        }];
        if paid {
            out.push(LiveEvent {
                name: "paid",
                session: session.into(),
                credit: None,
            });
        }
        out
    }

    #[cfg(test)]
    fn channels(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_without_streams_are_forgotten() {
        let live = Live::default();
        drop(live.subscribe("s1"));
        drop(live.subscribe("s2"));
        let _rx = live.subscribe("s3");
        assert_eq!(live.channels(), 1, "only s3 has a stream");
        let _rx2 = live.subscribe("s3");
        assert_eq!(live.channels(), 1);
    }
}
