//! Durable state of the gateway: one sled directory, four trees.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `jobs` | job id | [`JobRecord`] |
//! | `pending` | kiosk id `\0` job id | empty: the job is not finished, keep delivering |
//! | `idempotency` | kiosk id `\0` Idempotency-Key | job id + SHA-256 of the request |
//! | `kiosks` | kiosk id | [`KioskRecord`] |
//!
//! Values are postcard records behind a version byte
//! ([`kiosk_schemas::record`]); jobs are at version 2 (byte counts) and
//! version 1 job records are still read. Multi-tree changes run in one sled
//! transaction, so a crash never leaves a job without its index entry.
//! Nothing here flushes by itself: callers call [`Store::flush`] before they
//! acknowledge anything (HTTP 202, MQTT PUBACK), which also lets them batch.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use kiosk_schemas::record::{self, RecordError};
use kiosk_schemas::{JobId, JobState, KioskId, Presence, PrinterStatus, Timestamp};
use kiosk_store::GroupCommit;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::state::{self, Step};

/// Version of the job records written: [`JobRecord`].
const JOB_V: u8 = 2;
/// Job records without byte counts, written before version 2.
const JOB_V1: u8 = 1;
const IDEM_V: u8 = 1;
const KIOSK_V: u8 = 1;

/// Why the store failed. Any of these is an internal error to callers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled I/O or corruption.
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A flush failed: what it covered may not be durable.
    #[error("store: {0}")]
    Flush(kiosk_store::CommitError),
    /// A record could not be encoded or decoded.
    #[error("store record {key}: {source}")]
    Record {
        /// Which record.
        key: String,
        /// What went wrong.
        source: RecordError,
    },
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// One entry of a job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// The state entered.
    pub state: JobState,
    /// When: the kiosk's time for kiosk reports, the gateway's otherwise.
    pub at: Timestamp,
    /// Why, for `failed` and `expired`.
    pub reason: Option<String>,
}

/// Where a job came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Origin {
    /// `POST /v1/kiosks/{id}/print-jobs`, by the named API key.
    Http {
        /// Name of the API key that created it.
        api_key: String,
    },
    /// Published straight to `kiosk/<id>/print` by an MQTT client.
    Mqtt,
}

/// A print job as the gateway remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id.
    pub job_id: JobId,
    /// The kiosk it is for.
    pub kiosk_id: KioskId,
    /// Logical printer name on the kiosk.
    pub printer: String,
    /// The [`kiosk_schemas::Document`] as JSON. `None` while only a result
    /// has been seen for a job published over MQTT.
    pub document: Option<String>,
    /// Copies to print.
    pub copies: u8,
    /// Creation time given in the job.
    pub created_at: Timestamp,
    /// Expiry given in the job.
    pub expires_at: Option<Timestamp>,
    /// Current state.
    pub state: JobState,
    /// Reason of the current state, for `failed` and `expired`.
    pub reason: Option<String>,
    /// Every state entered, oldest first.
    pub history: Vec<Transition>,
    /// Who created it.
    pub origin: Origin,
    /// The job this one reprints.
    pub reprint_of: Option<JobId>,
    /// When the gateway first stored it (for end-to-end latency).
    pub accepted_at: Timestamp,
    /// The gateway marked it `expired` itself (deadline passed while still
    /// `queued`). The kiosk is the source of truth for what happened on
    /// paper, so a later kiosk report replaces this inference.
    pub gateway_expired: bool,
    /// How far the kiosk's write got, for a job that failed after its
    /// write started (from the kiosk's result).
    pub bytes: Option<ByteCounts>,
}

/// Bytes of a job the kiosk handed to its printer link, and of the whole
/// job (all copies), as its `failed` result reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteCounts {
    /// Bytes written before the write stopped (after a crash, a lower
    /// bound).
    pub written: u64,
    /// Bytes of the whole job.
    pub total: u64,
}

impl ByteCounts {
    /// The counts of a result's `bytes_written` and `bytes_total`; `None`
    /// unless it has both.
    pub fn reported(written: Option<u64>, total: Option<u64>) -> Option<Self> {
        written
            .zip(total)
            .map(|(written, total)| ByteCounts { written, total })
    }
}

