//! The store layer shared by the gateway and the agent: what every
//! sled-backed store of the fleet needs and none should write twice.
//!
//! - [`record`]: records as one version byte + postcard.
//! - [`StoreError`]: the one error for storage.
//! - [`keys`]: big-endian `u64` keys and `scope \0 name` keys.
//! - [`idempotency`]: idempotency keys, for print jobs and cash sessions.
//! - [`GroupCommit`]: durability for concurrent writers with one flush
//!   (fsync) for all of them, instead of one each.

mod error;
mod group_commit;
pub mod idempotency;
pub mod keys;
pub mod record;

pub use error::{StoreError, abort};
pub use group_commit::{CommitError, CommitStats, Flush, GroupCommit};

/// Runs `f` — store work that may block — on tokio's blocking pool and
/// returns what it returns (a panic in `f` is resumed here).
///
/// Why: sled 0.34 runs every transaction under one process-wide lock that
/// a flush holds (shared) while it waits for the disk, so a transaction on
/// a tokio worker stalls every task of that worker for the whole flush.
/// On the blocking pool it waits alone, and the writers that arrive
/// meanwhile join the next group commit.
pub async fn unblocked<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(t) => t,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
