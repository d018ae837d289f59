//! The durable inbox of print jobs, in the agent's sled directory.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `jobs` | job id | [`InboxRecord`]: every job seen, for deduplication |
//! | `payloads` | job id | the job's bytes exactly as they arrived (`PrintJob` JSON) |
//! | `queue` | printer `\0` seq (u64 big-endian) | job id of a `received` job, in arrival order |
//!
//! Records are postcard behind a version byte ([`kiosk_store::record`],
//! version 3); the job itself is kept as the bytes that arrived, never
//! re-encoded, and decoded once more only when it is printed. Records of
//! versions 1 and 2 (the job as JSON text inside) are converted when the
//! inbox opens. A job id is admitted
//! once; every later delivery of it is a [`Admission::Duplicate`] answered
//! with the stored state, so the same job never prints twice. Finished
//! records are kept for `store.retention` so late duplicates are still
//! recognised. Nothing here flushes by itself: call [`Inbox::flush`] before
//! acknowledging or printing.

use std::path::Path;

use chrono::Utc;
use kiosk_schemas::{JobId, PrintJob, Timestamp};
use kiosk_store::{GroupCommit, StoreError, keys, record};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::state::InboxState;

/// Version of the records written: [`InboxRecord`].
const RECORD_V: u8 = 3;
/// Records with the job as JSON text inside: [`InboxRecordV2`].
const RECORD_V2: u8 = 2;
/// Records without byte counts, written before version 2: [`InboxRecordV1`].
const RECORD_V1: u8 = 1;

/// Why the inbox failed.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The store failed: sled I/O or corruption (disk full, permissions),
    /// an unreadable record, a failed flush.
    #[error("inbox {0}")]
    Store(#[from] StoreError),
    /// A transition the state machine forbids (a bug, or a corrupted store).
    #[error("job {job_id}: {from:?} cannot become {to:?}")]
    Transition {
        /// The job.
        job_id: String,
        /// Current state.
        from: InboxState,
        /// Requested state.
        to: InboxState,
    },
    /// No such job.
    #[error("job {0} is not in the inbox")]
    Missing(String),
}

impl From<sled::Error> for InboxError {
    fn from(e: sled::Error) -> Self {
        InboxError::Store(StoreError::Sled(e))
    }
}

impl From<TransactionError<InboxError>> for InboxError {
    fn from(e: TransactionError<InboxError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => e.into(),
        }
    }
}

/// One job as the kiosk remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxRecord {
    /// The job id.
    pub job_id: JobId,
    /// Logical printer; empty for jobs refused on arrival.
    pub printer: String,
    /// Current state.
    pub state: InboxState,
    /// Why, for `failed` and `expired`.
    pub reason: Option<String>,
    /// Arrival order.
    pub seq: u64,
    /// When it arrived.
    pub received_at: Timestamp,
    /// When its state last changed.
    pub updated_at: Timestamp,
    /// Bytes of the whole job (all copies), set when it became `printing`.
    pub bytes_total: Option<u64>,
    /// Bytes the printer link took so far, set with `bytes_total`.
    /// Recorded as the write goes but flushed only with the next state, so
    /// after a crash a lower bound.
    pub bytes_written: Option<u64>,
}

/// An [`InboxRecord`] as version 1 stored it: without byte counts.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct InboxRecordV1 {
    job_id: JobId,
    printer: String,
    job_json: String,
    state: InboxState,
    reason: Option<String>,
    seq: u64,
    received_at: Timestamp,
    updated_at: Timestamp,
}

/// An [`InboxRecord`] as version 2 stored it: with the job as JSON text.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct InboxRecordV2 {
    job_id: JobId,
    printer: String,
    job_json: String,
    state: InboxState,
    reason: Option<String>,
    seq: u64,
    received_at: Timestamp,
    updated_at: Timestamp,
    bytes_total: Option<u64>,
    bytes_written: Option<u64>,
}

impl From<InboxRecordV1> for InboxRecordV2 {
    fn from(r: InboxRecordV1) -> Self {
        InboxRecordV2 {
            job_id: r.job_id,
            printer: r.printer,
            job_json: r.job_json,
            state: r.state,
            reason: r.reason,
            seq: r.seq,
            received_at: r.received_at,
            updated_at: r.updated_at,
            bytes_total: None,
            bytes_written: None,
        }
    }
}

