//! The front door's admission limits, as pure state machines over explicit
//! instants (no clock, no I/O, so they are tested without sleeping):
//!
//! - [`RateLimiter`]: the connection rate (`connections_per_second`), a
//!   virtual scheduling queue (GCRA): a burst of one second's worth passes
//!   at once, later connections are given a start time one interval apart
//!   and wait for it, and a connection whose start would be later than the
//!   longest allowed wait is refused.
//! - [`LoginThrottle`]: failed logins per (client address, user name)
//!   (`failed_logins_per_minute`) and, much higher, per address
//!   (`failed_logins_per_address_per_minute`): a token bucket for each,
//!   each failed login takes a token from both, tokens come back at the
//!   configured rate per minute, and a login whose (address, user) or
//!   address has no tokens left is refused before its password is even
//!   checked. So a guest guessing one user's password on the restaurant's
//!   Wi-Fi never locks out the kiosk behind the same public address. The front door takes the token when a login starts
//!   ([`LoginThrottle::try_begin`]) and gives it back when it succeeds, so
//!   parallel attempts cannot all pass before the first failure counts. IPv6 addresses are grouped by /64 (one customer
//!   network), IPv4-mapped IPv6 addresses count as IPv4 ([`address_group`]).

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

/// Token bucket state of one key.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Keys remembered before a sweep of full buckets.
const SWEEP_ABOVE: usize = 4096;

/// Token buckets of `per_minute` tokens by key.
#[derive(Debug)]
struct Buckets<K> {
    per_minute: f64,
    buckets: HashMap<K, Bucket>,
}

impl<K: std::hash::Hash + Eq + Clone> Buckets<K> {
    fn new(per_minute: u32) -> Self {
        Buckets {
            per_minute: f64::from(per_minute.max(1)),
            buckets: HashMap::new(),
        }
    }

