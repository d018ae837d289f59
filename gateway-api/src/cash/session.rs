//! A payment session: its record and its state machine (pure).

use kiosk_schemas::{CreditKind, Currency, KioskId, Timestamp};
use serde::{Deserialize, Serialize};

use super::CreditRecord;

/// State of a payment session.
///
/// The variant order is the on-disk order (postcard stores the index):
/// append new states, never reorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Accepting money.
    Open,
    /// `amount_inserted >= amount_due`; final once the kiosk confirmed the
    /// end of acceptance and every credit up to it arrived.
    Paid,
    /// Cancelled, and the kiosk confirmed it: `refund_due` is final.
    Cancelled,
    /// `POST /v1/cash-sessions/{id}/cancel` was accepted; waiting for the
    /// kiosk's confirmation and the credits it took before it.
    Cancelling,
}

impl SessionState {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Open => "open",
            SessionState::Paid => "paid",
            SessionState::Cancelled => "cancelled",
            SessionState::Cancelling => "cancelling",
        }
    }
}

/// How a credit came to a session.
///
/// Variant order is the on-disk order: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditOrigin {
    /// Taken by the kiosk for this session, applied while it was open.
    Kiosk,
    /// Taken by the kiosk for this session, arrived after it stopped being
    /// open (paid, cancelling, cancelled): a *late* credit.
    Late,
    /// An unassigned credit an operator assigned to this session
    /// (`POST /v1/kiosks/{kiosk_id}/unassigned-credits/{credit_id}/assign`).
    Assigned,
}

/// One credit as a session lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCredit {
    /// The kiosk's outbox id.
    pub outbox: String,
    /// Sequence number in that outbox.
    pub seq: u64,
    /// Note or coin.
    pub kind: CreditKind,
    /// Denomination, in minor units.
    pub amount: i64,
    /// When the acceptor reported it (kiosk clock).
    pub at: Timestamp,
    /// `kiosk`, `late` or `assigned`.
    pub origin: CreditOrigin,
}

/// The kiosk's confirmation that acceptance for a session ended
/// (`CashState` with `enabled: false`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The kiosk's outbox the seq counts in.
    pub outbox: String,
    /// Last outbox seq the kiosk assigned to a credit of the session (0:
    /// none).
    pub last_seq: u64,
    /// When the kiosk's acceptance took that state (kiosk clock).
    pub at: Timestamp,
    /// When the gateway stored the confirmation.
    pub received_at: Timestamp,
}

/// A payment session as stored (record version 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session id (ULID).
    pub session_id: String,
    /// The kiosk whose acceptor takes the money.
    pub kiosk_id: KioskId,
    /// The backend's order reference.
    pub order_id: String,
    /// Amount to pay, in minor units of `currency`.
    pub amount_due: i64,
    /// ISO 4217 code.
    pub currency: Currency,
    /// Current state.
    pub state: SessionState,
    /// Sum of the credits, in minor units.
    pub amount_inserted: i64,
    /// Every credit, in the order applied.
    pub credits: Vec<SessionCredit>,
    /// When it was opened.
    pub created_at: Timestamp,
    /// When it stopped being open (became paid, or the cancel was
    /// accepted).
    pub closed_at: Option<Timestamp>,
    /// Name of the API key that opened it.
    pub opened_by: String,
    /// The kiosk's confirmation that it stopped accepting for this session.
    pub confirmation: Option<Confirmation>,
    /// When the totals became final (paid or cancelled, confirmed, every
    /// credit up to the confirmation held).
    pub settled_at: Option<Timestamp>,
}

/// What applying a credit to a session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditEffect {
    /// Added; still open.
    Added,
    /// Added, and the session is now paid.
    Paid,
    /// Added to a session that was no longer open: more change
    /// (`paid`) or more refund (`cancelling`, `cancelled`).
    Late,
}

/// Why a credit could not be applied to the session it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditRefusal {
    /// The session is in another currency.
    CurrencyMismatch,
}

/// What [`SessionRecord::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelEffect {
    /// Was open, now `cancelling`.
    Started,
    /// Was `cancelling` already: nothing changed (a repeated cancel).
    AlreadyCancelling,
    /// `paid` or `cancelled`: cannot be cancelled.
    Refused,
}

/// What [`SessionRecord::confirm`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmEffect {
    /// Stored (first confirmation, or a higher `last_seq` before final).
    Recorded,
    /// The same (or a lower) `last_seq` was held already: nothing changed.
    Duplicate,
}

/// A session whose totals just became final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// `paid` is final (`change_due` can no longer change).
    Paid,
    /// `cancelling` became `cancelled` (`refund_due` is final).
    Cancelled,
}

impl SessionRecord {
    /// A new `open` session with nothing inserted: `amount_due` minor units
    /// of `currency` on `kiosk_id`, opened by the API key named `opened_by`
    /// at `now`.
    pub fn open(
        session_id: String,
        kiosk_id: KioskId,
        order_id: String,
        amount_due: i64,
        currency: Currency,
        opened_by: String,
        now: Timestamp,
    ) -> Self {
        SessionRecord {
            session_id,
            kiosk_id,
            order_id,
            amount_due,
            currency,
            state: SessionState::Open,
            amount_inserted: 0,
            credits: Vec::new(),
            created_at: now,
            closed_at: None,
            opened_by,
            confirmation: None,
            settled_at: None,
        }
    }

