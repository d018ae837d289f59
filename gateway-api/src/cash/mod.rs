//! Cash payments on the gateway side (DESIGN.md, "Cash credits", steps 4-5).
//!
//! A payment session belongs to one kiosk. Its states:
//!
//! ```text
//!            credit reaches amount_due              kiosk confirmed + credits held
//!   open ─────────────────────────────► paid ─────────────────────────────► paid, final (settled)
//!     │
//!     │ POST .../cancel (202)                        kiosk confirmed + credits held
//!     └──────────────────────────────► cancelling ─────────────────────────► cancelled (final)
//! ```
//!
//! Ending acceptance is two-phase: the gateway sends `disable(S)`, the
//! kiosk confirms on `cash/state` with `last_seq`, the last outbox seq it
//! assigned to a credit of `S`; the session's totals are *final* once the
//! gateway holds every credit of that outbox up to `last_seq` (its
//! contiguous watermark). Until then `GET` shows the totals so far
//! (`change_due` when paid, `refund_due` when cancelling).
//!
//! A credit that carries a session id goes to that session whatever its
//! state: while `open` it counts towards `amount_due`; once `paid` it adds
//! to `change_due`, once `cancelling`/`cancelled` to `refund_due` (a *late*
//! credit). Only credits taken with no session, or naming a session the
//! gateway cannot apply them to, are *unassigned*; an operator assigns or
//! refunds those through the API.
//!
//! - this module: records and the session state machine (pure);
//! - [`store`]: the sled trees and the exactly-once application of credits;
//! - [`live`]: fan-out of session events to Server-Sent-Event streams;
//! - [`webhooks`]: durable, signed, retried delivery of events to the
//!   backend;
//! - [`resend`]: re-sends `disable` controls while a confirmation is
//!   awaited.

pub mod event;
pub mod live;
pub mod resend;
pub mod store;
pub mod token;
pub mod webhooks;

use kiosk_schemas::{CashAction, CashControl, CreditKind, Currency, KioskId, Timestamp, V1};
use serde::{Deserialize, Serialize};

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

/// Why a credit is unassigned.
///
/// Variant order is the on-disk order: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnassignedReason {
    /// The kiosk took it with acceptance off (no `session_id`).
    NoSession,
    /// It names a session the gateway does not know.
    UnknownSession,
    /// It names another kiosk's session.
    OtherKiosk,
    /// Its currency is not the session's.
    CurrencyMismatch,
    /// Recorded by a gateway before version 2, which kept every credit
    /// that found no open session unassigned.
    NoOpenSession,
}

/// What an operator did with an unassigned credit.
///
/// Variant order is the on-disk order: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionAction {
    /// Applied to a session.
    Assigned,
    /// Given back outside any session.
    Refunded,
}

/// The resolution of an unassigned credit; set once, never changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// `assigned` or `refunded`.
    pub action: ResolutionAction,
    /// The session, for `assigned`.
    pub session_id: Option<String>,
    /// The operator's reason, for `refunded`.
    pub reason: Option<String>,
    /// When it was resolved.
    pub at: Timestamp,
    /// Name of the API key that resolved it.
    pub by: String,
}

/// A credit as the gateway stores it (every credit, assigned or not;
/// record version 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditRecord {
    /// The kiosk.
    pub kiosk_id: KioskId,
    /// Its outbox id.
    pub outbox: String,
    /// Sequence number in that outbox.
    pub seq: u64,
    /// Note or coin.
    pub kind: CreditKind,
    /// Denomination, in minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: Currency,
    /// When the acceptor reported it (kiosk clock).
    pub at: Timestamp,
    /// When the gateway stored it.
    pub received_at: Timestamp,
    /// The session it was applied to; `None`: unassigned (and not
    /// assigned since).
    pub session_id: Option<String>,
    /// The session the kiosk took it under, as the kiosk reported it.
    pub taken_for: Option<String>,
    /// Acceptor board boot id (v2 boards).
    pub board_boot_id: Option<String>,
    /// The board's seq within that boot (v2 boards).
    pub board_seq: Option<u64>,
    /// Why it arrived unassigned; `None`: it went to its session.
    pub unassigned: Option<UnassignedReason>,
    /// What an operator did with it, once unassigned.
    pub resolution: Option<Resolution>,
}

