//! The presence rule (DESIGN.md, "Topics", presence): whether a kiosk is
//! online, from its statuses and its silence. Pure: the clock is passed in
//! (`tokio::time::Instant`, so tests run it with `tokio::time::pause()`).
//!
//! - An `online` status makes the kiosk online and its `connection_id` the
//!   current one.
//! - An `offline` (the last will, or the agent's own before a clean
//!   DISCONNECT) makes it offline, unless it names a `connection_id` other
//!   than the current one: then it is the will of an old connection that
//!   the broker timed out after the kiosk had reconnected, and is ignored.
//!   An `offline` without `connection_id` (older agents), or when no
//!   current one is known, is believed.
//! - A kiosk online and silent (no message at all) for
//!   [`MISSED_HEARTBEATS`] heartbeats is offline: its `heartbeat_ms`, or
//!   the gateway's `fleet.heartbeat` when it announces none. This covers a
//!   will that is never published (a broker node that died with it, a link
//!   cut silently on a broker that has not noticed).

use std::time::Duration;

use kiosk_schemas::{KioskStatus, Presence, Timestamp};
use tokio::time::Instant;

/// Heartbeats of silence after which an online kiosk is offline.
pub const MISSED_HEARTBEATS: u32 = 3;

/// Shortest heartbeat believed from a kiosk's `heartbeat_ms`, so a
/// misconfigured kiosk cannot make the checker spin.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// Why a kiosk's presence changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// An `online` status.
    Status,
    /// An `offline` status of the current connection: its last will, or
    /// the agent's own before a clean shutdown.
    Will,
    /// [`MISSED_HEARTBEATS`] heartbeats without a message.
    HeartbeatTimeout,
}

impl Reason {
    /// The `reason` label of `kiosk_presence_transitions_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Status => "status",
            Reason::Will => "will",
            Reason::HeartbeatTimeout => "heartbeat_timeout",
        }
    }
}

/// A change of presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The new presence.
    pub to: Presence,
    /// Why.
    pub reason: Reason,
}

/// What a status did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOutcome {
    /// Applied.
    Applied {
        /// The presence changed.
        transition: Option<Transition>,
        /// The first `online` of a connection (its `connected_at` differs
        /// from the last one seen, or is absent, or the kiosk had been
        /// offline): its unfinished jobs and cash control should be sent
        /// again.
        reconnected: bool,
    },
    /// An `offline` of a connection other than the current one: ignored.
    StaleWill,
}

/// One kiosk's presence.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// Current presence; `None` until a status was seen.
    pub presence: Option<Presence>,
    /// `connection_id` of the last `online`.
    pub connection_id: Option<String>,
    /// `connected_at` of the last `online` (cleared when the kiosk goes
    /// offline, so its next `online` counts as a reconnect).
    pub connected_at: Option<Timestamp>,
    /// The kiosk's own heartbeat (`heartbeat_ms`).
    pub heartbeat: Option<Duration>,
    /// When the last message from the kiosk arrived.
    pub heard: Option<Instant>,
}

impl Tracker {
    /// Applies a status that arrived at `now`.
    pub fn on_status(&mut self, status: &KioskStatus, now: Instant) -> StatusOutcome {
        match status.state {
            Presence::Online => {
                self.heard = Some(now);
                let was_online = self.presence == Some(Presence::Online);
                let reconnected = !was_online
                    || status.connected_at.is_none()
                    || status.connected_at != self.connected_at;
                self.presence = Some(Presence::Online);
                self.connected_at = status.connected_at;
                self.connection_id.clone_from(&status.connection_id);
                self.heartbeat = status
                    .heartbeat_ms
                    .map(|ms| Duration::from_millis(ms).max(MIN_HEARTBEAT));
                StatusOutcome::Applied {
                    transition: (!was_online).then_some(Transition {
                        to: Presence::Online,
                        reason: Reason::Status,
                    }),
                    reconnected,
                }
            }
            Presence::Offline => {
                if let (Some(will), Some(current)) = (&status.connection_id, &self.connection_id)
                    && will != current
                {
                    return StatusOutcome::StaleWill;
                }
                self.heard = Some(now);
                StatusOutcome::Applied {
                    transition: self.go_offline(Reason::Will),
                    reconnected: false,
                }
            }
        }
    }

    /// Notes another message from the kiosk at `now` (a job result, a
    /// credit): it is alive.
    pub fn heard(&mut self, now: Instant) {
        self.heard = Some(now);
    }

    /// When the kiosk will count as silent, if it is online.
    pub fn deadline(&self, default_heartbeat: Duration) -> Option<Instant> {
        if self.presence != Some(Presence::Online) {
            return None;
        }
        let beat = self.heartbeat.unwrap_or(default_heartbeat);
        Some(self.heard? + beat * MISSED_HEARTBEATS)
    }

