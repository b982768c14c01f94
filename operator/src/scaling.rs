//! How many workers a backlog asks for, and how fast that number may fall.
//!
//! - [`raw_desired`]: `clamp(ceil(backlog × scalingFactor), min, max)` (the original's meaning of
//!   `scalingFactor`, accepting fractions: 0.1 is one worker per ten tasks).
//! - [`Stabilizer`]: scale-down stabilization as the HPA does it: the desired count is the highest
//!   recommendation seen over the window, so a brief dip in the queue does not drain workers that are
//!   needed a second later. Scale-up is immediate (the newest recommendation is in the window).
//! - [`hold`]: what to do when the backlog is unknown (broker down, ScalerConfig missing): keep the
//!   current count (never scale down on missing data), only pulled into `[min, max]`.

use std::time::{Duration, Instant};

use qscaler_crds::ScaleConfig;

use crate::broker::Depth;

/// The count a queue reading asks for under a QWorker's scale config, before stabilization: the
/// only place a depth becomes a desired count (the poller triggers on its change, the reconcile
/// stabilizes it).
pub fn wanted(sc: &ScaleConfig, depth: Depth) -> i32 {
    raw_desired(
        depth.backlog(),
        sc.scaling_factor,
        sc.min_replicas,
        sc.max_replicas,
    )
}

/// `clamp(ceil(backlog × factor), min, max)`. A non-finite or non-positive factor asks for `min`.
/// With `max < min` (an invalid spec that slipped through) `max` wins, so a typo never creates more
/// pods than the user's upper bound.
pub fn raw_desired(backlog: u64, factor: f64, min: i32, max: i32) -> i32 {
    let min = min.max(0);
    let max = max.max(0);
    let wanted = if factor.is_finite() && factor > 0.0 {
        // The small tolerance keeps 10 × 0.1 = 1.0000000000000002 from becoming 2.
        let x = (backlog as f64) * factor - 1e-9;
        if x <= 0.0 {
            0
        } else if x >= i32::MAX as f64 {
            i32::MAX
        } else {
            x.ceil() as i32
        }
    } else {
        0
    };
    wanted.max(min).min(max)
}

/// The count to keep when the backlog is unknown: the last desired count (or, without one, the
/// workers alive now), within `[min, max]`.
pub fn hold(last_desired: Option<i32>, alive: i32, min: i32, max: i32) -> i32 {
    last_desired
        .unwrap_or(alive)
        .max(min.max(0))
        .min(max.max(0))
}

/// The recommendations of one QWorker over the stabilization window.
#[derive(Clone, Debug, Default)]
pub struct Stabilizer {
    recommendations: Vec<(Instant, i32)>,
}

impl Stabilizer {
    /// A stabilizer that remembers `last` as if it had just been recommended, so that an operator
    /// restart does not drop straight to a lower count (it seeds from `status.desiredReplicas`).
    pub fn seeded(now: Instant, last: Option<i32>) -> Self {
        Stabilizer {
            recommendations: last.map(|l| vec![(now, l)]).unwrap_or_default(),
        }
    }

    /// Records `recommendation` at `now` and returns the stabilized desired count: the highest
    /// recommendation within `window` (always including this one).
    pub fn recommend(&mut self, now: Instant, recommendation: i32, window: Duration) -> i32 {
        self.recommendations
            .retain(|(t, _)| now.saturating_duration_since(*t) <= window);
        self.recommendations.push((now, recommendation));
        self.recommendations
            .iter()
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(recommendation)
    }

