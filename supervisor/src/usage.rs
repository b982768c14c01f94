//! Folding samples into peaks, and deciding when a report is worth an API write. Pure.

use std::collections::HashMap;
use std::time::Duration;

use qscaler_crds::usage::UsageReport;

use crate::cgroup::CgroupSample;

/// One look at the worker's process tree and the container's cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// Monotonic time of the reading.
    pub at: Duration,
    /// Each descendant as (pid, start time, cpu ticks).
    pub procs: Vec<(i32, u64, u64)>,
    /// Sum of the descendants' resident set sizes.
    pub rss_bytes: u64,
    pub cgroup: Option<CgroupSample>,
}

#[derive(Clone, Debug)]
struct Previous {
    at: Duration,
    ticks: HashMap<(i32, u64), u64>,
    cgroup_cpu_ns: Option<u64>,
}

/// Keeps the peaks across readings.
#[derive(Clone, Debug)]
pub struct Meter {
    ticks_per_sec: u64,
    prev: Option<Previous>,
    peaks: UsageReport,
}

/// CPU ticks spent between two readings. Processes present in both count their increase; a
/// process new in `cur` counts all its time (it started during the window); processes that
/// ended are gone from both sums, so their last moments are lost: the cgroup's counter, when
/// readable, does not have that gap and is preferred.
pub fn tick_delta(prev: &HashMap<(i32, u64), u64>, cur: &[(i32, u64, u64)]) -> u64 {
    cur.iter()
        .map(|&(pid, start, ticks)| match prev.get(&(pid, start)) {
            Some(&before) => ticks.saturating_sub(before),
            None => ticks,
        })
        .fold(0u64, u64::saturating_add)
}

/// Thousandths of a core for `used` CPU time over `window`.
pub fn millicores(used: Duration, window: Duration) -> u64 {
    if window.is_zero() {
        return 0;
    }
    (used.as_secs_f64() / window.as_secs_f64() * 1000.0).round() as u64
}

impl Meter {
    pub fn new(ticks_per_sec: u64) -> Self {
        Meter {
            ticks_per_sec: ticks_per_sec.max(1),
            prev: None,
            peaks: UsageReport::default(),
        }
    }

    /// Folds one reading in; returns peaks plus the current values (no `reported_at`).
    pub fn observe(&mut self, r: &Reading) -> UsageReport {
        let cg = r.cgroup.unwrap_or_default();
        let cpu = self.prev.as_ref().and_then(|prev| {
            let window = r.at.checked_sub(prev.at)?;
            let used = match (prev.cgroup_cpu_ns, cg.cpu_ns) {
                (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
                _ => {
                    let ticks = tick_delta(&prev.ticks, &r.procs);
                    Duration::from_secs_f64(ticks as f64 / self.ticks_per_sec as f64)
                }
            };
            Some(millicores(used, window))
        });
        let memory = cg.memory_current.unwrap_or(r.rss_bytes);
        self.peaks = UsageReport {
            cpu_millicores: self.peaks.cpu_millicores.max(cpu.unwrap_or(0)),
            memory_bytes: self
                .peaks
                .memory_bytes
                .max(memory)
                .max(cg.memory_peak.unwrap_or(0)),
            oom_kills: self.peaks.oom_kills.max(cg.oom_kills.unwrap_or(0)),
            current_cpu_millicores: cpu,
            current_memory_bytes: Some(memory),
            reported_at: None,
        };
        self.prev = Some(Previous {
            at: r.at,
            ticks: r.procs.iter().map(|&(p, s, t)| ((p, s), t)).collect(),
            cgroup_cpu_ns: cg.cpu_ns,
        });
        self.peaks
    }

    pub fn peaks(&self) -> UsageReport {
        self.peaks
    }
}

/// When a report is written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// No two reports closer than this (an OOM kill excepted).
    pub min_interval: Duration,
    /// A peak must rise by more than this fraction of the last reported one.
    pub rise: f64,
}

/// Rises smaller than these are noise, whatever the fraction.
pub const MIN_CPU_RISE_MILLICORES: u64 = 10;
pub const MIN_MEMORY_RISE_BYTES: u64 = 1 << 20;

fn rose(old: u64, new: u64, rise: f64, min_abs: u64) -> bool {
    new > old && new - old >= min_abs && (new - old) as f64 > old as f64 * rise
}

