//! Sessions and credits as the API, the event streams and webhooks show
//! them.

use kiosk_schemas::{CreditKind, Currency, KioskId, Timestamp};
use serde::Serialize;

use super::{
    CreditRecord, ResolutionAction, SessionCredit, SessionRecord, SessionState, UnassignedReason,
};

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

/// Decimal places of a currency's minor unit (ISO 4217); 2 when unknown.
pub fn exponent(currency: &Currency) -> u32 {
    iso_currency::Currency::from_code(currency.as_str())
        .and_then(|c| c.exponent())
        .map_or(2, u32::from)
}
