//! The gateway's own publishes, recognised when they come back.
//!
//! The gateway subscribes to `kiosk/+/print` to record jobs that backends
//! publish straight over MQTT; MQTT 3.1.1 has no "no local" option, so it
//! also receives every job it publishes itself. Those carry nothing new:
//! the job was stored (and flushed) before it was published. [`Echoes`]
//! remembers a digest of each payload published on a print topic so the
//! ingest task acknowledges its echo without decoding it or touching the
//! store.
//!
//! A payload is matched by its length and the first 128 bits of its
//! SHA-256, counted (the same job republished comes back once per publish).
//! At most [`Echoes::CAPACITY`] are remembered, oldest forgotten first: a
//! forgotten echo, or one after a restart, is just decoded and recognised
//! by the store as `Known`, as before.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Identifies a payload: its length in bytes and 16 bytes of its SHA-256.
type Key = (usize, [u8; 16]);

fn key(payload: &[u8]) -> Key {
    let digest = Sha256::digest(payload);
    let mut d = [0u8; 16];
    d.copy_from_slice(&digest[..16]);
    (payload.len(), d)
}

#[derive(Default)]
struct Inner {
    counts: HashMap<Key, u32>,
    order: VecDeque<Key>,
}

/// Payloads the gateway published on print topics whose echo has not come
/// back yet (the last [`Echoes::CAPACITY`] publishes). Shared by delivery
/// (which publishes) and ingest.
#[derive(Default)]
pub struct Echoes(Mutex<Inner>);

impl Echoes {
    /// Echoes remembered at most (about 3 MiB).
    pub const CAPACITY: usize = 65_536;

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers that `payload` was published.
    pub fn published(&self, payload: &[u8]) {
        let k = key(payload);
        let mut inner = self.lock();
        if inner.order.len() == Self::CAPACITY
            && let Some(old) = inner.order.pop_front()
            && let Some(n) = inner.counts.get_mut(&old)
        {
            *n -= 1;
            if *n == 0 {
                inner.counts.remove(&old);
            }
        }
        *inner.counts.entry(k).or_insert(0) += 1;
        inner.order.push_back(k);
    }

    /// True (and forgotten) when `payload` is the echo of a publish of
    /// ours; false for anything else.
    pub fn take(&self, payload: &[u8]) -> bool {
        let k = key(payload);
        let mut inner = self.lock();
        let Some(n) = inner.counts.get_mut(&k) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            inner.counts.remove(&k);
        }
        // Its slot in `order` stays until it is evicted (O(1) here). That
        // eviction may then forget a later publish of the same bytes early,
        // which only sends that echo down the decoding path.
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_publish_matches_one_echo_and_nothing_else() {
        let e = Echoes::default();
        e.published(b"job-a");
        e.published(b"job-a");
        e.published(b"job-b");
        assert!(!e.take(b"job-c"), "never published");
        assert!(e.take(b"job-a"));
        assert!(e.take(b"job-a"));
        assert!(!e.take(b"job-a"), "published twice, echoed twice");
        assert!(e.take(b"job-b"));
        assert!(!e.take(b"job-b"));
    }

    #[test]
    fn the_oldest_are_forgotten_beyond_capacity() {
        let e = Echoes::default();
        for n in 0..Echoes::CAPACITY + 10 {
            e.published(&(n as u64).to_be_bytes());
        }
        assert!(!e.take(&0u64.to_be_bytes()), "evicted");
        assert!(!e.take(&9u64.to_be_bytes()), "evicted");
        assert!(e.take(&10u64.to_be_bytes()));
        assert!(e.take(&((Echoes::CAPACITY + 9) as u64).to_be_bytes()));
    }
}
