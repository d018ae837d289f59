//! Group commit: writers that need their writes durable before they answer
//! (a `202` for a print job, a cash session) share one flush.
//!
//! A writer calls [`GroupCommit::commit`] after its write. It takes a ticket
//! (a number larger than every ticket before it) and waits until a flush
//! that *started after the ticket was taken* has finished: the flush's
//! leader reads the highest ticket before it calls [`Flush::flush`], and
//! every ticket up to that one is covered. While one flush runs, the
//! writers that arrive wait for it to end and then one of them starts the
//! next, covering all of them: under load, flushes run back to back and
//! each covers every write made during the previous one.
//!
//! The flush runs on tokio's blocking pool and publishes its outcome from
//! there, so a writer whose future is dropped mid-wait (an HTTP client that
//! went away) never leaves the others waiting. sled 0.34's `flush_async`
//! is not used: it waits on sled's own IO pool, which concurrent flushes
//! can starve (sled issue #1308).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::watch;

/// What a group commit flushes: sled's database in production, something
/// that records its calls in tests.
pub trait Flush: Send + Sync + 'static {
    /// Makes every write so far durable; blocks.
    ///
    /// # Errors
    /// The I/O error, as text: nothing covered may be acknowledged.
    fn flush(&self) -> Result<(), String>;
}

impl Flush for sled::Db {
    fn flush(&self) -> Result<(), String> {
        // `Db` derefs to its default `Tree`, whose flush is the database's.
        sled::Tree::flush(self).map(drop).map_err(|e| e.to_string())
    }
}

/// The flush covering a commit failed: its writes may not be durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("flush failed: {0}")]
pub struct CommitError(pub String);

/// Failed flushes remembered, for writers that look late.
const FAILURES_KEPT: usize = 64;

/// What the flushes so far achieved.
#[derive(Debug, Default, Clone)]
struct Done {
    /// Every ticket up to this one is covered by a finished flush.
    through: u64,
    /// Ticket ranges `(after, through]` whose flush failed, newest last.
    failed: VecDeque<(u64, u64, String)>,
}

impl Done {
    /// `None` while `ticket` is not covered yet, else its outcome.
    fn outcome(&self, ticket: u64) -> Option<Result<(), CommitError>> {
        if ticket > self.through {
            return None;
        }
        let failed = self
            .failed
            .iter()
            .find(|(after, through, _)| *after < ticket && ticket <= *through);
        Some(match failed {
            Some((_, _, error)) => Err(CommitError(error.clone())),
            None => Ok(()),
        })
    }
}

/// The shared state; the flush target is kept apart (see
/// [`GroupCommit`]), so a finished flush holds no reference to it.
struct Inner {
    /// The last ticket handed out.
    tickets: AtomicU64,
    /// A flush is running.
    flushing: AtomicBool,
    /// Flushes started (for tests and metrics).
    flushes: AtomicU64,
    done: watch::Sender<Done>,
}

impl Inner {
    /// One flush of `target` covering every ticket handed out before it
    /// starts; runs on the blocking pool.
    fn flush_once<F: Flush>(&self, target: Arc<F>) {
        let covers = self.tickets.load(Ordering::SeqCst);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        let result = target.flush();
        // Let go of the target before anyone hears of the flush: once the
        // last commit returned, only its owner holds the database, which
        // can then be closed and reopened at once.
        drop(target);
        // Free the leadership before announcing: a writer woken by the
        // announcement whose ticket is not covered starts the next flush.
        self.flushing.store(false, Ordering::SeqCst);
        self.done.send_modify(|done| {
            let after = done.through;
            if let Err(error) = result
                && covers > after
            {
                if done.failed.len() == FAILURES_KEPT {
                    done.failed.pop_front();
                }
                done.failed.push_back((after, covers, error));
            }
            done.through = done.through.max(covers);
        });
    }
}

/// Group commit over a [`Flush`] target; see the module docs. Cheap to
/// clone (one `Arc`).
pub struct GroupCommit<F = sled::Db> {
    target: Arc<F>,
    inner: Arc<Inner>,
}

impl<F> Clone for GroupCommit<F> {
    fn clone(&self) -> Self {
        GroupCommit {
            target: self.target.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<F> std::fmt::Debug for GroupCommit<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("tickets", &self.inner.tickets.load(Ordering::Relaxed))
            .field("flushes", &self.inner.flushes.load(Ordering::Relaxed))
            .finish()
    }
}

impl<F: Flush> GroupCommit<F> {
    /// Group commit for `target`.
    pub fn new(target: F) -> Self {
        GroupCommit {
            target: Arc::new(target),
            inner: Arc::new(Inner {
                tickets: AtomicU64::new(0),
                flushing: AtomicBool::new(false),
                flushes: AtomicU64::new(0),
                done: watch::Sender::new(Done::default()),
            }),
        }
    }

    /// Returns once every write the caller made before calling is durable:
    /// a flush that started after this call has finished.
    ///
    /// # Errors
    /// [`CommitError`] when that flush failed; then nothing written before
    /// may be acknowledged.
    pub async fn commit(&self) -> Result<(), CommitError> {
        let mut done = self.inner.done.subscribe();
        let ticket = self.inner.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        loop {
            if let Some(outcome) = done.borrow_and_update().outcome(ticket) {
                return outcome;
            }
            if !self.inner.flushing.load(Ordering::SeqCst) {
                // Before leading a flush, let the tasks that are ready run
                // first: those about to commit take their tickets and share
                // this flush. On a busy machine a flush costs more CPU than
                // a turn of the scheduler; an idle one loses nothing.
                tokio::task::yield_now().await;
            }
            if !self.inner.flushing.swap(true, Ordering::SeqCst) {
                let (inner, target) = (self.inner.clone(), self.target.clone());
                // Runs to the end even if this future is dropped.
                drop(tokio::task::spawn_blocking(move || {
                    inner.flush_once(target)
                }));
            }
            // The sender lives in `inner`, which `self` keeps alive.
            if done.changed().await.is_err() {
                return Err(CommitError("group commit closed".to_owned()));
            }
        }
    }