/// A [`JobRecord`] as version 1 stored it: without byte counts.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct JobRecordV1 {
    job_id: JobId,
    kiosk_id: KioskId,
    printer: String,
    document: Option<String>,
    copies: u8,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
    state: JobState,
    reason: Option<String>,
    history: Vec<Transition>,
    origin: Origin,
    reprint_of: Option<JobId>,
    accepted_at: Timestamp,
    gateway_expired: bool,
}

impl From<JobRecordV1> for JobRecord {
    fn from(r: JobRecordV1) -> Self {
        JobRecord {
            job_id: r.job_id,
            kiosk_id: r.kiosk_id,
            printer: r.printer,
            document: r.document,
            copies: r.copies,
            created_at: r.created_at,
            expires_at: r.expires_at,
            state: r.state,
            reason: r.reason,
            history: r.history,
            origin: r.origin,
            reprint_of: r.reprint_of,
            accepted_at: r.accepted_at,
            gateway_expired: r.gateway_expired,
            bytes: None,
        }
    }
}

/// Reads a job record of either version; errors name `key`.
fn decode_job(key: &[u8], bytes: &[u8]) -> Result<JobRecord, StoreError> {
    match bytes.first() {
        Some(&JOB_V1) => decode::<JobRecordV1>(JOB_V1, key, bytes).map(Into::into),
        _ => decode(JOB_V, key, bytes),
    }
}

/// Who reports a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The kiosk, in a result.
    Kiosk,
    /// The gateway itself (expiry).
    Gateway,
}

impl JobRecord {
    /// Applies a state report; returns what happened. Pure. `bytes` is
    /// kept only with a `failed` state.
    pub fn apply(
        &mut self,
        reported: JobState,
        at: Timestamp,
        reason: Option<String>,
        bytes: Option<ByteCounts>,
        source: Source,
    ) -> Step {
        let current = if self.gateway_expired && source == Source::Kiosk {
            JobState::Queued
        } else {
            self.state
        };
        let step = state::step(current, reported);
        if let Step::Advance(next) = step {
            self.state = next;
            self.reason = reason.clone();
            self.bytes = bytes.filter(|_| next == JobState::Failed);
            self.gateway_expired = source == Source::Gateway && next == JobState::Expired;
            self.history.push(Transition {
                state: next,
                at,
                reason,
            });
        }
        step
    }

    /// True once nothing more is expected from the kiosk about this job.
    pub fn is_settled(&self) -> bool {
        self.state.is_terminal() && !self.gateway_expired
    }

    /// The instant after which a `queued` job expires: `expires_at`, or
    /// `created_at + default_lifetime` for jobs that carry none.
    pub fn deadline(&self, default_lifetime: chrono::Duration) -> Timestamp {
        self.expires_at
            .unwrap_or_else(|| self.created_at + default_lifetime)
    }
}

/// What the gateway knows about a kiosk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KioskRecord {
    /// The kiosk.
    pub kiosk_id: KioskId,
    /// Last reported presence.
    pub presence: Option<Presence>,
    /// Last time any message from the kiosk arrived.
    pub last_seen: Option<Timestamp>,
    /// Agent version from its last `online` status.
    pub agent_version: Option<String>,
    /// Printers from its last `online` status (JSON of the map, because
    /// postcard cannot skip absent optional fields).
    pub printers_json: String,
    /// Cash acceptor state from its last status (JSON), if any.
    pub cash_json: Option<String>,
}

impl KioskRecord {
    /// A record for a kiosk never heard from.
    pub fn new(kiosk_id: KioskId) -> Self {
        KioskRecord {
            kiosk_id,
            presence: None,
            last_seen: None,
            agent_version: None,
            printers_json: "{}".to_owned(),
            cash_json: None,
        }
    }

