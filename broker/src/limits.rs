//! The front door's admission limits, as pure state machines over explicit
//! instants (no clock, no I/O, so they are tested without sleeping):
//!
//! - [`RateLimiter`]: the connection rate (`connections_per_second`), a
//!   virtual scheduling queue (GCRA): a burst of one second's worth passes
//!   at once, later connections are given a start time one interval apart
//!   and wait for it, and a connection whose start would be later than the
//!   longest allowed wait is refused.
//! - [`LoginThrottle`]: failed logins per client address
//!   (`failed_logins_per_minute`), a token bucket per address: each failed
//!   login takes a token, tokens come back at the configured rate per
//!   minute, and an address without tokens is refused before its password
//!   is even checked. The front door takes the token when a login starts
//!   ([`LoginThrottle::try_begin`]) and gives it back when it succeeds, so
//!   parallel attempts cannot all pass before the first failure counts. IPv6 addresses are grouped by /64 (one customer
//!   network), IPv4-mapped IPv6 addresses count as IPv4 ([`address_group`]).
//! - [`LogLimit`]: at most one warning per refusal reason and second (also
//!   used by the gateway's HTTP server).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Schedules connections at most `per_second` per second, with a burst of
/// one second's worth.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    tolerance: Duration,
    /// Theoretical arrival time of the next connection.
    tat: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter for `per_second` connections per second (at least 1).
    pub fn new(per_second: u32) -> Self {
        let per_second = per_second.max(1);
        let interval = Duration::from_secs(1) / per_second;
        RateLimiter {
            interval,
            tolerance: interval * (per_second - 1),
            tat: Mutex::new(None),
        }
    }

    /// Reserves a start time for one connection arriving at `now`: how long
    /// it must wait (zero within the burst), or `None` when that wait would
    /// exceed `max_wait` (then nothing is reserved).
    pub fn reserve(&self, now: Instant, max_wait: Duration) -> Option<Duration> {
        let mut tat = self.tat.lock().unwrap_or_else(PoisonError::into_inner);
        let current = tat.map_or(now, |t| t.max(now));
        let start = current
            .checked_sub(self.tolerance)
            .map_or(now, |s| s.max(now));
        let wait = start - now;
        if wait > max_wait {
            return None;
        }
        *tat = Some(current + self.interval);
        Some(wait)
    }
}

/// Token bucket state of one address.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Addresses remembered before a sweep of full buckets.
const SWEEP_ABOVE: usize = 4096;

/// Counts failed logins per client address; see the module docs.
#[derive(Debug)]
pub struct LoginThrottle {
    per_minute: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl LoginThrottle {
    /// Allows `per_minute` failed logins per minute per address (at least
    /// 1), in a burst or spread.
    pub fn new(per_minute: u32) -> Self {
        LoginThrottle {
            per_minute: f64::from(per_minute.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_minute / 60.0).min(self.per_minute);
        bucket.updated = now;
    }

    /// True when `addr` may try to log in at `now`.
    pub fn allows(&self, addr: IpAddr, now: Instant) -> bool {
        let key = address_group(addr);
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        match buckets.get(&key) {
            None => true,
            Some(bucket) => {
                let mut bucket = *bucket;
                self.refill(&mut bucket, now);
                bucket.tokens >= 1.0
            }
        }
    }

    /// Records a failed login from `addr` at `now`: takes a token.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        self.take(addr, now, false);
    }

    /// Starts a login attempt from `addr` at `now`: takes a token, or
    /// returns false (refuse) when none is left. Call
    /// [`LoginThrottle::succeeded`] when the login succeeds.
    pub fn try_begin(&self, addr: IpAddr, now: Instant) -> bool {
        self.take(addr, now, true)
    }

    /// Gives back the token a successful login took.
    pub fn succeeded(&self, addr: IpAddr, now: Instant) {
        let key = address_group(addr);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(&key) {
            self.refill(bucket, now);
            bucket.tokens += 1.0;
            if bucket.tokens >= self.per_minute {
                // Full: the same as never seen.
                buckets.remove(&key);
            }
        }
    }

    /// Takes a token from `addr`'s bucket; with `only_if_left`, takes none
    /// and returns false when the bucket is empty.
    fn take(&self, addr: IpAddr, now: Instant, only_if_left: bool) -> bool {
        let key = address_group(addr);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= SWEEP_ABOVE {
            // Forget addresses whose bucket is full again: they are in the
            // same state as addresses never seen.
            buckets.retain(|_, b| {
                self.refill(b, now);
                b.tokens < self.per_minute
            });
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.per_minute,
            updated: now,
        });
        self.refill(bucket, now);
        if only_if_left && bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        true
    }

