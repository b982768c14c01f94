//! How many workers a backlog asks for, and how fast that number may fall.
//!
//! - [`raw_desired`]: `clamp(ceil(backlog × scalingFactor), min, max)` (the original's meaning of
//!   `scalingFactor`, accepting fractions: 0.1 is one worker per ten tasks).
//! - [`drain_desired`]: with `targetDrainSeconds`, the workers that work the backlog off within
//!   the target at the seconds per task learned (or the `taskSeconds` prior):
//!   `clamp(min(ceil(due × taskSeconds / target), backlog), min, max)`, where `due` is the backlog
//!   weighted by how long it already waited ([`crate::arrivals`]), so a shrinking burst keeps
//!   its deadline instead of getting a new one at every poll.
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
    match (sc.target_drain_seconds, task_seconds(sc, depth)) {
        (Some(target), Some(secs)) => drain_desired(
            depth.backlog(),
            depth.due_backlog.unwrap_or(0),
            secs,
            target,
            sc.min_replicas,
            sc.max_replicas,
        ),
        // No target, or nothing known of the tasks yet: the factor rule.
        _ => raw_desired(
            depth.backlog(),
            sc.scaling_factor,
            sc.min_replicas,
            sc.max_replicas,
        ),
    }
}

/// The seconds per task the drain target plans with: learned when enough tasks were timed, else
/// the user's `taskSeconds` (when it is a positive number).
pub fn task_seconds(sc: &ScaleConfig, depth: Depth) -> Option<f64> {
    depth
        .task_millis
        .map(|ms| ms as f64 / 1000.0)
        .or(sc.task_seconds)
        .filter(|s| s.is_finite() && *s > 0.0)
}