impl InboxRecordV2 {
    /// The current record and the job's JSON that was inside (empty for
    /// refused jobs).
    fn split(self) -> (InboxRecord, String) {
        let rec = InboxRecord {
            job_id: self.job_id,
            printer: self.printer,
            state: self.state,
            reason: self.reason,
            seq: self.seq,
            received_at: self.received_at,
            updated_at: self.updated_at,
            bytes_total: self.bytes_total,
            bytes_written: self.bytes_written,
        };
        (rec, self.job_json)
    }
}

/// Result of offering a job to the inbox.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// First time seen: stored.
    New(InboxRecord),
    /// Seen before: the stored record, unchanged.
    Duplicate(InboxRecord),
}

/// Reason of a job cancelled while it waited for its printer.
pub const CANCELLED_WAITING: &str = "cancelled while waiting for the printer";
/// Reason of a job cancelled before it reached the kiosk.
pub const CANCELLED_BEFORE_ARRIVAL: &str = "cancelled before the job reached the kiosk";

/// Result of [`Inbox::cancel`].
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// Recorded now: the job was waiting (`received`), or had not arrived
    /// (then a `cancelled` record without content stands for it, and the
    /// job is refused as a duplicate when it comes).
    Cancelled(InboxRecord),
    /// It was cancelled before: the stored record.
    AlreadyCancelled(InboxRecord),
    /// Too late: its write started (`printing`) or it ended otherwise;
    /// the stored record, unchanged.
    Refused(InboxRecord),
}

/// Handle to the inbox; cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    db: sled::Db,
    jobs: sled::Tree,
    payloads: sled::Tree,
    queue: sled::Tree,
    /// Shared with the cash outbox (same database): concurrent flushes
    /// share one fsync.
    commit: GroupCommit,
}

fn queue_key(printer: &str, seq: u64) -> Vec<u8> {
    keys::compound(printer, &keys::be_u64(seq))
}

fn encode(rec: &InboxRecord) -> Result<Vec<u8>, InboxError> {
    Ok(record::encode_keyed(RECORD_V, rec.job_id.as_str(), rec)?)
}

/// Reads an older record: the record and the job's JSON it held.
fn decode_old(key: &[u8], bytes: &[u8]) -> Result<Option<(InboxRecord, String)>, InboxError> {
    let old: InboxRecordV2 = match bytes.first() {
        Some(&RECORD_V1) => record::decode_keyed::<InboxRecordV1>(RECORD_V1, key, bytes)?.into(),
        Some(&RECORD_V2) => record::decode_keyed(RECORD_V2, key, bytes)?,
        _ => return Ok(None),
    };
    Ok(Some(old.split()))
}

/// Reads a record of any version (older ones are converted when the inbox
/// opens, their job moved to `payloads`).
fn decode(key: &[u8], bytes: &[u8]) -> Result<InboxRecord, InboxError> {
    match decode_old(key, bytes)? {
        Some((rec, _)) => Ok(rec),
        None => Ok(record::decode_keyed(RECORD_V, key, bytes)?),
    }
}

fn abort(e: InboxError) -> ConflictableTransactionError<InboxError> {
    ConflictableTransactionError::Abort(e)
}

impl Inbox {
    /// Opens (or creates) the inbox in the sled database `db`.
    ///
    /// # Errors
    /// [`InboxError::Store`] when the trees cannot be opened.
    pub fn open(db: &sled::Db) -> Result<Self, InboxError> {
        let inbox = Inbox {
            db: db.clone(),
            jobs: db.open_tree("jobs")?,
            payloads: db.open_tree("payloads")?,
            queue: db.open_tree("queue")?,
            commit: GroupCommit::new(db.clone()),
        };
        let converted = inbox.convert_old()?;
        if converted > 0 {
            tracing::info!(
                jobs = converted,
                "converted inbox records to the current version"
            );
            db.flush()?;
        }
        Ok(inbox)
    }