impl CreditRecord {
    /// `<outbox>-<seq>`: the credit's id in the unassigned-credits API.
    pub fn credit_id(&self) -> String {
        format!("{}-{}", self.outbox, self.seq)
    }
}

/// Splits a `credit_id` (`<outbox>-<seq>`) into outbox and seq.
pub fn parse_credit_id(id: &str) -> Option<(&str, u64)> {
    let (outbox, seq) = id.rsplit_once('-')?;
    let seq = seq.parse().ok()?;
    (!outbox.is_empty() && seq > 0).then_some((outbox, seq))
}

/// Why a resolution of an unassigned credit is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveRefusal {
    /// It went to its session when it arrived: nothing to resolve.
    NotUnassigned,
    /// It was resolved differently before (the earlier resolution).
    AlreadyResolved(Resolution),
    /// The session belongs to another kiosk.
    OtherKiosk,
    /// The session is in another currency.
    CurrencyMismatch,
}

/// What a resolution request does to an unassigned credit. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveDecision {
    /// Record it (and, for an assignment, apply the credit to the session).
    Apply,
    /// The same resolution was made before: answer it again, change nothing.
    Same,
}

/// Decides an operator's resolution of `credit`: `action` with
/// `session` (the target session, for [`ResolutionAction::Assigned`]) or
/// `reason` (for refunds). Pure.
///
/// # Errors
/// [`ResolveRefusal`] naming why.
pub fn decide_resolution(
    credit: &CreditRecord,
    action: ResolutionAction,
    session: Option<&SessionRecord>,
    reason: Option<&str>,
) -> Result<ResolveDecision, ResolveRefusal> {
    if credit.unassigned.is_none() {
        return Err(ResolveRefusal::NotUnassigned);
    }
    if let Some(prev) = &credit.resolution {
        let same = prev.action == action
            && match action {
                ResolutionAction::Assigned => {
                    prev.session_id.as_deref() == session.map(|s| s.session_id.as_str())
                }
                ResolutionAction::Refunded => prev.reason.as_deref() == reason,
            };
        return if same {
            Ok(ResolveDecision::Same)
        } else {
            Err(ResolveRefusal::AlreadyResolved(prev.clone()))
        };
    }
    if let Some(s) = session {
        if s.kiosk_id != credit.kiosk_id {
            return Err(ResolveRefusal::OtherKiosk);
        }
        if s.currency != credit.currency {
            return Err(ResolveRefusal::CurrencyMismatch);
        }
    }
    Ok(ResolveDecision::Apply)
}

/// Where an incoming credit goes. Pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// To the session it names.
    Session,
    /// Unassigned, for this reason.
    Unassigned(UnassignedReason),
}

/// Decides where a credit from `kiosk` in `currency`, taken under
/// `taken_for`, goes, given that session's record if the gateway has it.
pub fn place_credit(
    kiosk: &KioskId,
    currency: &Currency,
    taken_for: Option<&str>,
    session: Option<&SessionRecord>,
) -> Placement {
    match (taken_for, session) {
        (None, _) => Placement::Unassigned(UnassignedReason::NoSession),
        (Some(_), None) => Placement::Unassigned(UnassignedReason::UnknownSession),
        (Some(_), Some(s)) if &s.kiosk_id != kiosk => {
            Placement::Unassigned(UnassignedReason::OtherKiosk)
        }
        (Some(_), Some(s)) if &s.currency != currency => {
            Placement::Unassigned(UnassignedReason::CurrencyMismatch)
        }
        (Some(_), Some(_)) => Placement::Session,
    }
}

/// The kiosk's confirmation as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfirmationView {
    /// Outbox the seq counts in.
    pub outbox: String,
    /// Last outbox seq of the session's credits (0: none).
    pub last_seq: u64,
    /// When the kiosk's acceptance ended (kiosk clock).
    pub at: Timestamp,
}

