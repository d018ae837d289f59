//! Durable cash state, in the gateway's sled directory.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `cash_sessions` | session id | [`SessionRecord`] (version 2; version 1 is read) |
//! | `cash_open` | kiosk id | id of the kiosk's open session |
//! | `cash_awaiting` | kiosk `\0` session id | empty: the session awaits the kiosk's confirmation (`cancelling`, or `paid` not final) |
//! | `cash_credits` | kiosk `\0` outbox `\0` seq (u64 BE) | [`CreditRecord`] (version 2; version 1 is read): every credit ever stored |
//! | `cash_unassigned` | same key | empty: the credit arrived unassigned (resolved or not) |
//! | `cash_watermark` | kiosk `\0` outbox | highest `seq` with all lower ones stored (u64 BE) |
//! | `cash_idempotency` | kiosk `\0` Idempotency-Key | session id + SHA-256 of the request |
//! | `cash_resolution_idempotency` | kiosk `\0` Idempotency-Key | credit id + SHA-256 of the request |
//!
//! [`CashStore::apply_credit`] stores a credit, applies it to the session
//! the kiosk took it for (whatever that session's state: see
//! [`super::place_credit`]) or else keeps it unassigned, advances the
//! watermark and queues its webhooks, all in one sled transaction: a credit
//! is either fully recorded or not at all, and a credit already stored
//! (same kiosk, outbox and seq) changes nothing. The caller flushes before
//! acknowledging (`cash/ack` with the watermark). The watermark only ever
//! covers a contiguous run of seqs, so a credit lost on the way is never
//! acknowledged: the kiosk keeps sending it.
//!
//! [`CashStore::settle_ready`] makes sessions final once the kiosk's
//! confirmation is stored and the watermark covers its `last_seq`; callers
//! run it after credits, confirmations and cancels (and the re-send timer
//! after a restart). No method here publishes anything: each returns what
//! the change caused and the caller publishes controls, live events and
//! wakes the webhook sender after the flush.

use std::sync::Arc;

use chrono::Utc;
use kiosk_schemas::{CashControl, CashEvent, CashState, CreditKind, Currency, KioskId, Timestamp};
use serde::Deserialize;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::event::CashEventKind;
use super::webhooks::Webhooks;
use super::{
    CancelEffect, ConfirmEffect, Confirmation, CreditEffect, CreditOrigin, CreditRecord, Placement,
    Resolution, ResolutionAction, ResolveDecision, ResolveRefusal, SessionCredit, SessionRecord,
    SessionState, Settlement, UnassignedReason,
};
use crate::store::{Store, StoreError, abort, decode, encode};
use kiosk_store::idempotency::{Claim, Seen};
use kiosk_store::keys;

const SESSION_V: u8 = 2;
const SESSION_V1: u8 = 1;
const CREDIT_V: u8 = 2;
const CREDIT_V1: u8 = 1;

/// A session as version 1 stored it (before two-phase endings).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct SessionRecordV1 {
    session_id: String,
    kiosk_id: KioskId,
    order_id: String,
    amount_due: i64,
    currency: Currency,
    state: SessionState,
    amount_inserted: i64,
    credits: Vec<SessionCreditV1>,
    created_at: Timestamp,
    closed_at: Option<Timestamp>,
    opened_by: String,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct SessionCreditV1 {
    outbox: String,
    seq: u64,
    kind: CreditKind,
    amount: i64,
    at: Timestamp,
}

/// A credit as version 1 stored it.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct CreditRecordV1 {
    kiosk_id: KioskId,
    outbox: String,
    seq: u64,
    kind: CreditKind,
    amount: i64,
    currency: Currency,
    at: Timestamp,
    received_at: Timestamp,
    session_id: Option<String>,
}

