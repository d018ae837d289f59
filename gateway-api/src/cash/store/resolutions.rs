//! Resolutions of unassigned credits by an operator: assign to a session
//! or refund.

use chrono::Utc;
use kiosk_schemas::KioskId;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::records::{CREDIT_V, credit_key, decode_credit};
use super::{CashStore, tx_put_session, tx_session};
use crate::cash::event::{CashChange, CashEventKind};
use crate::cash::{
    CreditEffect, CreditOrigin, CreditRecord, Resolution, ResolutionAction, ResolveDecision,
    ResolveRefusal, SessionCredit, SessionRecord,
};
use crate::store::{StoreError, abort, encode};
use kiosk_store::idempotency::{Claim, Seen};

/// A resolution request ([`CashStore::resolve`]).
#[derive(Debug, Clone)]
pub struct ResolveRequest<'a> {
    /// The kiosk of the credit.
    pub kiosk: &'a KioskId,
    /// `<outbox>-<seq>`.
    pub credit_id: &'a str,
    /// Assign or refund.
    pub action: ResolutionAction,
    /// Target session, for assignments.
    pub session_id: Option<&'a str>,
    /// Reason, for refunds.
    pub reason: Option<&'a str>,
    /// API key name.
    pub by: &'a str,
    /// Idempotency-Key and SHA-256 of (route, body).
    pub idempotency: Option<(&'a str, [u8; 32])>,
}

/// Result of [`CashStore::resolve`].
#[derive(Debug, Clone)]
pub enum ResolveOutcome {
    /// Resolved now; for an assignment, the session and what the credit did
    /// there.
    Resolved {
        /// The credit, with its resolution.
        credit: CreditRecord,
        /// The session it went to, and the effect.
        applied: Option<(SessionRecord, SessionCredit, CreditEffect)>,
        /// What it caused (`assigned`, then `paid`; or `refunded`), as
        /// queued for webhooks.
        events: Vec<CashChange>,
    },
    /// The same resolution was made before (or the same Idempotency-Key
    /// and request): the current state, nothing changed.
    Replayed {
        /// The credit.
        credit: CreditRecord,
        /// Its session, for an assignment.
        session: Option<SessionRecord>,
    },
    /// The Idempotency-Key was used before with a different request.
    KeyReused,
    /// No such unassigned credit of this kiosk.
    CreditMissing,
    /// No such session.
    SessionMissing,
    /// Refused, and why.
    Refused(ResolveRefusal),
}

impl CashStore {
    /// Resolves an unassigned credit (see [`crate::cash::decide_resolution`]):
    /// records the resolution on the credit and, for an assignment, applies
    /// it to the session like any credit (open: may become paid; paid: more
    /// change; cancelling/cancelled: more refund), with its webhooks
    /// (`cash_credit.assigned` or `cash_credit.refunded`, and
    /// `cash_session.paid`), in one transaction. Not durable until flushed.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn resolve(&self, req: &ResolveRequest<'_>) -> Result<ResolveOutcome, StoreError> {
        let Some((outbox, seq)) = crate::cash::parse_credit_id(req.credit_id) else {
            return Ok(ResolveOutcome::CreditMissing);
        };
        let ckey = credit_key(req.kiosk, outbox, seq);
        let claim = req
            .idempotency
            .map(|(key, sha)| Claim::new(req.kiosk.as_str(), key, sha, req.credit_id))
            .transpose()?;
        let events_log = self.events.clone();
        let trees = (
            &self.credits,
            &self.unassigned,
            &self.sessions,
            &self.open,
            &self.awaiting,
            &self.resolution_idempotency,
            self.events.tree(),
        );
        let outcome = trees.transaction(
            |(credits, unassigned, sessions, open, awaiting, idem, wh)| {
                let load_credit = || -> Result<Option<CreditRecord>, ConflictableTransactionError<StoreError>> {
                    if unassigned.get(&ckey)?.is_none() {
                        return Ok(None);
                    }
                    match credits.get(&ckey)? {
                        Some(b) => Ok(Some(decode_credit(&ckey, &b).map_err(abort)?)),
                        None => Ok(None),
                    }
                };
                let seen = claim.as_ref().map(|c| c.check(idem)).transpose()?;
                if seen == Some(Seen::Reused) {
                    return Ok(ResolveOutcome::KeyReused);
                }
                if let Some(Seen::Replay(_)) = seen
                    && let Some(credit) = load_credit()?
                {
                    let session = match &credit.session_id {
                        Some(id) => tx_session(sessions, id)?,
                        None => None,
                    };
                    return Ok(ResolveOutcome::Replayed { credit, session });
                }
                let Some(mut credit) = load_credit()? else {
                    return Ok(ResolveOutcome::CreditMissing);
                };
                let session = match (req.action, req.session_id) {
                    (ResolutionAction::Assigned, Some(id)) => match tx_session(sessions, id)? {
                        Some(s) => Some(s),
                        None => return Ok(ResolveOutcome::SessionMissing),
                    },
                    (ResolutionAction::Assigned, None) => {
                        return Ok(ResolveOutcome::SessionMissing);
                    }
                    (ResolutionAction::Refunded, _) => None,
                };
                let decision =
                    crate::cash::decide_resolution(&credit, req.action, session.as_ref(), req.reason);
                let remember = |idem: &TransactionalTree| -> Result<(), ConflictableTransactionError<StoreError>> {
                    if let Some(claim) = &claim {
                        claim.record(idem)?;
                    }
                    Ok(())
                };
                match decision {
                    Err(refusal) => return Ok(ResolveOutcome::Refused(refusal)),
                    Ok(ResolveDecision::Same) => {
                        remember(idem)?;
                        return Ok(ResolveOutcome::Replayed { credit, session });
                    }
                    Ok(ResolveDecision::Apply) => {}
                }
                let now = Utc::now();
                credit.resolution = Some(Resolution {
                    action: req.action,
                    session_id: session.as_ref().map(|s| s.session_id.clone()),
                    reason: req.reason.map(str::to_owned),
                    at: now,
                    by: req.by.to_owned(),
                });
                let mut applied = None;
                let events = if let Some(mut rec) = session {
                    let entry = SessionRecord::credit_entry(&credit, CreditOrigin::Assigned);
                    let effect = match rec.apply_credit(entry, &credit.currency, now) {
                        Ok(e) => e,
                        Err(crate::cash::CreditRefusal::CurrencyMismatch) => {
                            return Ok(ResolveOutcome::Refused(ResolveRefusal::CurrencyMismatch));
                        }
                    };
                    credit.session_id = Some(rec.session_id.clone());
                    tx_put_session(sessions, open, awaiting, &rec)?;
                    let entry = SessionRecord::credit_entry(&credit, CreditOrigin::Assigned);
                    let events =
                        CashChange::applied(CashEventKind::Assigned, &rec, &entry, effect, &credit);
                    applied = Some((rec, entry, effect));
                    events
                } else {
                    vec![CashChange::of_lone_credit(CashEventKind::Refunded, &credit)]
                };
                for change in &events {
                    change.record(&events_log, wh)?;
                }
                credits.insert(
                    ckey.as_slice(),
                    encode(CREDIT_V, req.credit_id, &credit).map_err(abort)?,
                )?;
                remember(idem)?;
                Ok(ResolveOutcome::Resolved {
                    credit,
                    applied,
                    events,
                })
            },
        );
        Ok(outcome?)
    }
}