    /// Flushes started so far.
    pub fn flushes(&self) -> u64 {
        self.inner.flushes.load(Ordering::Relaxed)
    }

    /// The counters alone, for metrics: they do not keep the flush target
    /// (the database) open.
    pub fn stats(&self) -> CommitStats {
        CommitStats(self.inner.clone())
    }
}

/// The counters of one group commit, without its target: commits asked
/// for (writers that waited for durability) and flushes started;
/// `commits / flushes` is how many writers a flush served on average.
#[derive(Clone)]
pub struct CommitStats(Arc<Inner>);

impl std::fmt::Debug for CommitStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitStats")
            .field("commits", &self.commits())
            .field("flushes", &self.flushes())
            .finish()
    }
}

impl CommitStats {
    /// Commits asked for so far.
    pub fn commits(&self) -> u64 {
        self.0.tickets.load(Ordering::Relaxed)
    }

    /// As [`GroupCommit::flushes`].
    pub fn flushes(&self) -> u64 {
        self.0.flushes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Writes are numbers appended to `written`; a flush records which
    /// were written when it started, and takes a little while.
    #[derive(Default)]
    struct Recorder {
        written: Mutex<Vec<u64>>,
        flushed: Mutex<Vec<Vec<u64>>>,
        fail: AtomicBool,
    }

    impl Flush for Arc<Recorder> {
        fn flush(&self) -> Result<(), String> {
            let snapshot = self.written.lock().unwrap().clone();
            std::thread::sleep(std::time::Duration::from_millis(2));
            self.flushed.lock().unwrap().push(snapshot);
            if self.fail.load(Ordering::SeqCst) {
                Err("disk on fire".to_owned())
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_commit_is_covered_by_a_flush_that_started_after_its_write() {
        let recorder = Arc::new(Recorder::default());
        let commit = GroupCommit::new(recorder.clone());
        let mut writers = tokio::task::JoinSet::new();
        for id in 0..200u64 {
            let commit = commit.clone();
            let recorder = recorder.clone();
            writers.spawn(async move {
                recorder.written.lock().unwrap().push(id);
                commit.commit().await.unwrap();
                // Durable now: some finished flush saw the write.
                let covered = recorder
                    .flushed
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|snapshot| snapshot.contains(&id));
                assert!(covered, "write {id} acknowledged before a flush saw it");
            });
        }
        while let Some(joined) = writers.join_next().await {
            joined.unwrap();
        }
        let flushes = commit.flushes();
        assert!((1..=200).contains(&flushes), "{flushes} flushes");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_share_flushes() {
        let recorder = Arc::new(Recorder::default());
        let commit = GroupCommit::new(recorder.clone());
        // Each flush takes 2 ms; the writers arriving meanwhile share the
        // next one.
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let commit = commit.clone();
            writers.spawn(async move { commit.commit().await });
        }
        while let Some(joined) = writers.join_next().await {
            joined.unwrap().unwrap();
        }
        assert!(
            commit.flushes() < 64,
            "64 concurrent writers took {} flushes",
            commit.flushes()
        );
    }

    #[tokio::test]
    async fn a_failed_flush_fails_the_commits_it_covers_and_later_ones_recover() {
        let recorder = Arc::new(Recorder::default());
        let commit = GroupCommit::new(recorder.clone());
        recorder.fail.store(true, Ordering::SeqCst);
        assert_eq!(
            commit.commit().await,
            Err(CommitError("disk on fire".to_owned()))
        );
        recorder.fail.store(false, Ordering::SeqCst);
        assert_eq!(commit.commit().await, Ok(()));
    }

    #[tokio::test]
    async fn a_dropped_waiter_does_not_stall_the_others() {
        let recorder = Arc::new(Recorder::default());
        let commit = GroupCommit::new(recorder.clone());
        // A commit that starts a flush (it is the leader), dropped while
        // the flush runs.
        let first = commit.clone();
        let abandoned = tokio::spawn(async move { first.commit().await });
        while commit.flushes() == 0 {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        assert_eq!(commit.commit().await, Ok(()));
    }

    /// Once a commit returned, no flush holds the target: its owner can
    /// close it (a sled database reopens only after every handle is gone).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_returned_commit_leaves_no_flush_holding_the_target() {
        let recorder = Arc::new(Recorder::default());
        for _ in 0..50 {
            let commit = GroupCommit::new(recorder.clone());
            commit.commit().await.unwrap();
            let held = Arc::strong_count(&commit.target);
            assert_eq!(held, 1, "a flush still holds the target");
        }
    }

    #[test]
    fn outcomes_by_ticket() {
        let mut done = Done::default();
        assert_eq!(done.outcome(1), None);
        done.through = 5;
        done.failed.push_back((2, 4, "e".to_owned()));
        assert_eq!(done.outcome(1), Some(Ok(())));
        assert_eq!(done.outcome(3), Some(Err(CommitError("e".to_owned()))));
        assert_eq!(done.outcome(5), Some(Ok(())));
        assert_eq!(done.outcome(6), None);
    }
}
