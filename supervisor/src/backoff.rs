//! Reconnect delays: exponential with a cap, and jitter so that many pods do not reconnect in step
//! after a broker restart.

use std::time::{Duration, Instant};

/// Delay before attempt `attempt` (0-based): `base * 2^attempt`, capped at `max`, then scaled by
/// `jitter` in [0.5, 1.0] (pass a random-ish fraction in [0, 1]).
pub fn delay(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(20));
    let capped = exp.min(max);
    let j = 0.5 + 0.5 * jitter.clamp(0.0, 1.0);
    capped.mul_f64(j)
}

/// A cheap jitter source: the sub-second nanoseconds of the clock (good enough to spread pods).
pub fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

/// Counts attempts for [`delay`]; reset after a success.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    attempt: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            attempt: 0,
            base,
            max,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = delay(self.attempt, self.base, self.max, jitter());
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Which failures of a long run get a log line: the first `first`, then one per `every` (saying
/// how many went unlogged), so a component that retries for hours does not flood the log.
#[derive(Clone, Copy, Debug)]
pub struct LogThrottle {
    first: u32,
    every: Duration,
    failures: u32,
    unlogged: u32,
    last: Option<Instant>,
}

impl LogThrottle {
    pub fn new(first: u32, every: Duration) -> Self {
        LogThrottle {
            first,
            every,
            failures: 0,
            unlogged: 0,
            last: None,
        }
    }

    /// Counts a failure at `now`. `Some(n)`: log this one; `n` failures went unlogged before it.
    pub fn failure(&mut self, now: Instant) -> Option<u32> {
        self.failures = self.failures.saturating_add(1);
        let due = self.failures <= self.first
            || self
                .last
                .is_none_or(|t| now.saturating_duration_since(t) >= self.every);
        if !due {
            self.unlogged = self.unlogged.saturating_add(1);
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// Failures since the last [`LogThrottle::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        *self = LogThrottle::new(self.first, self.every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_then_caps() {
        let d = |a| delay(a, 100 * MS, 5000 * MS, 1.0);
        assert_eq!(
            [d(0), d(1), d(2), d(3)],
            [100 * MS, 200 * MS, 400 * MS, 800 * MS]
        );
        assert_eq!(d(6), 5000 * MS);
        assert_eq!(d(u32::MAX), 5000 * MS);
        assert_eq!(delay(0, 100 * MS, 5000 * MS, 0.0), 50 * MS);
    }

    #[test]
    fn the_counter_resets() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        for _ in 0..10 {
            b.next_delay();
        }
        assert!(b.next_delay() <= 1000 * MS);
        b.reset();
        assert!(b.next_delay() <= 100 * MS);
    }

    /// The Kubernetes API reconnect schedule (200 ms doubling to 10 s): the delays before each
    /// attempt, at both ends of the jitter.
    #[test]
    fn api_reconnect_schedule() {
        let (base, max) = (200 * MS, 10_000 * MS);
        let top: Vec<_> = (0..9).map(|a| delay(a, base, max, 1.0)).collect();
        assert_eq!(
            top,
            [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000].map(|ms| ms * MS)
        );
        let low: Vec<_> = (0..8).map(|a| delay(a, base, max, 0.0)).collect();
        assert_eq!(
            low,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000].map(|ms| ms * MS)
        );
    }

    #[test]
    fn the_log_throttle_logs_the_first_then_one_per_interval() {
        let t0 = Instant::now();
        let mut t = LogThrottle::new(3, Duration::from_secs(60));
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(t.failure(at(0)), Some(0));
        assert_eq!(t.failure(at(1)), Some(0));
        assert_eq!(t.failure(at(2)), Some(0));
        // Every 10 s for a while: one line a minute, with the count of those not logged.
        let logged: Vec<_> = (1..=12).map(|i| t.failure(at(2 + 10 * i))).collect();
        assert_eq!(
            logged,
            [
                None,
                None,
                None,
                None,
                None,
                Some(5),
                None,
                None,
                None,
                None,
                None,
                Some(5)
            ]
        );
        assert_eq!(t.failures(), 15);
        t.reset();
        assert_eq!(t.failures(), 0);
        assert_eq!(t.failure(at(123)), Some(0));
    }

    proptest! {
        #[test]
        fn bounded(attempt in any::<u32>(), j in -1.0f64..2.0, base in 1u64..10_000, max in 1u64..100_000) {
            let d = delay(attempt, Duration::from_millis(base), Duration::from_millis(max), j);
            prop_assert!(d <= Duration::from_millis(max));
            prop_assert!(d + Duration::from_nanos(1) >= Duration::from_millis(base.min(max)) / 2);
        }
    }
}