    /// Rewrites records of older versions at the current one, the job's
    /// JSON moved to `payloads`. Returns how many.
    fn convert_old(&self) -> Result<usize, InboxError> {
        let mut converted = 0;
        for item in self.jobs.iter() {
            let (key, bytes) = item?;
            let Some((rec, json)) = decode_old(&key, &bytes)? else {
                continue;
            };
            let new = encode(&rec)?;
            (&self.jobs, &self.payloads)
                .transaction(|(jobs, payloads)| {
                    if !json.is_empty() {
                        payloads.insert(&key, json.as_bytes())?;
                    }
                    jobs.insert(&key, new.as_slice())?;
                    Ok(())
                })
                .map_err(|e: TransactionError<InboxError>| InboxError::from(e))?;
            converted += 1;
        }
        Ok(converted)
    }

    /// The group commit of this database, for the cash outbox to share.
    pub fn commit(&self) -> GroupCommit {
        self.commit.clone()
    }

    /// The job of `rec`, decoded from the bytes that arrived.
    ///
    /// # Errors
    /// A message when they are missing (a job refused on arrival has none)
    /// or unreadable; [`InboxError`] when the store fails.
    pub fn job(&self, rec: &InboxRecord) -> Result<Result<PrintJob, String>, InboxError> {
        let Some(bytes) = self.payloads.get(rec.job_id.as_str().as_bytes())? else {
            return Ok(Err("stored job unreadable: missing".to_owned()));
        };
        Ok(serde_json::from_slice(&bytes).map_err(|e| format!("stored job unreadable: {e}")))
    }

    /// Opens a sled database in `path` (created if missing).
    ///
    /// # Errors
    /// [`InboxError::Store`] when it cannot be opened (locked by another
    /// agent, permissions, corruption).
    pub fn open_db(path: &Path) -> Result<sled::Db, InboxError> {
        Ok(sled::Config::new().path(path).open()?)
    }

