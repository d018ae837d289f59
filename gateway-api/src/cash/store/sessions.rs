//! Sessions: opening, reading, cancelling, the kiosk's confirmations and
//! settling.

use chrono::Utc;
use kiosk_schemas::{CashState, KioskId};
use sled::Transactional;

use super::records::{awaiting_key, decode_session, encode_session, kiosk_prefix, watermark_key};
use super::{CashStore, tx_put_session, tx_session};
use crate::cash::event::{CashChange, CashEventKind};
use crate::cash::{CancelEffect, ConfirmEffect, Confirmation, SessionRecord, Settlement};
use crate::store::{StoreError, abort};
use kiosk_store::idempotency::{Claim, Seen};
use kiosk_store::keys;

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

impl CashStore {
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
        let opened = CashChange::of_session(CashEventKind::Opened, &session);
        let events = self.events.clone();
        let wh_tree = self.events.tree();
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
                opened.record(&events, wh)?;
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
        let wh_tree = self.events.tree();
        let events = self.events.clone();
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
                CashChange::of_session(CashEventKind::Cancelling, &rec).record(&events, wh)?;
                Ok(CancelOutcome::Cancelling(rec))
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
    /// `cash_session.settled`). Returns each event (its `session` the
    /// session now final) and how it ended. Not durable until flushed.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn settle_ready(
        &self,
        kiosk: &KioskId,
    ) -> Result<Vec<(CashChange, Settlement)>, StoreError> {
        let mut out = Vec::new();
        for candidate in self.awaiting_sessions(kiosk)? {
            if candidate.confirmation.is_none() {
                continue;
            }
            let events = self.events.clone();
            let id = candidate.session_id.clone();
            let trees = (
                &self.sessions,
                &self.open,
                &self.awaiting,
                &self.watermark,
                self.events.tree(),
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
                let change = CashChange::of_session(CashEventKind::of_settlement(how), &rec);
                change.record(&events, wh)?;
                Ok(Some((change, how)))
            })?;
            out.extend(settled);
        }
        Ok(out)
    }
}
