//! The indexes of jobs for listing them newest first, a page at a time
//! ([`Store::list_jobs`]), and building them for a store written before
//! they existed.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `jobs_by_time` | [`Position`] | empty |
//! | `jobs_by_kiosk` | kiosk id `\0` [`Position`] | empty |
//! | `jobs_by_state` | state (`queued`, ...) `\0` [`Position`] | empty |
//!
//! A position is when the gateway first stored the job (`accepted_at`,
//! which never changes: `created_at` is the publisher's claim for jobs
//! seen over MQTT, and is rewritten when a job known from its result is
//! seen), then the job's id; so sled's order is the listing's order and a
//! listing goes on after the last position it returned, wherever new jobs
//! land.
//!
//! Who keeps them: [`Store::create_job`] writes a job's entries before its
//! record (its commit point; a crash in between leaves entries that
//! listing skips, and that [`Store::drop_unfinished`] removes); the writes
//! in sled transactions ([`Store::record_mqtt_job`],
//! [`Store::apply_report`]) change them in the same transaction (a new
//! state moves the `jobs_by_state` entry); [`Store::purge_finished`]
//! removes them after the record. Listing trusts an entry only when the
//! job's record is there and at that position.

use kiosk_schemas::{JobId, JobState, KioskId, Timestamp};
use kiosk_store::keys;
use sled::transaction::{TransactionalTree, UnabortableTransactionError};

use super::records::{JobRecord, decode_job};
use crate::store::{Store, StoreError};

/// Key in tree `meta` whose presence says that the indexes cover every job.
const BUILT: &[u8] = b"jobs_index_v1";

/// A job's place in the listing order: 8 bytes of time ([`time_key`]),
/// then the job id. Sorting positions as bytes sorts jobs newest first,
/// ties by job id (ids have no NUL, so a shorter one sorts first).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Position(Vec<u8>);

impl Position {
    /// The position of the job `job_id` stored at `accepted_at`.
    pub(super) fn new(accepted_at: Timestamp, job_id: &JobId) -> Self {
        let mut v = time_key(accepted_at).to_vec();
        v.extend_from_slice(job_id.as_str().as_bytes());
        Position(v)
    }

    /// The position of `rec`.
    pub(super) fn of(rec: &JobRecord) -> Self {
        Position::new(rec.accepted_at, &rec.job_id)
    }

    /// A position read back from a key or cursor; `None` unless it has a
    /// time and a valid job id.
    pub(super) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let id = std::str::from_utf8(bytes.get(8..)?).ok()?;
        JobId::new(id).ok()?;
        Some(Position(bytes.to_vec()))
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The job id, as the key of its record.
    pub(super) fn job_key(&self) -> &[u8] {
        &self.0[8..]
    }
}

/// `at` as the time of a [`Position`]: nanoseconds since the epoch
/// (clamped to what an `i64` holds, years 1677 to 2262), shifted so that
/// earlier instants are smaller numbers, then inverted so that later
/// instants sort first; big-endian ([`keys::be_u64`]).
pub(super) fn time_key(at: Timestamp) -> [u8; 8] {
    let nanos = at.timestamp_nanos_opt().unwrap_or(if at.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    });
    keys::be_u64(!((nanos as u64) ^ (1 << 63)))
}

/// Key in `jobs_by_kiosk`.
pub(super) fn kiosk_entry(kiosk: &KioskId, pos: &Position) -> Vec<u8> {
    keys::compound(kiosk.as_str(), pos.as_bytes())
}

/// Key in `jobs_by_state`.
pub(super) fn state_entry(state: JobState, pos: &Position) -> Vec<u8> {
    keys::compound(state.as_str(), pos.as_bytes())
}

/// The index trees inside a sled transaction.
pub(super) struct IndexTx<'a> {
    pub(super) by_time: &'a TransactionalTree,
    pub(super) by_kiosk: &'a TransactionalTree,
    pub(super) by_state: &'a TransactionalTree,
}

impl IndexTx<'_> {
    /// Adds the entries of a new job record `rec`.
    pub(super) fn insert(&self, rec: &JobRecord) -> Result<(), UnabortableTransactionError> {
        let pos = Position::of(rec);
        self.by_time.insert(pos.as_bytes(), &[][..])?;
        self.by_kiosk
            .insert(kiosk_entry(&rec.kiosk_id, &pos), &[][..])?;
        self.by_state
            .insert(state_entry(rec.state, &pos), &[][..])?;
        Ok(())
    }

    /// Moves the state entry of `rec`, which was in state `from`.
    pub(super) fn moved(
        &self,
        from: JobState,
        rec: &JobRecord,
    ) -> Result<(), UnabortableTransactionError> {
        if from != rec.state {
            let pos = Position::of(rec);
            self.by_state.remove(state_entry(from, &pos))?;
            self.by_state
                .insert(state_entry(rec.state, &pos), &[][..])?;
        }
        Ok(())
    }
}

impl Store {
    /// Writes the entries of `rec` one by one, without a transaction: for
    /// [`Store::create_job`], before the record.
    pub(super) fn index_insert(&self, rec: &JobRecord) -> Result<(), StoreError> {
        let pos = Position::of(rec);
        self.by_time.insert(pos.as_bytes(), &[][..])?;
        self.by_kiosk
            .insert(kiosk_entry(&rec.kiosk_id, &pos), &[][..])?;
        self.by_state
            .insert(state_entry(rec.state, &pos), &[][..])?;
        Ok(())
    }

    /// Removes the entries of the job of `kiosk` at `pos` in `state`.
    pub(super) fn index_remove(
        &self,
        kiosk: &KioskId,
        state: JobState,
        pos: &Position,
    ) -> Result<(), StoreError> {
        self.by_state.remove(state_entry(state, pos))?;
        self.by_kiosk.remove(kiosk_entry(kiosk, pos))?;
        self.by_time.remove(pos.as_bytes())?;
        Ok(())
    }

    /// Builds the indexes from the job records unless tree `meta` says
    /// they were built; flushes, then records that they were. Returns how
    /// many jobs were indexed (0 when nothing was to do). A crash before
    /// the marker builds them again at the next open, from empty trees.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure or an unreadable record.
    pub(in crate::store) fn build_job_index(&self) -> Result<usize, StoreError> {
        if self.meta.contains_key(BUILT)? {
            return Ok(0);
        }
        self.by_time.clear()?;
        self.by_kiosk.clear()?;
        self.by_state.clear()?;
        let mut indexed = 0;
        for item in self.jobs.iter() {
            let (k, v) = item?;
            self.index_insert(&decode_job(&k, &v)?)?;
            indexed += 1;
        }
        self.db.flush()?;
        self.meta.insert(BUILT, &[][..])?;
        self.db.flush()?;
        Ok(indexed)
    }
}
