//! The cash acceptor: credits from a serial bill/coin validator, recorded in
//! a durable outbox before anything else, sent to the cloud until it
//! acknowledges them (DESIGN.md, "Cash credits").
//!
//! - [`line`]: the serial protocol (v2: `READY:v2:<boot id>`,
//!   `CREDIT:<seq>:...`, `ACK:<seq>`, `HELLO`; v1: `BILL:`, `COIN:`,
//!   `READY`; both: `ENABLE`, `DISABLE`, `ERR:`).
//! - [`acceptance`]: which session the acceptor takes money for (pure).
//! - [`outbox`]: the sled outbox that numbers credits (`seq`) and stores the
//!   acceptance with them.
//! - [`Cash`]: the one place that changes the acceptance: a control from
//!   the cloud or a credit, each stored and flushed before the board hears
//!   of it, reported on `kiosk/<id>/cash/state`.
//! - [`Acceptor`]: owns the serial port (tokio-serial): reopens it when it
//!   disappears, records each credit (flushed) before acknowledging it to a
//!   v2 board, renews a v2 board's lease every second while enabled, and
//!   disables acceptance whenever credits cannot be recorded, so no money
//!   goes in unrecorded.
//! - [`Sender`]: publishes unacknowledged credits on `kiosk/<id>/cash`:
//!   new ones at once, all of them after every reconnect, and any still
//!   unacknowledged every `cash.resend_interval`; and the acceptance
//!   reports on `kiosk/<id>/cash/state`.

//!
//! Files: `serial.rs` the [`Acceptor`]'s session loop on an open port,
//! `board.rs` what each line read from the board does, `sender.rs` the
//! [`Sender`]; [`Cash`] is here.

pub mod acceptance;
mod board;
pub mod line;
pub mod outbox;
mod sender;
mod serial;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use kiosk_schemas::{CashAction, CashControl, CashState, CreditKind};
use tokio::sync::{mpsc, watch};

use acceptance::SessionState;
use outbox::{BoardRef, Outbox, OutboxError, Recorded};
pub use sender::{SEND_WINDOW, Sender};
pub use serial::Acceptor;

/// How often `ENABLE` is repeated while enabled: a v2 board inhibits after
/// 3 s without a line from the host (its lease), so a dead agent cannot
/// leave the slot open.
pub const LEASE_RENEW: Duration = Duration::from_secs(1);

/// After `DISABLE` is written, how long a credit the board reports still
/// belongs to the session that was enabled: a coin already falling when the
/// slot closed, or a line already on the wire.
pub const DISABLE_GRACE: Duration = Duration::from_millis(500);

/// How long after a session's acceptance ends its end is reported on
/// `kiosk/<id>/cash/state`: time for the acceptor to write `DISABLE`, plus
/// [`DISABLE_GRACE`].
pub const CONFIRM_DELAY: Duration = Duration::from_millis(700);

/// Acceptance reports queued for the [`Sender`]; beyond that they are
/// dropped (the cloud asks again with its next control).
const STATE_QUEUE: usize = 64;

/// Counters of the acceptor, for logs and tests.
#[derive(Debug, Default)]
pub struct CashStats {
    /// Credits recorded.
    pub credits: AtomicU64,
    /// Credits a v2 board reported again after they were recorded (their
    /// `ACK` was lost): acknowledged again, not recorded twice.
    pub duplicates: AtomicU64,
    /// Garbled lines ignored.
    pub malformed: AtomicU64,
    /// Credits read that could NOT be recorded (store failure).
    pub unrecorded: AtomicU64,
}

/// The acceptance in force and everything that changes it; cheap to clone.
///
/// Every change — a `cash/control` from the cloud, a credit that completes
/// the amount due — is stored in the outbox's transaction and flushed
/// before the board is commanded (the acceptor follows
/// [`Cash::subscribe`]) and before it is reported on `kiosk/<id>/cash/state`.
/// One lock orders the changes, so the board always ends in the state
/// stored last.
#[derive(Clone)]
pub struct Cash {
    outbox: Outbox,
    order: Arc<tokio::sync::Mutex<()>>,
    enabled: Arc<watch::Sender<Option<SessionState>>>,
    states: mpsc::Sender<CashState>,
}

