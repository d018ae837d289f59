//! Print jobs: their records (tree `jobs`), their wire bytes (`payloads`),
//! the index of unfinished jobs (`pending`) and idempotency keys.

use kiosk_schemas::{JobId, JobState, KioskId, PrintJob, Timestamp, V1, wire};
use kiosk_store::idempotency::{self, Claim, Seen};
use kiosk_store::keys;
use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::{Store, StoreError, abort, decode, encode};

use crate::state::Step;

/// Version of the job records written: [`JobRecord`].
const JOB_V: u8 = 3;
/// Job records with their document inside (as JSON) and byte counts.
const JOB_V2: u8 = 2;
/// Job records with their document inside and without byte counts.
const JOB_V1: u8 = 1;

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

/// A print job as the gateway remembers it. What is printed — the job as
/// it travels, [`PrintJob`] JSON — is not in here but in `payloads`,
/// stored once and published as it is ([`Store::payload`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id.
    pub job_id: JobId,
    /// The kiosk it is for.
    pub kiosk_id: KioskId,
    /// Logical printer name on the kiosk.
    pub printer: String,
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

/// A [`JobRecord`] as version 2 stored it: with the document inside, as
/// JSON (`None` while only a result had been seen).
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct JobRecordV2 {
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
    bytes: Option<ByteCounts>,
}

