//! The durable cash outbox, in the agent's sled directory (DESIGN.md,
//! "Cash credits", step 1).
//!
//! | tree | key | value |
//! |---|---|---|
//! | `cash_outbox` | seq (u64 big-endian) | a credit not yet acknowledged by the cloud |
//! | `cash_meta` | `id` | this outbox's id: 16 hex digits, random, made once |
//! | `cash_meta` | `next_seq` | the next sequence number (u64 big-endian), starts at 1 |
//!
//! [`Outbox::append`] numbers a credit and stores it in one transaction;
//! the caller flushes before anything else happens (publishing, enabling the
//! acceptor again). A credit leaves the outbox only when the cloud
//! acknowledges its `seq` (or a later one) for this outbox id.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use kiosk_schemas::record::{self, RecordError};
use kiosk_schemas::{CashEvent, CreditKind, Currency, Timestamp, V1};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

const RECORD_V: u8 = 1;
const ID_KEY: &[u8] = b"id";
const NEXT_SEQ_KEY: &[u8] = b"next_seq";

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// sled I/O or corruption (disk full, permissions).
    #[error("cash outbox store: {0}")]
    Sled(#[from] sled::Error),
    /// A record could not be read or written.
    #[error("cash outbox record: {0}")]
    Record(#[from] RecordError),
}

impl From<TransactionError<OutboxError>> for OutboxError {
    fn from(e: TransactionError<OutboxError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => OutboxError::Sled(e),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CreditRecord {
    seq: u64,
    kind: CreditKind,
    amount: i64,
    currency: Currency,
    at: Timestamp,
    session_id: Option<String>,
}

/// Handle to the outbox; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    db: sled::Db,
    events: sled::Tree,
    meta: sled::Tree,
    id: String,
    /// Highest seq known to be on disk. Only those are ever sent: a credit
    /// whose flush failed might be renumbered after a crash, and the cloud
    /// would then take a new credit for a duplicate of a sent one.
    durable: Arc<AtomicU64>,
    /// Number of credits stored: `Tree::len` walks the whole tree, and
    /// the status is refreshed after every credit and every ack.
    stored: Arc<AtomicU64>,
    /// Test hook: make appends fail as a full disk would.
    #[cfg(test)]
    fail_appends: Arc<std::sync::atomic::AtomicBool>,
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[8 - n..].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(b)
}

impl Outbox {
    /// Opens the outbox in `db`, creating its id on first use.
    ///
    /// # Errors
    /// [`OutboxError`] when the trees cannot be opened or written.
    pub fn open(db: &sled::Db) -> Result<Self, OutboxError> {
        let events = db.open_tree("cash_outbox")?;
        let meta = db.open_tree("cash_meta")?;
        let id = match meta.get(ID_KEY)? {
            Some(id) => String::from_utf8_lossy(&id).into_owned(),
            None => {
                let mut raw = [0u8; 8];
                rand::thread_rng().fill_bytes(&mut raw);
                let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                // Only the first writer wins, so two racing opens agree.
                match meta.compare_and_swap(ID_KEY, None as Option<&[u8]>, Some(id.as_bytes()))? {
                    Ok(()) => id,
                    Err(cas) => cas
                        .current
                        .map(|c| String::from_utf8_lossy(&c).into_owned())
                        .unwrap_or(id),
                }
            }
        };
        // Whatever is in the outbox at open time was read from disk.
        let durable = match events.last()? {
            Some((k, _)) => read_u64(&k),
            None => 0,
        };
        let stored = events.len() as u64;
        Ok(Outbox {
            db: db.clone(),
            events,
            meta,
            id,
            durable: Arc::new(AtomicU64::new(durable)),
            stored: Arc::new(AtomicU64::new(stored)),
            #[cfg(test)]
            fail_appends: Arc::default(),
        })
    }

    /// This outbox's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Numbers and stores a credit; returns the event to publish. Not
    /// durable until [`Outbox::flush`].
    ///
    /// # Errors
    /// [`OutboxError`] on storage failure: the credit is NOT recorded, the
    /// acceptor must be disabled.
    pub fn append(
        &self,
        kind: CreditKind,
        amount: i64,
        currency: &Currency,
        session_id: Option<String>,
    ) -> Result<CashEvent, OutboxError> {
        #[cfg(test)]
        if self.fail_appends.load(Ordering::SeqCst) {
            return Err(OutboxError::Sled(sled::Error::Unsupported(
                "injected failure (disk full)".to_owned(),
            )));
        }
        let at = Utc::now();
        let rec = (&self.events, &self.meta).transaction(|(events, meta)| {
            let seq = meta.get(NEXT_SEQ_KEY)?.map_or(1, |v| read_u64(&v));
            let rec = CreditRecord {
                seq,
                kind,
                amount,
                currency: currency.clone(),
                at,
                session_id: session_id.clone(),
            };
            let bytes = record::encode(RECORD_V, &rec)
                .map_err(|e| ConflictableTransactionError::Abort(OutboxError::Record(e)))?;
            events.insert(&be(seq), bytes)?;
            meta.insert(NEXT_SEQ_KEY, &be(seq + 1))?;
            Ok(rec)
        })?;
        self.stored.fetch_add(1, Ordering::SeqCst);
        Ok(self.event(rec))
    }

    fn event(&self, r: CreditRecord) -> CashEvent {
        CashEvent {
            v: V1,
            outbox: self.id.clone(),
            seq: r.seq,
            kind: r.kind,
            amount: r.amount,
            currency: r.currency,
            at: r.at,
            session_id: r.session_id,
            board_boot_id: None,
            board_seq: None,
        }
    }

    /// Makes every change so far durable (fsync, [`crate::inbox::flush_db`])
    /// and marks every credit appended before the call as sendable.
    ///
    /// # Errors
    /// [`OutboxError::Sled`] on I/O failure.
    pub async fn flush(&self) -> Result<(), OutboxError> {
        let appended = match self.events.last()? {
            Some((k, _)) => read_u64(&k),
            None => 0,
        };
        crate::inbox::flush_db(&self.db).await?;
        self.durable.fetch_max(appended, Ordering::SeqCst);
        Ok(())
    }

    /// Deletes credits with `seq <= up_to_seq` when `outbox` is this
    /// outbox's id. Returns how many were deleted (0 for another outbox).
    ///
    /// # Errors
    /// [`OutboxError`] on storage failure.
    pub fn ack(&self, outbox: &str, up_to_seq: u64) -> Result<usize, OutboxError> {
        if outbox != self.id {
            return Ok(0);
        }
        let mut n = 0;
        for item in self.events.range(..=be(up_to_seq)) {
            let (k, _) = item?;
            if self.events.remove(k)?.is_some() {
                self.stored.fetch_sub(1, Ordering::SeqCst);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every unacknowledged credit that is on disk, in `seq` order.
    ///
    /// # Errors
    /// [`OutboxError`] on storage failure or an unreadable record.
    pub fn unacked(&self) -> Result<Vec<CashEvent>, OutboxError> {
        self.unacked_window(usize::MAX)
    }

    /// The `limit` lowest unacknowledged credits that are on disk, in `seq`
    /// order.
    ///
    /// # Errors
    /// [`OutboxError`] on storage failure or an unreadable record.
    pub fn unacked_window(&self, limit: usize) -> Result<Vec<CashEvent>, OutboxError> {
        let durable = self.durable.load(Ordering::SeqCst);
        self.events
            .range(..=be(durable))
            .take(limit)
            .map(|item| {
                let (_, v) = item?;
                let rec: CreditRecord = record::decode(RECORD_V, &v)?;
                Ok(self.event(rec))
            })
            .collect()
    }

    /// Test hook: while true, [`Outbox::append`] fails.
    #[cfg(test)]
    pub(crate) fn fail_appends(&self, fail: bool) {
        self.fail_appends.store(fail, Ordering::SeqCst);
    }

    /// Number of unacknowledged credits (on disk or not yet flushed).
    pub fn len(&self) -> usize {
        usize::try_from(self.stored.load(Ordering::SeqCst)).unwrap_or(usize::MAX)
    }

    /// True when every credit is acknowledged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::new("EUR").unwrap()
    }

    #[tokio::test]
    async fn numbers_survive_restarts_and_acks_delete() {
        let dir = tempfile::tempdir().unwrap();
        let id;
        {
            let db = sled::open(dir.path()).unwrap();
            let o = Outbox::open(&db).unwrap();
            id = o.id().to_owned();
            assert_eq!(id.len(), 16);
            let a = o
                .append(CreditKind::Bill, 1000, &eur(), Some("s1".into()))
                .unwrap();
            let b = o.append(CreditKind::Coin, 200, &eur(), None).unwrap();
            assert_eq!((a.seq, b.seq), (1, 2));
            o.flush().await.unwrap();
        }
        // A just-dropped instance may hold sled's file lock for a moment.
        let db = (0..100)
            .find_map(|_| {
                sled::open(dir.path())
                    .inspect_err(|_| std::thread::sleep(std::time::Duration::from_millis(50)))
                    .ok()
            })
            .unwrap();
        let o = Outbox::open(&db).unwrap();
        assert_eq!(o.id(), id, "the id is made once");
        assert_eq!(o.len(), 2, "the count is read back at open");
        let c = o.append(CreditKind::Coin, 50, &eur(), None).unwrap();
        assert_eq!(c.seq, 3, "numbering continues after a restart");
        assert_eq!(o.len(), 3);
        assert_eq!(
            o.unacked().unwrap().len(),
            2,
            "not sent before it is flushed"
        );
        o.flush().await.unwrap();
        let window: Vec<u64> = o.unacked_window(2).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(window, [1, 2], "the lowest first");
        assert_eq!(o.ack("someone-else", 3).unwrap(), 0);
        assert_eq!(o.ack(&id, 2).unwrap(), 2);
        assert_eq!(o.len(), 1);
        assert_eq!(o.ack(&id, 2).unwrap(), 0, "a repeated ack deletes nothing");
        assert_eq!(o.len(), 1);
        let left = o.unacked().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(
            (left[0].seq, left[0].amount, left[0].outbox.as_str()),
            (3, 50, id.as_str())
        );
        // Acked seqs are never reused.
        o.ack(&id, 3).unwrap();
        assert!(o.is_empty());
        assert_eq!(
            o.append(CreditKind::Bill, 500, &eur(), None).unwrap().seq,
            4
        );
    }
}
