//! How long a queue's tasks take, learned from the counters qsupervisor keeps per queue (tasks
//! settled, milliseconds of work: [`TaskTally`]) as the poller reads them each tick. Pure.
//!
//! - The first reading seeds the estimate with the counters' lifetime average, so a restarted
//!   operator (or poller) plans with what the queue's workers did before.
//! - Each later reading whose task count grew is a window: its mean (Δms / Δtasks) moves an
//!   exponentially weighted average, with one step of weight [`ALPHA`] per task in the window,
//!   so a burst of fast tasks counts as much as the same tasks seen one by one.
//! - Counters that went back (the hash was deleted) start over from the new reading.
//! - Until [`MIN_TASKS`] tasks were seen the estimate is not given out: the prior
//!   (`scaleConfig.taskSeconds`) serves.

use crate::broker::TaskTally;

/// Tasks timed before the learned figure is used.
pub const MIN_TASKS: u64 = 3;
/// Weight of one newly timed task in the average.
pub const ALPHA: f64 = 0.2;

/// The learning state of one queue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskRate {
    last: Option<TaskTally>,
    /// Tasks folded into the average.
    seen: u64,
    average_ms: f64,
}

impl TaskRate {
    /// Folds in one reading of the counters (`None`: nothing recorded, the estimate stays) and
    /// returns the milliseconds per task, once [`MIN_TASKS`] were timed.
    pub fn observe(&mut self, now: Option<TaskTally>) -> Option<u64> {
        if let Some(now) = now {
            match self.last {
                Some(last) if now.tasks >= last.tasks && now.millis >= last.millis => {
                    self.fold(now.tasks - last.tasks, now.millis - last.millis);
                }
                // First reading, or counters reset: the new counters are all there is to know.
                _ => {
                    *self = TaskRate::default();
                    self.fold(now.tasks, now.millis);
                }
            }
            self.last = Some(now);
        }
        self.estimate()
    }

    /// The learned milliseconds per task (at least 1), once enough tasks were timed.
    pub fn estimate(&self) -> Option<u64> {
        (self.seen >= MIN_TASKS).then(|| self.average_ms.round().max(1.0) as u64)
    }

    fn fold(&mut self, tasks: u64, millis: u64) {
        if tasks == 0 {
            return;
        }
        let mean = millis as f64 / tasks as f64;
        if self.seen == 0 {
            self.average_ms = mean;
        } else {
            // `tasks` steps of weight ALPHA toward the same mean.
            let kept = (1.0 - ALPHA).powf(tasks.min(1000) as f64);
            self.average_ms = mean + (self.average_ms - mean) * kept;
        }
        self.seen = self.seen.saturating_add(tasks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tally(tasks: u64, millis: u64) -> Option<TaskTally> {
        Some(TaskTally { tasks, millis })
    }

    #[test]
    fn nothing_is_given_out_before_enough_tasks() {
        let mut r = TaskRate::default();
        assert_eq!(r.observe(None), None);
        assert_eq!(r.observe(tally(1, 2000)), None);
        assert_eq!(r.observe(tally(2, 4000)), None);
        assert_eq!(r.observe(tally(3, 6000)), Some(2000));
        assert_eq!(r.observe(None), Some(2000), "a missing reading keeps it");
    }

    #[test]
    fn the_first_reading_seeds_with_the_lifetime_average() {
        let mut r = TaskRate::default();
        assert_eq!(r.observe(tally(10, 5000)), Some(500));
        assert_eq!(
            r.observe(tally(10, 5000)),
            Some(500),
            "no new task, no change"
        );
    }

    #[test]
    fn new_windows_move_the_average_by_their_task_count() {
        let mut r = TaskRate::default();
        r.observe(tally(10, 10_000));
        // One task of 2 s: 1000 + 0.2 × 1000.
        assert_eq!(r.observe(tally(11, 12_000)), Some(1200));
        // Many tasks of 3 s: the average nears 3 s.
        let got = r.observe(tally(111, 312_000)).unwrap();
        assert!((2999..=3000).contains(&got), "{got}");
    }

    #[test]
    fn counters_that_went_back_start_over() {
        let mut r = TaskRate::default();
        r.observe(tally(100, 100_000));
        assert_eq!(r.observe(tally(4, 20_000)), Some(5000));
        assert_eq!(r.observe(tally(1, 100)), None, "a reset below MIN_TASKS");
        // Only the millis went back (a partial reset): start over too.
        let mut r = TaskRate::default();
        r.observe(tally(5, 5000));
        assert_eq!(r.observe(tally(6, 10)), Some(2));
    }

    #[test]
    fn very_short_tasks_count_as_one_millisecond() {
        let mut r = TaskRate::default();
        assert_eq!(r.observe(tally(5, 0)), Some(1));
    }

    proptest! {
        #[test]
        fn the_estimate_stays_within_the_windows_means(
            steps in proptest::collection::vec((1u64..50, 1u64..10_000), 1..20)
        ) {
            let mut r = TaskRate::default();
            let (mut tasks, mut millis) = (0u64, 0u64);
            let (mut lo, mut hi) = (f64::MAX, 0f64);
            for (dt, per) in steps {
                tasks += dt;
                millis += dt * per;
                lo = lo.min(per as f64);
                hi = hi.max(per as f64);
                if let Some(est) = r.observe(tally(tasks, millis)) {
                    prop_assert!(est as f64 >= lo.round() - 1.0 && est as f64 <= hi.round() + 1.0);
                }
            }
        }
    }
}