/// A session as the API, its event stream and webhooks show it. Amounts
/// are minor units of `currency`; `exponent` is its number of decimals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    /// Session id.
    pub session_id: String,
    /// Kiosk.
    pub kiosk_id: KioskId,
    /// The backend's order reference.
    pub order_id: String,
    /// `open`, `paid`, `cancelling` or `cancelled`.
    pub state: SessionState,
    /// True once the totals can no longer change: `cancelled`, or `paid`
    /// confirmed by the kiosk with every credit up to its `last_seq` held.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// ISO 4217 code.
    pub currency: Currency,
    /// Decimal places of the currency (2 for EUR).
    pub exponent: u32,
    /// Amount to pay.
    pub amount_due: i64,
    /// Sum of the credits.
    pub amount_inserted: i64,
    /// Still to pay (0 unless open).
    pub remaining: i64,
    /// Change to give, once paid (so far until `final`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_due: Option<i64>,
    /// Money to give back, once cancelling or cancelled (so far until
    /// `final`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_due: Option<i64>,
    /// Every credit with seq, kind, denomination, time and origin.
    pub credits: Vec<SessionCredit>,
    /// When it was opened.
    pub created_at: Timestamp,
    /// When it stopped being open (paid, or cancel accepted).
    pub closed_at: Option<Timestamp>,
    /// When its totals became final.
    pub settled_at: Option<Timestamp>,
    /// The kiosk's confirmation that acceptance ended, once received.
    pub confirmation: Option<ConfirmationView>,
}

impl From<&SessionRecord> for SessionView {
    fn from(r: &SessionRecord) -> Self {
        SessionView {
            session_id: r.session_id.clone(),
            kiosk_id: r.kiosk_id.clone(),
            order_id: r.order_id.clone(),
            state: r.state,
            is_final: r.is_final(),
            exponent: exponent(&r.currency),
            currency: r.currency.clone(),
            amount_due: r.amount_due,
            amount_inserted: r.amount_inserted,
            remaining: r.remaining(),
            change_due: r.change_due(),
            refund_due: r.refund_due(),
            credits: r.credits.clone(),
            created_at: r.created_at,
            closed_at: r.closed_at,
            settled_at: r.settled_at,
            confirmation: r.confirmation.as_ref().map(|c| ConfirmationView {
                outbox: c.outbox.clone(),
                last_seq: c.last_seq,
                at: c.at,
            }),
        }
    }
}

/// A resolution as the API shows it:
/// `{"action":"assigned","session_id":"01J9...","at":"...","by":"backend"}` or
/// `{"action":"refunded","reason":"given back at the counter","at":"...","by":"backend"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolutionView {
    /// `assigned` or `refunded`.
    pub action: ResolutionAction,
    /// The session, for `assigned`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The reason, for `refunded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When.
    pub at: Timestamp,
    /// API key name.
    pub by: String,
}

/// A stored credit as the API and webhooks show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreditView {
    /// `<outbox>-<seq>`.
    pub credit_id: String,
    /// The kiosk.
    pub kiosk_id: KioskId,
    /// Its outbox id.
    pub outbox: String,
    /// Seq in that outbox.
    pub seq: u64,
    /// `bill` or `coin`.
    pub kind: CreditKind,
    /// Denomination, minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: Currency,
    /// When the acceptor reported it (kiosk clock).
    pub at: Timestamp,
    /// When the gateway stored it.
    pub received_at: Timestamp,
    /// Board boot id (v2 boards), else null.
    pub board_boot_id: Option<String>,
    /// Board seq (v2 boards), else null.
    pub board_seq: Option<u64>,
    /// The session it counts for (applied on arrival or assigned), else
    /// null.
    pub session_id: Option<String>,
    /// The session the kiosk reported taking it under, else null.
    pub taken_for: Option<String>,
    /// Why it arrived unassigned (`no_session`, `unknown_session`,
    /// `other_kiosk`, `currency_mismatch`, `no_open_session`), else null.
    pub unassigned_reason: Option<UnassignedReason>,
    /// null, or what an operator did with it.
    pub resolution: Option<ResolutionView>,
}