impl From<JobRecordV1> for JobRecordV2 {
    fn from(r: JobRecordV1) -> Self {
        JobRecordV2 {
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

impl JobRecordV2 {
    /// The current record and the document that was inside.
    fn split(self) -> (JobRecord, Option<String>) {
        let rec = JobRecord {
            job_id: self.job_id,
            kiosk_id: self.kiosk_id,
            printer: self.printer,
            copies: self.copies,
            created_at: self.created_at,
            expires_at: self.expires_at,
            state: self.state,
            reason: self.reason,
            history: self.history,
            origin: self.origin,
            reprint_of: self.reprint_of,
            accepted_at: self.accepted_at,
            gateway_expired: self.gateway_expired,
            bytes: self.bytes,
        };
        (rec, self.document)
    }
}

/// Reads an older job record: the record and the document it held.
fn decode_old_job(
    key: &[u8],
    bytes: &[u8],
) -> Result<Option<(JobRecord, Option<String>)>, StoreError> {
    let old: JobRecordV2 = match bytes.first() {
        Some(&JOB_V1) => decode::<JobRecordV1>(JOB_V1, key, bytes)?.into(),
        Some(&JOB_V2) => decode(JOB_V2, key, bytes)?,
        _ => return Ok(None),
    };
    Ok(Some(old.split()))
}

/// Reads a job record of any version; errors name `key`. (Older versions
/// are converted when the store opens; their document is in `payloads`.)
pub(super) fn decode_job(key: &[u8], bytes: &[u8]) -> Result<JobRecord, StoreError> {
    match decode_old_job(key, bytes)? {
        Some((rec, _)) => Ok(rec),
        None => decode(JOB_V, key, bytes),
    }
}

/// The wire bytes of the job `rec` with `document` (JSON), for records
/// written before jobs were stored as their bytes.
fn payload_of_old(rec: &JobRecord, document: &str) -> Result<Vec<u8>, serde_json::Error> {
    Ok(wire::encode(&PrintJob {
        v: V1,
        job_id: rec.job_id.clone(),
        printer: rec.printer.clone(),
        document: serde_json::from_str(document)?,
        copies: rec.copies,
        created_at: rec.created_at,
        expires_at: rec.expires_at,
    }))
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
    /// The record of `job` for `kiosk` as first stored at `now`: `queued`,
    /// with that one transition, nothing reported yet.
    pub fn queued(
        kiosk: &KioskId,
        job: &PrintJob,
        origin: Origin,
        reprint_of: Option<JobId>,
        now: Timestamp,
    ) -> Self {
        JobRecord {
            job_id: job.job_id.clone(),
            kiosk_id: kiosk.clone(),
            printer: job.printer.clone(),
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
            origin,
            reprint_of,
            accepted_at: now,
            gateway_expired: false,
            bytes: None,
        }
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
    keys::compound(kiosk.as_str(), job.as_str().as_bytes())
}

impl Store {
    /// Rewrites job records of older versions at the current one, their
    /// document moved to `payloads` as wire bytes. Returns how many.
    pub(super) fn convert_old_jobs(&self) -> Result<usize, StoreError> {
        let mut converted = 0;
        for item in self.jobs.iter() {
            let (key, bytes) = item?;
            let Some((rec, document)) = decode_old_job(&key, &bytes)? else {
                continue;
            };
            let payload = match document.as_deref().map(|d| payload_of_old(&rec, d)) {
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    tracing::error!(job_id = %rec.job_id, error = %e,
                        "stored document unreadable; the job cannot be sent again");
                    None
                }
                None => None,
            };
            let new = encode(JOB_V, rec.job_id.as_str(), &rec)?;
            (&self.jobs, &self.payloads)
                .transaction(|(jobs, payloads)| {
                    if let Some(p) = &payload {
                        payloads.insert(&key, p.as_slice())?;
                    }
                    jobs.insert(&key, new.as_slice())?;
                    Ok(())
                })
                .map_err(StoreError::from)?;
            converted += 1;
        }
        Ok(converted)
    }

    /// Stores a new job (state `queued`, indexed as pending) with its wire
    /// bytes `payload`, unless its Idempotency-Key was seen before.
    /// `idempotency` is the key and the SHA-256 of the request it came with.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn create_job(
        &self,
        job: JobRecord,
        payload: &[u8],
        idempotency: Option<(&str, [u8; 32])>,
    ) -> Result<CreateOutcome, StoreError> {
        let job_key = job.job_id.as_str().as_bytes().to_vec();
        let claim = idempotency
            .map(|(key, sha)| Claim::new(job.kiosk_id.as_str(), key, sha, job.job_id.as_str()))
            .transpose()?;
        let job_bytes = encode(JOB_V, job.job_id.as_str(), &job)?;
        let pending = pending_key(&job.kiosk_id, &job.job_id);

        let trees = (&self.jobs, &self.payloads, &self.pending, &self.idempotency);
        let outcome = trees.transaction(|(jobs, payloads, pend, idem)| {
            if let Some(claim) = &claim {
                match claim.check(idem)? {
                    Seen::Reused => return Ok(CreateOutcome::KeyReused),
                    // A key whose job was purged by retention is fresh again.
                    Seen::Replay(prev) => {
                        if let Some(bytes) = jobs.get(prev.as_bytes())? {
                            let rec = decode_job(&job_key, &bytes).map_err(abort)?;
                            return Ok(CreateOutcome::Replayed(rec));
                        }
                    }
                    Seen::New => {}
                }
            }
            if jobs.get(&job_key)?.is_some() {
                return Ok(CreateOutcome::JobIdTaken);
            }
            jobs.insert(job_key.as_slice(), job_bytes.as_slice())?;
            payloads.insert(job_key.as_slice(), payload)?;
            pend.insert(pending.as_slice(), &[][..])?;
            if let Some(claim) = &claim {
                claim.record(idem)?;
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

    /// The job's wire bytes ([`PrintJob`] JSON) as stored and published;
    /// `None` while only a result was seen of a job published over MQTT.
    ///
    /// # Errors
    /// [`StoreError::Sled`] on storage failure.
    pub fn payload(&self, job_id: &JobId) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.payloads.get(job_id.as_str().as_bytes())?)
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
    /// the gateway's own publish coming back) with the bytes it came as.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn record_mqtt_job(
        &self,
        kiosk: &KioskId,
        job: &PrintJob,
        payload: &[u8],
    ) -> Result<MqttJobOutcome, StoreError> {
        let key = job.job_id.as_str().as_bytes();
        let pkey = pending_key(kiosk, &job.job_id);
        let trees = (&self.jobs, &self.payloads, &self.pending);
        let outcome = trees.transaction(|(jobs, payloads, pend)| {
            let now = chrono::Utc::now();
            match jobs.get(key)? {
                Some(bytes) => {
                    let mut rec = decode_job(key, &bytes).map_err(abort)?;
                    if &rec.kiosk_id != kiosk {
                        return Ok(MqttJobOutcome::WrongKiosk);
                    }
                    if payloads.get(key)?.is_some() {
                        return Ok(MqttJobOutcome::Known);
                    }
                    rec.printer = job.printer.clone();
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
                    payloads.insert(key, payload)?;
                    Ok(MqttJobOutcome::Completed)
                }
                None => {
                    // Published straight over MQTT: as first recorded.
                    let rec = JobRecord::queued(kiosk, job, Origin::Mqtt, None, now);
                    let bytes = encode(JOB_V, job.job_id.as_str(), &rec).map_err(abort)?;
                    jobs.insert(key, bytes)?;
                    payloads.insert(key, payload)?;
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
            Some(k) => self.pending.scan_prefix(keys::prefix(k.as_str())),
            None => self.pending.iter(),
        };
        let mut out = Vec::new();
        for item in iter {
            let (key, _) = item?;
            let Some((kiosk, job)) = keys::split(&key) else {
                continue;
            };
            let kiosk = KioskId::new(kiosk).ok();
            let job = std::str::from_utf8(job)
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
        self.pending
            .scan_prefix(keys::prefix(kiosk.as_str()))
            .count()
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
        let doomed_ids: std::collections::HashSet<&str> =
            doomed.iter().map(|j| j.job_id.as_str()).collect();
        let mut idem_doomed = Vec::new();
        for item in self.idempotency.iter() {
            let (k, v) = item?;
            if let Ok(target) = idempotency::target_of(&k, &v)
                && doomed_ids.contains(target.as_str())
            {
                idem_doomed.push(k);
            }
        }
        for k in idem_doomed {
            self.idempotency.remove(k)?;
        }
        for job in &doomed {
            let key = job.job_id.as_str().as_bytes();
            self.payloads.remove(key)?;
            self.jobs.remove(key)?;
            self.counts.add(job.state, -1);
        }
        Ok(doomed.len())
    }
}

#[cfg(test)]
mod tests;
