//! The request rate of each API key (`http.rate_limit_per_second`,
//! `http.rate_limit_burst`), as a pure decision over explicit instants: the
//! API-key middleware asks [`RateLimits::admit`] with the key's name and
//! `tokio::time::Instant::now()`, so tests drive it with
//! `tokio::time::pause()`.
//!
//! Each key has a token bucket of `burst` tokens refilled at `per_second`,
//! kept as GCRA (the theoretical arrival time of its next request, one
//! instant per key, in whole nanoseconds, so no rounding drifts): a request
//! conforms when that time is at most `(burst - 1) / per_second` ahead of
//! now, and moves it one interval (`1 s / per_second`) on. A refused
//! request takes nothing, so a client that keeps retrying too early is
//! still let in at the configured rate.
//!
//! Buckets are keyed by the key's name, never the secret, and only for
//! keys that authenticated, so there are at most as many as the key file
//! has names; a bucket that is full again is the same as none and is
//! forgotten by the next sweep (keys removed from the file leave nothing
//! behind).
//!
//! Written here rather than with `governor`: its clocks do not follow
//! `tokio::time::pause`, and the decision is these few lines (the
//! embedded broker's connection rate is the same GCRA,
//! `kiosk_broker::limits::RateLimiter`, which waits instead of refusing).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Buckets remembered before a sweep of the full ones.
const SWEEP_ABOVE: usize = 1024;

/// The token buckets of all API keys.
#[derive(Debug)]
pub struct RateLimits {
    /// Time for one token to come back: `1 s / per_second`.
    interval: Duration,
    /// How far the next arrival may be ahead of now: `burst - 1`
    /// intervals.
    tolerance: Duration,
    /// Theoretical arrival time of each key's next request.
    next: Mutex<HashMap<String, Instant>>,
}

/// A request refused by [`RateLimits::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// How long until the key has a token again.
    pub retry_after: Duration,
}

impl Limited {
    /// [`Limited::retry_after`] as the `Retry-After` header's whole
    /// seconds (RFC 9110 §10.2.3): rounded up, at least 1, so a client
    /// that waits that long gets in.
    pub fn retry_after_secs(&self) -> u64 {
        let whole = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        whole.max(1)
    }
}

impl RateLimits {
    /// Buckets of `burst` tokens refilled at `per_second` tokens per
    /// second; `None` when `per_second` is 0 (no limit). A `burst` of 0 is
    /// taken as 1 (the configuration check refuses it).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        if per_second == 0 {
            return None;
        }
        let interval = Duration::from_secs(1) / per_second;
        Some(RateLimits {
            interval,
            tolerance: interval * (burst.max(1) - 1),
            next: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a token of `key`'s bucket for a request at `now`, or says how
    /// long until there is one (then nothing is taken).
    ///
    /// # Errors
    /// [`Limited`] when the bucket is empty.
    pub fn admit(&self, key: &str, now: Instant) -> Result<(), Limited> {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let arrival = next.get(key).map_or(now, |t| (*t).max(now));
        let ahead = arrival - now;
        if ahead > self.tolerance {
            return Err(Limited {
                retry_after: ahead - self.tolerance,
            });
        }
        let after = arrival + self.interval;
        if let Some(t) = next.get_mut(key) {
            *t = after;
        } else {
            if next.len() >= SWEEP_ABOVE {
                next.retain(|_, t| *t > now);
            }
            next.insert(key.to_owned(), after);
        }
        Ok(())
    }

    /// Keys with a bucket that is not full (for tests of the sweep).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.next.lock().map_or(0, |n| n.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_at_the_rate() {
        let limits = RateLimits::new(10, 20).unwrap();
        for i in 0..20 {
            assert_eq!(limits.admit("pos", Instant::now()), Ok(()), "request {i}");
        }
        let refused = limits.admit("pos", Instant::now()).unwrap_err();
        assert_eq!(refused.retry_after, ms(100));
        assert_eq!(refused.retry_after_secs(), 1);
        // A refusal takes no token: still 100 ms to wait.
        assert_eq!(limits.admit("pos", Instant::now()), Err(refused));

        // Another key has its own bucket.
        assert_eq!(limits.admit("other", Instant::now()), Ok(()));

        tokio::time::advance(ms(99)).await;
        assert_eq!(
            limits.admit("pos", Instant::now()),
            Err(Limited { retry_after: ms(1) })
        );
        tokio::time::advance(ms(1)).await;
        assert_eq!(limits.admit("pos", Instant::now()), Ok(()));
        assert!(limits.admit("pos", Instant::now()).is_err());

        // At the rate, not faster: 10 per second go through over a second.
        let mut passed = 0;
        for _ in 0..100 {
            tokio::time::advance(ms(10)).await;
            if limits.admit("pos", Instant::now()).is_ok() {
                passed += 1;
            }
        }
        assert_eq!(passed, 10);

        // Idle for burst / rate seconds: the whole burst again.
        tokio::time::advance(Duration::from_secs(2)).await;
        for i in 0..20 {
            assert_eq!(limits.admit("pos", Instant::now()), Ok(()), "request {i}");
        }
        assert!(limits.admit("pos", Instant::now()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_whole_seconds_rounded_up() {
        // One token a second, no burst beyond one request.
        let limits = RateLimits::new(1, 1).unwrap();
        assert_eq!(limits.admit("k", Instant::now()), Ok(()));
        let refused = limits.admit("k", Instant::now()).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        assert_eq!(refused.retry_after_secs(), 1);
        tokio::time::advance(ms(1)).await;
        let refused = limits.admit("k", Instant::now()).unwrap_err();
        assert_eq!(refused.retry_after, ms(999));
        assert_eq!(refused.retry_after_secs(), 1);
        for (retry_after, secs) in [(ms(1), 1), (ms(1000), 1), (ms(1001), 2), (ms(2500), 3)] {
            assert_eq!(Limited { retry_after }.retry_after_secs(), secs);
        }
        // Waiting Retry-After seconds is always enough.
        tokio::time::advance(Duration::from_secs(refused.retry_after_secs())).await;
        assert_eq!(limits.admit("k", Instant::now()), Ok(()));
    }

    #[test]
    fn zero_rate_is_no_limit() {
        assert!(RateLimits::new(0, 20).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn full_buckets_are_forgotten() {
        let limits = RateLimits::new(10, 20).unwrap();
        for i in 0..SWEEP_ABOVE {
            assert_eq!(limits.admit(&format!("key-{i}"), Instant::now()), Ok(()));
        }
        assert_eq!(limits.remembered(), SWEEP_ABOVE);
        tokio::time::advance(ms(100)).await;
        assert_eq!(limits.admit("new", Instant::now()), Ok(()));
        assert_eq!(limits.remembered(), 1);
    }
}