/// `clamp(min(ceil(max(backlog, due) × secs / target), backlog), min, max)`: enough workers for
/// the backlog to be done `target` seconds after it arrived (`due`: the backlog weighted by its
/// waiting, see [`crate::arrivals`]; 0 when unknown). In-flight tasks count whole (their progress
/// is unknown: at most one task per worker too many). A worker runs one task at a time, so more
/// workers than tasks would idle: the backlog caps the count. A target below 1 s is read as 1 s.
pub fn drain_desired(backlog: u64, due: u64, secs: f64, target: i64, min: i32, max: i32) -> i32 {
    let factor = secs / target.max(1) as f64;
    let by_time = raw_desired(backlog.max(due), factor, 0, i32::MAX);
    let capped = i64::from(by_time).min(i64::try_from(backlog).unwrap_or(i64::MAX));
    (capped as i32).max(min.max(0)).min(max.max(0))
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
    fn drain_examples() {
        // 60 tasks of 1 s within 20 s: 3 workers.
        assert_eq!(drain_desired(60, 0, 1.0, 20, 0, 10), 3);
        assert_eq!(drain_desired(61, 0, 1.0, 20, 0, 10), 4);
        assert_eq!(drain_desired(0, 0, 1.0, 20, 0, 10), 0);
        assert_eq!(drain_desired(0, 0, 1.0, 20, 2, 10), 2);
        assert_eq!(
            drain_desired(1, 0, 0.01, 20, 0, 10),
            1,
            "any backlog gets a worker"
        );
        // Tasks longer than the target: one worker per task, no more.
        assert_eq!(drain_desired(4, 0, 60.0, 20, 0, 10), 4);
        assert_eq!(drain_desired(400, 0, 1.0, 20, 0, 10), 10, "max caps");
        assert_eq!(
            drain_desired(5, 0, 1.0, 0, 0, 10),
            5,
            "a target of 0 reads as 1 s"
        );
        assert_eq!(
            drain_desired(5, 0, 1.0, 1, 4, 2),
            2,
            "max wins over an inverted min"
        );
        assert_eq!(drain_desired(u64::MAX, 0, 1e300, 1, 0, 7), 7);
        // A burst half way to its deadline: 20 left weigh 40, so the count stays at 2.
        assert_eq!(drain_desired(20, 40, 1.0, 20, 0, 10), 2);
        assert_eq!(
            drain_desired(20, 0, 1.0, 20, 0, 10),
            1,
            "without its age: 1"
        );
        // Late: as many workers as tasks, no more.
        assert_eq!(drain_desired(5, 100, 1.0, 20, 0, 10), 5);
        assert_eq!(
            drain_desired(5, 3, 1.0, 20, 0, 10),
            1,
            "due below the backlog is ignored"
        );
    }

    fn sc(target: Option<i64>, prior: Option<f64>) -> ScaleConfig {
        ScaleConfig {
            queue: "q".into(),
            max_replicas: 50,
            scaling_factor: 1.0,
            target_drain_seconds: target,
            task_seconds: prior,
            ..ScaleConfig::default()
        }
    }

    fn depth(queued: u64, in_flight: u64, task_millis: Option<u64>) -> Depth {
        Depth {
            queued,
            in_flight,
            tally: None,
            task_millis,
            due_backlog: None,
        }
    }

    #[test]
    fn wanted_picks_the_rule() {
        // No target: the factor rule, whatever is learned.
        assert_eq!(wanted(&sc(None, Some(1.0)), depth(30, 0, Some(100))), 30);
        // A target without anything known of the tasks: the factor rule.
        assert_eq!(wanted(&sc(Some(10), None), depth(30, 0, None)), 30);
        // The prior until something is learned, then the learned figure.
        assert_eq!(wanted(&sc(Some(10), Some(2.0)), depth(30, 0, None)), 6);
        assert_eq!(wanted(&sc(Some(10), Some(2.0)), depth(30, 0, Some(500))), 2);
        // In-flight tasks count.
        assert_eq!(wanted(&sc(Some(10), Some(2.0)), depth(20, 10, None)), 6);
        // The waiting the poller weighed in.
        let waited = Depth {
            due_backlog: Some(60),
            ..depth(30, 0, None)
        };
        assert_eq!(wanted(&sc(Some(10), Some(2.0)), waited), 12);
        assert_eq!(
            wanted(&sc(None, Some(2.0)), waited),
            30,
            "the factor rule ignores it"
        );
        // A nonsense prior is ignored.
        assert_eq!(
            wanted(&sc(Some(10), Some(f64::NAN)), depth(30, 0, None)),
            30
        );
        assert_eq!(task_seconds(&sc(None, Some(-1.0)), depth(0, 0, None)), None);
        assert_eq!(
            task_seconds(&sc(None, None), depth(0, 0, Some(1500))),
            Some(1.5)
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
        fn the_drain_count_works_the_backlog_off_in_time(backlog in 0u64..100_000, secs in 0.001f64..100.0, target in 1i64..3600) {
            let d = drain_desired(backlog, 0, secs, target, 0, i32::MAX) as f64;
            let b = backlog as f64;
            prop_assert!(d <= b);
            if backlog > 0 {
                // Each worker does its share (whole tasks) within the target, unless a task alone is longer.
                let per_worker = (b / d).ceil();
                prop_assert!(per_worker * secs <= target as f64 + secs + 1e-6 || d == b);
                // One worker fewer would not do it: the count is the least that does.
                prop_assert!(d <= 1.0 || (d - 1.0) * target as f64 <= b * secs * (1.0 + 1e-9) + 1e-6);
            }
        }

        #[test]
        fn drain_count_monotone_in_backlog_and_task_time(a in 0u64..10_000, b in 0u64..10_000, s1 in 0.01f64..50.0, s2 in 0.01f64..50.0, target in 1i64..600) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(drain_desired(lo, 0, s1, target, 0, 1000) <= drain_desired(hi, 0, s1, target, 0, 1000));
            let (slo, shi) = (s1.min(s2), s1.max(s2));
            prop_assert!(drain_desired(a, 0, slo, target, 0, 1000) <= drain_desired(a, 0, shi, target, 0, 1000));
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
