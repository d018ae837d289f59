//! Durable cash state, in the gateway's sled directory.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `cash_sessions` | session id | [`SessionRecord`] |
//! | `cash_open` | kiosk id | id of the kiosk's open session |
//! | `cash_credits` | kiosk `\0` outbox `\0` seq (u64 BE) | [`CreditRecord`]: every credit ever stored |
//! | `cash_unassigned` | same key | empty: the credit has no session |
//! | `cash_watermark` | kiosk `\0` outbox | highest `seq` with all lower ones stored (u64 BE) |
//! | `cash_idempotency` | kiosk `\0` Idempotency-Key | session id + SHA-256 of the request |
//!
//! [`CashStore::apply_credit`] stores a credit, applies it to the kiosk's
//! open session when the kiosk took it for that session (the credit's
//! `session_id`), or else keeps it unassigned, advances the watermark and queues
//! its webhooks, all in one sled transaction: a credit is either fully
//! recorded or not at all, and a credit already stored (same kiosk, outbox
//! and seq) changes nothing. The caller flushes before acknowledging
//! (`cash/ack` with the watermark). The watermark only ever covers a
//! contiguous run of seqs, so a credit lost on the way is never
//! acknowledged: the kiosk keeps sending it.

use std::sync::Arc;

use chrono::Utc;
use kiosk_schemas::{CashEvent, KioskId, Topic, wire};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::webhooks::{self, Webhooks};
use super::{CreditEffect, CreditRecord, SessionCredit, SessionRecord};
use crate::mqtt::MqttLink;
use crate::store::{Store, StoreError, abort, decode, encode};

const SESSION_V: u8 = 1;
const CREDIT_V: u8 = 1;
const IDEM_V: u8 = 1;

