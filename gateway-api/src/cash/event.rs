//! What happens to cash sessions and credits, in one vocabulary: a
//! [`CashEventKind`] names the webhook `type` (`cash_session.paid`), the
//! `event:` of a session's live stream (`paid`) and the log line, so the
//! three cannot drift apart; a [`CashChange`] is one of them as it
//! happened, made once by the store inside the transaction that caused it
//! (where the webhook queue records it) and returned to the caller, which
//! hands it to the live streams and logs.

use sled::transaction::{TransactionalTree, UnabortableTransactionError};

use super::{
    CreditEffect, CreditRecord, CreditView, SessionCredit, SessionRecord, SessionView, Settlement,
};
use crate::events::EventLog;

/// Something that happened to a cash session or a credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CashEventKind {
    /// A session was opened.
    Opened,
    /// A credit was applied to an open session.
    Credit,
    /// A credit for a session no longer open (paid, cancelling, cancelled):
    /// more change or refund.
    LateCredit,
    /// A session became paid (`amount_inserted` reached `amount_due`).
    Paid,
    /// A cancel was accepted; the session waits for the kiosk.
    Cancelling,
    /// A cancelled session became final (the kiosk confirmed, every credit
    /// arrived), with its `refund_due`.
    Cancelled,
    /// A paid session became final.
    Settled,
    /// A credit that no session can take (taken with no session, or naming
    /// one the gateway cannot apply it to).
    Unassigned,
    /// An unassigned credit was assigned to a session.
    Assigned,
    /// An unassigned credit was marked refunded.
    Refunded,
}

impl CashEventKind {
    /// Every kind.
    pub const ALL: [CashEventKind; 10] = [
        CashEventKind::Opened,
        CashEventKind::Credit,
        CashEventKind::LateCredit,
        CashEventKind::Paid,
        CashEventKind::Cancelling,
        CashEventKind::Cancelled,
        CashEventKind::Settled,
        CashEventKind::Unassigned,
        CashEventKind::Assigned,
        CashEventKind::Refunded,
    ];

    /// The event's name: the `event:` of a session's live stream, and the
    /// second half of its webhook type.
    pub fn name(self) -> &'static str {
        match self {
            CashEventKind::Opened => "opened",
            CashEventKind::Credit => "credit",
            CashEventKind::LateCredit => "late_credit",
            CashEventKind::Paid => "paid",
            CashEventKind::Cancelling => "cancelling",
            CashEventKind::Cancelled => "cancelled",
            CashEventKind::Settled => "settled",
            CashEventKind::Unassigned => "unassigned",
            CashEventKind::Assigned => "assigned",
            CashEventKind::Refunded => "refunded",
        }
    }

    /// The webhook `type`: `cash_session.<name>` for what happens to a
    /// session, `cash_credit.<name>` for what happens to an unassigned
    /// credit.
    pub fn webhook_type(self) -> &'static str {
        match self {
            CashEventKind::Opened => "cash_session.opened",
            CashEventKind::Credit => "cash_session.credit",
            CashEventKind::LateCredit => "cash_session.late_credit",
            CashEventKind::Paid => "cash_session.paid",
            CashEventKind::Cancelling => "cash_session.cancelling",
            CashEventKind::Cancelled => "cash_session.cancelled",
            CashEventKind::Settled => "cash_session.settled",
            CashEventKind::Unassigned => "cash_credit.unassigned",
            CashEventKind::Assigned => "cash_credit.assigned",
            CashEventKind::Refunded => "cash_credit.refunded",
        }
    }

    /// True for the last event of a session (`cancelled`, `settled`): its
    /// live streams end with it.
    pub fn is_final(self) -> bool {
        matches!(self, CashEventKind::Cancelled | CashEventKind::Settled)
    }
}

