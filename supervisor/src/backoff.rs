//! Reconnect delays: exponential with a cap, and jitter so that many pods do not reconnect in step
//! after a broker restart.

use std::time::Duration;

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

    proptest! {
        #[test]
        fn bounded(attempt in any::<u32>(), j in -1.0f64..2.0, base in 1u64..10_000, max in 1u64..100_000) {
            let d = delay(attempt, Duration::from_millis(base), Duration::from_millis(max), j);
            prop_assert!(d <= Duration::from_millis(max));
            prop_assert!(d + Duration::from_nanos(1) >= Duration::from_millis(base.min(max)) / 2);
        }
    }
}
