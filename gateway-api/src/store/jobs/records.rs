//! Job records: the current version ([`JobRecord`]) and the older ones,
//! reading them, and converting older ones when the store opens (their
//! document moved to `payloads` as wire bytes).

use kiosk_schemas::{JobId, JobState, KioskId, PrintJob, Timestamp, V1, wire};
use serde::{Deserialize, Serialize};
use sled::Transactional;

use crate::store::{Store, StoreError, decode, encode};

/// Version of the job records written: [`JobRecord`].
pub(super) const JOB_V: u8 = 3;
/// Job records with their document inside (as JSON) and byte counts.
pub(super) const JOB_V2: u8 = 2;
/// Job records with their document inside and without byte counts.
pub(super) const JOB_V1: u8 = 1;

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
pub(super) struct JobRecordV1 {
    pub(super) job_id: JobId,
    pub(super) kiosk_id: KioskId,
    pub(super) printer: String,
    pub(super) document: Option<String>,
    pub(super) copies: u8,
    pub(super) created_at: Timestamp,
    pub(super) expires_at: Option<Timestamp>,
    pub(super) state: JobState,
    pub(super) reason: Option<String>,
    pub(super) history: Vec<Transition>,
    pub(super) origin: Origin,
    pub(super) reprint_of: Option<JobId>,
    pub(super) accepted_at: Timestamp,
    pub(super) gateway_expired: bool,
}

/// A [`JobRecord`] as version 2 stored it: with the document inside, as
/// JSON (`None` while only a result had been seen).
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub(super) struct JobRecordV2 {
    pub(super) job_id: JobId,
    pub(super) kiosk_id: KioskId,
    pub(super) printer: String,
    pub(super) document: Option<String>,
    pub(super) copies: u8,
    pub(super) created_at: Timestamp,
    pub(super) expires_at: Option<Timestamp>,
    pub(super) state: JobState,
    pub(super) reason: Option<String>,
    pub(super) history: Vec<Transition>,
    pub(super) origin: Origin,
    pub(super) reprint_of: Option<JobId>,
    pub(super) accepted_at: Timestamp,
    pub(super) gateway_expired: bool,
    pub(super) bytes: Option<ByteCounts>,
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
pub(in crate::store) fn decode_job(key: &[u8], bytes: &[u8]) -> Result<JobRecord, StoreError> {
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

impl Store {
    /// Rewrites job records of older versions at the current one, their
    /// document moved to `payloads` as wire bytes. Returns how many.
    pub(in crate::store) fn convert_old_jobs(&self) -> Result<usize, StoreError> {
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
}