/// One event as it happened: what the webhook queue, a session's live
/// streams and the logs are told. Made by the cash store inside the
/// transaction of the change, and returned with its outcome.
#[derive(Debug, Clone)]
pub struct CashChange {
    /// Which event.
    pub kind: CashEventKind,
    /// The session after the change; `None` for a credit on no session
    /// (`unassigned`, `refunded`).
    pub session: Option<SessionRecord>,
    /// The credit as stored, for the credit events (`credit`,
    /// `late_credit`, `unassigned`, `assigned`, `refunded`).
    pub credit: Option<CreditRecord>,
    /// The credit as the session holds it, and what it did there (`credit`,
    /// `late_credit`, `assigned`).
    pub applied: Option<(SessionCredit, CreditEffect)>,
}

impl CashEventKind {
    /// The event of a credit from the kiosk that `effect` describes:
    /// `late_credit` for a session no longer open, else `credit`.
    pub fn of_credit(effect: CreditEffect) -> Self {
        match effect {
            CreditEffect::Late => CashEventKind::LateCredit,
            CreditEffect::Added | CreditEffect::Paid => CashEventKind::Credit,
        }
    }

    /// The event of a session made final `how`.
    pub fn of_settlement(how: Settlement) -> Self {
        match how {
            Settlement::Paid => CashEventKind::Settled,
            Settlement::Cancelled => CashEventKind::Cancelled,
        }
    }
}

impl CashChange {
    /// The event's `data`: `session` as `GET /v1/cash-sessions/{id}` shows
    /// it, and `credit` as the unassigned-credits listing shows one.
    pub fn data(&self) -> serde_json::Value {
        let mut data = serde_json::json!({});
        if let Some(s) = &self.session {
            data["session"] = serde_json::to_value(SessionView::from(s)).unwrap_or_default();
        }
        if let Some(c) = &self.credit {
            data["credit"] = serde_json::to_value(CreditView::from(c)).unwrap_or_default();
        }
        data
    }

    /// Appends the event to `log` inside the transaction over its tree
    /// `tx` that makes the change.
    ///
    /// # Errors
    /// The transaction's storage error.
    pub fn record(
        &self,
        log: &EventLog,
        tx: &TransactionalTree,
    ) -> Result<u64, UnabortableTransactionError> {
        let kiosk = self
            .session
            .as_ref()
            .map(|s| &s.kiosk_id)
            .or(self.credit.as_ref().map(|c| &c.kiosk_id));
        log.append(tx, self.kind.webhook_type(), kiosk, self.data())
    }

    /// `kind` happened to `session` (no credit involved).
    pub fn of_session(kind: CashEventKind, session: &SessionRecord) -> Self {
        CashChange {
            kind,
            session: Some(session.clone()),
            credit: None,
            applied: None,
        }
    }

    /// `kind` happened to `credit`, which is on no session.
    pub fn of_lone_credit(kind: CashEventKind, credit: &CreditRecord) -> Self {
        CashChange {
            kind,
            session: None,
            credit: Some(credit.clone()),
            applied: None,
        }
    }

    /// `credit` went to `session` (held there as `entry`, with `effect`):
    /// `kind` (`credit` or `late_credit` from the kiosk, `assigned` by an
    /// operator), then `paid` if it completed the payment.
    pub fn applied(
        kind: CashEventKind,
        session: &SessionRecord,
        entry: &SessionCredit,
        effect: CreditEffect,
        credit: &CreditRecord,
    ) -> Vec<Self> {
        let mut out = vec![CashChange {
            kind,
            session: Some(session.clone()),
            credit: Some(credit.clone()),
            applied: Some((entry.clone(), effect)),
        }];
        if effect == CreditEffect::Paid {
            out.push(CashChange::of_session(CashEventKind::Paid, session));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_type_is_its_object_and_its_name() {
        for kind in CashEventKind::ALL {
            let (object, name) = kind.webhook_type().split_once('.').unwrap();
            assert_eq!(name, kind.name(), "{kind:?}");
            assert!(matches!(object, "cash_session" | "cash_credit"), "{kind:?}");
        }
    }
}
