//! The job state machine as the gateway sees it. Pure: no I/O.
//!
//! ```text
//!   queued ──► received ──► printed
//!     │            ├──────► failed
//!     │            └──────► expired   (reported by the kiosk)
//!     ├──────────────────► printed / failed (result overtook `received`)
//!     └──────────────────► expired    (gateway: `expires_at` passed, never received)
//! ```
//!
//! Results can arrive twice or out of order (QoS 1 redelivery, republished
//! jobs answered again by the kiosk), so a transition only ever moves
//! forward: `queued` < `received` < terminal. Terminal states are final; a
//! second, different terminal report is a conflict that is logged and ignored
//! (the first outcome is what happened on paper). One exception lives in
//! [`JobRecord::apply`]: an `expired` the gateway inferred
//! itself is replaced by whatever the kiosk later reports.

use kiosk_schemas::{JobState, Timestamp};

use crate::store::{ByteCounts, JobRecord, Source, Transition};

/// What applying a reported state to a job's current state does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Move to this state and record it in the history.
    Advance(JobState),
    /// Already there or further along; nothing to record.
    Duplicate,
    /// A terminal state disagreeing with the recorded terminal state.
    Conflict,
}

fn rank(s: JobState) -> u8 {
    match s {
        JobState::Queued => 0,
        JobState::Received => 1,
        JobState::Printed | JobState::Failed | JobState::Expired => 2,
    }
}

/// Decides how a job in `current` reacts to a report of `reported`.
pub fn step(current: JobState, reported: JobState) -> Step {
    if current == reported {
        return Step::Duplicate;
    }
    match rank(reported).cmp(&rank(current)) {
        std::cmp::Ordering::Greater => Step::Advance(reported),
        std::cmp::Ordering::Less => Step::Duplicate,
        std::cmp::Ordering::Equal => Step::Conflict,
    }
}

/// True when the gateway should keep (re)sending the job to its kiosk:
/// `queued` until it is received, `received` to ask for the outcome.
pub fn wants_delivery(state: JobState) -> bool {
    !state.is_terminal()
}

impl JobRecord {
    /// Applies a state report; returns what happened. Pure. `bytes` is
    /// kept only with a `failed` state.
    pub fn apply(
        &mut self,
        reported: JobState,
        at: Timestamp,
        reason: Option<String>,
        bytes: Option<ByteCounts>,
        source: Source,
    ) -> Step {
        let current = if self.gateway_expired && source == Source::Kiosk {
            JobState::Queued
        } else {
            self.state
        };
        let step = step(current, reported);
        if let Step::Advance(next) = step {
            self.state = next;
            self.reason = reason.clone();
            self.bytes = bytes.filter(|_| next == JobState::Failed);
            self.gateway_expired = source == Source::Gateway && next == JobState::Expired;
            self.history.push(Transition {
                state: next,
                at,
                reason,
            });
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    #[test]
    fn table() {
        let cases = [
            (Queued, Received, Step::Advance(Received)),
            (Queued, Printed, Step::Advance(Printed)),
            (Queued, Failed, Step::Advance(Failed)),
            (Queued, Expired, Step::Advance(Expired)),
            (Received, Printed, Step::Advance(Printed)),
            (Received, Expired, Step::Advance(Expired)),
            (Received, Received, Step::Duplicate),
            (Received, Queued, Step::Duplicate),
            (Printed, Received, Step::Duplicate),
            (Printed, Printed, Step::Duplicate),
            (Printed, Failed, Step::Conflict),
            (Expired, Printed, Step::Conflict),
            (Failed, Queued, Step::Duplicate),
        ];
        for (cur, rep, want) in cases {
            assert_eq!(step(cur, rep), want, "{cur:?} + {rep:?}");
        }
    }

    #[test]
    fn delivery_stops_at_terminal_states() {
        assert!(wants_delivery(Queued));
        assert!(wants_delivery(Received));
        assert!(!wants_delivery(Printed));
        assert!(!wants_delivery(Failed));
        assert!(!wants_delivery(Expired));
    }
}