    /// Marks the kiosk offline when it has been silent too long at `now`.
    pub fn check_timeout(
        &mut self,
        now: Instant,
        default_heartbeat: Duration,
    ) -> Option<Transition> {
        match self.deadline(default_heartbeat) {
            Some(deadline) if now >= deadline => self.go_offline(Reason::HeartbeatTimeout),
            _ => None,
        }
    }

    fn go_offline(&mut self, reason: Reason) -> Option<Transition> {
        let was = self.presence.replace(Presence::Offline);
        self.connected_at = None;
        (was != Some(Presence::Offline)).then_some(Transition {
            to: Presence::Offline,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(connection: &str, connected_at_s: i64, heartbeat_ms: Option<u64>) -> KioskStatus {
        let mut s = KioskStatus::online("0.1.0", Default::default());
        s.connection_id = Some(connection.to_owned());
        s.connected_at = chrono::DateTime::from_timestamp(connected_at_s, 0);
        s.heartbeat_ms = heartbeat_ms;
        s
    }

    fn applied(transition: Option<(Presence, Reason)>, reconnected: bool) -> StatusOutcome {
        StatusOutcome::Applied {
            transition: transition.map(|(to, reason)| Transition { to, reason }),
            reconnected,
        }
    }

    const BEAT: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn statuses_and_wills() {
        use Presence::{Offline, Online};
        let old_agent_offline = KioskStatus::offline();
        // (status, expected outcome, presence after)
        let table: Vec<(KioskStatus, StatusOutcome, Presence)> = vec![
            (
                online("a", 1, None),
                applied(Some((Online, Reason::Status)), true),
                Online,
            ),
            // A heartbeat of the same connection: nothing new.
            (online("a", 1, None), applied(None, false), Online),
            // Reconnected (new connection, new connected_at).
            (online("b", 2, None), applied(None, true), Online),
            // The old connection's will arrives late: ignored.
            (
                KioskStatus::offline_for("a"),
                StatusOutcome::StaleWill,
                Online,
            ),
            // The current connection's will: offline.
            (
                KioskStatus::offline_for("b"),
                applied(Some((Offline, Reason::Will)), false),
                Offline,
            ),
            (KioskStatus::offline_for("b"), applied(None, false), Offline),
            // Back on a new connection.
            (
                online("c", 3, None),
                applied(Some((Online, Reason::Status)), true),
                Online,
            ),
            // An older agent's will has no id: believed.
            (
                old_agent_offline,
                applied(Some((Offline, Reason::Will)), false),
                Offline,
            ),
        ];
        let mut t = Tracker::default();
        for (i, (status, outcome, after)) in table.into_iter().enumerate() {
            assert_eq!(t.on_status(&status, Instant::now()), outcome, "row {i}");
            assert_eq!(t.presence, Some(after), "row {i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn offline_after_three_silent_heartbeats() {
        let mut t = Tracker::default();
        assert_eq!(t.deadline(BEAT), None, "unknown kiosks never time out");
        t.on_status(&online("a", 1, Some(1000)), Instant::now());
        let start = Instant::now();
        assert_eq!(t.deadline(BEAT), Some(start + Duration::from_secs(3)));

        tokio::time::advance(Duration::from_millis(2900)).await;
        assert_eq!(t.check_timeout(Instant::now(), BEAT), None);
        // A job result counts as a sign of life.
        t.heard(Instant::now());
        tokio::time::advance(Duration::from_millis(2900)).await;
        assert_eq!(t.check_timeout(Instant::now(), BEAT), None);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            t.check_timeout(Instant::now(), BEAT),
            Some(Transition {
                to: Presence::Offline,
                reason: Reason::HeartbeatTimeout
            })
        );
        assert_eq!(t.presence, Some(Presence::Offline));
        assert_eq!(t.check_timeout(Instant::now(), BEAT), None, "once");
        assert_eq!(t.deadline(BEAT), None);

        // Its next heartbeat (same connection) brings it back, as a
        // reconnect: jobs are sent again.
        assert_eq!(
            t.on_status(&online("a", 1, Some(1000)), Instant::now()),
            applied(Some((Presence::Online, Reason::Status)), true)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn default_heartbeat_without_heartbeat_ms() {
        let mut t = Tracker::default();
        t.on_status(&online("a", 1, None), Instant::now());
        tokio::time::advance(BEAT * 3 - Duration::from_millis(1)).await;
        assert_eq!(t.check_timeout(Instant::now(), BEAT), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(t.check_timeout(Instant::now(), BEAT).is_some());
        // A silly heartbeat_ms is raised to the minimum.
        t.on_status(&online("b", 2, Some(0)), Instant::now());
        assert_eq!(t.deadline(BEAT), Some(Instant::now() + MIN_HEARTBEAT * 3));
    }
}
