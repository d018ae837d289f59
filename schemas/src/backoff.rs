//! Reconnect delays: exponential backoff with full jitter.
//!
//! rumqttc reconnects immediately when polled after an error (DESIGN.md
//! pitfalls); a fleet of kiosks doing that after a VPS restart would hammer
//! the broker in lockstep. Each failed attempt doubles the ceiling, and the
//! actual delay is drawn uniformly from `[min, ceiling]` so clients spread
//! out ("full jitter", AWS Architecture Blog, 2015).

use std::time::Duration;

/// Backoff state for one connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays start at `min` and their ceiling doubles per failure up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The delay before the next attempt, given a uniform random number in
    /// `[0, 1)`. Advances the attempt counter.
    pub fn next_delay(&mut self, unit_random: f64) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let span = ceiling.saturating_sub(self.min);
        self.min + span.mul_f64(unit_random.clamp(0.0, 1.0))
    }

    /// Call after a successful connection: the next failure starts over at `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let maxed: Vec<_> = (0..6).map(|_| b.next_delay(1.0)).collect();
        assert_eq!(
            maxed,
            [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis)
        );
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..5 {
            b.next_delay(0.5);
        }
        let d = b.next_delay(0.0);
        assert_eq!(d, Duration::from_millis(100));
        let d = b.next_delay(0.5);
        assert!(d > Duration::from_millis(100) && d <= Duration::from_secs(10));
    }
}
