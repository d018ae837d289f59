//! Durable cash state, in the gateway's sled directory.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `cash_sessions` | session id | [`SessionRecord`] (version 2; version 1 is read) |
//! | `cash_open` | kiosk id | id of the kiosk's open session |
//! | `cash_awaiting` | kiosk `\0` session id | empty: the session awaits the kiosk's confirmation (`cancelling`, or `paid` not final) |
//! | `cash_credits` | kiosk `\0` outbox `\0` seq (u64 BE) | [`CreditRecord`](super::CreditRecord) (version 2; version 1 is read): every credit ever stored |
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

mod credits;
mod records;
mod resolutions;
mod sessions;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use kiosk_schemas::{CashControl, KioskId};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{SessionRecord, SessionState};
use crate::events::EventLog;
use crate::store::{Store, StoreError, abort};
use records::{awaiting_key, decode_session, encode_session};

pub use credits::CreditOutcome;
pub use resolutions::{ResolveOutcome, ResolveRequest};
pub use sessions::{CancelOutcome, ConfirmOutcome, OpenOutcome};

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
    events: EventLog,
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
    /// Opens the cash trees in `store`'s database; their events go to its
    /// event log.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when a tree cannot be opened.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
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
            events: store.events().clone(),
            store: store.clone(),
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
}
