//! The job state machine as the gateway sees it. Pure: no I/O.
//!
//! ```text
//!   queued ──► received ──► printed
//!     │            ├──────► failed
//!     │            └──────► expired   (reported by the kiosk)
//!     │            └──────► cancelled (the kiosk confirmed a cancel)
//!     ├──────────────────► printed / failed (result overtook `received`)
//!     ├──────────────────► expired    (gateway: `expires_at` passed, never received)
//!     └──────────────────► cancelled  (gateway: cancelled before the kiosk received it)
//! ```
//!
//! Cancel (`POST /v1/print-jobs/{id}/cancel`, [`cancel`]): a `queued` job
//! is `cancelled` at once and leaves the pending index, so it is never sent
//! again; a `received` job is only asked to cancel (the kiosk's `cancel`
//! command) and becomes `cancelled` when the kiosk confirms; a job in a
//! terminal state is not cancellable. The gateway has no `printing` state
//! (the kiosk does not report it): a job printing on the kiosk is
//! `received` here, the kiosk refuses its cancel, and the job ends
//! `printed` or `failed`, which then refuses further cancels.
//!
//! Until the kiosk confirms a cancel the gateway decided by itself (a
//! `queued` job: it may have been published already, and the kiosk may
//! have started it before the `cancel` command arrived), that `cancelled`
//! is an inference like the gateway's `expired`: what the kiosk reports
//! replaces it, since the kiosk knows what happened on paper
//! ([`JobRecord::apply`] with `cancel_unconfirmed`).
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
        JobState::Printed | JobState::Failed | JobState::Expired | JobState::Cancelled => 2,
    }
}

/// What `POST /v1/print-jobs/{id}/cancel` does to a job in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// Not received by the kiosk: `cancelled` now, out of the pending
    /// index; the kiosk is still told (it may hold an earlier publish).
    Now,
    /// Received by the kiosk: ask it; `cancelled` when it confirms.
    Ask,
    /// Cancelled already: nothing to do (the same answer again).
    Already,
    /// Printed, failed or expired: too late.
    Refuse,
}

/// Decides what a cancel does to a job in `current`. Pure.
pub fn cancel(current: JobState) -> Cancel {
    match current {
        JobState::Queued => Cancel::Now,
        JobState::Received => Cancel::Ask,
        JobState::Cancelled => Cancel::Already,
        JobState::Printed | JobState::Failed | JobState::Expired => Cancel::Refuse,
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
    /// kept only with a `failed` state. `cancel_unconfirmed`: the job is
    /// `cancelled` by the gateway alone (the kiosk has not confirmed), so
    /// a kiosk's `printed`, `failed` or `expired` replaces it, its
    /// `received` changes nothing, and its `cancelled` is a duplicate
    /// (the confirmation, which the caller records).
    pub fn apply(
        &mut self,
        reported: JobState,
        at: Timestamp,
        reason: Option<String>,
        bytes: Option<ByteCounts>,
        source: Source,
        cancel_unconfirmed: bool,
    ) -> Step {
        let by_kiosk = source == Source::Kiosk;
        let current = if cancel_unconfirmed && by_kiosk && self.state == JobState::Cancelled {
            if reported == JobState::Cancelled {
                return Step::Duplicate;
            }
            JobState::Received
        } else if self.gateway_expired && by_kiosk {
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
            (Queued, Cancelled, Step::Advance(Cancelled)),
            (Received, Cancelled, Step::Advance(Cancelled)),
            (Cancelled, Cancelled, Step::Duplicate),
            (Cancelled, Received, Step::Duplicate),
            (Cancelled, Printed, Step::Conflict),
            (Printed, Cancelled, Step::Conflict),
            (Failed, Cancelled, Step::Conflict),
            (Expired, Cancelled, Step::Conflict),
        ];
        for (cur, rep, want) in cases {
            assert_eq!(step(cur, rep), want, "{cur:?} + {rep:?}");
        }
    }

    #[test]
    fn cancel_table() {
        let cases = [
            (Queued, Cancel::Now),
            (Received, Cancel::Ask),
            (Cancelled, Cancel::Already),
            (Printed, Cancel::Refuse),
            (Failed, Cancel::Refuse),
            (Expired, Cancel::Refuse),
        ];
        for (cur, want) in cases {
            assert_eq!(cancel(cur), want, "{cur:?}");
        }
        assert!(!wants_delivery(Cancelled));
    }

    fn record(state: JobState) -> JobRecord {
        let at = Timestamp::from_timestamp(1_700_000_000, 0).unwrap();
        JobRecord {
            job_id: kiosk_schemas::JobId::new("j").unwrap(),
            kiosk_id: kiosk_schemas::KioskId::new("k").unwrap(),
            printer: "receipt".into(),
            copies: 1,
            created_at: at,
            expires_at: None,
            state,
            reason: None,
            history: Vec::new(),
            origin: crate::store::Origin::Mqtt,
            reprint_of: None,
            accepted_at: at,
            gateway_expired: false,
            bytes: None,
        }
    }

    #[test]
    fn the_kiosk_overrules_an_unconfirmed_cancel() {
        let at = Timestamp::from_timestamp(1_700_000_001, 0).unwrap();
        // (reported, unconfirmed, step, state after)
        let cases = [
            (Printed, true, Step::Advance(Printed), Printed),
            (Failed, true, Step::Advance(Failed), Failed),
            (Expired, true, Step::Advance(Expired), Expired),
            (Received, true, Step::Duplicate, Cancelled),
            (Cancelled, true, Step::Duplicate, Cancelled),
            // Confirmed: the first outcome stands.
            (Printed, false, Step::Conflict, Cancelled),
            (Received, false, Step::Duplicate, Cancelled),
        ];
        for (reported, unconfirmed, want, after) in cases {
            let mut rec = record(Cancelled);
            let got = rec.apply(reported, at, None, None, Source::Kiosk, unconfirmed);
            assert_eq!(got, want, "{reported:?} unconfirmed={unconfirmed}");
            assert_eq!(rec.state, after, "{reported:?} unconfirmed={unconfirmed}");
        }
        // The gateway's own reports are not the kiosk's word.
        let mut rec = record(Cancelled);
        let got = rec.apply(Expired, at, None, None, Source::Gateway, true);
        assert_eq!(got, Step::Conflict);
    }

    #[test]
    fn delivery_stops_at_terminal_states() {
        assert!(wants_delivery(Queued));
        assert!(wants_delivery(Received));
        assert!(!wants_delivery(Printed));
        assert!(!wants_delivery(Failed));
        assert!(!wants_delivery(Expired));
        assert!(!wants_delivery(Cancelled));
    }
}