    /// Makes every change so far durable (fsync).
    ///
    /// # Errors
    /// [`InboxError::Store`]: nothing may be acknowledged or printed then.
    pub async fn flush(&self) -> Result<(), InboxError> {
        self.commit.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Applies the restart rule of [`InboxState::after_restart`] to every
    /// job: jobs found `printing` become `failed: interrupted`. Returns the
    /// changed records, whose results must be published.
    ///
    /// # Errors
    /// [`InboxError`] on storage failure.
    pub fn recover(&self) -> Result<Vec<InboxRecord>, InboxError> {
        let mut changed = Vec::new();
        for item in self.jobs.iter() {
            let (k, v) = item?;
            let mut rec = decode(&k, &v)?;
            if let Some((state, reason)) = rec.state.after_restart() {
                rec.state = state;
                rec.reason = Some(reason.to_owned());
                rec.updated_at = Utc::now();
                self.jobs.insert(&k, encode(&rec)?)?;
                changed.push(rec);
            }
        }
        Ok(changed)
    }

    /// Reads a job.
    ///
    /// # Errors
    /// [`InboxError`] on storage failure.
    pub fn get(&self, job_id: &JobId) -> Result<Option<InboxRecord>, InboxError> {
        let key = job_id.as_str().as_bytes();
        self.jobs.get(key)?.map(|v| decode(key, &v)).transpose()
    }

    /// Stores a valid job as `received` and queues it for its printer,
    /// unless its id was seen before.
    ///
    /// # Errors
    /// [`InboxError`] on storage failure.
    pub fn admit(
        &self,
        job: &PrintJob,
        payload: impl AsRef<[u8]>,
    ) -> Result<Admission, InboxError> {
        self.insert_once(
            job.job_id.clone(),
            &job.printer,
            payload.as_ref(),
            InboxState::Received,
            None,
        )
    }

    /// Stores a job that ends on arrival (`failed`: invalid, unknown
    /// printer; `expired`: arrived too late), unless its id was seen before.
    ///
    /// # Errors
    /// [`InboxError`] on storage failure.
    pub fn refuse(
        &self,
        job_id: JobId,
        state: InboxState,
        reason: String,
    ) -> Result<Admission, InboxError> {
        self.insert_once(job_id, "", b"", state, Some(reason))
    }

    fn insert_once(
        &self,
        job_id: JobId,
        printer: &str,
        payload: &[u8],
        state: InboxState,
        reason: Option<String>,
    ) -> Result<Admission, InboxError> {
        let seq = self.db.generate_id()?;
        let now = Utc::now();
        let rec = InboxRecord {
            job_id,
            printer: printer.to_owned(),
            state,
            reason,
            seq,
            received_at: now,
            updated_at: now,
            bytes_total: None,
            bytes_written: None,
        };
        let key = rec.job_id.as_str().as_bytes().to_vec();
        let bytes = encode(&rec)?;
        let qkey = queue_key(&rec.printer, seq);
        let trees = (&self.jobs, &self.payloads, &self.queue);
        let admission = trees.transaction(|(jobs, payloads, queue)| {
            if let Some(prev) = jobs.get(&key)? {
                return Ok(Admission::Duplicate(decode(&key, &prev).map_err(abort)?));
            }
            jobs.insert(key.as_slice(), bytes.as_slice())?;
            if !payload.is_empty() {
                payloads.insert(key.as_slice(), payload)?;
            }
            if state == InboxState::Received {
                queue.insert(qkey.as_slice(), key.as_slice())?;
            }
            Ok(Admission::New(rec.clone()))
        })?;
        Ok(admission)
    }

    /// Records a `cancel` command for `job_id` ([`InboxState::can_cancel`]):
    /// a waiting job becomes `cancelled` and leaves its printer's queue; a
    /// job never seen is remembered as `cancelled`, so it never prints if
    /// it arrives later; a job printing or finished is left alone. One
    /// transaction, so the worker's move to `printing` (which checks the
    /// job is still `received`) comes either before it (refused) or after
    /// it (the worker skips the job). Not flushed: flush before reporting.
    ///
    /// # Errors
    /// [`InboxError`] on storage failure.
    pub fn cancel(&self, job_id: &JobId) -> Result<CancelOutcome, InboxError> {
        let seq = self.db.generate_id()?;
        let key = job_id.as_str().as_bytes();
        let outcome = (&self.jobs, &self.queue).transaction(|(jobs, queue)| {
            let now = Utc::now();
            let Some(bytes) = jobs.get(key)? else {
                let rec = InboxRecord {
                    job_id: job_id.clone(),
                    printer: String::new(),
                    state: InboxState::Cancelled,
                    reason: Some(CANCELLED_BEFORE_ARRIVAL.to_owned()),
                    seq,
                    received_at: now,
                    updated_at: now,
                    bytes_total: None,
                    bytes_written: None,
                };
                jobs.insert(key, encode(&rec).map_err(abort)?)?;
                return Ok(CancelOutcome::Cancelled(rec));
            };
            let mut rec = decode(key, &bytes).map_err(abort)?;
            if rec.state == InboxState::Cancelled {
                return Ok(CancelOutcome::AlreadyCancelled(rec));
            }
            if !rec.state.can_cancel() {
                return Ok(CancelOutcome::Refused(rec));
            }
            queue.remove(queue_key(&rec.printer, rec.seq))?;
            rec.state = InboxState::Cancelled;
            rec.reason = Some(CANCELLED_WAITING.to_owned());
            rec.updated_at = now;
            jobs.insert(key, encode(&rec).map_err(abort)?)?;
            Ok(CancelOutcome::Cancelled(rec))
        })?;
        Ok(outcome)
    }

    /// The oldest `received` job for `printer`.
    ///
    /// # Errors
    /// [`InboxError`] on storage failure.
    pub fn next_for(&self, printer: &str) -> Result<Option<InboxRecord>, InboxError> {
        for item in self.queue.scan_prefix(keys::prefix(printer)) {
            let (qkey, job_key) = item?;
            match self.jobs.get(&job_key)? {
                Some(v) => {
                    let rec = decode(&job_key, &v)?;
                    if rec.state == InboxState::Received {
                        return Ok(Some(rec));
                    }
                    // Stale index entry (state moved on): clean it up.
                    self.queue.remove(qkey)?;
                }
                None => {
                    self.queue.remove(qkey)?;
                }
            }
        }
        Ok(None)
    }

    #[cfg(test)]
    /// Number of jobs waiting for a printer.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Moves a job to `to`, keeping the queue index in step. Returns the
    /// updated record. Byte counts stay, except that a job back in
    /// `received` (nothing written) has none.
    ///
    /// # Errors
    /// [`InboxError::Transition`] for a move the state machine forbids,
    /// [`InboxError::Missing`], or storage failure.
    pub fn transition(
        &self,
        job_id: &JobId,
        to: InboxState,
        reason: Option<String>,
    ) -> Result<InboxRecord, InboxError> {
        self.change(job_id, to, reason, None)
    }

    /// Moves a `received` job to `printing` with `bytes_total` bytes to
    /// write and none written yet. Returns the updated record.
    ///
    /// # Errors
    /// As [`Inbox::transition`].
    pub fn start_printing(
        &self,
        job_id: &JobId,
        bytes_total: u64,
    ) -> Result<InboxRecord, InboxError> {
        self.change(job_id, InboxState::Printing, None, Some(bytes_total))
    }

    /// Records that `bytes_written` bytes of a `printing` job went out (a
    /// count never goes down). Not flushed: durable with the next flush, or
    /// within sled's flush interval.
    ///
    /// # Errors
    /// [`InboxError::Transition`] when the job is not `printing`,
    /// [`InboxError::Missing`], or storage failure.
    pub fn record_progress(&self, job_id: &JobId, bytes_written: u64) -> Result<(), InboxError> {
        let key = job_id.as_str().as_bytes();
        self.jobs.transaction(|jobs| {
            let bytes = jobs
                .get(key)?
                .ok_or_else(|| abort(InboxError::Missing(job_id.to_string())))?;
            let mut rec = decode(key, &bytes).map_err(abort)?;
            if rec.state != InboxState::Printing {
                return Err(abort(InboxError::Transition {
                    job_id: job_id.to_string(),
                    from: rec.state,
                    to: InboxState::Printing,
                }));
            }
            let before = rec.bytes_written.unwrap_or(0);
            if bytes_written > before {
                rec.bytes_written = Some(bytes_written);
                jobs.insert(key, encode(&rec).map_err(abort)?)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// [`Inbox::transition`]; with `bytes_total`, the counts start over.
    fn change(
        &self,
        job_id: &JobId,
        to: InboxState,
        reason: Option<String>,
        bytes_total: Option<u64>,
    ) -> Result<InboxRecord, InboxError> {
        let key = job_id.as_str().as_bytes();
        let rec = (&self.jobs, &self.queue).transaction(|(jobs, queue)| {
            let bytes = jobs
                .get(key)?
                .ok_or_else(|| abort(InboxError::Missing(job_id.to_string())))?;
            let mut rec = decode(key, &bytes).map_err(abort)?;
            if !rec.state.can_become(to) {
                return Err(abort(InboxError::Transition {
                    job_id: job_id.to_string(),
                    from: rec.state,
                    to,
                }));
            }
            let qkey = queue_key(&rec.printer, rec.seq);
            if to == InboxState::Received {
                queue.insert(qkey.as_slice(), key)?;
            } else if rec.state == InboxState::Received {
                queue.remove(qkey.as_slice())?;
            }
            rec.state = to;
            rec.reason = reason.clone();
            rec.updated_at = Utc::now();
            if to == InboxState::Received {
                (rec.bytes_total, rec.bytes_written) = (None, None);
            }
            if let Some(total) = bytes_total {
                (rec.bytes_total, rec.bytes_written) = (Some(total), Some(0));
            }
            jobs.insert(key, encode(&rec).map_err(abort)?)?;
            Ok(rec)
        })?;
        Ok(rec)
    }

    /// Deletes finished records last changed before `before`. Returns how
    /// many were deleted.
    ///
    /// # Errors
    /// [`InboxError`] on storage failure.
    pub fn purge(&self, before: Timestamp) -> Result<usize, InboxError> {
        let mut n = 0;
        for item in self.jobs.iter() {
            let (k, v) = item?;
            let Ok(rec) = decode(&k, &v) else { continue };
            if rec.state.is_final() && rec.updated_at < before {
                self.payloads.remove(&k)?;
                self.jobs.remove(&k)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, printer: &str) -> PrintJob {
        serde_json::from_value(serde_json::json!({
            "v": 1, "job_id": id, "printer": printer,
            "document": {"kind": "text", "text": "hi"}
        }))
        .unwrap()
    }

    /// Opens the inbox, retrying while a just-dropped instance still holds
    /// sled's file lock (its background flusher may outlive the drop briefly).
    fn open(dir: &Path) -> Inbox {
        for _ in 0..100 {
            if let Ok(db) = Inbox::open_db(dir) {
                return Inbox::open(&db).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Inbox::open(&Inbox::open_db(dir).unwrap()).unwrap()
    }

    #[test]
    fn admits_once_and_queues_in_order_per_printer() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = open(dir.path());
        for (id, p) in [("a", "receipt"), ("b", "kitchen"), ("c", "receipt")] {
            assert!(matches!(
                inbox.admit(&job(id, p), "{}").unwrap(),
                Admission::New(_)
            ));
        }
        assert!(matches!(
            inbox.admit(&job("a", "receipt"), "{}").unwrap(),
            Admission::Duplicate(_)
        ));
        assert_eq!(
            inbox.next_for("receipt").unwrap().unwrap().job_id.as_str(),
            "a"
        );
        assert_eq!(
            inbox.next_for("kitchen").unwrap().unwrap().job_id.as_str(),
            "b"
        );
        let a = JobId::new("a").unwrap();
        inbox.transition(&a, InboxState::Printing, None).unwrap();
        assert_eq!(
            inbox.next_for("receipt").unwrap().unwrap().job_id.as_str(),
            "c"
        );
        // Nothing written: back in line, ahead of c again.
        inbox.transition(&a, InboxState::Received, None).unwrap();
        assert_eq!(
            inbox.next_for("receipt").unwrap().unwrap().job_id.as_str(),
            "a"
        );
        inbox.transition(&a, InboxState::Printing, None).unwrap();
        inbox.transition(&a, InboxState::Printed, None).unwrap();
        let err = inbox
            .transition(&a, InboxState::Printing, None)
            .unwrap_err();
        assert!(matches!(err, InboxError::Transition { .. }));
        assert_eq!(inbox.queued(), 2);
    }

    #[test]
    fn printing_becomes_interrupted_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let inbox = open(dir.path());
            inbox.admit(&job("a", "receipt"), "{}").unwrap();
            inbox.admit(&job("b", "receipt"), "{}").unwrap();
            inbox
                .transition(&JobId::new("a").unwrap(), InboxState::Printing, None)
                .unwrap();
            inbox.db.flush().unwrap();
        }
        let inbox = open(dir.path());
        let changed = inbox.recover().unwrap();
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].state, InboxState::Failed);
        assert_eq!(changed[0].reason.as_deref(), Some("interrupted"));
        // b still waits; a is not reprinted.
        assert_eq!(
            inbox.next_for("receipt").unwrap().unwrap().job_id.as_str(),
            "b"
        );
        assert!(inbox.recover().unwrap().is_empty());
    }

    #[test]
    fn byte_counts_are_recorded_and_kept_by_the_restart_rule() {
        let dir = tempfile::tempdir().unwrap();
        let a = JobId::new("a").unwrap();
        {
            let inbox = open(dir.path());
            inbox.admit(&job("a", "receipt"), "{}").unwrap();
            assert!(inbox.record_progress(&a, 1).is_err(), "not printing yet");
            let rec = inbox.start_printing(&a, 1000).unwrap();
            assert_eq!((rec.bytes_written, rec.bytes_total), (Some(0), Some(1000)));
            inbox.record_progress(&a, 300).unwrap();
            // Counts never go down.
            inbox.record_progress(&a, 200).unwrap();
            inbox.db.flush().unwrap();
        }
        let inbox = open(dir.path());
        let changed = inbox.recover().unwrap();
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].state, InboxState::Failed);
        assert_eq!(changed[0].reason.as_deref(), Some("interrupted"));
        assert_eq!(
            (changed[0].bytes_written, changed[0].bytes_total),
            (Some(300), Some(1000))
        );
        assert_eq!(inbox.get(&a).unwrap().unwrap(), changed[0]);
    }

    #[test]
    fn nothing_written_back_to_received_has_no_counts() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = open(dir.path());
        let a = JobId::new("a").unwrap();
        inbox.admit(&job("a", "receipt"), "{}").unwrap();
        inbox.start_printing(&a, 10).unwrap();
        let rec = inbox.transition(&a, InboxState::Received, None).unwrap();
        assert_eq!((rec.bytes_written, rec.bytes_total), (None, None));
        inbox.start_printing(&a, 10).unwrap();
        inbox.record_progress(&a, 10).unwrap();
        let rec = inbox.transition(&a, InboxState::Printed, None).unwrap();
        assert_eq!((rec.bytes_written, rec.bytes_total), (Some(10), Some(10)));
    }

    #[test]
    fn version_1_records_are_read_without_counts() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let old = InboxRecordV1 {
            job_id: JobId::new("old").unwrap(),
            printer: "receipt".into(),
            job_json: "{}".into(),
            state: InboxState::Printing,
            reason: None,
            seq: 7,
            received_at: now,
            updated_at: now,
        };
        let inbox = open(dir.path());
        inbox
            .jobs
            .insert("old", record::encode(RECORD_V1, &old).unwrap())
            .unwrap();
        let rec = inbox.get(&old.job_id).unwrap().unwrap();
        assert_eq!((rec.seq, rec.state), (7, InboxState::Printing));
        assert_eq!((rec.bytes_written, rec.bytes_total), (None, None));
        // Recovered and rewritten as version 2.
        let changed = inbox.recover().unwrap();
        assert_eq!(changed[0].state, InboxState::Failed);
        let stored = inbox.jobs.get("old").unwrap().unwrap();
        assert_eq!(stored[0], RECORD_V);
        assert_eq!(inbox.get(&old.job_id).unwrap().unwrap(), changed[0]);
    }