/// Reads a session record of version 2, or 1: a version-1 session that was
/// paid or cancelled ended under the one-phase rules and counts as final.
fn decode_session(key: &[u8], bytes: &[u8]) -> Result<SessionRecord, StoreError> {
    if bytes.first() != Some(&SESSION_V1) {
        return decode(SESSION_V, key, bytes);
    }
    let old: SessionRecordV1 = decode(SESSION_V1, key, bytes)?;
    let ended = old.state != SessionState::Open;
    Ok(SessionRecord {
        session_id: old.session_id,
        kiosk_id: old.kiosk_id,
        order_id: old.order_id,
        amount_due: old.amount_due,
        currency: old.currency,
        state: old.state,
        amount_inserted: old.amount_inserted,
        credits: old
            .credits
            .into_iter()
            .map(|c| SessionCredit {
                outbox: c.outbox,
                seq: c.seq,
                kind: c.kind,
                amount: c.amount,
                at: c.at,
                origin: CreditOrigin::Kiosk,
            })
            .collect(),
        created_at: old.created_at,
        settled_at: if ended { old.closed_at } else { None },
        closed_at: old.closed_at,
        opened_by: old.opened_by,
        confirmation: None,
    })
}

/// Reads a credit record of version 2, or 1.
fn decode_credit(key: &[u8], bytes: &[u8]) -> Result<CreditRecord, StoreError> {
    if bytes.first() != Some(&CREDIT_V1) {
        return decode(CREDIT_V, key, bytes);
    }
    let old: CreditRecordV1 = decode(CREDIT_V1, key, bytes)?;
    Ok(CreditRecord {
        unassigned: old
            .session_id
            .is_none()
            .then_some(UnassignedReason::NoOpenSession),
        kiosk_id: old.kiosk_id,
        outbox: old.outbox,
        seq: old.seq,
        kind: old.kind,
        amount: old.amount,
        currency: old.currency,
        at: old.at,
        received_at: old.received_at,
        taken_for: old.session_id.clone(),
        session_id: old.session_id,
        board_boot_id: None,
        board_seq: None,
        resolution: None,
    })
}

fn encode_session(rec: &SessionRecord) -> Result<Vec<u8>, StoreError> {
    encode(SESSION_V, &rec.session_id, rec)
}

fn credit_key(kiosk: &KioskId, outbox: &str, seq: u64) -> Vec<u8> {
    let mut k = watermark_key(kiosk, outbox);
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn watermark_key(kiosk: &KioskId, outbox: &str) -> Vec<u8> {
    let mut k = kiosk_prefix(kiosk);
    k.extend_from_slice(outbox.as_bytes());
    k
}

fn kiosk_prefix(kiosk: &KioskId) -> Vec<u8> {
    keys::prefix(kiosk.as_str())
}

fn awaiting_key(kiosk: &KioskId, session_id: &str) -> Vec<u8> {
    let mut k = kiosk_prefix(kiosk);
    k.extend_from_slice(session_id.as_bytes());
    k
}

/// Result of [`CashStore::open_session`].
#[derive(Debug, Clone)]
pub enum OpenOutcome {
    /// Opened.
    Opened(SessionRecord),
    /// The Idempotency-Key was used before with the same request.
    Replayed(SessionRecord),
    /// The Idempotency-Key was used before with a different request.
    KeyReused,
    /// The kiosk already has an open session (its id).
    Busy(String),
}

/// Result of [`CashStore::cancel`].
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// Was open, now `cancelling` (send the controls, run
    /// [`CashStore::settle_ready`]).
    Cancelling(SessionRecord),
    /// Was `cancelling` already: unchanged.
    AlreadyCancelling(SessionRecord),
    /// Paid or cancelled: unchanged.
    Refused(SessionRecord),
    /// No such session.
    Missing,
}

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
}

/// Result of [`CashStore::confirm`].
#[derive(Debug, Clone)]
pub enum ConfirmOutcome {
    /// Stored on the session (run [`CashStore::settle_ready`]).
    Recorded(SessionRecord),
    /// Held already.
    Duplicate(SessionRecord),
    /// No such session of this kiosk.
    Unknown,
}

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

/// The cash trees.
#[derive(Clone)]
pub struct CashStore {
    store: Store,
    sessions: sled::Tree,
    open: sled::Tree,
    awaiting: sled::Tree,
    credits: sled::Tree,
    unassigned: sled::Tree,
    watermark: sled::Tree,
    idempotency: sled::Tree,
    resolution_idempotency: sled::Tree,
    webhooks: Webhooks,
    /// Held from reading a kiosk's sessions to queueing its controls, so
    /// controls go out in the order of the states they were read from.
    control: Arc<std::sync::Mutex<()>>,
}