impl From<&CreditRecord> for CreditView {
    fn from(c: &CreditRecord) -> Self {
        CreditView {
            credit_id: c.credit_id(),
            kiosk_id: c.kiosk_id.clone(),
            outbox: c.outbox.clone(),
            seq: c.seq,
            kind: c.kind,
            amount: c.amount,
            currency: c.currency.clone(),
            at: c.at,
            received_at: c.received_at,
            board_boot_id: c.board_boot_id.clone(),
            board_seq: c.board_seq,
            session_id: c.session_id.clone(),
            taken_for: c.taken_for.clone(),
            unassigned_reason: c.unassigned,
            resolution: c.resolution.as_ref().map(|r| ResolutionView {
                action: r.action,
                session_id: r.session_id.clone(),
                reason: r.reason.clone(),
                at: r.at,
                by: r.by.clone(),
            }),
        }
    }
}

fn disable(session_id: Option<&str>) -> CashControl {
    CashControl {
        v: V1,
        action: CashAction::Disable,
        session_id: session_id.map(str::to_owned),
        amount_due: None,
        currency: None,
    }
}

/// The `cash/control` message that matches a kiosk's open session:
/// `enable` (with what is still due), or a plain `disable` without one.
pub fn control_for(session: Option<&SessionRecord>) -> CashControl {
    match session.filter(|s| s.state == SessionState::Open) {
        Some(s) => CashControl {
            v: V1,
            action: CashAction::Enable,
            session_id: Some(s.session_id.clone()),
            amount_due: Some(s.remaining()),
            currency: Some(s.currency.clone()),
        },
        None => disable(None),
    }
}

/// Every control a kiosk must get now, in order: `disable(S)` for each of
/// its sessions awaiting confirmation (each answered by a `CashState`
/// confirming it), then [`control_for`] its open session. Pure.
pub fn controls_for(open: Option<&SessionRecord>, awaiting: &[SessionRecord]) -> Vec<CashControl> {
    awaiting
        .iter()
        .filter(|s| s.awaits_confirmation())
        .map(|s| disable(Some(&s.session_id)))
        .chain(std::iter::once(control_for(open)))
        .collect()
}

/// `disable(S)` for each session awaiting confirmation (the timer's
/// re-send). Pure.
pub fn disables_for(awaiting: &[SessionRecord]) -> Vec<CashControl> {
    awaiting
        .iter()
        .filter(|s| s.awaits_confirmation())
        .map(|s| disable(Some(&s.session_id)))
        .collect()
}

