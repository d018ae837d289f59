//! The store layer shared by the gateway and (later) the agent: what every
//! sled-backed store of the fleet needs and none should write twice.
//!
//! - [`GroupCommit`]: durability for concurrent writers with one flush
//!   (fsync) for all of them, instead of one each.

mod group_commit;

pub use group_commit::{CommitError, Flush, GroupCommit};