/// Reads a session inside a transaction.
fn tx_session(
    sessions: &TransactionalTree,
    session_id: &str,
) -> Result<Option<SessionRecord>, ConflictableTransactionError<StoreError>> {
    let key = session_id.as_bytes();
    match sessions.get(key)? {
        Some(b) => Ok(Some(decode_session(key, &b).map_err(abort)?)),
        None => Ok(None),
    }
}

/// Writes `rec` inside a transaction and keeps the `cash_open` and
/// `cash_awaiting` indexes in step with its state.
fn tx_put_session(
    sessions: &TransactionalTree,
    open: &TransactionalTree,
    awaiting: &TransactionalTree,
    rec: &SessionRecord,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    sessions.insert(
        rec.session_id.as_bytes(),
        encode_session(rec).map_err(abort)?,
    )?;
    let kiosk_key = rec.kiosk_id.as_str().as_bytes();
    if rec.state != SessionState::Open
        && open.get(kiosk_key)?.as_deref() == Some(rec.session_id.as_bytes())
    {
        open.remove(kiosk_key)?;
    }
    let akey = awaiting_key(&rec.kiosk_id, &rec.session_id);
    if rec.awaits_confirmation() {
        awaiting.insert(akey, &[][..])?;
    } else {
        awaiting.remove(akey)?;
    }
    Ok(())
}

impl CashStore {
    /// Opens the cash trees in `store`'s database; `webhooks` is where
    /// events for the backend are queued.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when a tree cannot be opened.
    pub fn open(store: &Store, webhooks: Webhooks) -> Result<Self, StoreError> {
        let db = store.db();
        Ok(CashStore {
            sessions: db.open_tree("cash_sessions")?,
            open: db.open_tree("cash_open")?,
            awaiting: db.open_tree("cash_awaiting")?,
            credits: db.open_tree("cash_credits")?,
            unassigned: db.open_tree("cash_unassigned")?,
            watermark: db.open_tree("cash_watermark")?,
            idempotency: db.open_tree("cash_idempotency")?,
            resolution_idempotency: db.open_tree("cash_resolution_idempotency")?,
            store: store.clone(),
            webhooks,
            control: Arc::default(),
        })
    }

    /// The controls `kiosk` must get now ([`super::controls_for`]:
    /// `disable(S)` for each session awaiting confirmation, then `enable`
    /// for its open session or a plain `disable`), or with `disables_only`
    /// just the `disable(S)`s (the re-send timer). `send` is called for each
    /// in order while a lock is held, so controls read from an older state
    /// cannot overtake newer ones (every sender goes through here).
    ///
    /// # Errors
    /// [`StoreError`] when the sessions cannot be read (nothing is sent).
    pub fn with_controls(
        &self,
        kiosk: &KioskId,
        disables_only: bool,
        mut send: impl FnMut(&CashControl),
    ) -> Result<usize, StoreError> {
        let _order = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let awaiting = self.awaiting_sessions(kiosk)?;
        let controls = if disables_only {
            super::disables_for(&awaiting)
        } else {
            let open = self.open_session_of(kiosk)?;
            super::controls_for(open.as_ref(), &awaiting)
        };
        for c in &controls {
            send(c);
        }
        Ok(controls.len())
    }

    /// Makes every change durable (see [`Store::flush`]).
    ///
    /// # Errors
    /// [`StoreError`] on I/O failure.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }

