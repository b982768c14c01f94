//! Expectations: what the operator did that its pod cache has not shown yet.
//!
//! The reconcile plans from a reflector cache that lags the API by a watch event. Without memory of
//! its own writes, a second reconcile right after creating 5 pods would see none of them and create 5
//! more. So every write is recorded here, and [`Expectations::overlay`] makes the cached view look as
//! it will once the watch catches up: created pods appear (Pending), deleted ones are marked deleting,
//! drains and un-drains show. An entry ends when the cache shows it or after a timeout (a lost watch
//! event must not freeze the QWorker forever). Pure: time is passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use qscaler_crds::names::DrainReason;

use crate::planning::{ObservedPod, Phase};

/// One write the cache has not shown yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Created,
    Deleted,
    Drained(DrainReason),
    Undrained,
}

/// The pending writes of one QWorker, by pod name.
#[derive(Clone, Debug, Default)]
pub struct Expectations {
    entries: HashMap<String, (Expect, Instant)>,
}

impl Expectations {
    pub fn record(&mut self, pod: impl Into<String>, expect: Expect, now: Instant) {
        self.entries.insert(pod.into(), (expect, now));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The cached pods as they will be, dropping entries the cache already shows or that are older
    /// than `timeout`. `now_ms` is the creation time given to pods that were created but not seen.
    pub fn overlay(
        &mut self,
        cached: &[ObservedPod],
        now: Instant,
        timeout: Duration,
        now_ms: i64,
    ) -> Vec<ObservedPod> {
        let mut view: Vec<ObservedPod> = cached.to_vec();
        self.entries.retain(|name, (expect, at)| {
            if now.saturating_duration_since(*at) > timeout {
                return false;
            }
            let seen = view.iter_mut().find(|p| p.name == *name);
            match (expect, seen) {
                (Expect::Created, Some(_)) => false,
                (Expect::Created, None) => {
                    view.push(ObservedPod {
                        name: name.clone(),
                        phase: Phase::Pending,
                        current: true,
                        draining: None,
                        idle: false,
                        deleting: false,
                        created: now_ms,
                        started: false,
                        stopped: false,
                    });
                    true
                }
                (Expect::Deleted, None) => false,
                (Expect::Deleted, Some(p)) => {
                    let shown = p.deleting;
                    p.deleting = true;
                    !shown
                }
                (Expect::Drained(_), None) | (Expect::Undrained, None) => false,
                (Expect::Drained(reason), Some(p)) => {
                    let shown = p.draining.is_some();
                    p.draining.get_or_insert(*reason);
                    !shown
                }
                (Expect::Undrained, Some(p)) => {
                    let shown = p.draining.is_none();
                    p.draining = None;
                    !shown
                }
            }
        });
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planning::{apply, plan, Pacing, Plan, PlanInput};
    use proptest::prelude::*;

    fn running(name: &str) -> ObservedPod {
        ObservedPod {
            name: name.into(),
            phase: Phase::Running,
            current: true,
            draining: None,
            idle: false,
            deleting: false,
            created: 0,
            started: true,
            stopped: false,
        }
    }

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn created_pods_show_until_seen() {
        let t0 = Instant::now();
        let mut e = Expectations::default();
        e.record("a", Expect::Created, t0);
        let v = e.overlay(&[], t0, T, 5);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].phase, Phase::Pending);
        assert!(!e.is_empty());
        let v = e.overlay(&[running("a")], t0, T, 5);
        assert_eq!(v, vec![running("a")]);
        assert!(e.is_empty());
    }

    #[test]
    fn entries_expire() {
        let t0 = Instant::now();
        let mut e = Expectations::default();
        e.record("a", Expect::Created, t0);
        assert!(e
            .overlay(&[], t0 + T + Duration::from_millis(1), T, 5)
            .is_empty());
        assert!(e.is_empty());
    }

    #[test]
    fn drains_deletes_and_undrains_show() {
        let t0 = Instant::now();
        let mut e = Expectations::default();
        e.record("a", Expect::Drained(DrainReason::ScaleDown), t0);
        e.record("b", Expect::Deleted, t0);
        let mut c = running("c");
        c.draining = Some(DrainReason::ScaleDown);
        e.record("c", Expect::Undrained, t0);
        let v = e.overlay(&[running("a"), running("b"), c.clone()], t0, T, 0);
        assert_eq!(v[0].draining, Some(DrainReason::ScaleDown));
        assert!(v[1].deleting);
        assert_eq!(v[2].draining, None);
        assert_eq!(e.len(), 3);
        // The cache catches up: every entry ends.
        let mut a = running("a");
        a.draining = Some(DrainReason::ScaleDown);
        let mut b = running("b");
        b.deleting = true;
        e.overlay(&[a, b, running("c")], t0, T, 0);
        assert!(e.is_empty());
    }

    fn record_plan(e: &mut Expectations, p: &Plan, created: &[String], now: Instant) {
        for n in created {
            e.record(n.clone(), Expect::Created, now);
        }
        for (n, _) in &p.delete {
            e.record(n.clone(), Expect::Deleted, now);
        }
        for (n, r) in &p.drain {
            e.record(n.clone(), Expect::Drained(*r), now);
        }
        for n in &p.undrain {
            e.record(n.clone(), Expect::Undrained, now);
        }
    }

    proptest! {
        /// However far the cache lags (it shows the state from before any of the operator's writes),
        /// planning over the overlay never repeats a write: the second plan is empty.
        #[test]
        fn stable_under_a_lagging_cache(
            n in 0usize..10, draining in 0usize..10, desired in 0i32..15, max in 0i32..12,
        ) {
            let t0 = Instant::now();
            let mut pods: Vec<ObservedPod> = (0..n).map(|i| running(&format!("p{i}"))).collect();
            for p in pods.iter_mut().take(draining) {
                p.draining = Some(DrainReason::ScaleDown);
            }
            let mut e = Expectations::default();
            let view = e.overlay(&pods, t0, T, 1);
            let input = PlanInput { pods: &view, desired, max_replicas: max, pacing: Pacing::default(), may_create: true };
            let first = plan(&input);
            let created: Vec<String> = (0..first.create).map(|i| format!("new{i}")).collect();
            record_plan(&mut e, &first, &created, t0);
            // The stale cache is planned again, twice, a little later.
            for dt in [1u64, 2] {
                let view = e.overlay(&pods, t0 + Duration::from_secs(dt), T, 2);
                let second = plan(&PlanInput { pods: &view, ..input.clone() });
                prop_assert!(second.is_empty(), "first {first:?} second {second:?}");
            }
            // The cache catches up: still nothing to do, and every expectation ends.
            let caught_up = apply(&pods, &first, 1, "new");
            let caught_up: Vec<ObservedPod> = caught_up.into_iter().enumerate().map(|(i, mut p)| {
                if p.name.starts_with("new") { p.name = format!("new{}", i - (pods.len() - first.delete.len())); }
                p
            }).collect();
            let view = e.overlay(&caught_up, t0 + Duration::from_secs(3), T, 3);
            let third = plan(&PlanInput { pods: &view, ..input.clone() });
            prop_assert!(third.is_empty(), "third {third:?}");
            prop_assert!(e.is_empty(), "{e:?}");
        }
    }
}
