//! New jobs: created over HTTP (with their Idempotency-Key) and seen on
//! `kiosk/<id>/print` over MQTT.

use kiosk_schemas::{JobState, KioskId, PrintJob};
use kiosk_store::idempotency::{Claim, Seen};
use sled::Transactional;

use super::index::{IndexTx, time_key};
use super::pending::pending_key;
use super::records::{JOB_V, JobRecord, Origin, Transition, decode_job};
use crate::store::{Store, StoreError, abort, encode};

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

impl Store {
    /// Stores a new job (state `queued`, indexed as pending and for
    /// listing) with its wire bytes `payload`, unless its Idempotency-Key
    /// was seen before.
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
        // The pending entry holds the job's time, so that what a creation
        // cut short left can be found without the record.
        let stored_at = time_key(job.accepted_at);

        // No sled transaction: every transaction waits for a flush in
        // progress (sled 0.34 takes a process-wide lock for both), while
        // single writes go on beside it, so requests arriving during one
        // flush are ready for the next (README, Benchmarks). Instead,
        // the other writers that create job records are kept out by the
        // creation lock, and the writes go in an order whose every prefix
        // is harmless, because sled recovers its log up to the first write
        // that did not reach the disk (a prefix, by log sequence number):
        // 1. the idempotency claim: alone, its job is missing and the key
        //    is fresh again (as for a purged job);
        // 2. the pending entry, then the payload, then the entries of the
        //    indexes for listing: without their job, listing skips the
        //    latter, and delivery's timer removes them all, found from the
        //    pending entry ([`Store::drop_unfinished`]);
        // 3. the job record, the commit point.
        let _creating = self.creating();
        if let Some(claim) = &claim {
            match claim.check_in(&self.idempotency)? {
                Seen::Reused => return Ok(CreateOutcome::KeyReused),
                // A key whose job is gone (purged by retention, or never
                // written before a crash) is fresh again.
                Seen::Replay(prev) => {
                    if let Some(bytes) = self.jobs.get(prev.as_bytes())? {
                        let rec = decode_job(prev.as_bytes(), &bytes)?;
                        return Ok(CreateOutcome::Replayed(rec));
                    }
                }
                Seen::New => {}
            }
        }
        if self.jobs.get(&job_key)?.is_some() {
            return Ok(CreateOutcome::JobIdTaken);
        }
        if let Some(claim) = &claim {
            claim.record_in(&self.idempotency)?;
        }
        self.pending.insert(pending.as_slice(), &stored_at[..])?;
        self.payloads.insert(job_key.as_slice(), payload)?;
        self.index_insert(&job)?;
        self.jobs.insert(job_key.as_slice(), job_bytes)?;
        let outcome = CreateOutcome::Created(job);
        if let CreateOutcome::Created(j) = &outcome {
            self.counts.moved(None, j.state);
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
        let trees = (
            &self.jobs,
            &self.payloads,
            &self.pending,
            &self.by_time,
            &self.by_kiosk,
            &self.by_state,
        );
        // It may create the record: keep creations out (before the
        // transaction, never inside it).
        let _creating = self.creating();
        let outcome =
            trees.transaction(|(jobs, payloads, pend, by_time, by_kiosk, by_state)| {
                let index = IndexTx {
                    by_time,
                    by_kiosk,
                    by_state,
                };
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
                        // The queued step happened before the result we saw
                        // first. (Its position for listing, from
                        // `accepted_at`, stays.)
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
                        pend.insert(pkey.as_slice(), &time_key(rec.accepted_at)[..])?;
                        index.insert(&rec)?;
                        Ok(MqttJobOutcome::Recorded)
                    }
                }
            })?;
        if outcome == MqttJobOutcome::Recorded {
            self.counts.moved(None, JobState::Queued);
        }
        Ok(outcome)
    }
}