    #[test]
    fn refused_jobs_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = open(dir.path());
        let id = JobId::new("bad").unwrap();
        inbox
            .refuse(id.clone(), InboxState::Failed, "unknown printer".into())
            .unwrap();
        let Admission::Duplicate(rec) = inbox.admit(&job("bad", "receipt"), "{}").unwrap() else {
            panic!("should be a duplicate");
        };
        assert_eq!(rec.state, InboxState::Failed);
        assert_eq!(inbox.queued(), 0);
    }

    #[test]
    fn purge_keeps_unfinished() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = open(dir.path());
        inbox.admit(&job("a", "receipt"), "{}").unwrap();
        inbox
            .refuse(JobId::new("b").unwrap(), InboxState::Expired, "late".into())
            .unwrap();
        assert_eq!(
            inbox
                .purge(Utc::now() + chrono::Duration::seconds(1))
                .unwrap(),
            1
        );
        assert!(inbox.get(&JobId::new("a").unwrap()).unwrap().is_some());
    }

    #[test]
    fn a_job_is_kept_as_the_bytes_that_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = open(dir.path());
        // Spacing and an unknown field: kept as they came.
        let payload = br#"{ "v":1, "job_id":"a", "printer":"receipt", "extra": 7,
            "document": {"kind":"text","text":"hi"} }"#;
        let Admission::New(rec) = inbox.admit(&job("a", "receipt"), payload).unwrap() else {
            panic!("new job");
        };
        let stored = inbox.payloads.get("a").unwrap().unwrap();
        assert_eq!(&stored[..], &payload[..]);
        assert_eq!(inbox.job(&rec).unwrap().unwrap().job_id.as_str(), "a");
        // A job refused on arrival has none.
        let Admission::New(bad) = inbox
            .refuse(JobId::new("b").unwrap(), InboxState::Failed, "x".into())
            .unwrap()
        else {
            panic!("new job");
        };
        assert!(inbox.job(&bad).unwrap().is_err());
    }

    #[test]
    fn a_cancelled_job_is_recorded_durably_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let a = JobId::new("a").unwrap();
        {
            let inbox = open(dir.path());
            inbox.admit(&job("a", "receipt"), "{}").unwrap();
            inbox.admit(&job("b", "receipt"), "{}").unwrap();
            let CancelOutcome::Cancelled(rec) = inbox.cancel(&a).unwrap() else {
                panic!("a waiting job is cancelled");
            };
            assert_eq!(rec.state, InboxState::Cancelled);
            assert_eq!(rec.reason.as_deref(), Some(CANCELLED_WAITING));
            assert!(matches!(
                inbox.cancel(&a).unwrap(),
                CancelOutcome::AlreadyCancelled(_)
            ));
            inbox.db.flush().unwrap();
        }
        // Survives a restart: still cancelled, not in line, not recovered.
        let inbox = open(dir.path());
        assert!(inbox.recover().unwrap().is_empty());
        assert_eq!(inbox.get(&a).unwrap().unwrap().state, InboxState::Cancelled);
        assert_eq!(
            inbox.next_for("receipt").unwrap().unwrap().job_id.as_str(),
            "b"
        );
        // The worker cannot start it.
        let err = inbox.start_printing(&a, 10).unwrap_err();
        assert!(matches!(
            err,
            InboxError::Transition {
                from: InboxState::Cancelled,
                ..
            }
        ));
        // A redelivery is answered as cancelled.
        let Admission::Duplicate(rec) = inbox.admit(&job("a", "receipt"), "{}").unwrap() else {
            panic!("a duplicate");
        };
        assert_eq!(rec.state, InboxState::Cancelled);
    }

    #[test]
    fn a_cancel_before_the_job_arrives_refuses_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let late = JobId::new("late").unwrap();
        {
            let inbox = open(dir.path());
            let CancelOutcome::Cancelled(rec) = inbox.cancel(&late).unwrap() else {
                panic!("an unknown job is cancelled");
            };
            assert_eq!(rec.reason.as_deref(), Some(CANCELLED_BEFORE_ARRIVAL));
            inbox.db.flush().unwrap();
        }
        let inbox = open(dir.path());
        // The job the broker still held arrives after the cancel.
        let Admission::Duplicate(rec) = inbox.admit(&job("late", "receipt"), "{}").unwrap() else {
            panic!("refused as a duplicate");
        };
        assert_eq!(rec.state, InboxState::Cancelled);
        assert!(inbox.next_for("receipt").unwrap().is_none());
        assert_eq!(inbox.queued(), 0);
    }

    #[test]
    fn a_printing_or_finished_job_is_not_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = open(dir.path());
        let a = JobId::new("a").unwrap();
        inbox.admit(&job("a", "receipt"), "{}").unwrap();
        inbox.start_printing(&a, 10).unwrap();
        let CancelOutcome::Refused(rec) = inbox.cancel(&a).unwrap() else {
            panic!("a printing job is not cancelled");
        };
        assert_eq!(rec.state, InboxState::Printing);
        inbox.transition(&a, InboxState::Printed, None).unwrap();
        let CancelOutcome::Refused(rec) = inbox.cancel(&a).unwrap() else {
            panic!("a printed job is not cancelled");
        };
        assert_eq!(rec.state, InboxState::Printed);
        assert_eq!(inbox.get(&a).unwrap().unwrap().state, InboxState::Printed);
    }

    #[test]
    fn version_2_records_are_converted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let json =
            r#"{"v":1,"job_id":"old","printer":"receipt","document":{"kind":"text","text":"hi"}}"#;
        let old = InboxRecordV2 {
            job_id: JobId::new("old").unwrap(),
            printer: "receipt".into(),
            job_json: json.into(),
            state: InboxState::Received,
            reason: None,
            seq: 3,
            received_at: now,
            updated_at: now,
            bytes_total: None,
            bytes_written: None,
        };
        {
            let inbox = open(dir.path());
            inbox
                .jobs
                .insert("old", record::encode(RECORD_V2, &old).unwrap())
                .unwrap();
            inbox.db.flush().unwrap();
        }
        let inbox = open(dir.path());
        assert_eq!(inbox.jobs.get("old").unwrap().unwrap()[0], RECORD_V);
        let rec = inbox.get(&old.job_id).unwrap().unwrap();
        assert_eq!((rec.seq, rec.state), (3, InboxState::Received));
        assert_eq!(
            &inbox.payloads.get("old").unwrap().unwrap()[..],
            json.as_bytes()
        );
        assert_eq!(inbox.job(&rec).unwrap().unwrap().printer, "receipt");
    }
}