    /// The printers map.
    pub fn printers(&self) -> BTreeMap<String, PrinterStatus> {
        serde_json::from_str(&self.printers_json).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdempotencyRecord {
    job_id: JobId,
    request_sha256: [u8; 32],
}

/// Result of [`Store::create_job`].
#[derive(Debug, Clone)]
pub enum CreateOutcome {
    /// Stored as a new job.
    Created(JobRecord),
    /// The Idempotency-Key was used before with the same request: the job
    /// it created.
    Replayed(JobRecord),
    /// The Idempotency-Key was used before with a different request.
    KeyReused,
    /// A job with this id exists already.
    JobIdTaken,
}

/// Result of [`Store::apply_report`].
#[derive(Debug, Clone)]
pub enum ReportOutcome {
    /// The job moved from `from` to the record's current state.
    Applied {
        /// Previous state (`None` if the job was unknown until now).
        from: Option<JobState>,
        /// The updated record.
        record: JobRecord,
    },
    /// Nothing changed (duplicate or older report).
    Duplicate,
    /// A terminal report contradicting the recorded terminal state.
    Conflict(JobRecord),
    /// The job belongs to another kiosk; the report is ignored.
    WrongKiosk,
}

/// Result of [`Store::record_mqtt_job`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttJobOutcome {
    /// A job the gateway had not seen: stored as `queued`.
    Recorded,
    /// The job was known only from a result: its content was filled in.
    Completed,
    /// Already known (for example the gateway's own publish coming back).
    Known,
    /// The id is taken by a job of another kiosk.
    WrongKiosk,
}

fn pending_key(kiosk: &KioskId, job: &JobId) -> Vec<u8> {
    let mut k = Vec::with_capacity(kiosk.as_str().len() + 1 + job.as_str().len());
    k.extend_from_slice(kiosk.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(job.as_str().as_bytes());
    k
}

fn kiosk_prefix(kiosk: &KioskId) -> Vec<u8> {
    let mut k = kiosk.as_str().as_bytes().to_vec();
    k.push(0);
    k
}

/// A record's bytes (version byte + postcard); errors name `key`.
pub(crate) fn encode<T: Serialize>(
    version: u8,
    key: &str,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    record::encode(version, value).map_err(|source| StoreError::Record {
        key: key.to_owned(),
        source,
    })
}

/// A record read back; errors name `key`.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    version: u8,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    record::decode(version, bytes).map_err(|source| StoreError::Record {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

/// Aborts a sled transaction with `e`.
pub(crate) fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

/// Number of jobs in each [`JobState`], kept in memory for `/metrics`.
#[derive(Debug, Default)]
pub struct StateCounts([AtomicI64; 5]);

impl StateCounts {
    fn idx(s: JobState) -> usize {
        JobState::ALL.iter().position(|x| *x == s).unwrap_or(0)
    }

    fn add(&self, s: JobState, n: i64) {
        self.0[Self::idx(s)].fetch_add(n, Ordering::Relaxed);
    }

    fn moved(&self, from: Option<JobState>, to: JobState) {
        if let Some(from) = from {
            self.add(from, -1);
        }
        self.add(to, 1);
    }

    /// Current count of jobs in `s`.
    pub fn get(&self, s: JobState) -> i64 {
        self.0[Self::idx(s)].load(Ordering::Relaxed)
    }
}

/// Handle to the gateway's sled database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    jobs: sled::Tree,
    pending: sled::Tree,
    idempotency: sled::Tree,
    kiosks: sled::Tree,
    counts: Arc<StateCounts>,
    /// Every [`Store::flush`] of every clone (and of the cash store, which
    /// shares the database) goes through it: concurrent requests share one
    /// fsync.
    commit: GroupCommit,
}

impl Store {
    /// Opens (or creates) the database in `path` and counts jobs by state.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when the directory cannot be opened (locked by
    /// another process, permissions, corruption); [`StoreError::Record`]
    /// when a stored job cannot be read.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(path).open()?;
        let store = Store {
            jobs: db.open_tree("jobs")?,
            pending: db.open_tree("pending")?,
            idempotency: db.open_tree("idempotency")?,
            kiosks: db.open_tree("kiosks")?,
            commit: GroupCommit::new(db.clone()),
            db,
            counts: Arc::default(),
        };
        for item in store.jobs.iter() {
            let (k, v) = item?;
            let job = decode_job(&k, &v)?;
            store.counts.add(job.state, 1);
        }
        Ok(store)
    }

