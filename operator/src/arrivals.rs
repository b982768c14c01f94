//! When the backlog arrived, as far as successive readings tell (for the drain target). Pure.
//!
//! Sizing for "the backlog done within `targetDrainSeconds` from now" on every reading would move
//! the deadline with each poll: as a burst shrinks the count falls, and the burst's last tasks wait
//! far longer than the target. So the backlog is kept as FIFO segments of (arrival, tasks): a
//! reading's growth is a new segment, and the work done since the last reading (the task counter's
//! growth in task mode, else the backlog's shrinking) leaves from the front. Each segment must be
//! done by its arrival + target; [`Arrivals::weighted`] turns that into a backlog that, sized by
//! `ceil(weighted × secs / target)`, gives each segment enough workers for its remaining time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The backlog of one QWorker by arrival.
#[derive(Clone, Debug, Default)]
pub struct Arrivals {
    segments: VecDeque<(Instant, u64)>,
    last_backlog: u64,
    last_done: Option<u64>,
}

impl Arrivals {
    /// Folds one reading: the backlog now and, when known, the count of tasks done ever.
    pub fn observe(&mut self, now: Instant, backlog: u64, done: Option<u64>) {
        let consumed = match (self.last_done, done) {
            (Some(before), Some(after)) if after >= before => after - before,
            _ => self.last_backlog.saturating_sub(backlog),
        };
        self.take_front(consumed);
        let left: u64 = self.segments.iter().map(|(_, n)| n).sum();
        if backlog > left {
            self.segments.push_back((now, backlog - left));
        } else {
            // Fewer than expected (tasks removed by hand, a counter that lags): the oldest go.
            self.take_front(left - backlog);
        }
        self.last_backlog = backlog;
        self.last_done = done;
    }

    fn take_front(&mut self, mut n: u64) {
        while n > 0 {
            let Some(front) = self.segments.front_mut() else {
                return;
            };
            if front.1 > n {
                front.1 -= n;
                return;
            }
            n -= front.1;
            self.segments.pop_front();
        }
    }

    /// The backlog weighted by lateness: `max over segments of (tasks up to it) × target / (time
    /// left to its deadline)`, the time left never below one task (`secs`). Without waiting the
    /// backlog itself; a segment halfway to its deadline counts double.
    pub fn weighted(&self, now: Instant, target: Duration, secs: f64) -> u64 {
        let target_s = target.as_secs_f64().max(1e-3);
        let floor = secs.max(1e-3).min(target_s);
        let mut before = 0u64;
        let mut most = 0f64;
        for (at, n) in &self.segments {
            before = before.saturating_add(*n);
            let waited = now.saturating_duration_since(*at).as_secs_f64();
            let left = (target_s - waited).max(floor);
            most = most.max(before as f64 * target_s / left);
        }
        if most >= u64::MAX as f64 {
            u64::MAX
        } else {
            // The tolerance keeps float noise from adding a task.
            (most - 1e-9).ceil().max(0.0) as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: Duration = Duration::from_secs(20);

    #[test]
    fn a_fresh_backlog_weighs_what_it_is() {
        let t0 = Instant::now();
        let mut a = Arrivals::default();
        a.observe(t0, 44, Some(0));
        assert_eq!(a.weighted(t0, T, 1.0), 44);
        assert_eq!(Arrivals::default().weighted(t0, T, 1.0), 0);
    }

    #[test]
    fn a_burst_keeps_its_deadline_as_it_shrinks() {
        let t0 = Instant::now();
        let mut a = Arrivals::default();
        a.observe(t0, 40, Some(0));
        // 10 s later 20 are done: 20 left with 10 s to go weigh as 40 over the full target.
        let t1 = t0 + Duration::from_secs(10);
        a.observe(t1, 20, Some(20));
        assert_eq!(a.weighted(t1, T, 1.0), 40);
        // Past the deadline: the time left is one task; every task needs a worker.
        let t2 = t0 + Duration::from_secs(25);
        a.observe(t2, 5, Some(35));
        assert_eq!(a.weighted(t2, T, 1.0), 100);
    }

    #[test]
    fn a_steady_flow_does_not_age() {
        // 10 arrive and 10 are done between readings: the backlog stays 10 but is always new.
        let t0 = Instant::now();
        let mut a = Arrivals::default();
        a.observe(t0, 10, Some(0));
        for i in 1..=30u64 {
            let t = t0 + Duration::from_secs(i);
            a.observe(t, 10, Some(10 * i));
            assert_eq!(a.weighted(t, T, 1.0), 10, "after {i} s");
        }
    }

    #[test]
    fn without_a_counter_the_shrinking_is_the_work_done() {
        let t0 = Instant::now();
        let mut a = Arrivals::default();
        a.observe(t0, 10, None);
        let t1 = t0 + Duration::from_secs(10);
        a.observe(t1, 15, None);
        // Old 10 halfway (×2 → 20), then all 15 with the newest fresh (15 × 20/20).
        assert_eq!(a.weighted(t1, T, 1.0), 20);
        a.observe(t1, 5, None);
        assert_eq!(a.weighted(t1, T, 1.0), 5, "the oldest left first");
    }

    #[test]
    fn a_counter_reset_or_removed_tasks_fall_back_to_the_backlog() {
        let t0 = Instant::now();
        let mut a = Arrivals::default();
        a.observe(t0, 10, Some(100));
        // The counter went back: the shrinking counts; 4 left of the first segment.
        a.observe(t0 + Duration::from_secs(10), 4, Some(3));
        assert_eq!(a.weighted(t0 + Duration::from_secs(10), T, 1.0), 8);
        // Tasks deleted by hand (the counter did not move): the oldest go.
        a.observe(t0 + Duration::from_secs(10), 1, Some(3));
        assert_eq!(a.weighted(t0 + Duration::from_secs(10), T, 1.0), 2);
    }

    #[test]
    fn the_floor_is_never_above_the_target() {
        let t0 = Instant::now();
        let mut a = Arrivals::default();
        a.observe(t0, 3, Some(0));
        // Tasks longer than the target: late at once, but weighted as due over the target.
        assert_eq!(a.weighted(t0 + Duration::from_secs(30), T, 60.0), 3);
    }

    proptest! {
        /// Whatever the readings, the segments hold exactly the backlog, oldest first, and the
        /// weighted backlog is never below it.
        #[test]
        fn segments_add_up_to_the_backlog(
            steps in proptest::collection::vec((0u64..5_000, 0u64..200, proptest::option::of(0u64..50)), 1..40),
            secs in 0.01f64..30.0,
        ) {
            let t0 = Instant::now();
            let mut a = Arrivals::default();
            let (mut t, mut done) = (t0, 0u64);
            for (dt_ms, backlog, finished) in steps {
                t += Duration::from_millis(dt_ms);
                let counter = finished.map(|f| { done += f; done });
                a.observe(t, backlog, counter);
                let held: u64 = a.segments.iter().map(|(_, n)| n).sum();
                prop_assert_eq!(held, backlog);
                prop_assert!(a.segments.iter().all(|(_, n)| *n > 0));
                prop_assert!(a.segments.iter().zip(a.segments.iter().skip(1)).all(|(x, y)| x.0 <= y.0));
                prop_assert!(a.weighted(t, T, secs) >= backlog);
            }
        }
    }
}