fn credit_key(kiosk: &KioskId, outbox: &str, seq: u64) -> Vec<u8> {
    let mut k = watermark_key(kiosk, outbox);
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn watermark_key(kiosk: &KioskId, outbox: &str) -> Vec<u8> {
    let mut k = kiosk.as_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(outbox.as_bytes());
    k
}

fn u64_of(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[8 - n..].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdempotencyRecord {
    session_id: String,
    request_sha256: [u8; 32],
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
    /// Cancelled now.
    Cancelled(SessionRecord),
    /// Not open (already paid or cancelled): unchanged.
    NotOpen(SessionRecord),
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
    /// The session it went to, updated (`None`: unassigned).
    pub session: Option<SessionRecord>,
    /// This credit made the session paid.
    pub paid_now: bool,
}

/// The cash trees.
#[derive(Clone)]
pub struct CashStore {
    store: Store,
    sessions: sled::Tree,
    open: sled::Tree,
    credits: sled::Tree,
    unassigned: sled::Tree,
    watermark: sled::Tree,
    idempotency: sled::Tree,
    webhooks: Webhooks,
    /// Held from reading a kiosk's open session to queueing its control,
    /// so controls go out in the order of the states they were read from.
    control: Arc<std::sync::Mutex<()>>,
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
            credits: db.open_tree("cash_credits")?,
            unassigned: db.open_tree("cash_unassigned")?,
            watermark: db.open_tree("cash_watermark")?,
            idempotency: db.open_tree("cash_idempotency")?,
            store: store.clone(),
            webhooks,
            control: Arc::default(),
        })
    }

    /// Publishes `kiosk`'s current control on `kiosk/<id>/cash/control`:
    /// `enable` for its open session, else `disable`. Every sender (session
    /// opened, cancelled, paid; kiosk reconnected) goes through here, so a
    /// `disable` for a session that just ended cannot overtake the `enable`
    /// of the next one. A failed publish is logged: the kiosk gets its
    /// control again when it next connects.
    pub fn publish_control(&self, link: &MqttLink, kiosk: &KioskId) {
        let _order = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let session = match self.open_session_of(kiosk) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(kiosk = %kiosk, error = %e, "cannot read open session; cash control not sent");
                return;
            }
        };
        let control = super::control_for(session.as_ref());
        if let Err(e) = link.publish(&Topic::cash_control(kiosk), false, wire::encode(&control)) {
            tracing::warn!(kiosk = %kiosk, error = %e, "cash control not published");
        }
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
    /// or the Idempotency-Key was seen. Not durable until flushed.
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
        let bytes = encode(SESSION_V, &session.session_id, &session)?;
        let idem_key = idempotency.map(|(key, _)| {
            let mut k = kiosk_key.clone();
            k.push(0);
            k.extend_from_slice(key.as_bytes());
            k
        });
        let idem_bytes = match idempotency {
            Some((_, sha)) => Some(encode(
                IDEM_V,
                "idempotency",
                &IdempotencyRecord {
                    session_id: session.session_id.clone(),
                    request_sha256: sha,
                },
            )?),
            None => None,
        };
        let hook = self
            .webhooks
            .record(self.webhooks.reserve()?, webhooks::OPENED, &session, None);
        let wh_tree = self.webhooks.tree();
        let outcome = (&self.sessions, &self.open, &self.idempotency, wh_tree).transaction(
            |(sessions, open, idem, wh)| {
                if let (Some(ik), Some((_, sha))) = (&idem_key, idempotency)
                    && let Some(prev) = idem.get(ik)?
                {
                    let prev: IdempotencyRecord = decode(IDEM_V, ik, &prev).map_err(abort)?;
                    if prev.request_sha256 != sha {
                        return Ok(OpenOutcome::KeyReused);
                    }
                    if let Some(b) = sessions.get(prev.session_id.as_bytes())? {
                        let rec =
                            decode(SESSION_V, prev.session_id.as_bytes(), &b).map_err(abort)?;
                        return Ok(OpenOutcome::Replayed(rec));
                    }
                }
                if let Some(busy) = open.get(&kiosk_key)? {
                    return Ok(OpenOutcome::Busy(
                        String::from_utf8_lossy(&busy).into_owned(),
                    ));
                }
                sessions.insert(id_key.as_slice(), bytes.as_slice())?;
                open.insert(kiosk_key.as_slice(), id_key.as_slice())?;
                if let (Some(ik), Some(ib)) = (&idem_key, &idem_bytes) {
                    idem.insert(ik.as_slice(), ib.as_slice())?;
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
            .map(|b| decode(SESSION_V, key, &b))
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

    /// Cancels an open session. Not durable until flushed.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn cancel(&self, session_id: &str) -> Result<CancelOutcome, StoreError> {
        let key = session_id.as_bytes().to_vec();
        let wh_tree = self.webhooks.tree();
        let webhooks = self.webhooks.clone();
        // Ids are taken outside the transaction: sled's id generator takes
        // the lock a transaction holds.
        let hook_id = self.webhooks.reserve()?;
        let outcome = (&self.sessions, &self.open, wh_tree).transaction(|(sessions, open, wh)| {
            let Some(b) = sessions.get(&key)? else {
                return Ok(CancelOutcome::Missing);
            };
            let mut rec: SessionRecord = decode(SESSION_V, &key, &b).map_err(abort)?;
            if !rec.cancel(Utc::now()) {
                return Ok(CancelOutcome::NotOpen(rec));
            }
            sessions.insert(
                key.as_slice(),
                encode(SESSION_V, session_id, &rec).map_err(abort)?,
            )?;
            open.remove(rec.kiosk_id.as_str().as_bytes())?;
            let hook = webhooks.record(hook_id, webhooks::CANCELLED, &rec, None);
            Webhooks::insert(wh, hook.as_ref())?;
            Ok(CancelOutcome::Cancelled(rec))
        });
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
        let kiosk_key = kiosk.as_str().as_bytes().to_vec();
        let wh_tree = self.webhooks.tree();
        let webhooks = self.webhooks.clone();
        let (hook_a, hook_b) = (self.webhooks.reserve()?, self.webhooks.reserve()?);
        let trees = (
            &self.credits,
            &self.sessions,
            &self.open,
            &self.unassigned,
            &self.watermark,
            wh_tree,
        );
        let outcome = trees.transaction(|(credits, sessions, open, unassigned, watermark, wh)| {
            let now = Utc::now();
            if let Some(b) = credits.get(&ckey)? {
                let credit: CreditRecord = decode(CREDIT_V, &ckey, &b).map_err(abort)?;
                let ack_up_to = advance_watermark(credits, watermark, kiosk, &event.outbox, &wkey)?;
                return Ok(CreditOutcome {
                    duplicate: true,
                    ack_up_to,
                    credit,
                    session: None,
                    paid_now: false,
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
            };
            let mut session = None;
            let mut paid_now = false;
            let open_session = match open.get(&kiosk_key)? {
                Some(sid) => match sessions.get(&sid)? {
                    Some(b) => {
                        let rec = decode::<SessionRecord>(SESSION_V, &sid, &b).map_err(abort)?;
                        Some((sid, rec))
                    }
                    None => {
                        // A dangling index entry must not block credits.
                        open.remove(kiosk_key.as_slice())?;
                        None
                    }
                },
                None => None,
            };
            // Only money the kiosk took for this very session goes to it: a
            // coin that slipped in after the previous session closed (or
            // while the acceptor was meant to be off) must not pay the next
            // customer's order.
            let open_session = open_session
                .filter(|(_, rec)| event.session_id.as_deref() == Some(rec.session_id.as_str()));
            if let Some((sid, mut rec)) = open_session {
                let applied = rec.apply_credit(
                    SessionCredit {
                        outbox: event.outbox.clone(),
                        seq: event.seq,
                        kind: event.kind,
                        amount: event.amount,
                        at: event.at,
                    },
                    &event.currency,
                    now,
                );
                if let Some(effect) = applied {
                    credit.session_id = Some(rec.session_id.clone());
                    if effect == CreditEffect::Paid {
                        paid_now = true;
                        open.remove(kiosk_key.as_slice())?;
                    }
                    sessions.insert(
                        &*sid,
                        encode(SESSION_V, &rec.session_id, &rec).map_err(abort)?,
                    )?;
                    session = Some(rec);
                }
            }
            credits.insert(
                ckey.as_slice(),
                encode(CREDIT_V, "credit", &credit).map_err(abort)?,
            )?;
            match &session {
                Some(rec) => {
                    let hook = webhooks.record(hook_a, webhooks::CREDIT, rec, Some(&credit));
                    Webhooks::insert(wh, hook.as_ref())?;
                    if paid_now {
                        let hook = webhooks.record(hook_b, webhooks::PAID, rec, None);
                        Webhooks::insert(wh, hook.as_ref())?;
                    }
                }
                None => {
                    unassigned.insert(ckey.as_slice(), &[][..])?;
                    let hook = webhooks.record_unassigned(hook_a, &credit);
                    Webhooks::insert(wh, hook.as_ref())?;
                }
            }
            let ack_up_to = advance_watermark(credits, watermark, kiosk, &event.outbox, &wkey)?;
            Ok(CreditOutcome {
                duplicate: false,
                ack_up_to,
                credit,
                session,
                paid_now,
            })
        });
        Ok(outcome?)
    }

    /// Credits of `kiosk` that belong to no session, oldest first.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn unassigned(&self, kiosk: &KioskId) -> Result<Vec<CreditRecord>, StoreError> {
        let mut prefix = kiosk.as_str().as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.unassigned.scan_prefix(&prefix) {
            let (k, _) = item?;
            if let Some(b) = self.credits.get(&k)? {
                out.push(decode::<CreditRecord>(CREDIT_V, &k, &b)?);
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
    let start = watermark.get(wkey)?.map_or(0, |b| u64_of(&b));
    let mut w = start;
    while credits.get(credit_key(kiosk, outbox, w + 1))?.is_some() {
        w += 1;
    }
    if w != start {
        watermark.insert(wkey, &w.to_be_bytes())?;
    }
    Ok(w)
}
