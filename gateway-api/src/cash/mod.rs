//! Cash payments on the gateway side (DESIGN.md, "Cash credits").
//!
//! A payment session belongs to one kiosk and is `open` until the credits
//! it received reach its amount due (`paid`, with `change_due`) or it is
//! cancelled (`cancelled`, with `refund_due`). A kiosk has at most one open
//! session; a credit that arrives while it has none is kept as an
//! *unassigned credit*, never dropped.
//!
//! - this module: records and the session state machine (pure);
//! - [`store`]: the sled trees and the exactly-once application of credits;
//! - [`live`]: fan-out of session events to Server-Sent-Event streams;
//! - [`webhooks`]: durable, signed, retried delivery of events to the
//!   backend.

pub mod live;
pub mod store;
pub mod token;
pub mod webhooks;

use kiosk_schemas::{CreditKind, Currency, KioskId, Timestamp};
use serde::{Deserialize, Serialize};

/// State of a payment session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Accepting money.
    Open,
    /// `amount_inserted >= amount_due`.
    Paid,
    /// Ended by `POST /v1/cash-sessions/{id}/cancel`.
    Cancelled,
}

impl SessionState {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Open => "open",
            SessionState::Paid => "paid",
            SessionState::Cancelled => "cancelled",
        }
    }
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
}

/// A payment session as stored.
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
    /// When it became paid or cancelled.
    pub closed_at: Option<Timestamp>,
    /// Name of the API key that opened it.
    pub opened_by: String,
}

/// What applying a credit to a session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditEffect {
    /// Added; still open.
    Added,
    /// Added, and the session is now paid.
    Paid,
}

impl SessionRecord {
    /// Amount still to pay (0 once paid), in minor units.
    pub fn remaining(&self) -> i64 {
        (self.amount_due - self.amount_inserted).max(0)
    }

    /// Change to give back, once paid.
    pub fn change_due(&self) -> Option<i64> {
        (self.state == SessionState::Paid).then(|| (self.amount_inserted - self.amount_due).max(0))
    }

    /// Money to give back, once cancelled.
    pub fn refund_due(&self) -> Option<i64> {
        (self.state == SessionState::Cancelled).then_some(self.amount_inserted)
    }

    /// Applies a credit to an open session. Pure. `None` when the session
    /// is not open or the currency differs: the credit must then be kept
    /// unassigned.
    pub fn apply_credit(
        &mut self,
        credit: SessionCredit,
        currency: &Currency,
        now: Timestamp,
    ) -> Option<CreditEffect> {
        if self.state != SessionState::Open || &self.currency != currency {
            return None;
        }
        self.amount_inserted = self.amount_inserted.saturating_add(credit.amount);
        self.credits.push(credit);
        if self.amount_inserted >= self.amount_due {
            self.state = SessionState::Paid;
            self.closed_at = Some(now);
            Some(CreditEffect::Paid)
        } else {
            Some(CreditEffect::Added)
        }
    }

    /// Cancels an open session. Pure; returns false if it was not open.
    pub fn cancel(&mut self, now: Timestamp) -> bool {
        if self.state != SessionState::Open {
            return false;
        }
        self.state = SessionState::Cancelled;
        self.closed_at = Some(now);
        true
    }
}

/// A credit as the gateway stores it (every credit, assigned or not).
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
    /// The session it was applied to; `None`: unassigned.
    pub session_id: Option<String>,
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
    /// `open`, `paid` or `cancelled`.
    pub state: SessionState,
    /// ISO 4217 code.
    pub currency: Currency,
    /// Decimal places of the currency (2 for EUR).
    pub exponent: u32,
    /// Amount to pay.
    pub amount_due: i64,
    /// Sum of the credits.
    pub amount_inserted: i64,
    /// Still to pay.
    pub remaining: i64,
    /// Change to give, once paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_due: Option<i64>,
    /// Money to give back, once cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_due: Option<i64>,
    /// Every credit with seq, kind, denomination and time.
    pub credits: Vec<SessionCredit>,
    /// When it was opened.
    pub created_at: Timestamp,
    /// When it was paid or cancelled.
    pub closed_at: Option<Timestamp>,
}

