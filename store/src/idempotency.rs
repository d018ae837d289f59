//! Idempotency keys: a client that repeats a request with the same key
//! (the HTTP `Idempotency-Key` header) gets what the first request made,
//! and a key used again with a different request is refused (as Stripe and
//! PrintNode do).
//!
//! One record per `(scope, key)` (scope: the kiosk), holding the id of
//! what the request made (a job, a session, a credit) and the SHA-256 of
//! the request. It is written in the same transaction as what it points
//! to, so a crash leaves both or neither ([`Claim::check`],
//! [`Claim::record`]); or, by a writer that does without a transaction,
//! before what it points to ([`Claim::check_in`], [`Claim::record_in`]): a
//! key whose target is missing is fresh again.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use crate::{StoreError, abort, keys, record};

/// Version of [`IdempotencyRecord`].
const IDEM_V: u8 = 1;

/// What a key remembers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdempotencyRecord {
    /// Id of what the first request made.
    target: String,
    /// SHA-256 of the first request.
    request_sha256: [u8; 32],
}

/// What a key says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The key is new: go on, and [`Claim::record`] it.
    New,
    /// The same request came with this key before and made `target`.
    Replay(String),
    /// The key came before with a different request.
    Reused,
}

/// A request's claim on an idempotency key, encoded before its
/// transaction (so the transaction, which sled may retry, only does I/O).
#[derive(Debug, Clone)]
pub struct Claim {
    key: Vec<u8>,
    request_sha256: [u8; 32],
    record: Vec<u8>,
}

impl Claim {
    /// The claim of a request with SHA-256 `request_sha256` on `key` in
    /// `scope`, which makes `target`.
    ///
    /// # Errors
    /// [`StoreError::Record`] if the record cannot be encoded.
    pub fn new(
        scope: &str,
        key: &str,
        request_sha256: [u8; 32],
        target: &str,
    ) -> Result<Self, StoreError> {
        let record = record::encode_keyed(
            IDEM_V,
            "idempotency",
            &IdempotencyRecord {
                target: target.to_owned(),
                request_sha256,
            },
        )?;
        Ok(Claim {
            key: keys::compound(scope, key.as_bytes()),
            request_sha256,
            record,
        })
    }

    /// Looks the key up in `tree`, inside a transaction.
    ///
    /// # Errors
    /// Aborts with [`StoreError::Record`] when the stored record is unreadable.
    pub fn check(
        &self,
        tree: &TransactionalTree,
    ) -> Result<Seen, ConflictableTransactionError<StoreError>> {
        self.seen(tree.get(&self.key)?.as_deref()).map_err(abort)
    }

    /// Looks the key up in `tree`, outside a transaction: the caller keeps
    /// other writers of the key out while it checks and records.
    ///
    /// # Errors
    /// [`StoreError::Sled`] on storage failure; [`StoreError::Record`] when
    /// the stored record is unreadable.
    pub fn check_in(&self, tree: &sled::Tree) -> Result<Seen, StoreError> {
        self.seen(tree.get(&self.key)?.as_deref())
    }

    /// What the record stored under the key (if any) says of this request.
    fn seen(&self, stored: Option<&[u8]>) -> Result<Seen, StoreError> {
        let Some(bytes) = stored else {
            return Ok(Seen::New);
        };
        let prev: IdempotencyRecord = record::decode_keyed(IDEM_V, &self.key, bytes)?;
        Ok(if prev.request_sha256 == self.request_sha256 {
            Seen::Replay(prev.target)
        } else {
            Seen::Reused
        })
    }

    /// Writes the claim (after [`Claim::check`] said [`Seen::New`], or
    /// when the target of a replay is gone and the key is fresh again).
    ///
    /// # Errors
    /// sled's, inside the transaction.
    pub fn record(
        &self,
        tree: &TransactionalTree,
    ) -> Result<(), ConflictableTransactionError<StoreError>> {
        tree.insert(self.key.as_slice(), self.record.as_slice())?;
        Ok(())
    }

    /// Writes the claim outside a transaction (see [`Claim::check_in`]).
    ///
    /// # Errors
    /// [`StoreError::Sled`] on storage failure.
    pub fn record_in(&self, tree: &sled::Tree) -> Result<(), StoreError> {
        tree.insert(self.key.as_slice(), self.record.as_slice())?;
        Ok(())
    }
}

/// The target a stored idempotency record points to (for purging keys
/// with what they made).
///
/// # Errors
/// [`StoreError::Record`] when the bytes are not an idempotency record.
pub fn target_of(key: &[u8], bytes: &[u8]) -> Result<String, StoreError> {
    record::decode_keyed::<IdempotencyRecord>(IDEM_V, key, bytes).map(|r| r.target)
}

#[cfg(test)]
mod tests {
    use sled::Transactional as _;

    use super::*;

    fn check_and_record(tree: &sled::Tree, claim: &Claim) -> Seen {
        (tree,)
            .transaction(|(t,)| {
                let seen = claim.check(t)?;
                if seen == Seen::New {
                    claim.record(t)?;
                }
                Ok(seen)
            })
            .map_err(StoreError::from)
            .unwrap()
    }

    #[test]
    fn a_key_replays_its_request_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("idempotency").unwrap();
        let first = Claim::new("k1", "order-1", [1; 32], "job-a").unwrap();
        assert_eq!(check_and_record(&tree, &first), Seen::New);
        assert_eq!(
            check_and_record(
                &tree,
                &Claim::new("k1", "order-1", [1; 32], "job-b").unwrap()
            ),
            Seen::Replay("job-a".into())
        );
        assert_eq!(
            check_and_record(
                &tree,
                &Claim::new("k1", "order-1", [2; 32], "job-c").unwrap()
            ),
            Seen::Reused
        );
        // Another kiosk's key of the same name is its own.
        assert_eq!(
            check_and_record(
                &tree,
                &Claim::new("k2", "order-1", [2; 32], "job-d").unwrap()
            ),
            Seen::New
        );
        let (k, v) = tree.iter().next().unwrap().unwrap();
        assert_eq!(target_of(&k, &v).unwrap(), "job-a");
    }

    /// Both record types this replaces (`job_id` and `session_id` first)
    /// have this layout: stored keys stay readable.
    #[test]
    fn records_written_before_read_back() {
        #[derive(Serialize)]
        struct Old {
            job_id: String,
            request_sha256: [u8; 32],
        }
        let bytes = record::encode(
            1,
            &Old {
                job_id: "job-old".into(),
                request_sha256: [9; 32],
            },
        )
        .unwrap();
        assert_eq!(target_of(b"k", &bytes).unwrap(), "job-old");
    }
}
