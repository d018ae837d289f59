//! A job's life on the kiosk. Pure: no I/O.
//!
//! ```text
//! received ──► printing ──► printed  (every byte handed over)
//!    │   ▲         └──────► failed   (the write failed part-way, or
//!    │   │                           `interrupted`: found here after a crash)
//!    │   └── nothing was written (printer went away): wait again
//!    ├──────────────────────► expired (expires_at passed while waiting)
//!    ├──────────────────────► failed  (the document cannot be rendered)
//!    └──────────────────────► cancelled (a `cancel` command)
//! ```
//!
//! A `cancel` command is recorded only while the job waits (`received`):
//! once `printing` is on disk the first byte may be on paper, so the cancel
//! is refused and the job ends `printed` or `failed` as usual. A cancel
//! for a job that has not arrived is recorded as a `cancelled` record
//! without content, so the job is refused when it does arrive (the gateway
//! may have published it before the cancel). The worker moves a job to
//! `printing` in a transaction that checks it is still `received`, so a
//! cancel and the start of a write are ordered: one of them loses.
//!
//! Every state is stored (and flushed) before anything is acknowledged or
//! printed. `printing` is written before the first byte goes to the
//! printer, and left as soon as the last byte and the end of the job are
//! handed over (`printed` is flushed before any wait for the printer). A
//! job found `printing` after a restart was caught during its write: it
//! may be on paper in part, so it is reported `failed: interrupted` with
//! its `bytes_written` (a lower bound) and `bytes_total`, and never
//! reprinted by itself — a double receipt is worse than a missing one that
//! the operator sees. (A crash in the few milliseconds between the
//! hand-over and `printed` reaching the disk shows `bytes_written ==
//! bytes_total`.)

use kiosk_schemas::ResultState;
use serde::{Deserialize, Serialize};

/// Reason reported for a job that was printing when the agent stopped.
pub const INTERRUPTED: &str = "interrupted";

/// State of a job in the kiosk's inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InboxState {
    /// Stored; waiting for its printer.
    Received,
    /// Bytes are being written to the printer.
    Printing,
    /// Every byte handed over to the printer.
    Printed,
    /// Not printed, or possibly only partly; see the reason.
    Failed,
    /// Expired before it could print.
    Expired,
    /// Cancelled by a `cancel` command before its write started; never
    /// printed.
    Cancelled,
}

impl InboxState {
    /// The state reported to the cloud for this inbox state. `printing` is
    /// still `received` from the cloud's point of view.
    pub fn result_state(self) -> ResultState {
        match self {
            InboxState::Received | InboxState::Printing => ResultState::Received,
            InboxState::Printed => ResultState::Printed,
            InboxState::Failed => ResultState::Failed,
            InboxState::Expired => ResultState::Expired,
            InboxState::Cancelled => ResultState::Cancelled,
        }
    }

    /// True for `printed`, `failed`, `expired` and `cancelled`.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            InboxState::Printed | InboxState::Failed | InboxState::Expired | InboxState::Cancelled
        )
    }

    /// Whether a `cancel` command is recorded for a job in this state:
    /// only while it waits. `printing` may be on paper already; a final
    /// state is what happened.
    pub fn can_cancel(self) -> bool {
        self == InboxState::Received
    }

    /// Whether moving to `next` is allowed.
    pub fn can_become(self, next: InboxState) -> bool {
        use InboxState::*;
        matches!(
            (self, next),
            (Received, Printing)
                | (Received, Expired)
                | (Received, Failed)
                | (Received, Cancelled)
                | (Printing, Printed)
                | (Printing, Failed)
                | (Printing, Received)
        )
    }

    /// What a job found in this state when the agent starts becomes.
    pub fn after_restart(self) -> Option<(InboxState, &'static str)> {
        match self {
            InboxState::Printing => Some((InboxState::Failed, INTERRUPTED)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InboxState::*;
    use super::*;

    #[test]
    fn transitions() {
        assert!(Received.can_become(Printing));
        assert!(Received.can_become(Expired));
        assert!(Received.can_become(Failed));
        assert!(Printing.can_become(Printed));
        assert!(Printing.can_become(Failed));
        assert!(Printing.can_become(Received));
        for s in [Printed, Failed, Expired, Cancelled] {
            for n in [Received, Printing, Printed, Failed, Expired, Cancelled] {
                assert!(!s.can_become(n), "{s:?} -> {n:?}");
            }
        }
        assert!(!Received.can_become(Printed));
    }

    #[test]
    fn only_a_waiting_job_can_be_cancelled() {
        assert!(Received.can_become(Cancelled));
        assert!(Received.can_cancel());
        // The write started: the first byte may be on paper.
        assert!(!Printing.can_become(Cancelled));
        assert!(!Printing.can_cancel());
        for s in [Printed, Failed, Expired, Cancelled] {
            assert!(!s.can_cancel(), "{s:?}");
        }
        assert!(Cancelled.is_final());
        assert_eq!(Cancelled.result_state(), ResultState::Cancelled);
        assert_eq!(Cancelled.after_restart(), None);
    }

    #[test]
    fn restart_rules() {
        assert_eq!(Printing.after_restart(), Some((Failed, INTERRUPTED)));
        assert_eq!(Received.after_restart(), None);
        assert_eq!(Printed.after_restart(), None);
    }

    #[test]
    fn reported_states() {
        assert_eq!(Printing.result_state(), ResultState::Received);
        assert_eq!(Expired.result_state(), ResultState::Expired);
    }
}
