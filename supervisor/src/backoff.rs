//! Reconnect delays: exponential with a cap, and jitter so that many pods do not reconnect in step
//! after a broker restart. The schedule is backon's jittered exponential backoff; this module only
//! fixes its envelope and adds a reset.

use std::time::{Duration, Instant};

use backon::BackoffBuilder;

/// Delays before attempts in a row: attempt `n` waits within `[d/2, d)`, `d = min(base * 2^n, max)`
/// (backon's jitter adds up to its delay again, so it is given half of `base` and `max`). Reset after
/// a success.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    delays: backon::ExponentialBackoff,
}

fn schedule(base: Duration, max: Duration) -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(base / 2)
        .with_max_delay((max / 2).max(base / 2))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            delays: schedule(base, max),
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max).min(self.max)
    }

    pub fn reset(&mut self) {
        self.delays = schedule(self.base, self.max);
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

    /// The envelope of attempt `n`: `[d/2, d]` with `d = min(base * 2^n, max)`.
    fn envelope(n: u32, base: Duration, max: Duration) -> (Duration, Duration) {
        let d = base.saturating_mul(1u32 << n.min(20)).min(max);
        (d / 2, d)
    }

    /// The Kubernetes API reconnect schedule (200 ms doubling to 10 s): each delay within its
    /// envelope, and not all at one end of it (jitter).
    #[test]
    fn api_reconnect_schedule() {
        let (base, max) = (200 * MS, 10_000 * MS);
        let mut b = Backoff::new(base, max);
        let delays: Vec<Duration> = (0..40).map(|_| b.next_delay()).collect();
        for (n, d) in delays.iter().enumerate() {
            let (lo, hi) = envelope(n as u32, base, max);
            // backon computes in f32 seconds: a microsecond of slack.
            assert!(
                *d + MS / 1000 >= lo && *d <= hi,
                "attempt {n}: {d:?} not in [{lo:?}, {hi:?}]"
            );
        }
        let capped = &delays[10..];
        assert!(
            capped.iter().any(|d| *d < 9000 * MS),
            "jittered: {capped:?}"
        );
        assert!(capped.iter().any(|d| *d > 6000 * MS), "{capped:?}");
    }

    #[test]
    fn the_counter_resets() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        for _ in 0..10 {
            b.next_delay();
        }
        assert!(b.next_delay() >= 500 * MS);
        b.reset();
        assert!(b.next_delay() <= 100 * MS);
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
        fn bounded(base in 1u64..10_000, max in 1u64..100_000, attempts in 1usize..40) {
            let (base, max) = (Duration::from_millis(base), Duration::from_millis(max));
            let mut b = Backoff::new(base, max);
            for n in 0..attempts {
                let d = b.next_delay();
                let (lo, hi) = envelope(n as u32, base, max);
                prop_assert!(d <= hi, "{n}: {d:?} > {hi:?}");
                prop_assert!(d + MS / 1000 >= lo.min(max / 2), "{n}: {d:?} < {lo:?}");
            }
        }
    }
}