    /// The stabilized count without recording anything (used while the backlog is unknown).
    pub fn current(&self, now: Instant, window: Duration) -> Option<i32> {
        self.recommendations
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= window)
            .map(|(_, r)| *r)
            .max()
    }

    /// How long until the stabilized count may fall (the newest of the highest recommendations
    /// leaves the window); `None` when it cannot fall.
    pub fn next_change(&self, now: Instant, window: Duration) -> Option<Duration> {
        let newest = self.recommendations.last()?.1;
        let top = self.current(now, window)?;
        if top <= newest {
            return None;
        }
        self.recommendations
            .iter()
            .filter(|(_, r)| *r == top)
            .map(|(t, _)| (*t + window).saturating_duration_since(now))
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(raw_desired(0, 1.0, 0, 10), 0);
        assert_eq!(raw_desired(0, 1.0, 2, 10), 2);
        assert_eq!(raw_desired(50, 0.1, 0, 10), 5);
        assert_eq!(raw_desired(10, 0.1, 0, 10), 1);
        assert_eq!(raw_desired(11, 0.1, 0, 10), 2);
        assert_eq!(raw_desired(1, 0.1, 0, 10), 1);
        assert_eq!(raw_desired(3, 2.0, 0, 10), 6);
        assert_eq!(raw_desired(1000, 1.0, 0, 10), 10);
        assert_eq!(raw_desired(u64::MAX, 1e300, 0, 7), 7);
        assert_eq!(raw_desired(5, f64::NAN, 1, 7), 1);
        assert_eq!(raw_desired(5, -1.0, 0, 7), 0);
        assert_eq!(
            raw_desired(5, 1.0, 4, 2),
            2,
            "max wins over an inverted min"
        );
    }

    #[test]
    fn hold_keeps_the_last_count_within_bounds() {
        assert_eq!(hold(Some(4), 9, 0, 10), 4);
        assert_eq!(hold(None, 3, 0, 10), 3);
        assert_eq!(hold(None, 30, 0, 10), 10);
        assert_eq!(hold(Some(0), 0, 2, 10), 2);
    }

    #[test]
    fn stabilization_delays_scale_down_not_scale_up() {
        let t0 = Instant::now();
        let w = Duration::from_secs(30);
        let mut s = Stabilizer::default();
        assert_eq!(s.recommend(t0, 5, w), 5);
        assert_eq!(s.recommend(t0 + Duration::from_secs(1), 8, w), 8);
        assert_eq!(s.recommend(t0 + Duration::from_secs(2), 1, w), 8);
        assert_eq!(
            s.next_change(t0 + Duration::from_secs(2), w),
            Some(Duration::from_secs(29))
        );
        assert_eq!(s.recommend(t0 + Duration::from_secs(31), 1, w), 8);
        assert_eq!(s.recommend(t0 + Duration::from_secs(32), 1, w), 1);
        assert_eq!(s.next_change(t0 + Duration::from_secs(32), w), None);
    }

    #[test]
    fn zero_window_follows_the_recommendation() {
        let t0 = Instant::now();
        let mut s = Stabilizer::seeded(t0, Some(9));
        assert_eq!(
            s.recommend(t0 + Duration::from_millis(1), 2, Duration::ZERO),
            2
        );
    }

    #[test]
    fn seeded_stabilizer_remembers_the_last_count() {
        let t0 = Instant::now();
        let w = Duration::from_secs(30);
        let mut s = Stabilizer::seeded(t0, Some(6));
        assert_eq!(s.current(t0, w), Some(6));
        assert_eq!(s.recommend(t0 + Duration::from_secs(1), 0, w), 6);
    }

    proptest! {
        #[test]
        fn always_within_bounds(backlog in any::<u64>(), factor in 0.0f64..1e6, min in 0i32..50, extra in 0i32..50) {
            let max = min + extra;
            let d = raw_desired(backlog, factor, min, max);
            prop_assert!(d >= min && d <= max);
        }

        #[test]
        fn enough_workers_for_the_backlog(backlog in 0u64..100_000, factor in 0.001f64..10.0) {
            let d = raw_desired(backlog, factor, 0, i32::MAX);
            prop_assert!((d as f64) + 1e-6 >= backlog as f64 * factor);
            prop_assert!(((d as f64) - 1.0) < backlog as f64 * factor);
        }

        #[test]
        fn monotone_in_backlog(a in 0u64..10_000, b in 0u64..10_000, factor in 0.001f64..10.0) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(raw_desired(lo, factor, 0, 1000) <= raw_desired(hi, factor, 0, 1000));
        }

        #[test]
        fn stabilized_is_the_window_max(recs in proptest::collection::vec((0u64..100, 0i32..20), 1..30), window in 0u64..50) {
            let t0 = Instant::now();
            let w = Duration::from_secs(window);
            let mut s = Stabilizer::default();
            let mut t = 0;
            let mut history = vec![];
            for (dt, r) in recs {
                t += dt;
                let now = t0 + Duration::from_secs(t);
                history.push((t, r));
                let got = s.recommend(now, r, w);
                let want = history.iter().filter(|(ht, _)| t - ht <= window).map(|(_, r)| *r).max().unwrap();
                prop_assert_eq!(got, want);
                prop_assert!(got >= r);
            }
        }
    }
}
