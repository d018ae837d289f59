//! View tokens: the read-only credential of one payment session, for the
//! customer's screen (`/pay/{id}?token=...` and its event stream).
//!
//! A token is `base64url(HMAC-SHA256(key, "view:" + session_id))`, 43
//! characters, where `key` is 256 random bits made once per store (tree
//! `meta`, key `view_token_key`). So tokens need no storage, survive
//! restarts, can be shown again for an idempotent replay, and one session's
//! token opens nothing else.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::store::{Store, StoreError};

const KEY: &[u8] = b"view_token_key";

/// Makes and checks view tokens.
#[derive(Clone)]
pub struct ViewTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for ViewTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ViewTokens([redacted])")
    }
}

impl ViewTokens {
    /// Loads the key from `store`, creating (and flushing) it on first use.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read or written.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        let meta = store.db().open_tree("meta")?;
        let mut fresh = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut fresh);
        let stored = match meta.compare_and_swap(KEY, None as Option<&[u8]>, Some(&fresh[..]))? {
            Ok(()) => {
                meta.flush()?;
                fresh.to_vec()
            }
            Err(cas) => cas.current.map(|c| c.to_vec()).unwrap_or(fresh.to_vec()),
        };
        let mut key = [0u8; 32];
        let n = stored.len().min(32);
        key[..n].copy_from_slice(&stored[..n]);
        Ok(ViewTokens { key })
    }

    /// The view token of `session_id`.
    pub fn token(&self, session_id: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(b"view:");
        mac.update(session_id.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// True when `token` is `session_id`'s view token (constant time).
    pub fn verify(&self, session_id: &str, token: &str) -> bool {
        self.token(session_id)
            .as_bytes()
            .ct_eq(token.as_bytes())
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_per_session_and_stable_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let t1 = {
            let store = Store::open(dir.path()).unwrap();
            let v = ViewTokens::open(&store).unwrap();
            let t = v.token("s1");
            assert!(v.verify("s1", &t));
            assert!(!v.verify("s2", &t));
            assert!(!v.verify("s1", ""));
            assert_ne!(v.token("s2"), t);
            t
        };
        let store = crate::store::tests::reopen(dir.path());
        assert!(ViewTokens::open(&store).unwrap().verify("s1", &t1));
    }
}
