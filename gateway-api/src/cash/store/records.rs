//! The records of the cash trees as stored, of every version, and their
//! keys.

use kiosk_schemas::{CreditKind, Currency, KioskId, Timestamp};
use serde::Deserialize;

use crate::cash::{
    CreditOrigin, CreditRecord, SessionCredit, SessionRecord, SessionState, UnassignedReason,
};
use crate::store::{StoreError, decode, encode};
use kiosk_store::keys;

const SESSION_V: u8 = 2;
const SESSION_V1: u8 = 1;
pub(super) const CREDIT_V: u8 = 2;
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
pub(super) fn decode_session(key: &[u8], bytes: &[u8]) -> Result<SessionRecord, StoreError> {
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
pub(super) fn decode_credit(key: &[u8], bytes: &[u8]) -> Result<CreditRecord, StoreError> {
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

pub(super) fn encode_session(rec: &SessionRecord) -> Result<Vec<u8>, StoreError> {
    encode(SESSION_V, &rec.session_id, rec)
}

pub(super) fn credit_key(kiosk: &KioskId, outbox: &str, seq: u64) -> Vec<u8> {
    let mut k = watermark_key(kiosk, outbox);
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn watermark_key(kiosk: &KioskId, outbox: &str) -> Vec<u8> {
    let mut k = kiosk_prefix(kiosk);
    k.extend_from_slice(outbox.as_bytes());
    k
}

pub(super) fn kiosk_prefix(kiosk: &KioskId) -> Vec<u8> {
    keys::prefix(kiosk.as_str())
}

pub(super) fn awaiting_key(kiosk: &KioskId, session_id: &str) -> Vec<u8> {
    let mut k = kiosk_prefix(kiosk);
    k.extend_from_slice(session_id.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

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
}
