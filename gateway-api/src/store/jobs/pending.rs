//! The index of unfinished jobs (tree `pending`): the jobs the gateway
//! keeps delivering.

use kiosk_schemas::{JobId, KioskId};
use kiosk_store::keys;

use super::index::Position;
use crate::store::{Store, StoreError};

pub(super) fn pending_key(kiosk: &KioskId, job: &JobId) -> Vec<u8> {
    keys::compound(kiosk.as_str(), job.as_str().as_bytes())
}

/// The `(kiosk, job id)` of a `pending` (or `cancels`) key; `None` for a
/// key that does not read as one.
pub(super) fn split_key(key: &[u8]) -> Option<(KioskId, JobId)> {
    let (kiosk, job) = keys::split(key)?;
    let kiosk = KioskId::new(kiosk).ok()?;
    let job = std::str::from_utf8(job)
        .ok()
        .and_then(|s| JobId::new(s).ok())?;
    Some((kiosk, job))
}

impl Store {
    /// Stops delivering a job without changing its state (a `received` job
    /// whose outcome the kiosk never reported within the grace period).
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn drop_pending(&self, kiosk: &KioskId, job_id: &JobId) -> Result<(), StoreError> {
        self.pending.remove(pending_key(kiosk, job_id))?;
        Ok(())
    }

    /// Removes the pending entry, payload and entries in the indexes for
    /// listing of `job_id` if its record is missing: what a
    /// [`Store::create_job`] cut short by a crash left (nothing, while one
    /// is under way: it holds the creation lock until its record is
    /// written). The index entries are found from the time the pending
    /// entry holds (entries written before it held one have none: no
    /// index entries either). Returns whether they were removed.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn drop_unfinished(&self, kiosk: &KioskId, job_id: &JobId) -> Result<bool, StoreError> {
        let _creating = self.creating();
        let key = job_id.as_str().as_bytes();
        if self.jobs.contains_key(key)? {
            return Ok(false);
        }
        let pkey = pending_key(kiosk, job_id);
        if let Some(at) = self.pending.get(&pkey)?
            && at.len() == 8
        {
            let mut pos = at.to_vec();
            pos.extend_from_slice(key);
            if let Some(pos) = Position::from_bytes(&pos) {
                // A creation writes its job as `queued`.
                self.index_remove(kiosk, kiosk_schemas::JobState::Queued, &pos)?;
            }
        }
        self.payloads.remove(key)?;
        self.pending.remove(pkey)?;
        Ok(true)
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
            if let Some(pair) = split_key(&key) {
                out.push(pair);
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
}
