//! The store layer's errors: one for storage ([`StoreError`]) and one for a
//! transaction that a domain rule may refuse ([`TxError`]).

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

/// A transaction that failed in the store, or that a rule of the domain
/// (`E`: a forbidden state transition, a missing job) refused.
#[derive(Debug, thiserror::Error)]
pub enum TxError<E: std::error::Error + 'static> {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The domain refused the change; nothing was written.
    #[error(transparent)]
    Refused(E),
}

impl<E: std::error::Error + 'static> TxError<E> {
    /// Aborts a sled transaction because the domain refuses the change.
    pub fn refuse(e: E) -> ConflictableTransactionError<TxError<E>> {
        ConflictableTransactionError::Abort(TxError::Refused(e))
    }

    /// Aborts a sled transaction because the store failed inside it.
    pub fn store(e: StoreError) -> ConflictableTransactionError<TxError<E>> {
        ConflictableTransactionError::Abort(TxError::Store(e))
    }
}

impl<E: std::error::Error + 'static> From<TransactionError<TxError<E>>> for TxError<E> {
    fn from(e: TransactionError<TxError<E>>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => TxError::Store(StoreError::Sled(e)),
        }
    }
}
