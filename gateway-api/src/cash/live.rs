//! Live session events for Server-Sent-Event streams.
//!
//! After a change is flushed, the gateway publishes a [`LiveEvent`] to the
//! session's broadcast channel; every open `GET
//! /v1/cash-sessions/{id}/events` stream of that session receives it. A
//! stream that falls behind by more than the channel's capacity is told to
//! reload (the stored session is the truth; events are only a
//! notification). A stream ends once the session is final (`cancelled`,
//! `settled`), not at `paid`: late credits can still change a paid
//! session's change.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

use super::event::{CashChange, CashEventKind};
use super::{SessionCredit, SessionRecord, SessionState, SessionView};

/// Events buffered per session for slow readers.
const CAPACITY: usize = 64;

/// One event on a session's stream: `session` (the current state, first on
/// every stream and after a reader lagged) or one of the session's
/// [`CashEventKind`]s, named as its webhooks name it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveEvent {
    /// Which event; `None` for the `session` snapshot.
    #[serde(skip)]
    pub kind: Option<CashEventKind>,
    /// The session after the change.
    pub session: SessionView,
    /// The credit, for `credit` and `late_credit` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credit: Option<SessionCredit>,
}

impl LiveEvent {
    /// An event about `s` (without a credit).
    pub fn new(kind: CashEventKind, s: &SessionRecord) -> Self {
        LiveEvent {
            kind: Some(kind),
            session: s.into(),
            credit: None,
        }
    }

    /// The `session` event: current state.
    pub fn snapshot(s: &SessionRecord) -> Self {
        LiveEvent {
            kind: None,
            session: s.into(),
            credit: None,
        }
    }

    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        self.kind.map_or("session", CashEventKind::name)
    }

    /// True for the last event of a session (`cancelled`, `settled`).
    pub fn is_final(&self) -> bool {
        self.kind.is_some_and(CashEventKind::is_final)
    }

    /// The events a stream opened on `s` starts with: `session`, then the
    /// event of the state it is in (`paid`, and `settled` once final;
    /// `cancelling`; `cancelled`), none while open.
    pub fn opening(s: &SessionRecord) -> Vec<LiveEvent> {
        let mut out = vec![Self::snapshot(s)];
        match s.state {
            SessionState::Open => {}
            SessionState::Paid => {
                out.push(Self::new(CashEventKind::Paid, s));
                if s.is_final() {
                    out.push(Self::new(CashEventKind::Settled, s));
                }
            }
            SessionState::Cancelling => out.push(Self::new(CashEventKind::Cancelling, s)),
            SessionState::Cancelled => out.push(Self::new(CashEventKind::Cancelled, s)),
        }
        out
    }

    /// What `change` shows on its session's streams, with the session id;
    /// `None` for a credit on no session. An assigned credit shows as the
    /// credit it became there (`credit` or `late_credit`): a stream follows
    /// the session's money, not who put it there.
    pub fn of(change: &CashChange) -> Option<(String, LiveEvent)> {
        let session = change.session.as_ref()?;
        let kind = match (change.kind, &change.applied) {
            (CashEventKind::Assigned, Some((_, effect))) => CashEventKind::of_credit(*effect),
            (kind, _) => kind,
        };
        let event = LiveEvent {
            kind: Some(kind),
            session: session.into(),
            credit: change.applied.as_ref().map(|(entry, _)| entry.clone()),
        };
        Some((session.session_id.clone(), event))
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
