//! Retention: finished jobs are deleted after a while, with their
//! idempotency keys.

use kiosk_schemas::Timestamp;
use kiosk_store::idempotency;

use super::index::Position;
use super::records::decode_job;
use crate::store::{Store, StoreError};

impl Store {
    /// Deletes finished jobs whose last transition is older than `before`,
    /// with their idempotency keys and their entries in the indexes for
    /// listing. Returns how many jobs were deleted.
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
            // After the record: entries left by a crash here are skipped
            // by listing, while a record without them would not be listed.
            self.index_remove(&job.kiosk_id, job.state, &Position::of(job))?;
            self.counts.add(job.state, -1);
        }
        Ok(doomed.len())
    }
}