    /// Amount still to pay, in minor units; 0 once not open.
    pub fn remaining(&self) -> i64 {
        if self.state == SessionState::Open {
            (self.amount_due - self.amount_inserted).max(0)
        } else {
            0
        }
    }

    /// Change to give back, once paid (so far, until final).
    pub fn change_due(&self) -> Option<i64> {
        (self.state == SessionState::Paid).then(|| (self.amount_inserted - self.amount_due).max(0))
    }

    /// Money to give back, once cancelling or cancelled (so far, until
    /// final).
    pub fn refund_due(&self) -> Option<i64> {
        matches!(
            self.state,
            SessionState::Cancelling | SessionState::Cancelled
        )
        .then_some(self.amount_inserted)
    }

    /// True once the totals can no longer change through the kiosk.
    pub fn is_final(&self) -> bool {
        self.settled_at.is_some()
    }

    /// True while the gateway waits for the kiosk to confirm the end of
    /// acceptance (`cancelling`, or `paid` not yet final): it keeps sending
    /// `disable(S)`.
    pub fn awaits_confirmation(&self) -> bool {
        match self.state {
            SessionState::Cancelling => true,
            SessionState::Paid => !self.is_final(),
            SessionState::Open | SessionState::Cancelled => false,
        }
    }

    /// Applies a credit taken for this session. Pure. Open: counts towards
    /// `amount_due` and may make the session paid (`closed_at = now`).
    /// Paid, cancelling, cancelled: a late credit, more change or refund;
    /// `origin` [`CreditOrigin::Kiosk`] becomes [`CreditOrigin::Late`].
    ///
    /// # Errors
    /// [`CreditRefusal::CurrencyMismatch`]: nothing changed; the credit must
    /// be kept unassigned.
    pub fn apply_credit(
        &mut self,
        mut credit: SessionCredit,
        currency: &Currency,
        now: Timestamp,
    ) -> Result<CreditEffect, CreditRefusal> {
        if &self.currency != currency {
            return Err(CreditRefusal::CurrencyMismatch);
        }
        self.amount_inserted = self.amount_inserted.saturating_add(credit.amount);
        if self.state != SessionState::Open {
            if credit.origin == CreditOrigin::Kiosk {
                credit.origin = CreditOrigin::Late;
            }
            self.credits.push(credit);
            return Ok(CreditEffect::Late);
        }
        self.credits.push(credit);
        if self.amount_inserted >= self.amount_due {
            self.state = SessionState::Paid;
            self.closed_at = Some(now);
            Ok(CreditEffect::Paid)
        } else {
            Ok(CreditEffect::Added)
        }
    }

    /// Starts cancelling an open session. Pure.
    pub fn cancel(&mut self, now: Timestamp) -> CancelEffect {
        match self.state {
            SessionState::Open => {
                self.state = SessionState::Cancelling;
                self.closed_at = Some(now);
                CancelEffect::Started
            }
            SessionState::Cancelling => CancelEffect::AlreadyCancelling,
            SessionState::Paid | SessionState::Cancelled => CancelEffect::Refused,
        }
    }

    /// Records the kiosk's confirmation that acceptance for this session
    /// ended, with the last outbox seq it assigned to it. Pure. A kiosk
    /// never re-enables a session it ended, so the confirmation holds in any
    /// state (even `open`: the kiosk stopped by itself at the amount due and
    /// the credits are still on their way). A repeated confirmation keeps
    /// the highest `last_seq` (the kiosk re-sends it on every connection).
    pub fn confirm(&mut self, confirmation: Confirmation) -> ConfirmEffect {
        let held = self.confirmation.as_ref().is_some_and(|c| {
            c.outbox == confirmation.outbox && c.last_seq >= confirmation.last_seq
        });
        if held || (self.is_final() && self.confirmation.is_some()) {
            return ConfirmEffect::Duplicate;
        }
        self.confirmation = Some(confirmation);
        ConfirmEffect::Recorded
    }

    /// Makes the totals final when the session awaits confirmation, the
    /// kiosk confirmed, and `watermark` (the contiguous watermark of the
    /// confirmation's outbox) covers its `last_seq`. Pure.
    pub fn settle(&mut self, watermark: u64, now: Timestamp) -> Option<Settlement> {
        if !self.awaits_confirmation() {
            return None;
        }
        let c = self.confirmation.as_ref()?;
        if watermark < c.last_seq {
            return None;
        }
        self.settled_at = Some(now);
        Some(match self.state {
            SessionState::Cancelling => {
                self.state = SessionState::Cancelled;
                Settlement::Cancelled
            }
            _ => Settlement::Paid,
        })
    }

    /// The credit as the session lists it.
    pub fn credit_entry(credit: &CreditRecord, origin: CreditOrigin) -> SessionCredit {
        SessionCredit {
            outbox: credit.outbox.clone(),
            seq: credit.seq,
            kind: credit.kind,
            amount: credit.amount,
            at: credit.at,
            origin,
        }
    }
}
