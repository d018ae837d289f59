//! Credits: storing each exactly once, applying it, the outbox watermark,
//! and the credits that arrived unassigned.

use chrono::Utc;
use kiosk_schemas::{CashEvent, KioskId};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::records::{CREDIT_V, credit_key, decode_credit, kiosk_prefix, watermark_key};
use super::{CashStore, tx_put_session, tx_session};
use crate::cash::event::{CashChange, CashEventKind};
use crate::cash::{
    CreditEffect, CreditOrigin, CreditRecord, Placement, SessionCredit, SessionRecord,
    UnassignedReason,
};
use crate::store::{StoreError, abort, encode};
use kiosk_store::keys;

/// What storing one credit did.
#[derive(Debug, Clone)]
pub struct CreditOutcome {
    /// The credit was stored before: nothing changed.
    pub duplicate: bool,
    /// The contiguous watermark of the kiosk's outbox after this credit:
    /// acknowledge up to here.
    pub ack_up_to: u64,
    /// The credit as stored.
    pub credit: CreditRecord,
    /// The session it went to, updated, and what it did there (`None`:
    /// unassigned, see `credit.unassigned`).
    pub applied: Option<(SessionRecord, SessionCredit, CreditEffect)>,
    /// What it caused (`credit` or `late_credit`, then `paid`; or
    /// `unassigned`), as queued for webhooks; none for a duplicate.
    pub events: Vec<CashChange>,
}

impl CashStore {
    /// Stores `event` from `kiosk` exactly once and applies it (see module
    /// docs). Not durable until flushed.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn apply_credit(
        &self,
        kiosk: &KioskId,
        event: &CashEvent,
    ) -> Result<CreditOutcome, StoreError> {
        let ckey = credit_key(kiosk, &event.outbox, event.seq);
        let wkey = watermark_key(kiosk, &event.outbox);
        let wh_tree = self.events.tree();
        let events_log = self.events.clone();
        let trees = (
            &self.credits,
            &self.sessions,
            &self.open,
            &self.awaiting,
            &self.unassigned,
            &self.watermark,
            wh_tree,
        );
        let outcome = trees.transaction(
            |(credits, sessions, open, awaiting, unassigned, watermark, wh)| {
                let now = Utc::now();
                if let Some(b) = credits.get(&ckey)? {
                    let credit = decode_credit(&ckey, &b).map_err(abort)?;
                    let ack_up_to =
                        advance_watermark(credits, watermark, kiosk, &event.outbox, &wkey)?;
                    return Ok(CreditOutcome {
                        duplicate: true,
                        ack_up_to,
                        credit,
                        applied: None,
                        events: Vec::new(),
                    });
                }
                let mut credit = CreditRecord {
                    kiosk_id: kiosk.clone(),
                    outbox: event.outbox.clone(),
                    seq: event.seq,
                    kind: event.kind,
                    amount: event.amount,
                    currency: event.currency.clone(),
                    at: event.at,
                    received_at: now,
                    session_id: None,
                    taken_for: event.session_id.clone(),
                    board_boot_id: event.board_boot_id.clone(),
                    board_seq: event.board_seq,
                    unassigned: None,
                    resolution: None,
                };
                let session = match &event.session_id {
                    Some(id) => tx_session(sessions, id)?,
                    None => None,
                };
                // Only money the kiosk took for this very session goes to
                // it, and always: a coin read with acceptance off must not
                // pay the next customer's order, and a late one must not be
                // lost to its own.
                let placement = crate::cash::place_credit(
                    kiosk,
                    &event.currency,
                    event.session_id.as_deref(),
                    session.as_ref(),
                );
                let mut applied = None;
                match (placement, session) {
                    (Placement::Session, Some(mut rec)) => {
                        let entry = SessionRecord::credit_entry(&credit, CreditOrigin::Kiosk);
                        match rec.apply_credit(entry, &event.currency, now) {
                            Ok(effect) => {
                                credit.session_id = Some(rec.session_id.clone());
                                tx_put_session(sessions, open, awaiting, &rec)?;
                                let origin = if effect == CreditEffect::Late {
                                    CreditOrigin::Late
                                } else {
                                    CreditOrigin::Kiosk
                                };
                                let entry = SessionRecord::credit_entry(&credit, origin);
                                applied = Some((rec, entry, effect));
                            }
                            Err(crate::cash::CreditRefusal::CurrencyMismatch) => {
                                credit.unassigned = Some(UnassignedReason::CurrencyMismatch);
                            }
                        }
                    }
                    (Placement::Unassigned(why), _) => credit.unassigned = Some(why),
                    (Placement::Session, None) => {
                        credit.unassigned = Some(UnassignedReason::UnknownSession);
                    }
                }
                credits.insert(
                    ckey.as_slice(),
                    encode(CREDIT_V, "credit", &credit).map_err(abort)?,
                )?;
                let events = match &applied {
                    Some((rec, entry, effect)) => {
                        let kind = CashEventKind::of_credit(*effect);
                        CashChange::applied(kind, rec, entry, *effect, &credit)
                    }
                    None => {
                        unassigned.insert(ckey.as_slice(), &[][..])?;
                        vec![CashChange::of_lone_credit(
                            CashEventKind::Unassigned,
                            &credit,
                        )]
                    }
                };
                for change in &events {
                    change.record(&events_log, wh)?;
                }
                let ack_up_to = advance_watermark(credits, watermark, kiosk, &event.outbox, &wkey)?;
                Ok(CreditOutcome {
                    duplicate: false,
                    ack_up_to,
                    credit,
                    applied,
                    events,
                })
            },
        );
        Ok(outcome?)
    }

    /// Credits of `kiosk` that arrived unassigned (resolved or not),
    /// oldest first.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn unassigned(&self, kiosk: &KioskId) -> Result<Vec<CreditRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.unassigned.scan_prefix(kiosk_prefix(kiosk)) {
            let (k, _) = item?;
            if let Some(b) = self.credits.get(&k)? {
                out.push(decode_credit(&k, &b)?);
            }
        }
        out.sort_by_key(|c| c.received_at);
        Ok(out)
    }
}

/// Raises the contiguous watermark of `kiosk`'s `outbox` over every stored
/// seq above it; returns it.
fn advance_watermark(
    credits: &TransactionalTree,
    watermark: &TransactionalTree,
    kiosk: &KioskId,
    outbox: &str,
    wkey: &[u8],
) -> Result<u64, ConflictableTransactionError<StoreError>> {
    let start = watermark.get(wkey)?.map_or(0, |b| keys::read_u64(&b));
    let mut w = start;
    while credits.get(credit_key(kiosk, outbox, w + 1))?.is_some() {
        w += 1;
    }
    if w != start {
        watermark.insert(wkey, &w.to_be_bytes())?;
    }
    Ok(w)
}