    fn refill(per_minute: f64, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_minute / 60.0).min(per_minute);
        bucket.updated = now;
    }

    /// Tokens `key` has at `now`.
    fn tokens(&self, key: &K, now: Instant) -> f64 {
        match self.buckets.get(key) {
            None => self.per_minute,
            Some(bucket) => {
                let mut bucket = *bucket;
                Self::refill(self.per_minute, &mut bucket, now);
                bucket.tokens
            }
        }
    }

    fn take(&mut self, key: &K, now: Instant) {
        let per_minute = self.per_minute;
        if self.buckets.len() >= SWEEP_ABOVE {
            self.buckets.retain(|_, b| {
                Self::refill(per_minute, b, now);
                b.tokens < per_minute
            });
        }
        let bucket = self.buckets.entry(key.clone()).or_insert(Bucket {
            tokens: per_minute,
            updated: now,
        });
        Self::refill(per_minute, bucket, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    fn give_back(&mut self, key: &K, now: Instant) {
        if let Some(bucket) = self.buckets.get_mut(key) {
            Self::refill(self.per_minute, bucket, now);
            bucket.tokens += 1.0;
            if bucket.tokens >= self.per_minute {
                self.buckets.remove(key);
            }
        }
    }
}

/// The two bucket sets of a [`LoginThrottle`].
#[derive(Debug)]
struct ThrottleState {
    /// By (address group, user name).
    users: Buckets<(IpAddr, String)>,
    /// By address group.
    addresses: Buckets<IpAddr>,
}

/// Counts failed logins per (client address, user name) and per address;
/// see the module docs.
#[derive(Debug)]
pub struct LoginThrottle {
    state: Mutex<ThrottleState>,
}

impl LoginThrottle {
    /// Allows `per_user_per_minute` failed logins per minute for one user
    /// name from one address, and `per_address_per_minute` for all user
    /// names from one address together (each at least 1), in a burst or
    /// spread.
    pub fn new(per_user_per_minute: u32, per_address_per_minute: u32) -> Self {
        LoginThrottle {
            state: Mutex::new(ThrottleState {
                users: Buckets::new(per_user_per_minute),
                addresses: Buckets::new(per_address_per_minute),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ThrottleState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when `user` may try to log in from `addr` at `now`.
    pub fn allows(&self, addr: IpAddr, user: &str, now: Instant) -> bool {
        let key = address_group(addr);
        let state = self.lock();
        state.users.tokens(&(key, user.to_owned()), now) >= 1.0
            && state.addresses.tokens(&key, now) >= 1.0
    }

    /// Records a failed login of `user` from `addr` at `now`: takes a
    /// token from both buckets.
    pub fn failed(&self, addr: IpAddr, user: &str, now: Instant) {
        let key = address_group(addr);
        let mut state = self.lock();
        state.users.take(&(key, user.to_owned()), now);
        state.addresses.take(&key, now);
    }

    /// Starts a login attempt of `user` from `addr` at `now`: takes a
    /// token from both buckets, or returns false (refuse) and takes none
    /// when either is empty. Call [`LoginThrottle::succeeded`] when the
    /// login succeeds.
    pub fn try_begin(&self, addr: IpAddr, user: &str, now: Instant) -> bool {
        let key = (address_group(addr), user.to_owned());
        let mut state = self.lock();
        if state.users.tokens(&key, now) < 1.0 || state.addresses.tokens(&key.0, now) < 1.0 {
            return false;
        }
        state.users.take(&key, now);
        state.addresses.take(&key.0, now);
        true
    }

    /// Gives back the tokens a successful login took.
    pub fn succeeded(&self, addr: IpAddr, user: &str, now: Instant) {
        let key = (address_group(addr), user.to_owned());
        let mut state = self.lock();
        state.users.give_back(&key, now);
        state.addresses.give_back(&key.0, now);
    }

    /// (Address, user) pairs currently remembered (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.lock().users.buckets.len()
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
    fn login_throttle_blocks_a_user_at_an_address_and_recovers() {
        let throttle = LoginThrottle::new(3, 100);
        let t0 = Instant::now();
        let bad: IpAddr = "203.0.113.7".parse().unwrap();
        let good: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..3 {
            assert!(throttle.allows(bad, "kiosk-b", t0));
            throttle.failed(bad, "kiosk-b", t0);
        }
        assert!(!throttle.allows(bad, "kiosk-b", t0));
        assert!(
            throttle.allows(good, "kiosk-b", t0),
            "other addresses are not affected"
        );
        assert!(
            throttle.allows(bad, "kiosk-a", t0),
            "another user behind the same address is not affected"
        );
        // One token back every 20 s.
        assert!(!throttle.allows(bad, "kiosk-b", t0 + Duration::from_secs(19)));
        assert!(throttle.allows(bad, "kiosk-b", t0 + Duration::from_secs(20)));
        // The same address as IPv4-mapped IPv6.
        assert!(!throttle.allows("::ffff:203.0.113.7".parse().unwrap(), "kiosk-b", t0));
    }

    #[test]
    fn the_address_cap_stops_guessing_across_user_names() {
        let throttle = LoginThrottle::new(3, 10);
        let t0 = Instant::now();
        let addr: IpAddr = "203.0.113.8".parse().unwrap();
        for i in 0..10 {
            assert!(throttle.try_begin(addr, &format!("user-{i}"), t0));
        }
        assert!(!throttle.try_begin(addr, "user-new", t0));
        assert!(!throttle.allows(addr, "kiosk-a", t0));
        assert!(throttle.allows("203.0.113.9".parse().unwrap(), "kiosk-a", t0));
        // Six seconds give one address token back.
        assert!(throttle.try_begin(addr, "kiosk-a", t0 + Duration::from_secs(6)));
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_full_buckets_are_forgotten() {
        let throttle = LoginThrottle::new(1, 100);
        let t0 = Instant::now();
        throttle.failed("2001:db8:1:2::1".parse().unwrap(), "u", t0);
        assert!(!throttle.allows("2001:db8:1:2:ffff::9".parse().unwrap(), "u", t0));
        assert!(throttle.allows("2001:db8:1:3::1".parse().unwrap(), "u", t0));

        let many = LoginThrottle::new(5, 100);
        for i in 0..SWEEP_ABOVE as u32 {
            many.failed(IpAddr::V4(i.into()), "u", t0);
        }
        assert_eq!(many.tracked(), SWEEP_ABOVE);
        many.failed(
            "192.0.2.1".parse().unwrap(),
            "u",
            t0 + Duration::from_secs(120),
        );
        assert_eq!(many.tracked(), 1);
    }

    #[test]
    fn parallel_attempts_each_take_a_token_and_successes_give_it_back() {
        let throttle = LoginThrottle::new(3, 100);
        let t0 = Instant::now();
        let addr: IpAddr = "203.0.113.9".parse().unwrap();
        // Three logins in flight at once; the fourth is refused before any
        // of them has failed.
        for _ in 0..3 {
            assert!(throttle.try_begin(addr, "u", t0));
        }
        assert!(!throttle.try_begin(addr, "u", t0));
        // Two succeed: their tokens come back.
        throttle.succeeded(addr, "u", t0);
        throttle.succeeded(addr, "u", t0);
        assert!(throttle.try_begin(addr, "u", t0));
        assert!(throttle.try_begin(addr, "u", t0));
        assert!(!throttle.try_begin(addr, "u", t0));
        // Successes after a full refill forget the address.
        let later = t0 + Duration::from_secs(60);
        throttle.succeeded(addr, "u", later);
        assert_eq!(throttle.tracked(), 0);
    }
}
