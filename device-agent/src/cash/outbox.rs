//! The durable cash outbox, in the agent's sled directory (DESIGN.md,
//! "Cash credits", step 1).
//!
//! | tree | key | value |
//! |---|---|---|
//! | `cash_outbox` | seq (u64 big-endian) | a credit not yet acknowledged by the cloud |
//! | `cash_meta` | `id` | this outbox's id: 16 hex digits, random, made once |
//! | `cash_meta` | `next_seq` | the next sequence number (u64 big-endian), starts at 1 |
//! | `cash_meta` | `acceptance` | the [`Acceptance`] in force (which session, amount due, taken so far) |
//! | `cash_board` | boot id `\0` board seq (u64 BE) | outbox seq of a credit a v2 board reported: deduplication by (boot id, seq) |
//!
//! [`Outbox::append`] numbers a credit, gives it the session the acceptance
//! in force names, updates that acceptance and (for a v2 board) remembers
//! the board's (boot id, seq), all in one transaction; the caller flushes
//! before anything else happens (acknowledging the board, publishing,
//! enabling the acceptor again). [`Outbox::control`] changes the acceptance
//! the same way. A credit leaves the outbox only when the cloud
//! acknowledges its `seq` (or a later one) for this outbox id.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use kiosk_schemas::{CashEvent, CashState, CreditKind, Currency, Timestamp, V1};
use kiosk_store::keys::{be_u64 as be, read_u64};
use kiosk_store::record::{self, RecordError};
use kiosk_store::{GroupCommit, StoreError};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::acceptance::{Acceptance, SessionState};

/// Version of credit records written now (with the board's boot id and seq).
const RECORD_V: u8 = 2;
/// Credit records written before board ids existed.
const RECORD_V1: u8 = 1;
const ACCEPTANCE_V: u8 = 1;
const ID_KEY: &[u8] = b"id";
const NEXT_SEQ_KEY: &[u8] = b"next_seq";
const ACCEPTANCE_KEY: &[u8] = b"acceptance";

/// Why the outbox failed: the store did (sled I/O or corruption — disk
/// full, permissions —, an unreadable record, a failed flush).
#[derive(Debug, thiserror::Error)]
#[error("cash outbox {0}")]
pub struct OutboxError(#[from] pub StoreError);

impl From<sled::Error> for OutboxError {
    fn from(e: sled::Error) -> Self {
        OutboxError(StoreError::Sled(e))
    }
}

impl From<RecordError> for OutboxError {
    fn from(source: RecordError) -> Self {
        OutboxError(StoreError::Record {
            key: "cash outbox".to_owned(),
            source,
        })
    }
}

impl From<TransactionError<OutboxError>> for OutboxError {
    fn from(e: TransactionError<OutboxError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => e.into(),
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
    board_boot_id: Option<String>,
    board_seq: Option<u64>,
}

/// A credit record as version 1 wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CreditRecordV1 {
    seq: u64,
    kind: CreditKind,
    amount: i64,
    currency: Currency,
    at: Timestamp,
    session_id: Option<String>,
}

fn decode_credit(bytes: &[u8]) -> Result<CreditRecord, RecordError> {
    if bytes.first() == Some(&RECORD_V1) {
        let r: CreditRecordV1 = record::decode(RECORD_V1, bytes)?;
        return Ok(CreditRecord {
            seq: r.seq,
            kind: r.kind,
            amount: r.amount,
            currency: r.currency,
            at: r.at,
            session_id: r.session_id,
            board_boot_id: None,
            board_seq: None,
        });
    }
    record::decode(RECORD_V, bytes)
}

/// Where a credit came from on a v2 board: `CREDIT:<seq>:...` after
/// `READY:v2:<boot id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardRef {
    /// The board's boot id (8 hex digits).
    pub boot_id: String,
    /// The board's seq within that boot.
    pub seq: u64,
}

impl BoardRef {
    fn key(&self) -> Vec<u8> {
        board_key(&self.boot_id, self.seq)
    }
}

