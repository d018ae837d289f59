//! A stored credit, where an incoming credit goes, and how an operator
//! resolves an unassigned one (pure).

use kiosk_schemas::{CreditKind, Currency, KioskId, Timestamp};
use serde::{Deserialize, Serialize};

use super::SessionRecord;

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