/// Decimal places of a currency's minor unit (ISO 4217); 2 when unknown.
pub fn exponent(currency: &Currency) -> u32 {
    iso_currency::Currency::from_code(currency.as_str())
        .and_then(|c| c.exponent())
        .map_or(2, u32::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn eur() -> Currency {
        Currency::new("EUR").unwrap()
    }

    fn session(due: i64) -> SessionRecord {
        SessionRecord::open(
            "s".into(),
            KioskId::new("k1").unwrap(),
            "o".into(),
            due,
            eur(),
            "test".into(),
            Utc::now(),
        )
    }

    fn credit(seq: u64, amount: i64) -> SessionCredit {
        SessionCredit {
            outbox: "o1".into(),
            seq,
            kind: CreditKind::Bill,
            amount,
            at: Utc::now(),
            origin: CreditOrigin::Kiosk,
        }
    }

    fn confirmation(last_seq: u64) -> Confirmation {
        Confirmation {
            outbox: "o1".into(),
            last_seq,
            at: Utc::now(),
            received_at: Utc::now(),
        }
    }

    #[test]
    fn exact_and_over_payment() {
        let now = Utc::now();
        let mut s = session(2000);
        assert_eq!(
            s.apply_credit(credit(1, 1000), &eur(), now),
            Ok(CreditEffect::Added)
        );
        assert_eq!(
            s.apply_credit(credit(2, 500), &eur(), now),
            Ok(CreditEffect::Added)
        );
        assert_eq!(s.remaining(), 500);
        assert_eq!(
            s.apply_credit(credit(3, 500), &eur(), now),
            Ok(CreditEffect::Paid)
        );
        assert_eq!(
            (s.state, s.change_due(), s.remaining(), s.is_final()),
            (SessionState::Paid, Some(0), 0, false)
        );

        let mut s = session(2000);
        s.apply_credit(credit(1, 1000), &eur(), now).unwrap();
        assert_eq!(
            s.apply_credit(credit(2, 2000), &eur(), now),
            Ok(CreditEffect::Paid)
        );
        assert_eq!(s.change_due(), Some(1000));
    }

    /// 500 already in; (state before, credit, effect, change_due after,
    /// refund_due after).
    #[test]
    fn a_credit_for_the_session_always_goes_to_it() {
        let now = Utc::now();
        let cases = [
            (SessionState::Open, 400, CreditEffect::Added, None, None),
            (
                SessionState::Open,
                1000,
                CreditEffect::Paid,
                Some(500),
                None,
            ),
            (SessionState::Paid, 200, CreditEffect::Late, Some(200), None),
            (
                SessionState::Cancelling,
                200,
                CreditEffect::Late,
                None,
                Some(700),
            ),
            (
                SessionState::Cancelled,
                200,
                CreditEffect::Late,
                None,
                Some(700),
            ),
        ];
        for (state, amount, effect, change, refund) in cases {
            let mut s = session(1000);
            s.apply_credit(credit(1, 500), &eur(), now).unwrap();
            if state != SessionState::Open {
                // Ended with 500 in (paid exactly, or cancelled).
                s.amount_due = 500;
            }
            s.state = state;
            assert_eq!(
                s.apply_credit(credit(2, amount), &eur(), now),
                Ok(effect),
                "{state:?}"
            );
            assert_eq!(
                (s.change_due(), s.refund_due()),
                (change, refund),
                "{state:?}"
            );
            let origin = s.credits.last().unwrap().origin;
            let want = if effect == CreditEffect::Late {
                CreditOrigin::Late
            } else {
                CreditOrigin::Kiosk
            };
            assert_eq!(origin, want, "{state:?}");
        }
    }

    #[test]
    fn wrong_currency_changes_nothing() {
        let mut s = session(2000);
        let before = s.clone();
        assert_eq!(
            s.apply_credit(credit(1, 100), &Currency::new("USD").unwrap(), Utc::now()),
            Err(CreditRefusal::CurrencyMismatch)
        );
        assert_eq!(s, before);
    }

    #[test]
    fn cancel_is_two_phase() {
        let now = Utc::now();
        let cases = [
            (
                SessionState::Open,
                CancelEffect::Started,
                SessionState::Cancelling,
            ),
            (
                SessionState::Cancelling,
                CancelEffect::AlreadyCancelling,
                SessionState::Cancelling,
            ),
            (
                SessionState::Paid,
                CancelEffect::Refused,
                SessionState::Paid,
            ),
            (
                SessionState::Cancelled,
                CancelEffect::Refused,
                SessionState::Cancelled,
            ),
        ];
        for (from, effect, to) in cases {
            let mut s = session(2000);
            s.state = from;
            assert_eq!(s.cancel(now), effect, "{from:?}");
            assert_eq!(s.state, to, "{from:?}");
        }
        let mut s = session(2000);
        s.apply_credit(credit(1, 700), &eur(), now).unwrap();
        s.cancel(now);
        assert_eq!(
            (s.refund_due(), s.change_due(), s.is_final()),
            (Some(700), None, false)
        );
        assert!(s.awaits_confirmation());
    }

    /// (state, confirmed last_seq, watermark, settles as, state after)
    #[test]
    fn settles_only_with_the_confirmation_and_every_credit_up_to_it() {
        let now = Utc::now();
        let cases = [
            (
                SessionState::Cancelling,
                None,
                10,
                None,
                SessionState::Cancelling,
            ),
            (
                SessionState::Cancelling,
                Some(5),
                4,
                None,
                SessionState::Cancelling,
            ),
            (
                SessionState::Cancelling,
                Some(5),
                5,
                Some(Settlement::Cancelled),
                SessionState::Cancelled,
            ),
            (
                SessionState::Cancelling,
                Some(0),
                0,
                Some(Settlement::Cancelled),
                SessionState::Cancelled,
            ),
            (SessionState::Paid, Some(5), 3, None, SessionState::Paid),
            (
                SessionState::Paid,
                Some(5),
                9,
                Some(Settlement::Paid),
                SessionState::Paid,
            ),
            // An open session the kiosk ended is not final: it is neither
            // paid nor cancelled yet.
            (SessionState::Open, Some(5), 9, None, SessionState::Open),
        ];
        for (state, last_seq, watermark, want, after) in cases {
            let mut s = session(2000);
            s.state = state;
            if let Some(n) = last_seq {
                assert_eq!(s.confirm(confirmation(n)), ConfirmEffect::Recorded);
            }
            assert_eq!(
                s.settle(watermark, now),
                want,
                "{state:?} {last_seq:?} {watermark}"
            );
            assert_eq!(s.state, after);
            assert_eq!(s.is_final(), want.is_some());
            assert_eq!(
                s.awaits_confirmation(),
                matches!(after, SessionState::Paid | SessionState::Cancelling) && want.is_none()
            );
        }
        // Final once: a second settle does nothing.
        let mut s = session(2000);
        s.state = SessionState::Paid;
        s.confirm(confirmation(1));
        assert_eq!(s.settle(1, now), Some(Settlement::Paid));
        assert_eq!(s.settle(1, now), None);
    }

    #[test]
    fn repeated_confirmations_keep_the_highest_seq() {
        let mut s = session(2000);
        assert_eq!(s.confirm(confirmation(3)), ConfirmEffect::Recorded);
        assert_eq!(s.confirm(confirmation(3)), ConfirmEffect::Duplicate);
        assert_eq!(s.confirm(confirmation(2)), ConfirmEffect::Duplicate);
        assert_eq!(s.confirm(confirmation(4)), ConfirmEffect::Recorded);
        assert_eq!(s.confirmation.as_ref().map(|c| c.last_seq), Some(4));
    }

    #[test]
    fn controls_disable_every_awaiting_session_then_enable_the_open_one() {
        let mut open = session(1000);
        open.session_id = "s3".into();
        let mut cancelling = session(1000);
        cancelling.session_id = "s1".into();
        cancelling.state = SessionState::Cancelling;
        let mut paid = session(1000);
        paid.session_id = "s2".into();
        paid.state = SessionState::Paid;
        let mut settled = paid.clone();
        settled.session_id = "s0".into();
        settled.settled_at = Some(Utc::now());
        let awaiting = [settled, cancelling, paid];
        let got: Vec<_> = controls_for(Some(&open), &awaiting)
            .into_iter()
            .map(|c| (c.action, c.session_id, c.amount_due))
            .collect();
        assert_eq!(
            got,
            [
                (CashAction::Disable, Some("s1".to_owned()), None),
                (CashAction::Disable, Some("s2".to_owned()), None),
                (CashAction::Enable, Some("s3".to_owned()), Some(1000)),
            ]
        );
        let plain = controls_for(None, &[]);
        assert_eq!(plain.len(), 1);
        assert_eq!(
            (plain[0].action, plain[0].session_id.as_deref()),
            (CashAction::Disable, None)
        );
        assert_eq!(disables_for(&awaiting).len(), 2);
    }

    #[test]
    fn credits_are_placed_by_the_session_they_name() {
        let k1 = KioskId::new("k1").unwrap();
        let k2 = KioskId::new("k2").unwrap();
        let s = session(1000);
        let usd = Currency::new("USD").unwrap();
        let cases = [
            (
                &k1,
                eur(),
                None,
                Some(&s),
                Placement::Unassigned(UnassignedReason::NoSession),
            ),
            (
                &k1,
                eur(),
                Some("s"),
                None,
                Placement::Unassigned(UnassignedReason::UnknownSession),
            ),
            (
                &k2,
                eur(),
                Some("s"),
                Some(&s),
                Placement::Unassigned(UnassignedReason::OtherKiosk),
            ),
            (
                &k1,
                usd,
                Some("s"),
                Some(&s),
                Placement::Unassigned(UnassignedReason::CurrencyMismatch),
            ),
            (&k1, eur(), Some("s"), Some(&s), Placement::Session),
        ];
        for (kiosk, currency, taken_for, session, want) in cases {
            assert_eq!(place_credit(kiosk, &currency, taken_for, session), want);
        }
    }

    fn unassigned_credit() -> CreditRecord {
        CreditRecord {
            kiosk_id: KioskId::new("k1").unwrap(),
            outbox: "ab-cd".into(),
            seq: 7,
            kind: CreditKind::Coin,
            amount: 200,
            currency: eur(),
            at: Utc::now(),
            received_at: Utc::now(),
            session_id: None,
            taken_for: None,
            board_boot_id: None,
            board_seq: None,
            unassigned: Some(UnassignedReason::NoSession),
            resolution: None,
        }
    }

    #[test]
    fn resolutions_are_decided_once() {
        use ResolutionAction::{Assigned, Refunded};
        let c = unassigned_credit();
        let s = session(1000);
        let mut other_kiosk = session(1000);
        other_kiosk.kiosk_id = KioskId::new("k2").unwrap();
        let mut usd = session(1000);
        usd.currency = Currency::new("USD").unwrap();
        assert_eq!(
            decide_resolution(&c, Assigned, Some(&s), None),
            Ok(ResolveDecision::Apply)
        );
        assert_eq!(
            decide_resolution(&c, Refunded, None, Some("x")),
            Ok(ResolveDecision::Apply)
        );
        assert_eq!(
            decide_resolution(&c, Assigned, Some(&other_kiosk), None),
            Err(ResolveRefusal::OtherKiosk)
        );
        assert_eq!(
            decide_resolution(&c, Assigned, Some(&usd), None),
            Err(ResolveRefusal::CurrencyMismatch)
        );
        let mut assigned = c.clone();
        assigned.resolution = Some(Resolution {
            action: Assigned,
            session_id: Some("s".into()),
            reason: None,
            at: Utc::now(),
            by: "test".into(),
        });
        assert_eq!(
            decide_resolution(&assigned, Assigned, Some(&s), None),
            Ok(ResolveDecision::Same)
        );
        let mut s2 = session(1000);
        s2.session_id = "s2".into();
        assert!(matches!(
            decide_resolution(&assigned, Assigned, Some(&s2), None),
            Err(ResolveRefusal::AlreadyResolved(_))
        ));
        assert!(matches!(
            decide_resolution(&assigned, Refunded, None, Some("x")),
            Err(ResolveRefusal::AlreadyResolved(_))
        ));
        let mut applied = c.clone();
        applied.unassigned = None;
        assert_eq!(
            decide_resolution(&applied, Refunded, None, Some("x")),
            Err(ResolveRefusal::NotUnassigned)
        );
    }

    #[test]
    fn credit_ids_round_trip() {
        let c = unassigned_credit();
        assert_eq!(c.credit_id(), "ab-cd-7");
        assert_eq!(parse_credit_id("ab-cd-7"), Some(("ab-cd", 7)));
        assert_eq!(
            parse_credit_id("8c1f0a2b3c4d5e6f-42"),
            Some(("8c1f0a2b3c4d5e6f", 42))
        );
        for bad in ["", "abc", "-3", "abc-0", "abc-x", "abc-"] {
            assert_eq!(parse_credit_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn exponents() {
        assert_eq!(exponent(&Currency::new("EUR").unwrap()), 2);
        assert_eq!(exponent(&Currency::new("JPY").unwrap()), 0);
        assert_eq!(exponent(&Currency::new("KWD").unwrap()), 3);
        assert_eq!(exponent(&Currency::new("XXQ").unwrap()), 2);
    }
}
