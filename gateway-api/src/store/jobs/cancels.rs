//! Cancels (`POST /v1/print-jobs/{job_id}/cancel`) and the index of cancels
//! the kiosk has not answered yet (tree `cancels`): the jobs whose `cancel`
//! command the gateway keeps sending.
//!
//! A `queued` job is `cancelled` here at once and leaves `pending`, so it
//! is never sent again; a `received` job stays `received` until its kiosk
//! reports. Both get a `cancels` entry: the kiosk may hold the job already
//! (a `queued` job was published when it was created, and the broker may
//! keep it for an offline kiosk), so it must hear of the cancel and record
//! it before the job can print. The entry goes when the kiosk reports a
//! final state for the job ([`Store::apply_report`]), or after the job's
//! grace period ([`Store::drop_cancel`]).

use kiosk_schemas::{JobId, JobState, KioskId, Timestamp};
use kiosk_store::keys;
use sled::Transactional;

use super::pending::pending_key;
use super::records::{JOB_V, JobRecord, decode_job};
use super::reports::state_changed;
use crate::events::FleetEventKind;
use crate::state::{self, Cancel};
use crate::store::{Store, StoreError, abort, encode};

/// Reason of a job the gateway cancelled before its kiosk received it.
pub const CANCELLED_QUEUED: &str = "cancelled before the kiosk received it";

/// Result of [`Store::cancel_job`].
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// No such job.
    Unknown,
    /// It was `queued`: now `cancelled`, no longer delivered; its kiosk is
    /// to be sent the `cancel` command.
    Cancelled(JobRecord),
    /// It is `received`: its kiosk is to be sent the `cancel` command;
    /// the job becomes `cancelled` when the kiosk confirms.
    Requested(JobRecord),
    /// It was cancelled before.
    AlreadyCancelled(JobRecord),
    /// It is printed, failed or expired.
    NotCancellable(JobRecord),
}

pub(super) fn cancel_key(kiosk: &KioskId, job: &JobId) -> Vec<u8> {
    pending_key(kiosk, job)
}

impl Store {
    /// Cancels `job_id` ([`state::cancel`]): in one transaction, a `queued`
    /// job becomes `cancelled` (recorded in its history, counted, and
    /// written to the event log as `print_job.state_changed`) and leaves
    /// the pending index; a `queued` or `received` job gets a `cancels`
    /// entry. Not flushed: flush before answering.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn cancel_job(&self, job_id: &JobId, now: Timestamp) -> Result<CancelOutcome, StoreError> {
        let key = job_id.as_str().as_bytes();
        let log = &self.events;
        let trees = (&self.jobs, &self.pending, &self.cancels, log.tree());
        let outcome = trees.transaction(|(jobs, pend, cancels, events)| {
            let Some(bytes) = jobs.get(key)? else {
                return Ok(CancelOutcome::Unknown);
            };
            let mut rec = decode_job(key, &bytes).map_err(abort)?;
            let ckey = cancel_key(&rec.kiosk_id, job_id);
            match state::cancel(rec.state) {
                Cancel::Refuse => Ok(CancelOutcome::NotCancellable(rec)),
                Cancel::Already => Ok(CancelOutcome::AlreadyCancelled(rec)),
                Cancel::Ask => {
                    cancels.insert(ckey.as_slice(), &[][..])?;
                    Ok(CancelOutcome::Requested(rec))
                }
                Cancel::Now => {
                    let from = rec.state;
                    rec.state = JobState::Cancelled;
                    rec.reason = Some(CANCELLED_QUEUED.to_owned());
                    rec.history.push(super::Transition {
                        state: JobState::Cancelled,
                        at: now,
                        reason: rec.reason.clone(),
                    });
                    let bytes = encode(JOB_V, job_id.as_str(), &rec).map_err(abort)?;
                    jobs.insert(key, bytes)?;
                    pend.remove(pending_key(&rec.kiosk_id, job_id))?;
                    cancels.insert(ckey.as_slice(), &[][..])?;
                    let kind = FleetEventKind::PrintJobStateChanged.name();
                    log.append(
                        events,
                        kind,
                        Some(&rec.kiosk_id),
                        state_changed(&rec, Some(from)),
                    )?;
                    Ok(CancelOutcome::Cancelled(rec))
                }
            }
        })?;
        if let CancelOutcome::Cancelled(rec) = &outcome {
            self.counts.moved(Some(JobState::Queued), rec.state);
        }
        Ok(outcome)
    }

    /// True while the kiosk of `kiosk`'s job `job_id` has not answered its
    /// cancel: the gateway keeps sending the `cancel` command.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn cancel_pending(&self, kiosk: &KioskId, job_id: &JobId) -> Result<bool, StoreError> {
        Ok(self.cancels.contains_key(cancel_key(kiosk, job_id))?)
    }

    /// Stops sending the `cancel` command for a job (its grace period
    /// passed, or its record is gone).
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn drop_cancel(&self, kiosk: &KioskId, job_id: &JobId) -> Result<(), StoreError> {
        self.cancels.remove(cancel_key(kiosk, job_id))?;
        Ok(())
    }

    /// Cancels not answered yet, as `(kiosk, job id)`; only `kiosk`'s
    /// when given.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn pending_cancels(
        &self,
        kiosk: Option<&KioskId>,
    ) -> Result<Vec<(KioskId, JobId)>, StoreError> {
        let iter = match kiosk {
            Some(k) => self.cancels.scan_prefix(keys::prefix(k.as_str())),
            None => self.cancels.iter(),
        };
        let mut out = Vec::new();
        for item in iter {
            let (key, _) = item?;
            if let Some(pair) = super::pending::split_key(&key) {
                out.push(pair);
            }
        }
        Ok(out)
    }
}