fn board_key(boot_id: &str, seq: u64) -> Vec<u8> {
    let mut k = boot_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// What [`Outbox::append`] did.
#[derive(Debug, Clone)]
pub enum Recorded {
    /// A new credit, numbered and stored.
    New(Appended),
    /// The board reported a credit already stored (its acknowledgement
    /// was lost): nothing changed; acknowledge it again once flushed.
    Duplicate {
        /// The outbox seq it was stored under.
        seq: u64,
    },
}

/// A newly stored credit.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The event to publish.
    pub event: CashEvent,
    /// The session it was taken for, after it (`None`: unassigned).
    pub session: Option<SessionState>,
    /// It completed the session's amount due: disable the acceptor.
    pub ended_now: bool,
}

/// Handle to the outbox; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    /// Flushes `db`; shared with the inbox once [`Outbox::sharing`] says so.
    commit: GroupCommit,
    events: sled::Tree,
    meta: sled::Tree,
    board: sled::Tree,
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

fn read_acceptance(bytes: Option<&[u8]>) -> Result<Acceptance, RecordError> {
    match bytes {
        Some(b) => record::decode(ACCEPTANCE_V, b),
        None => Ok(Acceptance::default()),
    }
}

impl Outbox {
    /// Opens the outbox in `db`, creating its id on first use.
    ///
    /// # Errors
    /// [`OutboxError`] when the trees cannot be opened or written.
    pub fn open(db: &sled::Db) -> Result<Self, OutboxError> {
        let events = db.open_tree("cash_outbox")?;
        let meta = db.open_tree("cash_meta")?;
        let board = db.open_tree("cash_board")?;
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
            commit: GroupCommit::new(db.clone()),
            events,
            meta,
            board,
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

    /// Numbers and stores a credit under the session the acceptance in
    /// force names, updating that acceptance (what was taken, the last
    /// seq, ended once the amount due is reached); a credit a v2 board
    /// reported before (same `board` boot id and seq) is a
    /// [`Recorded::Duplicate`]. `grace` names the session the acceptor
    /// stopped for a moment ago (see [`Acceptance::take`]). Not durable
    /// until [`Outbox::flush`].
    ///
    /// # Errors
    /// [`OutboxError`] on storage failure: the credit is NOT recorded, the
    /// acceptor must be disabled.
    pub fn append(
        &self,
        kind: CreditKind,
        amount: i64,
        currency: &Currency,
        board: Option<&BoardRef>,
        grace: Option<&str>,
    ) -> Result<Recorded, OutboxError> {
        #[cfg(test)]
        if self.fail_appends.load(Ordering::SeqCst) {
            return Err(OutboxError::from(sled::Error::Unsupported(
                "injected failure (disk full)".to_owned(),
            )));
        }
        let at = Utc::now();
        let board_key = board.map(BoardRef::key);
        let done =
            (&self.events, &self.meta, &self.board).transaction(|(events, meta, boards)| {
                if let Some(k) = &board_key
                    && let Some(seq) = boards.get(k)?
                {
                    return Ok(Recorded::Duplicate {
                        seq: read_u64(&seq),
                    });
                }
                let seq = meta.get(NEXT_SEQ_KEY)?.map_or(1, |v| read_u64(&v));
                let mut acceptance = read_acceptance(meta.get(ACCEPTANCE_KEY)?.as_deref())
                    .map_err(|e| ConflictableTransactionError::Abort(OutboxError::from(e)))?;
                let taken = acceptance.take(amount, seq, grace);
                let rec = CreditRecord {
                    seq,
                    kind,
                    amount,
                    currency: currency.clone(),
                    at,
                    session_id: taken.session_id.clone(),
                    board_boot_id: board.map(|b| b.boot_id.clone()),
                    board_seq: board.map(|b| b.seq),
                };
                let abort = |e| ConflictableTransactionError::Abort(OutboxError::from(e));
                events.insert(&be(seq), record::encode(RECORD_V, &rec).map_err(abort)?)?;
                meta.insert(NEXT_SEQ_KEY, &be(seq + 1))?;
                if taken.session_id.is_some() {
                    meta.insert(
                        ACCEPTANCE_KEY,
                        record::encode(ACCEPTANCE_V, &acceptance).map_err(abort)?,
                    )?;
                }
                if let Some(k) = &board_key {
                    boards.insert(k.as_slice(), &be(seq))?;
                }
                Ok(Recorded::New(Appended {
                    event: self.event(rec),
                    session: taken.state,
                    ended_now: taken.ended_now,
                }))
            })?;
        if matches!(done, Recorded::New(_)) {
            self.stored.fetch_add(1, Ordering::SeqCst);
        }
        Ok(done)
    }

    /// The acceptance in force, as stored.
    ///
    /// # Errors
    /// [`OutboxError`] on storage failure or an unreadable record.
    pub fn acceptance(&self) -> Result<Acceptance, OutboxError> {
        Ok(read_acceptance(self.meta.get(ACCEPTANCE_KEY)?.as_deref())?)
    }

    /// Changes the acceptance in force with `change` (an `enable` or
    /// `disable` of [`Acceptance`]) in one transaction and returns what
    /// `change` returned and the acceptance after it. Not durable until
    /// [`Outbox::flush`]: flush before commanding the board.
    ///
    /// # Errors
    /// [`OutboxError`] on storage failure or an unreadable record; nothing
    /// changed then.
    pub fn control<R>(
        &self,
        change: impl Fn(&mut Acceptance) -> R,
    ) -> Result<(R, Acceptance), OutboxError> {
        let done = self.meta.transaction(|meta| {
            let abort = |e| ConflictableTransactionError::Abort(OutboxError::from(e));
            let mut acceptance =
                read_acceptance(meta.get(ACCEPTANCE_KEY)?.as_deref()).map_err(abort)?;
            let out = change(&mut acceptance);
            meta.insert(
                ACCEPTANCE_KEY,
                record::encode(ACCEPTANCE_V, &acceptance).map_err(abort)?,
            )?;
            Ok((out, acceptance))
        })?;
        Ok(done)
    }

    /// The `kiosk/<id>/cash/state` message for `state`.
    pub fn state_message(&self, state: Option<&SessionState>) -> CashState {
        CashState {
            v: V1,
            outbox: self.id.clone(),
            session_id: state.map(|s| s.session_id.clone()),
            enabled: state.is_some_and(SessionState::is_enabled),
            last_seq: state.map_or(0, |s| s.last_seq),
            inserted: state.map_or(0, |s| s.inserted),
            at: Utc::now(),
        }
    }

    /// Forgets the (boot id, seq) pairs of every board boot but `boot_id`:
    /// a board that announced a new boot id has lost its older credits
    /// with its RAM, so none of them can be reported again. Returns how
    /// many were forgotten.
    ///
    /// # Errors
    /// [`OutboxError`] on storage failure.
    pub fn forget_boots_other_than(&self, boot_id: &str) -> Result<usize, OutboxError> {
        let mut keep = boot_id.as_bytes().to_vec();
        keep.push(0);
        let mut n = 0;
        for item in self.board.iter() {
            let (k, _) = item?;
            if !k.starts_with(&keep) {
                self.board.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
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
            board_boot_id: r.board_boot_id,
            board_seq: r.board_seq,
        }
    }

    /// The same outbox flushing through `commit`, the group commit of its
    /// database that the inbox holds ([`crate::inbox::Inbox::commit`]):
    /// flushes of both share one fsync.
    #[must_use]
    pub fn sharing(mut self, commit: GroupCommit) -> Self {
        self.commit = commit;
        self
    }

    /// Makes every change so far durable (fsync, through the group commit
    /// it shares with the inbox: [`Outbox::sharing`])
    /// and marks every credit appended before the call as sendable.
    ///
    /// # Errors
    /// [`OutboxError`] on I/O failure.
    pub async fn flush(&self) -> Result<(), OutboxError> {
        let appended = match self.events.last()? {
            Some((k, _)) => read_u64(&k),
            None => 0,
        };
        self.commit.commit().await.map_err(StoreError::from)?;
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
                Ok(self.event(decode_credit(&v)?))
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

    fn new(r: Recorded) -> Appended {
        match r {
            Recorded::New(a) => a,
            Recorded::Duplicate { seq } => panic!("duplicate of {seq}"),
        }
    }

    fn reopen(dir: &std::path::Path) -> sled::Db {
        // A just-dropped instance may hold sled's file lock for a moment.
        (0..100)
            .find_map(|_| {
                sled::open(dir)
                    .inspect_err(|_| std::thread::sleep(std::time::Duration::from_millis(50)))
                    .ok()
            })
            .unwrap()
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
            let a = new(o
                .append(CreditKind::Bill, 1000, &eur(), None, None)
                .unwrap());
            let b = new(o.append(CreditKind::Coin, 200, &eur(), None, None).unwrap());
            assert_eq!((a.event.seq, b.event.seq), (1, 2));
            o.flush().await.unwrap();
        }
        let db = reopen(dir.path());
        let o = Outbox::open(&db).unwrap();
        assert_eq!(o.id(), id, "the id is made once");
        assert_eq!(o.len(), 2, "the count is read back at open");
        let c = new(o.append(CreditKind::Coin, 50, &eur(), None, None).unwrap());
        assert_eq!(c.event.seq, 3, "numbering continues after a restart");
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
        let d = new(o.append(CreditKind::Bill, 500, &eur(), None, None).unwrap());
        assert_eq!(d.event.seq, 4);
    }

    /// Finding 1 of issue 9: credits read after a restart carry the session
    /// that was enabled before it.
    #[tokio::test]
    async fn the_acceptance_survives_a_restart_and_follows_each_credit() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let o = Outbox::open(&db).unwrap();
            o.control(|a| a.enable("s1", 1500)).unwrap();
            o.flush().await.unwrap();
            let a = new(o
                .append(CreditKind::Bill, 1000, &eur(), None, None)
                .unwrap());
            assert_eq!(a.event.session_id.as_deref(), Some("s1"));
            o.flush().await.unwrap();
        }
        let db = reopen(dir.path());
        let o = Outbox::open(&db).unwrap();
        assert_eq!(
            o.acceptance().unwrap().enabled().map(|s| s.inserted),
            Some(1000)
        );
        let b = new(o.append(CreditKind::Coin, 500, &eur(), None, None).unwrap());
        assert_eq!(b.event.session_id.as_deref(), Some("s1"));
        assert!(b.ended_now, "1500 of 1500: the kiosk stops by itself");
        let st = b.session.unwrap();
        assert_eq!((st.inserted, st.last_seq), (1500, 2));
        let c = new(o.append(CreditKind::Coin, 100, &eur(), None, None).unwrap());
        assert_eq!(c.event.session_id, None, "taken after the session ended");
        let msg = o.state_message(o.acceptance().unwrap().latest());
        assert_eq!(
            (
                msg.session_id.as_deref(),
                msg.enabled,
                msg.last_seq,
                msg.inserted
            ),
            (Some("s1"), false, 2, 1500)
        );
    }

