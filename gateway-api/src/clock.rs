//! Where the gateway's timers read the time, so that logic that depends on
//! it (job expiry, republish pacing) can be tested with tokio's paused
//! clock (`tokio::time::pause()` and `advance()`) instead of sleeps.
//!
//! Both readings come from tokio's clock: [`Clock::instant`] is
//! [`tokio::time::Instant::now`], which stands still under `pause()` and
//! moves with `advance()`. Wall time is the system's ([`Clock::system`]) or
//! derived from tokio's clock ([`Clock::tokio`]: the start time plus how far
//! tokio's clock moved since), so under a paused clock both readings move
//! together and only when the test says so.

use std::time::Duration;

use chrono::Utc;
use kiosk_schemas::Timestamp;
use tokio::time::Instant;

/// A source of wall time ([`Clock::now`]) and of monotonic instants
/// ([`Clock::instant`]); cheap to copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    /// `None`: the system's wall time. `Some((wall, at))`: `wall` at tokio
    /// instant `at`, advancing with tokio's clock.
    anchor: Option<(Timestamp, Instant)>,
}

impl Clock {
    /// The system's wall time and tokio's instants (the default).
    pub fn system() -> Self {
        Clock { anchor: None }
    }

    /// A clock whose wall time is `start` now and advances only with
    /// tokio's clock: under `tokio::time::pause()`, by exactly what
    /// `tokio::time::advance()` adds. For tests.
    pub fn tokio(start: Timestamp) -> Self {
        Clock {
            anchor: Some((start, Instant::now())),
        }
    }

    /// The current wall time (UTC).
    pub fn now(&self) -> Timestamp {
        match self.anchor {
            None => Utc::now(),
            Some((wall, at)) => {
                let elapsed = chrono::Duration::from_std(Instant::now().duration_since(at))
                    .unwrap_or(chrono::Duration::MAX);
                wall.checked_add_signed(elapsed).unwrap_or(wall)
            }
        }
    }

    /// The current monotonic instant (tokio's clock).
    pub fn instant(&self) -> Instant {
        Instant::now()
    }

    /// Time since `earlier` on this clock's instants; zero if `earlier` is
    /// in the future.
    pub fn since(&self, earlier: Instant) -> Duration {
        self.instant().saturating_duration_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_moves_only_with_tokio_time() {
        let start = Timestamp::from_timestamp(1_700_000_000, 0).unwrap();
        let clock = Clock::tokio(start);
        let t0 = clock.instant();
        assert_eq!(clock.now(), start);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now(), start + chrono::Duration::milliseconds(1500));
        assert_eq!(clock.since(t0), Duration::from_millis(1500));
    }
}
