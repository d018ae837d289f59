//! Rate-limited warnings: a flood of refusals or denials (a broken or
//! hostile client in a loop) must not flood the log.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Keys remembered at most; beyond, the map is cleared (the next warning
/// per key then comes at once, which only costs a line).
const MAX_KEYS: usize = 1024;

/// At most one warning per key and `window`; counts what it held back.
#[derive(Debug)]
pub struct LogLimit<K> {
    window: Duration,
    last: Mutex<HashMap<K, (Instant, u64)>>,
}

impl<K: Hash + Eq> LogLimit<K> {
    /// One warning per key per `window`.
    pub fn new(window: Duration) -> Self {
        LogLimit {
            window,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(suppressed)` when a warning for `key` may be logged at `now`
    /// (`suppressed`: how many were held back since the last one), `None`
    /// when it must not (it is counted).
    pub fn allow(&self, key: K, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.len() >= MAX_KEYS && !last.contains_key(&key) {
            last.clear();
        }
        match last.get_mut(&key) {
            Some((at, held)) if now.saturating_duration_since(*at) < self.window => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let suppressed = *held;
                *at = now;
                *held = 0;
                Some(suppressed)
            }
            None => {
                last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_window_with_the_count_held_back() {
        let limit = LogLimit::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(limit.allow("a", t0), Some(0));
        assert_eq!(limit.allow("a", t0 + Duration::from_millis(10)), None);
        assert_eq!(limit.allow("a", t0 + Duration::from_millis(20)), None);
        assert_eq!(limit.allow("b", t0), Some(0), "keys are independent");
        assert_eq!(limit.allow("a", t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(limit.allow("a", t0 + Duration::from_millis(1500)), None);
    }

    #[test]
    fn the_map_stays_bounded() {
        let limit = LogLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS * 3) {
            assert_eq!(limit.allow(i, t0), Some(0));
        }
        assert!(limit.last.lock().unwrap().len() <= MAX_KEYS);
    }
}
