//! A rate limit for repeated warnings: at most one per key (for example
//! kiosk and reason) per window, the next one saying how many were
//! suppressed meanwhile. Pure: the caller passes the clock, so one broken
//! peer cannot flood the log and tests need no sleeps.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use kiosk_schemas::log_limit::LogLimiter;
//!
//! let mut limit = LogLimiter::new(Duration::from_secs(60), 1024);
//! let t0 = Instant::now();
//! assert_eq!(limit.check("k1/malformed", t0), Some(0)); // log it
//! assert_eq!(limit.check("k1/malformed", t0), None); // suppressed
//! let later = t0 + Duration::from_secs(60);
//! assert_eq!(limit.check("k1/malformed", later), Some(1)); // log, "suppressed = 1"
//! ```

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the last warning for the key was let through.
    logged: Instant,
    /// Warnings suppressed since.
    suppressed: u64,
}

/// At most one warning per key and `window`, over at most `max_keys` keys.
#[derive(Debug)]
pub struct LogLimiter<K> {
    window: Duration,
    max_keys: usize,
    keys: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> LogLimiter<K> {
    /// A limiter letting one warning per key through every `window`,
    /// remembering at most `max_keys` keys (at least 1).
    pub fn new(window: Duration, max_keys: usize) -> Self {
        LogLimiter {
            window,
            max_keys: max_keys.max(1),
            keys: HashMap::new(),
        }
    }

    /// A warning for `key` at `now`: `Some(n)` when it should be logged,
    /// `n` being how many for that key were suppressed since the last one
    /// logged; `None` when it should be suppressed (and is counted).
    pub fn check(&mut self, key: K, now: Instant) -> Option<u64> {
        if let Some(e) = self.keys.get_mut(&key) {
            if now.saturating_duration_since(e.logged) < self.window {
                e.suppressed += 1;
                return None;
            }
            let suppressed = e.suppressed;
            *e = Entry {
                logged: now,
                suppressed: 0,
            };
            return Some(suppressed);
        }
        if self.keys.len() >= self.max_keys {
            self.evict(now);
        }
        self.keys.insert(
            key,
            Entry {
                logged: now,
                suppressed: 0,
            },
        );
        Some(0)
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Makes room for one key: forgets the keys whose window has passed
    /// (their suppressed count is lost, as the next warning for them would
    /// be logged anyway), or else the one logged longest ago.
    fn evict(&mut self, now: Instant) {
        let window = self.window;
        self.keys
            .retain(|_, e| now.saturating_duration_since(e.logged) < window);
        if self.keys.len() >= self.max_keys {
            let oldest = self
                .keys
                .iter()
                .min_by_key(|(_, e)| e.logged)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.keys.remove(&k);
            }
        }
    }
}

/// A [`LogLimiter`] behind a mutex, for limits shared by tasks and
/// connections (the broker's refusals, the gateway's HTTP refusals).
#[derive(Debug)]
pub struct SharedLogLimiter<K> {
    inner: Mutex<LogLimiter<K>>,
}

impl<K: Hash + Eq + Clone> SharedLogLimiter<K> {
    /// As [`LogLimiter::new`].
    pub fn new(window: Duration, max_keys: usize) -> Self {
        SharedLogLimiter {
            inner: Mutex::new(LogLimiter::new(window, max_keys)),
        }
    }

    /// As [`LogLimiter::check`].
    pub fn check(&self, key: K, now: Instant) -> Option<u64> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(key, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn one_per_key_and_window_with_the_suppressed_count() {
        let mut l = LogLimiter::new(WINDOW, 16);
        let t0 = Instant::now();
        let mut logged = Vec::new();
        // 100 malformed messages from one kiosk, one every 250 ms: 25 s.
        for i in 0..100u64 {
            let now = t0 + Duration::from_millis(250 * i);
            if let Some(n) = l.check(("k1", "malformed"), now) {
                logged.push((i, n));
            }
        }
        // Logged at 0 s, 10 s and 20 s; 39 suppressed in each full window.
        assert_eq!(logged, [(0, 0), (40, 39), (80, 39)]);
        // Another reason or kiosk has its own window.
        assert_eq!(l.check(("k1", "oversized"), t0 + WINDOW), Some(0));
        assert_eq!(l.check(("k2", "malformed"), t0 + WINDOW), Some(0));
        // 19 more were suppressed after the one at 20 s.
        assert_eq!(l.check(("k1", "malformed"), t0 + WINDOW * 3), Some(19));
    }

    #[test]
    fn the_map_stays_bounded() {
        let mut l = LogLimiter::new(WINDOW, 3);
        let t0 = Instant::now();
        for k in 0..3 {
            assert_eq!(l.check(k, t0 + Duration::from_secs(k)), Some(0));
        }
        assert_eq!(l.check(0, t0 + Duration::from_secs(3)), None);
        // Full and nothing expired: the key logged longest ago (0) goes.
        assert_eq!(l.check(3, t0 + Duration::from_secs(4)), Some(0));
        assert_eq!(l.len(), 3);
        assert_eq!(
            l.check(0, t0 + Duration::from_secs(5)),
            Some(0),
            "0 was forgotten"
        );
        assert_eq!(l.len(), 3);
        // Later, every expired key goes at once.
        assert_eq!(l.check(9, t0 + Duration::from_secs(60)), Some(0));
        assert_eq!(l.len(), 1);
    }
}
