//! Durable state of the gateway: one sled directory, these trees (and the
//! cash trees of [`crate::cash::store`]).
//!
//! | tree | key | value |
//! |---|---|---|
//! | `jobs` | job id | [`JobRecord`] |
//! | `payloads` | job id | the job's wire bytes (`PrintJob` JSON), as published |
//! | `pending` | kiosk id `\0` job id | empty: the job is not finished, keep delivering |
//! | `cancels` | kiosk id `\0` job id | empty: the job was cancelled through the API and its kiosk has not answered; keep sending it the `cancel` command |
//! | `idempotency` | kiosk id `\0` Idempotency-Key | [`kiosk_store::idempotency`] record → job id |
//! | `kiosks` | kiosk id | [`KioskRecord`] |
//! | `jobs_by_time`, `jobs_by_kiosk`, `jobs_by_state` | a job's position, under its kiosk or state | empty: the indexes for listing (`jobs::index`) |
//! | `meta` | `jobs_index_v1` | empty: the indexes cover every job (built once, when a store without them opens) |
//!
//! Records are postcard behind a version byte ([`kiosk_store::record`]);
//! jobs are at version 3 (no document inside: the job's bytes are in
//! `payloads`, stored once and published verbatim), and version 1 and 2
//! job records are converted when the store opens. Multi-tree changes run
//! in one sled transaction, so a crash never leaves a job without its index
//! entry; except a new job's ([`Store::create_job`]), whose writes go
//! without one, in an order that a crash can cut anywhere (sled recovers a
//! prefix of its log), under [`Store`]'s creation lock. Nothing here
//! flushes by itself: callers call [`Store::flush`]
//! before they acknowledge anything (HTTP 202, MQTT PUBACK), which also
//! lets them batch.
//!
//! - [`jobs`]: print jobs, their index of unfinished jobs, their indexes
//!   for listing, purging.
//! - [`kiosks`]: what the gateway knows about each kiosk.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use kiosk_schemas::JobState;
use kiosk_store::GroupCommit;

mod jobs;
mod kiosks;

pub use jobs::{
    ByteCounts, CANCELLED_QUEUED, CancelOutcome, CreateOutcome, Cursor, JobFilter, JobRecord,
    MqttJobOutcome, Origin, Page, ReportOutcome, Source, Transition,
};
pub use kiosk_store::StoreError;
pub use kiosks::KioskRecord;

pub(crate) use kiosk_store::abort;
pub(crate) use kiosk_store::record::{decode_keyed as decode, encode_keyed as encode};

/// Number of jobs in each [`JobState`], kept in memory for `/metrics`.
#[derive(Debug, Default)]
pub struct StateCounts([AtomicI64; JobState::ALL.len()]);

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
    payloads: sled::Tree,
    pending: sled::Tree,
    cancels: sled::Tree,
    idempotency: sled::Tree,
    kiosks: sled::Tree,
    /// Jobs by position (`jobs::index`).
    by_time: sled::Tree,
    /// Jobs by kiosk, then position.
    by_kiosk: sled::Tree,
    /// Jobs by state, then position.
    by_state: sled::Tree,
    /// One-time markers (the tree also holds the view token key,
    /// [`crate::cash::token`]).
    meta: sled::Tree,
    counts: Arc<StateCounts>,
    /// Held by every write that creates a job record (or removes what a
    /// creation left unfinished) from its check to its last write, so that
    /// [`Store::create_job`] needs no sled transaction. Never taken inside
    /// one: a transaction waits for sled's lock, which a creation holding
    /// this one may be waiting for too.
    creating: Arc<std::sync::Mutex<()>>,
    /// The event log ([`crate::events`]), written by the stores' changes.
    events: crate::events::EventLog,
    /// Every [`Store::flush`] of every clone (and of the cash store, which
    /// shares the database) goes through it: concurrent requests share one
    /// fsync.
    commit: GroupCommit,
}

impl Store {
    /// Opens (or creates) the database in `path`, converts job records of
    /// older versions, counts jobs by state, and builds the job indexes
    /// for listing if the store has none yet.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when the directory cannot be opened (locked by
    /// another process, permissions, corruption); [`StoreError::Record`]
    /// when a stored job cannot be read.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(path).open()?;
        let store = Store {
            jobs: db.open_tree("jobs")?,
            payloads: db.open_tree("payloads")?,
            pending: db.open_tree("pending")?,
            cancels: db.open_tree("cancels")?,
            idempotency: db.open_tree("idempotency")?,
            kiosks: db.open_tree("kiosks")?,
            by_time: db.open_tree("jobs_by_time")?,
            by_kiosk: db.open_tree("jobs_by_kiosk")?,
            by_state: db.open_tree("jobs_by_state")?,
            meta: db.open_tree("meta")?,
            commit: GroupCommit::new(db.clone()),
            events: crate::events::EventLog::open(
                &db,
                crate::cash::webhooks::old_queue_last_id(&db)?,
            )?,
            db,
            counts: Arc::default(),
            creating: Arc::default(),
        };
        let converted = store.convert_old_jobs()?;
        if converted > 0 {
            tracing::info!(
                jobs = converted,
                "converted job records to the current version"
            );
            store.db.flush()?;
        }
        for item in store.jobs.iter() {
            let (k, v) = item?;
            let job = jobs::decode_job(&k, &v)?;
            store.counts.add(job.state, 1);
        }
        let indexed = store.build_job_index()?;
        if indexed > 0 {
            tracing::info!(jobs = indexed, "built the job indexes for listing");
        }
        Ok(store)
    }

    /// The creation lock (see the field); a panic while it was held left
    /// no state behind it to repair, so a poisoned lock is taken as is.
    fn creating(&self) -> std::sync::MutexGuard<'_, ()> {
        self.creating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes every change the caller made so far durable (fsync): returns
    /// after a flush that started after this call finished. Concurrent
    /// callers share flushes ([`kiosk_store::GroupCommit`]).
    ///
    /// # Errors
    /// [`StoreError::Flush`] on I/O failure: nothing may be acknowledged then.
    pub async fn flush(&self) -> Result<(), StoreError> {
        // Every event taken before the flush starts is covered by it.
        let taken = self.events.taken();
        self.commit.commit().await?;
        self.events.mark_durable(taken);
        Ok(())
    }

    /// The event log.
    pub fn events(&self) -> &crate::events::EventLog {
        &self.events
    }

    /// Flushes started so far (each covers every write made before it).
    pub fn flushes(&self) -> u64 {
        self.commit.flushes()
    }

    /// Counts of [`Store::flush`] calls and of flushes, for metrics.
    pub fn commit_stats(&self) -> kiosk_store::CommitStats {
        self.commit.stats()
    }

    /// The sled database, for other stores sharing the directory.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Jobs per state.
    pub fn counts(&self) -> &StateCounts {
        &self.counts
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Opens the store, retrying while a just-dropped instance still holds
    /// sled's file lock.
    pub(crate) fn reopen(dir: &Path) -> Store {
        for _ in 0..100 {
            if let Ok(s) = Store::open(dir) {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Store::open(dir).unwrap()
    }
}