    /// The webhook queue.
    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    /// Opens `session` (state `open`) unless its kiosk has an open session,
    /// or the Idempotency-Key was seen. Sessions of the kiosk that await
    /// confirmation do not block it. Not durable until flushed.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn open_session(
        &self,
        session: SessionRecord,
        idempotency: Option<(&str, [u8; 32])>,
    ) -> Result<OpenOutcome, StoreError> {
        let id_key = session.session_id.as_bytes().to_vec();
        let kiosk_key = session.kiosk_id.as_str().as_bytes().to_vec();
        let bytes = encode_session(&session)?;
        let claim = idempotency
            .map(|(key, sha)| Claim::new(session.kiosk_id.as_str(), key, sha, &session.session_id))
            .transpose()?;
        let hook = self.webhooks.record(
            self.webhooks.reserve()?,
            CashEventKind::Opened,
            &session,
            None,
        );
        let wh_tree = self.webhooks.tree();
        let outcome = (&self.sessions, &self.open, &self.idempotency, wh_tree).transaction(
            |(sessions, open, idem, wh)| {
                match claim.as_ref().map(|c| c.check(idem)).transpose()? {
                    Some(Seen::Reused) => return Ok(OpenOutcome::KeyReused),
                    Some(Seen::Replay(prev)) => {
                        if let Some(rec) = tx_session(sessions, &prev)? {
                            return Ok(OpenOutcome::Replayed(rec));
                        }
                    }
                    Some(Seen::New) | None => {}
                }
                if let Some(busy) = open.get(&kiosk_key)? {
                    return Ok(OpenOutcome::Busy(
                        String::from_utf8_lossy(&busy).into_owned(),
                    ));
                }
                sessions.insert(id_key.as_slice(), bytes.as_slice())?;
                open.insert(kiosk_key.as_slice(), id_key.as_slice())?;
                if let Some(claim) = &claim {
                    claim.record(idem)?;
                }
                Webhooks::insert(wh, hook.as_ref())?;
                Ok(OpenOutcome::Opened(session.clone()))
            },
        );
        Ok(outcome?)
    }

    /// Reads a session.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn session(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let key = session_id.as_bytes();
        self.sessions
            .get(key)?
            .map(|b| decode_session(key, &b))
            .transpose()
    }

    /// The open session of `kiosk`, if any.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn open_session_of(&self, kiosk: &KioskId) -> Result<Option<SessionRecord>, StoreError> {
        match self.open.get(kiosk.as_str().as_bytes())? {
            Some(id) => self.session(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// The sessions of `kiosk` awaiting its confirmation (`cancelling`, or
    /// `paid` not final), oldest first.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn awaiting_sessions(&self, kiosk: &KioskId) -> Result<Vec<SessionRecord>, StoreError> {
        let prefix = kiosk_prefix(kiosk);
        let mut out = Vec::new();
        for item in self.awaiting.scan_prefix(&prefix) {
            let (k, _) = item?;
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some(s) = self.session(&id)? {
                out.push(s);
            }
        }
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }

    /// Kiosks with at least one session awaiting confirmation.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn awaiting_kiosks(&self) -> Result<Vec<KioskId>, StoreError> {
        let mut out: Vec<KioskId> = Vec::new();
        for item in self.awaiting.iter() {
            let (k, _) = item?;
            let Some(end) = k.iter().position(|&b| b == 0) else {
                continue;
            };
            let Ok(id) = KioskId::new(String::from_utf8_lossy(&k[..end]).as_ref()) else {
                continue;
            };
            if out.last() != Some(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Starts cancelling an open session (`cancelling`; the caller sends
    /// the controls and runs [`CashStore::settle_ready`]). Not durable until
    /// flushed.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn cancel(&self, session_id: &str) -> Result<CancelOutcome, StoreError> {
        let wh_tree = self.webhooks.tree();
        let webhooks = self.webhooks.clone();
        // Ids are taken outside the transaction: sled's id generator takes
        // the lock a transaction holds.
        let hook_id = self.webhooks.reserve()?;
        let outcome = (&self.sessions, &self.open, &self.awaiting, wh_tree).transaction(
            |(sessions, open, awaiting, wh)| {
                let Some(mut rec) = tx_session(sessions, session_id)? else {
                    return Ok(CancelOutcome::Missing);
                };
                match rec.cancel(Utc::now()) {
                    CancelEffect::Started => {}
                    CancelEffect::AlreadyCancelling => {
                        return Ok(CancelOutcome::AlreadyCancelling(rec));
                    }
                    CancelEffect::Refused => return Ok(CancelOutcome::Refused(rec)),
                }
                tx_put_session(sessions, open, awaiting, &rec)?;
                let hook = webhooks.record(hook_id, CashEventKind::Cancelling, &rec, None);
                Webhooks::insert(wh, hook.as_ref())?;
                Ok(CancelOutcome::Cancelling(rec))
            },
        );
        Ok(outcome?)
    }

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
        let wh_tree = self.webhooks.tree();
        let webhooks = self.webhooks.clone();
        let (hook_a, hook_b) = (self.webhooks.reserve()?, self.webhooks.reserve()?);
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
                let placement = super::place_credit(
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
                            Err(super::CreditRefusal::CurrencyMismatch) => {
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
                match &applied {
                    Some((rec, _, effect)) => {
                        let name = match effect {
                            CreditEffect::Late => CashEventKind::LateCredit,
                            CreditEffect::Added | CreditEffect::Paid => CashEventKind::Credit,
                        };
                        let hook = webhooks.record(hook_a, name, rec, Some(&credit));
                        Webhooks::insert(wh, hook.as_ref())?;
                        if *effect == CreditEffect::Paid {
                            let hook = webhooks.record(hook_b, CashEventKind::Paid, rec, None);
                            Webhooks::insert(wh, hook.as_ref())?;
                        }
                    }
                    None => {
                        unassigned.insert(ckey.as_slice(), &[][..])?;
                        let hook =
                            webhooks.record_credit(hook_a, CashEventKind::Unassigned, &credit);
                        Webhooks::insert(wh, hook.as_ref())?;
                    }
                }
                let ack_up_to = advance_watermark(credits, watermark, kiosk, &event.outbox, &wkey)?;
                Ok(CreditOutcome {
                    duplicate: false,
                    ack_up_to,
                    credit,
                    applied,
                })
            },
        );
        Ok(outcome?)
    }

    /// Stores `kiosk`'s confirmation (`state`, with `enabled: false` and a
    /// `session_id`) on that session. Not durable until flushed.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn confirm(
        &self,
        kiosk: &KioskId,
        state: &CashState,
    ) -> Result<ConfirmOutcome, StoreError> {
        let Some(session_id) = state.session_id.as_deref() else {
            return Ok(ConfirmOutcome::Unknown);
        };
        let confirmation = Confirmation {
            outbox: state.outbox.clone(),
            last_seq: state.last_seq,
            at: state.at,
            received_at: Utc::now(),
        };
        let outcome = self.sessions.transaction(|sessions| {
            let Some(mut rec) = tx_session(sessions, session_id)? else {
                return Ok(ConfirmOutcome::Unknown);
            };
            if &rec.kiosk_id != kiosk {
                return Ok(ConfirmOutcome::Unknown);
            }
            match rec.confirm(confirmation.clone()) {
                ConfirmEffect::Duplicate => Ok(ConfirmOutcome::Duplicate(rec)),
                ConfirmEffect::Recorded => {
                    sessions.insert(
                        rec.session_id.as_bytes(),
                        encode_session(&rec).map_err(abort)?,
                    )?;
                    Ok(ConfirmOutcome::Recorded(rec))
                }
            }
        });
        Ok(outcome?)
    }

    /// Makes final every session of `kiosk` awaiting confirmation whose
    /// confirmation is stored and whose outbox watermark covers its
    /// `last_seq` (`cancelling` → `cancelled`, `paid` → final), each in one
    /// transaction with its webhook (`cash_session.cancelled` /
    /// `cash_session.settled`). Returns those sessions. Not durable until
    /// flushed.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn settle_ready(
        &self,
        kiosk: &KioskId,
    ) -> Result<Vec<(SessionRecord, Settlement)>, StoreError> {
        let mut out = Vec::new();
        for candidate in self.awaiting_sessions(kiosk)? {
            if candidate.confirmation.is_none() {
                continue;
            }
            let hook_id = self.webhooks.reserve()?;
            let webhooks = self.webhooks.clone();
            let id = candidate.session_id.clone();
            let trees = (
                &self.sessions,
                &self.open,
                &self.awaiting,
                &self.watermark,
                self.webhooks.tree(),
            );
            let settled = trees.transaction(|(sessions, open, awaiting, watermark, wh)| {
                let Some(mut rec) = tx_session(sessions, &id)? else {
                    awaiting.remove(awaiting_key(kiosk, &id))?;
                    return Ok(None);
                };
                let Some(c) = &rec.confirmation else {
                    return Ok(None);
                };
                let w = watermark
                    .get(watermark_key(kiosk, &c.outbox))?
                    .map_or(0, |b| keys::read_u64(&b));
                let Some(how) = rec.settle(w, Utc::now()) else {
                    return Ok(None);
                };
                tx_put_session(sessions, open, awaiting, &rec)?;
                let name = match how {
                    Settlement::Paid => CashEventKind::Settled,
                    Settlement::Cancelled => CashEventKind::Cancelled,
                };
                let hook = webhooks.record(hook_id, name, &rec, None);
                Webhooks::insert(wh, hook.as_ref())?;
                Ok(Some((rec, how)))
            })?;
            out.extend(settled);
        }
        Ok(out)
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

    /// Resolves an unassigned credit (see [`super::decide_resolution`]):
    /// records the resolution on the credit and, for an assignment, applies
    /// it to the session like any credit (open: may become paid; paid: more
    /// change; cancelling/cancelled: more refund), with its webhooks
    /// (`cash_credit.assigned` or `cash_credit.refunded`, and
    /// `cash_session.paid`), in one transaction. Not durable until flushed.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn resolve(&self, req: &ResolveRequest<'_>) -> Result<ResolveOutcome, StoreError> {
        let Some((outbox, seq)) = super::parse_credit_id(req.credit_id) else {
            return Ok(ResolveOutcome::CreditMissing);
        };
        let ckey = credit_key(req.kiosk, outbox, seq);
        let claim = req
            .idempotency
            .map(|(key, sha)| Claim::new(req.kiosk.as_str(), key, sha, req.credit_id))
            .transpose()?;
        let (hook_a, hook_b) = (self.webhooks.reserve()?, self.webhooks.reserve()?);
        let webhooks = self.webhooks.clone();
        let trees = (
            &self.credits,
            &self.unassigned,
            &self.sessions,
            &self.open,
            &self.awaiting,
            &self.resolution_idempotency,
            self.webhooks.tree(),
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
                    super::decide_resolution(&credit, req.action, session.as_ref(), req.reason);
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
                if let Some(mut rec) = session {
                    let entry = SessionRecord::credit_entry(&credit, CreditOrigin::Assigned);
                    let effect = match rec.apply_credit(entry, &credit.currency, now) {
                        Ok(e) => e,
                        Err(super::CreditRefusal::CurrencyMismatch) => {
                            return Ok(ResolveOutcome::Refused(ResolveRefusal::CurrencyMismatch));
                        }
                    };
                    credit.session_id = Some(rec.session_id.clone());
                    tx_put_session(sessions, open, awaiting, &rec)?;
                    let hook = webhooks.record(hook_a, CashEventKind::Assigned, &rec, Some(&credit));
                    Webhooks::insert(wh, hook.as_ref())?;
                    if effect == CreditEffect::Paid {
                        let hook = webhooks.record(hook_b, CashEventKind::Paid, &rec, None);
                        Webhooks::insert(wh, hook.as_ref())?;
                    }
                    let entry = SessionRecord::credit_entry(&credit, CreditOrigin::Assigned);
                    applied = Some((rec, entry, effect));
                } else {
                    let hook = webhooks.record_credit(hook_a, CashEventKind::Refunded, &credit);
                    Webhooks::insert(wh, hook.as_ref())?;
                }
                credits.insert(
                    ckey.as_slice(),
                    encode(CREDIT_V, req.credit_id, &credit).map_err(abort)?,
                )?;
                remember(idem)?;
                Ok(ResolveOutcome::Resolved { credit, applied })
            },
        );
        Ok(outcome?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use kiosk_schemas::V1;

    fn eur() -> Currency {
        Currency::new("EUR").unwrap()
    }

    fn k1() -> KioskId {
        KioskId::new("k1").unwrap()
    }

    #[test]
    fn version_1_records_are_read_and_ended_sessions_count_as_final() {
        let now = Utc::now();
        for (state, final_) in [
            (SessionState::Open, false),
            (SessionState::Paid, true),
            (SessionState::Cancelled, true),
        ] {
            let old = SessionRecordV1 {
                session_id: "s".into(),
                kiosk_id: k1(),
                order_id: "o".into(),
                amount_due: 1000,
                currency: eur(),
                state,
                amount_inserted: 500,
                credits: vec![SessionCreditV1 {
                    outbox: "o1".into(),
                    seq: 1,
                    kind: CreditKind::Coin,
                    amount: 500,
                    at: now,
                }],
                created_at: now,
                closed_at: (state != SessionState::Open).then_some(now),
                opened_by: "test".into(),
            };
            let bytes = encode(SESSION_V1, "s", &old).unwrap();
            let rec = decode_session(b"s", &bytes).unwrap();
            assert_eq!((rec.state, rec.is_final()), (state, final_));
            assert!(!rec.awaits_confirmation());
            assert_eq!(rec.credits[0].origin, CreditOrigin::Kiosk);
            // Written back as version 2, read back the same.
            let again = decode_session(b"s", &encode_session(&rec).unwrap()).unwrap();
            assert_eq!(again, rec);
        }
        let old = CreditRecordV1 {
            kiosk_id: k1(),
            outbox: "o1".into(),
            seq: 2,
            kind: CreditKind::Bill,
            amount: 1000,
            currency: eur(),
            at: now,
            received_at: now,
            session_id: None,
        };
        let rec = decode_credit(b"c", &encode(CREDIT_V1, "c", &old).unwrap()).unwrap();
        assert_eq!(rec.unassigned, Some(UnassignedReason::NoOpenSession));
        assert_eq!(rec.credit_id(), "o1-2");
    }

    fn cash_store(dir: &std::path::Path) -> CashStore {
        let store = Store::open(dir).unwrap();
        let hooks = Webhooks::open(&store, false).unwrap();
        CashStore::open(&store, hooks).unwrap()
    }

    fn event(seq: u64, amount: i64, session: Option<&str>) -> CashEvent {
        CashEvent {
            v: V1,
            outbox: "o1".into(),
            seq,
            kind: CreditKind::Bill,
            amount,
            currency: eur(),
            at: Utc::now(),
            session_id: session.map(str::to_owned),
            board_boot_id: None,
            board_seq: None,
        }
    }

    fn state(session: &str, last_seq: u64) -> CashState {
        CashState {
            v: V1,
            outbox: "o1".into(),
            session_id: Some(session.into()),
            enabled: false,
            last_seq,
            inserted: 0,
            at: Utc::now(),
        }
    }

    fn open(cash: &CashStore, id: &str, due: i64) {
        let rec = SessionRecord::open(
            id.into(),
            k1(),
            "o".into(),
            due,
            eur(),
            "test".into(),
            Utc::now(),
        );
        assert!(matches!(
            cash.open_session(rec, None).unwrap(),
            OpenOutcome::Opened(_)
        ));
    }

    #[test]
    fn a_paid_session_settles_after_confirmation_and_the_credits_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let cash = cash_store(dir.path());
        open(&cash, "s1", 1000);
        // seq 1 (no session) is still missing; 2 pays, 3 is late.
        let paid = cash
            .apply_credit(&k1(), &event(2, 1000, Some("s1")))
            .unwrap();
        assert!(matches!(paid.applied, Some((_, _, CreditEffect::Paid))));
        // Another session may open while s1 awaits confirmation.
        open(&cash, "s2", 500);
        let late = cash
            .apply_credit(&k1(), &event(3, 200, Some("s1")))
            .unwrap();
        let (s, entry, effect) = late.applied.unwrap();
        assert_eq!(
            (effect, entry.origin, s.change_due()),
            (CreditEffect::Late, CreditOrigin::Late, Some(200))
        );
        assert_eq!(cash.awaiting_kiosks().unwrap(), [k1()]);
        assert!(matches!(
            cash.confirm(&k1(), &state("s1", 3)).unwrap(),
            ConfirmOutcome::Recorded(_)
        ));
        assert!(matches!(
            cash.confirm(&k1(), &state("s1", 3)).unwrap(),
            ConfirmOutcome::Duplicate(_)
        ));
        assert!(
            cash.settle_ready(&k1()).unwrap().is_empty(),
            "seq 1 missing"
        );
        let unassigned = cash.apply_credit(&k1(), &event(1, 50, None)).unwrap();
        assert_eq!(
            unassigned.credit.unassigned,
            Some(UnassignedReason::NoSession)
        );
        assert_eq!(unassigned.ack_up_to, 3);
        let done = cash.settle_ready(&k1()).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].0.session_id.as_str(), done[0].1),
            ("s1", Settlement::Paid)
        );
        assert!(cash.awaiting_kiosks().unwrap().is_empty());
        assert!(cash.settle_ready(&k1()).unwrap().is_empty(), "final once");
        // The open session is untouched; controls: just its enable.
        let mut sent = Vec::new();
        cash.with_controls(&k1(), false, |c| sent.push(c.clone()))
            .unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].session_id.as_deref(), Some("s2"));
    }
}
