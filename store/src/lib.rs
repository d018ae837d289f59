//! The store layer shared by the gateway and the agent: what every
//! sled-backed store of the fleet needs and none should write twice.
//!
//! - [`record`]: records as one version byte + postcard.
//! - [`StoreError`], [`TxError`]: one error for storage, one for a
//!   transaction a domain rule may refuse.
//! - [`keys`]: big-endian `u64` keys and `scope \0 name` keys.
//! - [`idempotency`]: idempotency keys, for print jobs and cash sessions.
//! - [`GroupCommit`]: durability for concurrent writers with one flush
//!   (fsync) for all of them, instead of one each.

mod error;
mod group_commit;
pub mod idempotency;
pub mod keys;
pub mod record;

pub use error::{StoreError, TxError, abort};
pub use group_commit::{CommitError, CommitStats, Flush, GroupCommit};