/// Whether `peaks` at time `now` deserve a report, given the last one written (value and time).
pub fn should_report(
    policy: Policy,
    last: Option<(&UsageReport, Duration)>,
    now: Duration,
    peaks: &UsageReport,
) -> bool {
    let Some((last, at)) = last else {
        return true;
    };
    if peaks.oom_kills > last.oom_kills {
        return true;
    }
    if now.saturating_sub(at) < policy.min_interval {
        return false;
    }
    rose(
        last.cpu_millicores,
        peaks.cpu_millicores,
        policy.rise,
        MIN_CPU_RISE_MILLICORES,
    ) || rose(
        last.memory_bytes,
        peaks.memory_bytes,
        policy.rise,
        MIN_MEMORY_RISE_BYTES,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn cpu_from_process_ticks() {
        let mut m = Meter::new(100);
        let r0 = Reading {
            at: secs(10),
            procs: vec![(5, 1, 100)],
            rss_bytes: 1000,
            cgroup: None,
        };
        let first = m.observe(&r0);
        assert_eq!(first.current_cpu_millicores, None);
        assert_eq!(first.memory_bytes, 1000);
        // pid 5 used 50 ticks (0.5 s), a new pid 6 used 50 ticks: 1 s of CPU over 2 s = 500m.
        let r1 = Reading {
            at: secs(12),
            procs: vec![(5, 1, 150), (6, 9, 50)],
            rss_bytes: 3000,
            cgroup: None,
        };
        let u = m.observe(&r1);
        assert_eq!(u.current_cpu_millicores, Some(500));
        assert_eq!(u.cpu_millicores, 500);
        assert_eq!(u.memory_bytes, 3000);
        // Quiet window: current drops, peaks stay.
        let r2 = Reading {
            at: secs(13),
            procs: vec![(5, 1, 150)],
            rss_bytes: 500,
            cgroup: None,
        };
        let u = m.observe(&r2);
        assert_eq!(u.current_cpu_millicores, Some(0));
        assert_eq!(u.current_memory_bytes, Some(500));
        assert_eq!((u.cpu_millicores, u.memory_bytes), (500, 3000));
    }

    #[test]
    fn a_reused_pid_is_a_new_process() {
        let prev = HashMap::from([((5, 1), 1000)]);
        assert_eq!(tick_delta(&prev, &[(5, 2, 30)]), 30);
        assert_eq!(tick_delta(&prev, &[(5, 1, 1030)]), 30);
        assert_eq!(tick_delta(&prev, &[(5, 1, 10)]), 0);
    }

    #[test]
    fn the_cgroup_wins_when_readable() {
        let mut m = Meter::new(100);
        let cg = |cpu_ns, cur, peak, oom| {
            Some(CgroupSample {
                memory_current: Some(cur),
                memory_peak: Some(peak),
                cpu_ns: Some(cpu_ns),
                oom_kills: Some(oom),
            })
        };
        m.observe(&Reading {
            at: secs(0),
            procs: vec![],
            rss_bytes: 10,
            cgroup: cg(0, 100, 100, 0),
        });
        let u = m.observe(&Reading {
            at: secs(1),
            procs: vec![],
            rss_bytes: 10,
            cgroup: cg(250_000_000, 200, 9000, 1),
        });
        assert_eq!(u.current_cpu_millicores, Some(250));
        assert_eq!(u.current_memory_bytes, Some(200));
        // The kernel's peak saw a spike between samples.
        assert_eq!(u.memory_bytes, 9000);
        assert_eq!(u.oom_kills, 1);
    }

    #[test]
    fn millicores_edges() {
        assert_eq!(millicores(secs(1), Duration::ZERO), 0);
        assert_eq!(millicores(secs(2), secs(1)), 2000);
        assert_eq!(millicores(Duration::from_millis(1), secs(1)), 1);
    }

    const POLICY: Policy = Policy {
        min_interval: Duration::from_secs(10),
        rise: 0.1,
    };

    fn rep(cpu: u64, mem: u64, oom: u32) -> UsageReport {
        UsageReport {
            cpu_millicores: cpu,
            memory_bytes: mem,
            oom_kills: oom,
            ..Default::default()
        }
    }

    #[test]
    fn report_policy() {
        let mib = 1 << 20;
        let last = rep(100, 100 * mib, 0);
        let table = [
            // (last, since, now, want)
            (None, 0, rep(0, 0, 0), true),
            (Some(last), 20, rep(100, 100 * mib, 0), false),
            (Some(last), 20, rep(111, 100 * mib, 0), true),
            (Some(last), 20, rep(110, 100 * mib, 0), false),
            (Some(last), 5, rep(500, 100 * mib, 0), false),
            (Some(last), 20, rep(100, 111 * mib, 0), true),
            (Some(last), 20, rep(100, 105 * mib, 0), false),
            (Some(last), 1, rep(100, 100 * mib, 1), true),
            (Some(rep(0, 0, 0)), 20, rep(5, 1000, 0), false),
            (Some(rep(0, 0, 0)), 20, rep(10, 0, 0), true),
        ];
        for (last, since, now, want) in table {
            let got = should_report(
                POLICY,
                last.as_ref().map(|l| (l, secs(100))),
                secs(100 + since),
                &now,
            );
            assert_eq!(got, want, "{last:?} +{since}s {now:?}");
        }
    }

    proptest! {
        #[test]
        fn peaks_never_fall(samples in proptest::collection::vec((0u64..10_000, 0u64..1 << 40, 0u64..1000), 1..20)) {
            let mut m = Meter::new(100);
            let mut prev = UsageReport::default();
            for (i, (ticks, rss, _)) in samples.iter().enumerate() {
                let u = m.observe(&Reading { at: secs(i as u64), procs: vec![(1, 1, *ticks)], rss_bytes: *rss, cgroup: None });
                prop_assert!(u.cpu_millicores >= prev.cpu_millicores);
                prop_assert!(u.memory_bytes >= prev.memory_bytes);
                prop_assert!(u.memory_bytes >= *rss);
                prev = u;
            }
        }

        #[test]
        fn nothing_is_reported_twice_within_the_interval(cpu in any::<u32>(), mem in any::<u32>(), since in 0u64..10) {
            let last = rep(1, 1, 0);
            prop_assert!(!should_report(POLICY, Some((&last, secs(0))), secs(since), &rep(cpu as u64, mem as u64, 0)));
        }
    }
}