    /// Makes every change the caller made so far durable (fsync): returns
    /// after a flush that started after this call finished. Concurrent
    /// callers share flushes ([`kiosk_store::GroupCommit`]).
    ///
    /// # Errors
    /// [`StoreError::Flush`] on I/O failure: nothing may be acknowledged then.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.commit.commit().await.map_err(StoreError::Flush)
    }

    /// Flushes started so far (each covers every write made before it).
    pub fn flushes(&self) -> u64 {
        self.commit.flushes()
    }

    /// The sled database, for other stores sharing the directory.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Jobs per state.
    pub fn counts(&self) -> &StateCounts {
        &self.counts
    }

    /// Stores a new job (state `queued`, indexed as pending), unless its
    /// Idempotency-Key was seen before. `idempotency` is the key and the
    /// SHA-256 of the request it came with.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn create_job(
        &self,
        job: JobRecord,
        idempotency: Option<(&str, [u8; 32])>,
    ) -> Result<CreateOutcome, StoreError> {
        let job_key = job.job_id.as_str().as_bytes().to_vec();
        let idem_key = idempotency.map(|(key, _)| {
            let mut k = kiosk_prefix(&job.kiosk_id);
            k.extend_from_slice(key.as_bytes());
            k
        });
        let job_bytes = encode(JOB_V, job.job_id.as_str(), &job)?;
        let idem_bytes = match idempotency {
            Some((_, sha)) => Some(encode(
                IDEM_V,
                "idempotency",
                &IdempotencyRecord {
                    job_id: job.job_id.clone(),
                    request_sha256: sha,
                },
            )?),
            None => None,
        };
        let pending = pending_key(&job.kiosk_id, &job.job_id);

        let outcome =
            (&self.jobs, &self.pending, &self.idempotency).transaction(|(jobs, pend, idem)| {
                if let (Some(ik), Some((_, sha))) = (&idem_key, idempotency)
                    && let Some(prev) = idem.get(ik)?
                {
                    let prev: IdempotencyRecord = decode(IDEM_V, ik, &prev).map_err(abort)?;
                    if prev.request_sha256 != sha {
                        return Ok(CreateOutcome::KeyReused);
                    }
                    // A key whose job was purged by retention is fresh again.
                    if let Some(bytes) = jobs.get(prev.job_id.as_str().as_bytes())? {
                        let rec = decode_job(&job_key, &bytes).map_err(abort)?;
                        return Ok(CreateOutcome::Replayed(rec));
                    }
                }
                if jobs.get(&job_key)?.is_some() {
                    return Ok(CreateOutcome::JobIdTaken);
                }
                jobs.insert(job_key.as_slice(), job_bytes.as_slice())?;
                pend.insert(pending.as_slice(), &[][..])?;
                if let (Some(ik), Some(ib)) = (&idem_key, &idem_bytes) {
                    idem.insert(ik.as_slice(), ib.as_slice())?;
                }
                Ok(CreateOutcome::Created(job.clone()))
            })?;
        if let CreateOutcome::Created(j) = &outcome {
            self.counts.moved(None, j.state);
        }
        Ok(outcome)
    }

    /// Reads a job.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure or an unreadable record.
    pub fn job(&self, job_id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let key = job_id.as_str().as_bytes();
        match self.jobs.get(key)? {
            Some(v) => Ok(Some(decode_job(key, &v)?)),
            None => Ok(None),
        }
    }

    /// Applies a state reported for `job_id` of `kiosk` by `source` (a
    /// kiosk's result, or the gateway's own expiry), with the byte counts
    /// of a job that failed mid-write. A report for an unknown job creates a
    /// record without content, so `GET /v1/print-jobs/{id}` can show jobs
    /// that were published straight over MQTT even when their result
    /// overtakes them.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_report(
        &self,
        kiosk: &KioskId,
        job_id: &JobId,
        reported: JobState,
        at: Timestamp,
        reason: Option<String>,
        bytes: Option<ByteCounts>,
        source: Source,
    ) -> Result<ReportOutcome, StoreError> {
        let key = job_id.as_str().as_bytes();
        let pkey = pending_key(kiosk, job_id);
        let outcome = (&self.jobs, &self.pending).transaction(|(jobs, pend)| {
            let (mut rec, from) = match jobs.get(key)? {
                Some(bytes) => {
                    let rec = decode_job(key, &bytes).map_err(abort)?;
                    if &rec.kiosk_id != kiosk {
                        return Ok(ReportOutcome::WrongKiosk);
                    }
                    let from = rec.state;
                    (rec, Some(from))
                }
                None => (
                    JobRecord {
                        job_id: job_id.clone(),
                        kiosk_id: kiosk.clone(),
                        printer: String::new(),
                        document: None,
                        copies: 1,
                        created_at: at,
                        expires_at: None,
                        state: JobState::Queued,
                        reason: None,
                        history: Vec::new(),
                        origin: Origin::Mqtt,
                        reprint_of: None,
                        accepted_at: chrono::Utc::now(),
                        gateway_expired: false,
                        bytes: None,
                    },
                    None,
                ),
            };
            match rec.apply(reported, at, reason.clone(), bytes, source) {
                Step::Advance(_) => {}
                Step::Duplicate => return Ok(ReportOutcome::Duplicate),
                Step::Conflict => return Ok(ReportOutcome::Conflict(rec)),
            }
            let bytes = encode(JOB_V, job_id.as_str(), &rec).map_err(abort)?;
            jobs.insert(key, bytes)?;
            if rec.is_settled() {
                pend.remove(pkey.as_slice())?;
            }
            Ok(ReportOutcome::Applied { from, record: rec })
        })?;
        if let ReportOutcome::Applied { from, record } = &outcome {
            self.counts.moved(*from, record.state);
        }
        Ok(outcome)
    }

    /// Records a job seen on `kiosk/<id>/print` (published by a backend, or
    /// the gateway's own publish coming back).
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn record_mqtt_job(
        &self,
        kiosk: &KioskId,
        job: &kiosk_schemas::PrintJob,
    ) -> Result<MqttJobOutcome, StoreError> {
        let key = job.job_id.as_str().as_bytes();
        let pkey = pending_key(kiosk, &job.job_id);
        // Serialized only when stored: most jobs seen here are the gateway's
        // own publishes coming back (`Known`).
        let document = || serde_json::to_string(&job.document).ok();
        let outcome = (&self.jobs, &self.pending).transaction(|(jobs, pend)| {
            let now = chrono::Utc::now();
            match jobs.get(key)? {
                Some(bytes) => {
                    let mut rec = decode_job(key, &bytes).map_err(abort)?;
                    if &rec.kiosk_id != kiosk {
                        return Ok(MqttJobOutcome::WrongKiosk);
                    }
                    if rec.document.is_some() {
                        return Ok(MqttJobOutcome::Known);
                    }
                    rec.printer = job.printer.clone();
                    rec.document = document();
                    rec.copies = job.copies;
                    rec.created_at = job.created_at;
                    rec.expires_at = job.expires_at;
                    // The queued step happened before the result we saw first.
                    rec.history.insert(
                        0,
                        Transition {
                            state: JobState::Queued,
                            at: job.created_at,
                            reason: None,
                        },
                    );
                    let bytes = encode(JOB_V, job.job_id.as_str(), &rec).map_err(abort)?;
                    jobs.insert(key, bytes)?;
                    Ok(MqttJobOutcome::Completed)
                }
                None => {
                    let rec = JobRecord {
                        job_id: job.job_id.clone(),
                        kiosk_id: kiosk.clone(),
                        printer: job.printer.clone(),
                        document: document(),
                        copies: job.copies,
                        created_at: job.created_at,
                        expires_at: job.expires_at,
                        state: JobState::Queued,
                        reason: None,
                        history: vec![Transition {
                            state: JobState::Queued,
                            at: now,
                            reason: None,
                        }],
                        origin: Origin::Mqtt,
                        reprint_of: None,
                        accepted_at: now,
                        gateway_expired: false,
                        bytes: None,
                    };
                    let bytes = encode(JOB_V, job.job_id.as_str(), &rec).map_err(abort)?;
                    jobs.insert(key, bytes)?;
                    pend.insert(pkey.as_slice(), &[][..])?;
                    Ok(MqttJobOutcome::Recorded)
                }
            }
        })?;
        if outcome == MqttJobOutcome::Recorded {
            self.counts.moved(None, JobState::Queued);
        }
        Ok(outcome)
    }

    /// Stops delivering a job without changing its state (a `received` job
    /// whose outcome the kiosk never reported within the grace period).
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn drop_pending(&self, kiosk: &KioskId, job_id: &JobId) -> Result<(), StoreError> {
        self.pending.remove(pending_key(kiosk, job_id))?;
        Ok(())
    }

    /// Unfinished jobs, as `(kiosk, job id)`; only `kiosk`'s when given.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn pending(&self, kiosk: Option<&KioskId>) -> Result<Vec<(KioskId, JobId)>, StoreError> {
        let iter = match kiosk {
            Some(k) => self.pending.scan_prefix(kiosk_prefix(k)),
            None => self.pending.iter(),
        };
        let mut out = Vec::new();
        for item in iter {
            let (key, _) = item?;
            let Some(split) = key.iter().position(|b| *b == 0) else {
                continue;
            };
            let kiosk = std::str::from_utf8(&key[..split])
                .ok()
                .and_then(|s| KioskId::new(s).ok());
            let job = std::str::from_utf8(&key[split + 1..])
                .ok()
                .and_then(|s| JobId::new(s).ok());
            if let (Some(k), Some(j)) = (kiosk, job) {
                out.push((k, j));
            }
        }
        Ok(out)
    }

    /// Number of unfinished jobs of `kiosk`.
    pub fn pending_count(&self, kiosk: &KioskId) -> usize {
        self.pending.scan_prefix(kiosk_prefix(kiosk)).count()
    }

    /// Reads a kiosk's record.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn kiosk(&self, kiosk: &KioskId) -> Result<Option<KioskRecord>, StoreError> {
        let key = kiosk.as_str().as_bytes();
        match self.kiosks.get(key)? {
            Some(v) => Ok(Some(decode(KIOSK_V, key, &v)?)),
            None => Ok(None),
        }
    }

    /// Every kiosk record, ordered by id.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn kiosks(&self) -> Result<Vec<KioskRecord>, StoreError> {
        self.kiosks
            .iter()
            .map(|item| {
                let (k, v) = item?;
                decode(KIOSK_V, &k, &v)
            })
            .collect()
    }

    /// Writes a kiosk's record.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn put_kiosk(&self, rec: &KioskRecord) -> Result<(), StoreError> {
        let bytes = encode(KIOSK_V, rec.kiosk_id.as_str(), rec)?;
        self.kiosks
            .insert(rec.kiosk_id.as_str().as_bytes(), bytes)?;
        Ok(())
    }

    /// Deletes finished jobs whose last transition is older than `before`,
    /// with their idempotency keys. Returns how many jobs were deleted.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn purge_finished(&self, before: Timestamp) -> Result<usize, StoreError> {
        let mut doomed = Vec::new();
        for item in self.jobs.iter() {
            let (k, v) = item?;
            let Ok(job) = decode_job(&k, &v) else {
                continue;
            };
            let last = job.history.last().map_or(job.accepted_at, |t| t.at);
            if job.is_settled() && last < before {
                doomed.push(job);
            }
        }
        let doomed_ids: std::collections::HashSet<&JobId> =
            doomed.iter().map(|j| &j.job_id).collect();
        let mut idem_doomed = Vec::new();
        for item in self.idempotency.iter() {
            let (k, v) = item?;
            if let Ok(rec) = decode::<IdempotencyRecord>(IDEM_V, &k, &v)
                && doomed_ids.contains(&rec.job_id)
            {
                idem_doomed.push(k);
            }
        }
        for k in idem_doomed {
            self.idempotency.remove(k)?;
        }
        for job in &doomed {
            self.jobs.remove(job.job_id.as_str().as_bytes())?;
            self.counts.add(job.state, -1);
        }
        Ok(doomed.len())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::Utc;

    fn k(s: &str) -> KioskId {
        KioskId::new(s).unwrap()
    }
    fn j(s: &str) -> JobId {
        JobId::new(s).unwrap()
    }

    /// Opens the store, retrying while a just-dropped instance still holds
    /// sled's file lock.
    pub(crate) fn reopen(dir: &std::path::Path) -> Store {
        for _ in 0..100 {
            if let Ok(s) = Store::open(dir) {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Store::open(dir).unwrap()
    }

    fn job(id: &str, kiosk: &str) -> JobRecord {
        let now = Utc::now();
        JobRecord {
            job_id: j(id),
            kiosk_id: k(kiosk),
            printer: "receipt".into(),
            document: Some(r#"{"kind":"text","text":"x"}"#.into()),
            copies: 1,
            created_at: now,
            expires_at: Some(now + chrono::Duration::hours(1)),
            state: JobState::Queued,
            reason: None,
            history: vec![Transition {
                state: JobState::Queued,
                at: now,
                reason: None,
            }],
            origin: Origin::Http {
                api_key: "test".into(),
            },
            reprint_of: None,
            accepted_at: now,
            gateway_expired: false,
            bytes: None,
        }
    }

    #[test]
    fn create_idempotency_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let a = s
                .create_job(job("a", "k1"), Some(("key-1", [1; 32])))
                .unwrap();
            assert!(matches!(a, CreateOutcome::Created(_)));
            // Same key, same request: same job, not a new one.
            let b = s
                .create_job(job("b", "k1"), Some(("key-1", [1; 32])))
                .unwrap();
            assert!(matches!(b, CreateOutcome::Replayed(ref r) if r.job_id.as_str() == "a"));
            // Same key, other request.
            let c = s
                .create_job(job("c", "k1"), Some(("key-1", [2; 32])))
                .unwrap();
            assert!(matches!(c, CreateOutcome::KeyReused));
            // Same key on another kiosk is another key.
            let d = s
                .create_job(job("d", "k2"), Some(("key-1", [2; 32])))
                .unwrap();
            assert!(matches!(d, CreateOutcome::Created(_)));
            assert!(matches!(
                s.create_job(job("a", "k1"), None).unwrap(),
                CreateOutcome::JobIdTaken
            ));
            assert!(s.job(&j("b")).unwrap().is_none());
            assert_eq!(s.counts().get(JobState::Queued), 2);
        }
        let s = reopen(dir.path());
        assert_eq!(s.counts().get(JobState::Queued), 2);
        assert_eq!(s.pending(None).unwrap().len(), 2);
        assert_eq!(s.pending(Some(&k("k1"))).unwrap(), vec![(k("k1"), j("a"))]);
        assert_eq!(s.pending_count(&k("k2")), 1);
    }

    #[test]
    fn reports_move_forward_only_and_clear_pending() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.create_job(job("a", "k1"), None).unwrap();
        let now = Utc::now();
        let r = s
            .apply_report(
                &k("k1"),
                &j("a"),
                JobState::Received,
                now,
                None,
                None,
                Source::Kiosk,
            )
            .unwrap();
        assert!(matches!(
            r,
            ReportOutcome::Applied {
                from: Some(JobState::Queued),
                ..
            }
        ));
        assert!(matches!(
            s.apply_report(
                &k("k1"),
                &j("a"),
                JobState::Received,
                now,
                None,
                None,
                Source::Kiosk
            )
            .unwrap(),
            ReportOutcome::Duplicate
        ));
        assert_eq!(s.pending_count(&k("k1")), 1);
        s.apply_report(
            &k("k1"),
            &j("a"),
            JobState::Printed,
            now,
            None,
            None,
            Source::Kiosk,
        )
        .unwrap();
        assert_eq!(s.pending_count(&k("k1")), 0);
        assert!(matches!(
            s.apply_report(
                &k("k1"),
                &j("a"),
                JobState::Failed,
                now,
                Some("x".into()),
                None,
                Source::Kiosk
            )
            .unwrap(),
            ReportOutcome::Conflict(_)
        ));
        assert!(matches!(
            s.apply_report(
                &k("k2"),
                &j("a"),
                JobState::Failed,
                now,
                None,
                None,
                Source::Kiosk
            )
            .unwrap(),
            ReportOutcome::WrongKiosk
        ));
        let rec = s.job(&j("a")).unwrap().unwrap();
        let states: Vec<_> = rec.history.iter().map(|t| t.state).collect();
        assert_eq!(
            states,
            [JobState::Queued, JobState::Received, JobState::Printed]
        );
        assert_eq!(s.counts().get(JobState::Printed), 1);
        assert_eq!(s.counts().get(JobState::Queued), 0);
    }

    #[test]
    fn result_before_mqtt_job_then_job_fills_in() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let now = Utc::now();
        let r = s
            .apply_report(
                &k("k1"),
                &j("m"),
                JobState::Printed,
                now,
                None,
                None,
                Source::Kiosk,
            )
            .unwrap();
        assert!(matches!(r, ReportOutcome::Applied { from: None, .. }));
        let wire: kiosk_schemas::PrintJob = serde_json::from_value(serde_json::json!({
            "v": 1, "job_id": "m", "printer": "receipt",
            "document": {"kind": "text", "text": "hi"}
        }))
        .unwrap();
        assert_eq!(
            s.record_mqtt_job(&k("k1"), &wire).unwrap(),
            MqttJobOutcome::Completed
        );
        assert_eq!(
            s.record_mqtt_job(&k("k1"), &wire).unwrap(),
            MqttJobOutcome::Known
        );
        assert_eq!(
            s.record_mqtt_job(&k("k2"), &wire).unwrap(),
            MqttJobOutcome::WrongKiosk
        );
        let rec = s.job(&j("m")).unwrap().unwrap();
        assert_eq!(rec.state, JobState::Printed);
        assert!(rec.document.is_some());
        assert_eq!(rec.history.first().unwrap().state, JobState::Queued);
        assert_eq!(s.pending_count(&k("k1")), 0);
    }

    #[test]
    fn kiosk_report_replaces_gateway_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.create_job(job("a", "k1"), None).unwrap();
        let now = Utc::now();
        s.apply_report(
            &k("k1"),
            &j("a"),
            JobState::Expired,
            now,
            None,
            None,
            Source::Gateway,
        )
        .unwrap();
        // Still pending: the kiosk is asked what really happened.
        assert_eq!(s.pending_count(&k("k1")), 1);
        let r = s
            .apply_report(
                &k("k1"),
                &j("a"),
                JobState::Printed,
                now,
                None,
                None,
                Source::Kiosk,
            )
            .unwrap();
        assert!(matches!(
            r,
            ReportOutcome::Applied {
                from: Some(JobState::Expired),
                ..
            }
        ));
        assert_eq!(s.pending_count(&k("k1")), 0);
        let rec = s.job(&j("a")).unwrap().unwrap();
        assert_eq!(rec.state, JobState::Printed);
        assert!(!rec.gateway_expired);
        assert_eq!(s.counts().get(JobState::Expired), 0);
    }

    #[test]
    fn byte_counts_of_a_failed_write_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let now = Utc::now();
        let counts = ByteCounts::reported(Some(4096), Some(10_000));
        assert_eq!(counts.map(|c| (c.written, c.total)), Some((4096, 10_000)));
        assert_eq!(ByteCounts::reported(Some(1), None), None);
        for id in ["failed", "printed"] {
            s.create_job(job(id, "k1"), None).unwrap();
        }
        s.apply_report(
            &k("k1"),
            &j("failed"),
            JobState::Failed,
            now,
            Some("interrupted".into()),
            counts,
            Source::Kiosk,
        )
        .unwrap();
        // Counts belong to failed jobs only.
        s.apply_report(
            &k("k1"),
            &j("printed"),
            JobState::Printed,
            now,
            None,
            counts,
            Source::Kiosk,
        )
        .unwrap();
        drop(s);
        let s = reopen(dir.path());
        assert_eq!(s.job(&j("failed")).unwrap().unwrap().bytes, counts);
        assert_eq!(s.job(&j("printed")).unwrap().unwrap().bytes, None);
    }

    #[test]
    fn version_1_job_records_are_read_and_rewritten_as_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let now = Utc::now();
        let old = JobRecordV1 {
            job_id: j("old"),
            kiosk_id: k("k1"),
            printer: "receipt".into(),
            document: None,
            copies: 2,
            created_at: now,
            expires_at: None,
            state: JobState::Received,
            reason: None,
            history: Vec::new(),
            origin: Origin::Mqtt,
            reprint_of: None,
            accepted_at: now,
            gateway_expired: false,
        };
        s.jobs
            .insert("old", record::encode(JOB_V1, &old).unwrap())
            .unwrap();
        let rec = s.job(&j("old")).unwrap().unwrap();
        assert_eq!(
            (rec.copies, rec.state, rec.bytes),
            (2, JobState::Received, None)
        );
        s.apply_report(
            &k("k1"),
            &j("old"),
            JobState::Failed,
            now,
            Some("interrupted".into()),
            ByteCounts::reported(Some(0), Some(100)),
            Source::Kiosk,
        )
        .unwrap();
        assert_eq!(s.jobs.get("old").unwrap().unwrap()[0], JOB_V);
        let rec = s.job(&j("old")).unwrap().unwrap();
        assert_eq!(
            rec.bytes,
            Some(ByteCounts {
                written: 0,
                total: 100
            })
        );
        drop(s);
        // Counted by state when opened, whatever the version.
        assert_eq!(reopen(dir.path()).counts().get(JobState::Failed), 1);
    }

    #[test]
    fn purge_removes_only_old_finished_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.create_job(job("old", "k1"), Some(("i", [0; 32])))
            .unwrap();
        s.create_job(job("open", "k1"), None).unwrap();
        let long_ago = Utc::now() - chrono::Duration::days(60);
        s.apply_report(
            &k("k1"),
            &j("old"),
            JobState::Printed,
            long_ago,
            None,
            None,
            Source::Kiosk,
        )
        .unwrap();
        assert_eq!(
            s.purge_finished(Utc::now() - chrono::Duration::days(30))
                .unwrap(),
            1
        );
        assert!(s.job(&j("old")).unwrap().is_none());
        assert!(s.job(&j("open")).unwrap().is_some());
        assert_eq!(s.counts().get(JobState::Printed), 0);
    }
}
