//! The store layer's error ([`StoreError`]). A store whose changes a domain
//! rule can refuse wraps it in an error of its own (the agent's
//! `InboxError`: a forbidden transition, a missing job).

use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::CommitError;
use crate::record::RecordError;

/// Why a store failed. Every one is an internal error to the callers: the
/// change did not happen, or may not be durable, and nothing may be
/// acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled I/O or corruption (disk full, permissions, a locked directory).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A flush failed: what it covered may not be durable.
    #[error("store: {0}")]
    Flush(#[from] CommitError),
    /// A record could not be encoded or decoded.
    #[error("store record {key}: {source}")]
    Record {
        /// Which record (its key, as text).
        key: String,
        /// What went wrong.
        source: RecordError,
    },
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// Aborts a sled transaction with a [`StoreError`] (a record that cannot
/// be read inside it).
pub fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}