impl Cash {
    /// Restores the acceptance stored in `outbox` (a restart keeps taking
    /// money for the session that was enabled); reports go to the returned
    /// receiver (give it to the [`Sender`]).
    ///
    /// # Errors
    /// [`OutboxError`] when the stored acceptance cannot be read.
    pub fn open(outbox: Outbox) -> Result<(Cash, mpsc::Receiver<CashState>), OutboxError> {
        let restored = outbox.acceptance()?.enabled().cloned();
        if let Some(s) = &restored {
            tracing::info!(session = %s.session_id, amount_due = s.amount_due, inserted = s.inserted,
                "cash acceptance restored: enabled for the session open before the restart");
        }
        let (tx, rx) = mpsc::channel(STATE_QUEUE);
        Ok((
            Cash {
                outbox,
                order: Arc::default(),
                enabled: Arc::new(watch::channel(restored).0),
                states: tx,
            },
            rx,
        ))
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Follows the enabled session (`None`: refuse money).
    pub fn subscribe(&self) -> watch::Receiver<Option<SessionState>> {
        self.enabled.subscribe()
    }

    /// Queues the report of `state`. The end of a session is reported
    /// [`CONFIRM_DELAY`] later, with the session as it is then: the board
    /// may take a coin until it has read `DISABLE`, and such a coin (and one
    /// within [`DISABLE_GRACE`] after it) is the session's, so the
    /// confirmation's `last_seq` should cover it.
    fn report(&self, state: Option<&SessionState>) {
        match state {
            Some(s) if !s.is_enabled() => {
                let cash = self.clone();
                let then = s.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(CONFIRM_DELAY).await;
                    match cash.outbox.acceptance() {
                        Ok(a) => {
                            cash.send_report(Some(a.session(&then.session_id).unwrap_or(&then)))
                        }
                        Err(e) => tracing::error!(error = %e, "cannot read the cash acceptance"),
                    }
                });
            }
            _ => self.send_report(state),
        }
    }

    fn send_report(&self, state: Option<&SessionState>) {
        let msg = self.outbox.state_message(state);
        if let Err(e) = self.states.try_send(msg) {
            tracing::warn!(error = %e, "cash state report dropped; the cloud asks again");
        }
    }

    /// Applies a `cash/control` from the cloud: stores the new acceptance,
    /// flushes, then lets the acceptor follow and reports the states it
    /// changed (see [`acceptance::Acceptance::enable`] and `disable`).
    ///
    /// # Errors
    /// [`OutboxError`] when it cannot be stored: nothing changed.
    pub async fn control(&self, control: &CashControl) -> Result<(), OutboxError> {
        let _order = self.order.lock().await;
        let session = control.session_id.clone();
        let due = control.amount_due.unwrap_or(0);
        let (reports, acceptance) = self.outbox.control(|a| match control.action {
            CashAction::Enable => match &session {
                Some(id) => a.enable(id, due),
                None => {
                    tracing::warn!("cash enable without a session id ignored");
                    Vec::new()
                }
            },
            CashAction::Disable => a.disable(session.as_deref()).into_iter().collect(),
        })?;
        self.outbox.flush().await?;
        let enabled = acceptance.enabled().cloned();
        tracing::info!(action = ?control.action, session = ?control.session_id,
            enabled = ?enabled.as_ref().map(|s| s.session_id.as_str()), "cash control applied");
        self.enabled.send_replace(enabled);
        if reports.is_empty() {
            self.report(acceptance.latest());
        }
        for r in &reports {
            self.report(Some(r));
        }
        Ok(())
    }

    /// Records a credit (see [`Outbox::append`]; `grace`: the session the
    /// acceptor stopped for within [`DISABLE_GRACE`]) and flushes it. When
    /// it completed the session's amount due the acceptor is told to stop
    /// and the ended session is reported; a credit for an ended session
    /// reports that session again (its `last_seq` moved).
    ///
    /// # Errors
    /// [`OutboxError`] when it cannot be stored or flushed: the credit may
    /// not be on disk; the caller disables the acceptor and does not
    /// acknowledge it to the board.
    pub async fn record(
        &self,
        kind: CreditKind,
        amount: i64,
        currency: &kiosk_schemas::Currency,
        board: Option<&BoardRef>,
        grace: Option<&str>,
    ) -> Result<Recorded, OutboxError> {
        let _order = self.order.lock().await;
        let recorded = self.outbox.append(kind, amount, currency, board, grace)?;
        self.outbox.flush().await?;
        if let Recorded::New(a) = &recorded {
            if a.ended_now {
                if let Some(s) = &a.session {
                    tracing::info!(session = %s.session_id, inserted = s.inserted, amount_due = s.amount_due,
                        "amount due reached: the kiosk stops accepting for this session");
                }
                self.enabled.send_replace(None);
                self.report(a.session.as_ref());
            } else if let Some(s) = a.session.as_ref().filter(|s| !s.is_enabled()) {
                tracing::info!(session = %s.session_id, seq = a.event.seq,
                    "credit read just after the acceptor closed: it is the session's");
                self.report(Some(s));
            }
        }
        Ok(recorded)
    }

    /// Queues a report of the acceptance in force now (after a reconnect).
    pub fn report_current(&self) {
        match self.outbox.acceptance() {
            Ok(a) => self.send_report(a.latest()),
            Err(e) => tracing::error!(error = %e, "cannot read the cash acceptance"),
        }
    }
}