    #[tokio::test]
    async fn a_board_credit_is_stored_once_per_boot_and_seq() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let o = Outbox::open(&db).unwrap();
        let b1 = |seq| BoardRef {
            boot_id: "0badcafe".into(),
            seq,
        };
        let a = new(o
            .append(CreditKind::Coin, 200, &eur(), Some(&b1(1)), None)
            .unwrap());
        assert_eq!(
            (a.event.board_boot_id.as_deref(), a.event.board_seq),
            (Some("0badcafe"), Some(1))
        );
        assert!(matches!(
            o.append(CreditKind::Coin, 200, &eur(), Some(&b1(1)), None)
                .unwrap(),
            Recorded::Duplicate { seq: 1 }
        ));
        new(o
            .append(CreditKind::Coin, 200, &eur(), Some(&b1(2)), None)
            .unwrap());
        // Another boot numbers from 1 again: new credits, not duplicates.
        let b2 = BoardRef {
            boot_id: "12345678".into(),
            seq: 1,
        };
        assert_eq!(
            new(o
                .append(CreditKind::Bill, 500, &eur(), Some(&b2), None)
                .unwrap())
            .event
            .seq,
            3
        );
        assert_eq!(o.forget_boots_other_than("12345678").unwrap(), 2);
        assert!(matches!(
            o.append(CreditKind::Bill, 500, &eur(), Some(&b2), None)
                .unwrap(),
            Recorded::Duplicate { seq: 3 }
        ));
        assert_eq!(o.len(), 3);
    }

    #[tokio::test]
    async fn credits_written_by_version_1_are_still_sent() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let o = Outbox::open(&db).unwrap();
        let old = CreditRecordV1 {
            seq: 1,
            kind: CreditKind::Bill,
            amount: 1000,
            currency: eur(),
            at: Utc::now(),
            session_id: Some("s0".into()),
        };
        o.events
            .insert(be(1), record::encode(RECORD_V1, &old).unwrap())
            .unwrap();
        o.durable.store(1, Ordering::SeqCst);
        let events = o.unacked().unwrap();
        assert_eq!(
            (
                events[0].amount,
                events[0].session_id.as_deref(),
                events[0].board_seq
            ),
            (1000, Some("s0"), None)
        );
    }
}