    /// Addresses currently remembered (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The key an address is counted under: IPv4 addresses as they are,
/// IPv4-mapped IPv6 addresses as IPv4, other IPv6 addresses by their /64
/// (one customer network).
pub fn address_group(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// At most one warning per key (a refusal reason) and second: the others
/// go to debug level, so a flood cannot flood the log.
#[derive(Debug)]
pub struct LogLimit<K> {
    last: Mutex<HashMap<K, Instant>>,
}

impl<K> Default for LogLimit<K> {
    fn default() -> Self {
        LogLimit {
            last: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + std::hash::Hash> LogLimit<K> {
    /// True when a warning for `key` may be logged at `now` (and records
    /// it); false within a second of the last one.
    pub fn allow(&self, key: K, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match last.get(&key) {
            Some(at) if now.saturating_duration_since(*at) < Duration::from_secs(1) => false,
            _ => {
                last.insert(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_burst_then_spacing_then_refusal() {
        let limiter = RateLimiter::new(10);
        let t0 = Instant::now();
        let max = Duration::from_secs(1);
        for _ in 0..10 {
            assert_eq!(limiter.reserve(t0, max), Some(Duration::ZERO));
        }
        // The 11th waits one interval, the 20th ten.
        assert_eq!(limiter.reserve(t0, max), Some(Duration::from_millis(100)));
        for _ in 0..8 {
            limiter.reserve(t0, max);
        }
        assert_eq!(limiter.reserve(t0, max), Some(Duration::from_secs(1)));
        // Beyond max_wait: refused, and nothing reserved.
        assert_eq!(limiter.reserve(t0, max), None);
        assert_eq!(limiter.reserve(t0, max), None);
        // Two seconds later the queue has drained and a burst passes again.
        let t2 = t0 + Duration::from_secs(3);
        for _ in 0..10 {
            assert_eq!(limiter.reserve(t2, max), Some(Duration::ZERO));
        }
    }

    #[test]
    fn rate_limiter_steady_rate_never_waits() {
        let limiter = RateLimiter::new(100);
        let t0 = Instant::now();
        for i in 0..1000 {
            let now = t0 + Duration::from_millis(10 * i);
            assert_eq!(limiter.reserve(now, Duration::ZERO), Some(Duration::ZERO));
        }
    }

    #[test]
    fn login_throttle_blocks_an_address_and_recovers() {
        let throttle = LoginThrottle::new(3);
        let t0 = Instant::now();
        let bad: IpAddr = "203.0.113.7".parse().unwrap();
        let good: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..3 {
            assert!(throttle.allows(bad, t0));
            throttle.failed(bad, t0);
        }
        assert!(!throttle.allows(bad, t0));
        assert!(
            throttle.allows(good, t0),
            "other addresses are not affected"
        );
        // One token back every 20 s.
        assert!(!throttle.allows(bad, t0 + Duration::from_secs(19)));
        assert!(throttle.allows(bad, t0 + Duration::from_secs(20)));
        // The same address as IPv4-mapped IPv6.
        assert!(!throttle.allows("::ffff:203.0.113.7".parse().unwrap(), t0));
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_full_buckets_are_forgotten() {
        let throttle = LoginThrottle::new(1);
        let t0 = Instant::now();
        throttle.failed("2001:db8:1:2::1".parse().unwrap(), t0);
        assert!(!throttle.allows("2001:db8:1:2:ffff::9".parse().unwrap(), t0));
        assert!(throttle.allows("2001:db8:1:3::1".parse().unwrap(), t0));

        let many = LoginThrottle::new(5);
        for i in 0..SWEEP_ABOVE as u32 {
            many.failed(IpAddr::V4(i.into()), t0);
        }
        assert_eq!(many.tracked(), SWEEP_ABOVE);
        many.failed("192.0.2.1".parse().unwrap(), t0 + Duration::from_secs(120));
        assert_eq!(many.tracked(), 1);
    }

    #[test]
    fn parallel_attempts_each_take_a_token_and_successes_give_it_back() {
        let throttle = LoginThrottle::new(3);
        let t0 = Instant::now();
        let addr: IpAddr = "203.0.113.9".parse().unwrap();
        // Three logins in flight at once; the fourth is refused before any
        // of them has failed.
        for _ in 0..3 {
            assert!(throttle.try_begin(addr, t0));
        }
        assert!(!throttle.try_begin(addr, t0));
        // Two succeed: their tokens come back.
        throttle.succeeded(addr, t0);
        throttle.succeeded(addr, t0);
        assert!(throttle.try_begin(addr, t0));
        assert!(throttle.try_begin(addr, t0));
        assert!(!throttle.try_begin(addr, t0));
        // Successes after a full refill forget the address.
        let later = t0 + Duration::from_secs(60);
        throttle.succeeded(addr, later);
        assert_eq!(throttle.tracked(), 0);
    }

    #[test]
    fn log_limit_one_warning_per_key_and_second() {
        let limit = LogLimit::default();
        let t0 = Instant::now();
        assert!(limit.allow("a", t0));
        assert!(!limit.allow("a", t0 + Duration::from_millis(999)));
        assert!(limit.allow("b", t0));
        assert!(limit.allow("a", t0 + Duration::from_secs(1)));
    }
}
