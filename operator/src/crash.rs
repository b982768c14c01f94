//! Crash-loop backoff: when workers keep failing, replacements slow down exponentially instead of
//! turning into a pod storm, and the QWorker says so (`WorkersCrashing`, reason `CrashLoop`).
//!
//! Every Failed pod counts once (by name). The delay before the next creation after `n` failures in a
//! row is `base × 2^(n-1)`, capped at `max`. The streak ends (and the condition clears) when a pod
//! that did not exist at the last failure succeeds or has run for the healthy period, or when no pod
//! has failed for that long. A pod that was already there when another one crashed proves nothing
//! about the crash: a drained old pod succeeding while replacements keep dying (a task that kills
//! its container) must not reset the backoff. Pure: time is passed in.

use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Failures in a row at which the condition turns on.
pub const CRASHING_AFTER: u32 = 3;

#[derive(Clone, Copy, Debug)]
pub struct BackoffSettings {
    pub base: Duration,
    pub max: Duration,
    /// How long a pod must run (or how long without failure) before the streak ends.
    pub healthy_after: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct CrashTracker {
    counted: HashSet<String>,
    streak: u32,
    last_failure: Option<Instant>,
    /// The pods that existed at the last failure: their health does not end the streak.
    witnesses: HashSet<String>,
}

impl CrashTracker {
    /// Counts the pods seen Failed (each once); `healthy` names the pods that succeeded or have run
    /// for the healthy period, `pods` every pod seen now. Returns how many new failures were counted.
    pub fn observe<'a>(
        &mut self,
        failed: impl IntoIterator<Item = &'a str>,
        healthy: impl IntoIterator<Item = &'a str>,
        pods: impl IntoIterator<Item = &'a str>,
        now: Instant,
        s: &BackoffSettings,
    ) -> u32 {
        let mut new = 0;
        for name in failed {
            if self.counted.insert(name.to_string()) {
                new += 1;
            }
        }
        if new > 0 {
            self.streak = self.streak.saturating_add(new);
            self.last_failure = Some(now);
            self.witnesses = pods.into_iter().map(str::to_string).collect();
        } else if healthy.into_iter().any(|p| !self.witnesses.contains(p))
            || self
                .last_failure
                .is_some_and(|t| now.saturating_duration_since(t) >= s.healthy_after)
        {
            self.streak = 0;
            self.witnesses.clear();
        }
        if self.counted.len() > 1000 {
            // Names of long-deleted pods; the streak keeps the count.
            self.counted.clear();
        }
        new
    }

    pub fn streak(&self) -> u32 {
        self.streak
    }

    pub fn crashing(&self) -> bool {
        self.streak >= CRASHING_AFTER
    }

    /// How long creations must still wait; zero when they may go ahead.
    pub fn wait(&self, now: Instant, s: &BackoffSettings) -> Duration {
        match (self.streak, self.last_failure) {
            (0, _) | (_, None) => Duration::ZERO,
            (n, Some(t)) => {
                let delay = s
                    .base
                    .checked_mul(1u32 << (n - 1).min(20))
                    .unwrap_or(s.max)
                    .min(s.max);
                (t + delay).saturating_duration_since(now)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: BackoffSettings = BackoffSettings {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
        healthy_after: Duration::from_secs(120),
    };

    #[test]
    fn backoff_doubles_and_caps() {
        let t0 = Instant::now();
        let mut c = CrashTracker::default();
        assert_eq!(c.wait(t0, &S), Duration::ZERO);
        let mut waits = vec![];
        for i in 0..9 {
            c.observe([format!("p{i}").as_str()], [], [], t0, &S);
            waits.push(c.wait(t0, &S).as_secs());
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert!(c.crashing());
    }

    #[test]
    fn each_pod_counts_once() {
        let t0 = Instant::now();
        let mut c = CrashTracker::default();
        assert_eq!(c.observe(["a"], [], [], t0, &S), 1);
        assert_eq!(c.observe(["a"], [], [], t0, &S), 0);
        assert_eq!(c.streak(), 1);
        assert!(!c.crashing());
    }

    #[test]
    fn streak_ends_on_health_or_quiet() {
        let t0 = Instant::now();
        let mut c = CrashTracker::default();
        c.observe(["a", "b", "c"], [], ["a", "b", "c"], t0, &S);
        assert!(c.crashing());
        c.observe([], [], [], t0 + Duration::from_secs(10), &S);
        assert!(c.crashing(), "still within the healthy period");
        c.observe([], ["new"], ["new"], t0 + Duration::from_secs(11), &S);
        assert!(!c.crashing());
        assert_eq!(c.wait(t0 + Duration::from_secs(11), &S), Duration::ZERO);
        c.observe(["d"], [], [], t0, &S);
        c.observe([], [], [], t0 + Duration::from_secs(121), &S);
        assert_eq!(c.streak(), 0);
    }

    #[test]
    fn a_pod_older_than_the_last_failure_does_not_end_the_streak() {
        let t0 = Instant::now();
        let mut c = CrashTracker::default();
        // "old" was running when a, b and c crashed (a task that kills its container).
        c.observe(["a", "b", "c"], [], ["old", "a", "b", "c"], t0, &S);
        assert!(c.crashing());
        let t1 = t0 + Duration::from_secs(5);
        c.observe([], ["old"], ["old"], t1, &S);
        assert!(c.crashing(), "the old pod succeeding proves nothing");
        assert!(c.wait(t0, &S) > Duration::ZERO);
        // Another failure: "r1", created after c's failure, was there for it, so it is a witness too.
        c.observe(["d"], [], ["old", "r1", "d"], t1, &S);
        assert_eq!(c.streak(), 4);
        c.observe([], ["r1"], ["r1"], t1, &S);
        assert_eq!(c.streak(), 4);
        // A replacement created after the last failure that proves healthy ends it.
        c.observe([], ["r2"], ["r1", "r2"], t1 + Duration::from_secs(1), &S);
        assert_eq!(c.streak(), 0);
    }

    #[test]
    fn wait_counts_from_the_last_failure() {
        let t0 = Instant::now();
        let mut c = CrashTracker::default();
        c.observe(["a", "b"], [], [], t0, &S);
        assert_eq!(
            c.wait(t0 + Duration::from_millis(500), &S),
            Duration::from_millis(1500)
        );
        assert_eq!(c.wait(t0 + Duration::from_secs(5), &S), Duration::ZERO);
    }
}