impl From<&SessionRecord> for SessionView {
    fn from(r: &SessionRecord) -> Self {
        SessionView {
            session_id: r.session_id.clone(),
            kiosk_id: r.kiosk_id.clone(),
            order_id: r.order_id.clone(),
            state: r.state,
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
        }
    }
}

/// The `cash/control` message that matches a kiosk's situation: `enable`
/// for its open session (with what is still due), `disable` otherwise.
pub fn control_for(session: Option<&SessionRecord>) -> kiosk_schemas::CashControl {
    use kiosk_schemas::{CashAction, CashControl, V1};
    match session.filter(|s| s.state == SessionState::Open) {
        Some(s) => CashControl {
            v: V1,
            action: CashAction::Enable,
            session_id: Some(s.session_id.clone()),
            amount_due: Some(s.remaining()),
            currency: Some(s.currency.clone()),
        },
        None => CashControl {
            v: V1,
            action: CashAction::Disable,
            session_id: None,
            amount_due: None,
            currency: None,
        },
    }
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

    fn session(due: i64) -> SessionRecord {
        SessionRecord {
            session_id: "s".into(),
            kiosk_id: KioskId::new("k1").unwrap(),
            order_id: "o".into(),
            amount_due: due,
            currency: Currency::new("EUR").unwrap(),
            state: SessionState::Open,
            amount_inserted: 0,
            credits: vec![],
            created_at: Utc::now(),
            closed_at: None,
            opened_by: "test".into(),
        }
    }

    fn credit(seq: u64, amount: i64) -> SessionCredit {
        SessionCredit {
            outbox: "o1".into(),
            seq,
            kind: CreditKind::Bill,
            amount,
            at: Utc::now(),
        }
    }

    #[test]
    fn exact_and_over_payment() {
        let eur = Currency::new("EUR").unwrap();
        let now = Utc::now();
        let mut s = session(2000);
        assert_eq!(
            s.apply_credit(credit(1, 1000), &eur, now),
            Some(CreditEffect::Added)
        );
        assert_eq!(
            s.apply_credit(credit(2, 500), &eur, now),
            Some(CreditEffect::Added)
        );
        assert_eq!(s.remaining(), 500);
        assert_eq!(
            s.apply_credit(credit(3, 500), &eur, now),
            Some(CreditEffect::Paid)
        );
        assert_eq!(
            (s.state, s.change_due(), s.remaining()),
            (SessionState::Paid, Some(0), 0)
        );
        assert!(
            s.apply_credit(credit(4, 100), &eur, now).is_none(),
            "closed"
        );

        let mut s = session(2000);
        s.apply_credit(credit(1, 1000), &eur, now).unwrap();
        assert_eq!(
            s.apply_credit(credit(2, 2000), &eur, now),
            Some(CreditEffect::Paid)
        );
        assert_eq!(s.change_due(), Some(1000));
    }

    #[test]
    fn cancel_refunds_what_went_in_and_wrong_currency_is_refused() {
        let eur = Currency::new("EUR").unwrap();
        let usd = Currency::new("USD").unwrap();
        let now = Utc::now();
        let mut s = session(2000);
        assert!(s.apply_credit(credit(1, 100), &usd, now).is_none());
        s.apply_credit(credit(1, 700), &eur, now).unwrap();
        assert!(s.cancel(now));
        assert_eq!((s.refund_due(), s.change_due()), (Some(700), None));
        assert!(!s.cancel(now));
    }

    #[test]
    fn exponents() {
        assert_eq!(exponent(&Currency::new("EUR").unwrap()), 2);
        assert_eq!(exponent(&Currency::new("JPY").unwrap()), 0);
        assert_eq!(exponent(&Currency::new("KWD").unwrap()), 3);
        assert_eq!(exponent(&Currency::new("XXQ").unwrap()), 2);
    }
}
