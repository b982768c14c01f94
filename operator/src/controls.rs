//! The controls every autoscaler has (README "Controls"), as pure rules applied after the scaling
//! rule: [`count`] turns the count the queue asks for into the count to run (pause, activation
//! from zero, fallback on a failing broker, keep-warm before zero), [`limit`] cuts a plan to the
//! rate limits (pods created per reconcile, drains started per minute). Each says why it held or
//! cut ([`Held`]); [`report`] shows that in the status (conditions Paused and ScaleLimited,
//! `keepWarmUntil`). Every knob unset leaves the plain rule untouched.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use qscaler_crds::conditions::{self as cond, reason};
use qscaler_crds::{QWorker, QWorkerStatus};

use crate::conditions;
use crate::planning::{ObservedPod, Plan};

/// `fallbackAfterSeconds` when unset: a minute of failed reads before the fallback count applies.
pub const DEFAULT_FALLBACK_AFTER: Duration = Duration::from_secs(60);
/// The window `maxDrainsPerMinute` counts drains over.
const DRAIN_WINDOW: Duration = Duration::from_secs(60);

/// One QWorker's control settings, read from its spec and annotations.
#[derive(Clone, Debug, PartialEq)]
pub struct Knobs {
    pub paused: bool,
    pub paused_replicas: Option<i32>,
    pub max_pods_added_per_step: Option<i32>,
    pub max_drains_per_minute: Option<i32>,
    /// 0: any backlog activates.
    pub activation_backlog: u64,
    pub fallback_replicas: Option<i32>,
    pub fallback_after: Duration,
    /// Zero: no keep-warm.
    pub keep_warm: Duration,
    pub min: i32,
    pub max: i32,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            paused: false,
            paused_replicas: None,
            max_pods_added_per_step: None,
            max_drains_per_minute: None,
            activation_backlog: 0,
            fallback_replicas: None,
            fallback_after: DEFAULT_FALLBACK_AFTER,
            keep_warm: Duration::ZERO,
            min: 0,
            max: i32::MAX,
        }
    }
}

impl Knobs {
    pub fn of(qw: &QWorker) -> Knobs {
        let s = &qw.spec.scale_config;
        let secs = |v: Option<i32>| v.map(|v| Duration::from_secs(v.max(0) as u64));
        Knobs {
            paused: qw.paused(),
            paused_replicas: s.paused_replicas,
            max_pods_added_per_step: s.max_pods_added_per_step,
            max_drains_per_minute: s.max_drains_per_minute,
            activation_backlog: s.activation_backlog.unwrap_or(0).max(0) as u64,
            fallback_replicas: s.fallback_replicas,
            fallback_after: secs(s.fallback_after_seconds).unwrap_or(DEFAULT_FALLBACK_AFTER),
            keep_warm: secs(s.keep_warm_seconds).unwrap_or(Duration::ZERO),
            min: s.min_replicas.max(0),
            max: s.max_replicas.max(0),
        }
    }
}

/// What the controls remember of one QWorker between reconciles.
#[derive(Clone, Debug, Default)]
pub struct ControlMemory {
    /// When each drain of the last minute was started.
    drains: VecDeque<Instant>,
    /// Since when the backlog has been zero (monotonic, and wall-clock milliseconds for the
    /// status): the first reconcile that read zero, as reconciles come on each change of depth.
    empty_since: Option<(Instant, i64)>,
    /// Since when the queue has been unreadable.
    failing_since: Option<Instant>,
    /// The count the last reconcile decided.
    last_desired: Option<i32>,
}

/// Why the count is not what the queue asks for, or why a plan was cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    Paused {
        replicas: i32,
    },
    BelowActivation {
        backlog: u64,
        threshold: u64,
    },
    Fallback {
        replicas: i32,
        failing_for: Duration,
    },
    /// One worker kept on an empty queue until this wall-clock time (milliseconds).
    KeepWarm {
        until_ms: i64,
    },
    CreationsLimited {
        wanted: i32,
        allowed: i32,
    },
    DrainsLimited {
        wanted: usize,
        allowed: usize,
    },
}

impl Held {
    /// The ScaleLimited reason (and the Event's).
    pub fn reason(&self) -> &'static str {
        match self {
            Held::Paused { .. } => reason::PAUSED,
            Held::BelowActivation { .. } => reason::BELOW_ACTIVATION,
            Held::Fallback { .. } => reason::FALLBACK_REPLICAS,
            Held::KeepWarm { .. } => reason::KEEP_WARM,
            Held::CreationsLimited { .. } => reason::MAX_PODS_ADDED_PER_STEP,
            Held::DrainsLimited { .. } => reason::MAX_DRAINS_PER_MINUTE,
        }
    }

    /// What the user reads: which control, and what it holds.
    pub fn message(&self) -> String {
        match self {
            Held::Paused { replicas } => format!(
                "paused (spec.paused or annotation {}): holding {replicas} workers, nothing rolls out",
                qscaler_crds::names::ANNOTATION_PAUSED
            ),
            Held::BelowActivation { backlog, threshold } => format!(
                "backlog {backlog} is below activationBacklog {threshold}: staying at zero workers"
            ),
            Held::Fallback {
                replicas,
                failing_for,
            } => format!(
                "the queue has been unreadable for {}s: running fallbackReplicas {replicas}",
                failing_for.as_secs()
            ),
            Held::KeepWarm { until_ms } => format!(
                "the queue is empty: keeping one worker warm until {}",
                wall_time(*until_ms).map_or_else(|| until_ms.to_string(), |t| t.0.to_string())
            ),
            Held::CreationsLimited { wanted, allowed } => format!(
                "{wanted} workers to create, {allowed} created this step (maxPodsAddedPerStep)"
            ),
            Held::DrainsLimited { wanted, allowed } => format!(
                "{wanted} workers to drain, {allowed} drained now (maxDrainsPerMinute)"
            ),
        }
    }
}

/// What [`count`] looks at.
#[derive(Clone, Copy, Debug)]
pub struct CountInput {
    /// The scaling rule's count (stabilized, or held while the backlog is unknown).
    pub scaled: i32,
    /// The backlog read now (`None`: unreadable).
    pub backlog: Option<u64>,
    /// Workers alive and not draining.
    pub alive: i32,
    /// The desired count of the stored status (before this operator decided one).
    pub last_desired: Option<i32>,
    pub now: Instant,
    pub now_ms: i64,
}

/// The count to run, and why it differs from the scaling rule's (if it does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Count {
    pub desired: i32,
    pub held: Option<Held>,
}

impl Count {
    /// When to look again for the hold to end by itself (keep-warm's window).
    pub fn ends_in(&self, now_ms: i64) -> Option<Duration> {
        match self.held {
            Some(Held::KeepWarm { until_ms }) => Some(Duration::from_millis(
                until_ms.saturating_sub(now_ms).max(0) as u64,
            )),
            _ => None,
        }
    }
}

/// The count to run. In order: a pause holds `pausedReplicas` (or the count of when it began);
/// an unreadable queue runs `fallbackReplicas` once it has failed for `fallbackAfter`; from zero
/// workers a backlog under `activationBacklog` keeps zero; a count falling to zero keeps one
/// worker until the backlog has been zero for `keepWarm` (counted from the first reconcile that
/// read zero).
pub fn count(k: &Knobs, m: &mut ControlMemory, i: &CountInput) -> Count {
    let prev = m.last_desired.or(i.last_desired);
    match i.backlog {
        Some(b) => {
            m.failing_since = None;
            if b > 0 {
                m.empty_since = None;
            } else {
                // A restarted operator does not know when the queue emptied: a full window from now.
                m.empty_since.get_or_insert((i.now, i.now_ms));
            }
        }
        None => {
            m.failing_since.get_or_insert(i.now);
        }
    }
    let failing_for = m
        .failing_since
        .map(|since| i.now.saturating_duration_since(since));
    let (desired, held) = if k.paused {
        let replicas = k
            .paused_replicas
            .unwrap_or(prev.unwrap_or(i.alive))
            .clamp(0, k.max);
        (replicas, Some(Held::Paused { replicas }))
    } else if let (Some(fallback), Some(failing_for)) = (
        k.fallback_replicas,
        failing_for.filter(|f| *f >= k.fallback_after),
    ) {
        let replicas = fallback.clamp(k.min, k.max.max(k.min));
        let held = Held::Fallback {
            replicas,
            failing_for,
        };
        (replicas, Some(held))
    } else {
        match i.backlog {
            Some(backlog)
                if prev.unwrap_or(0) == 0
                    && i.alive == 0
                    && i.scaled > k.min
                    && backlog < k.activation_backlog =>
            {
                let held = Held::BelowActivation {
                    backlog,
                    threshold: k.activation_backlog,
                };
                (k.min, Some(held))
            }
            Some(_) if i.scaled == 0 && prev.unwrap_or(0) > 0 && k.max > 0 => {
                match m
                    .empty_since
                    .filter(|(at, _)| i.now.saturating_duration_since(*at) < k.keep_warm)
                {
                    Some((_, at_ms)) => {
                        let until_ms = at_ms.saturating_add(k.keep_warm.as_millis() as i64);
                        (1, Some(Held::KeepWarm { until_ms }))
                    }
                    None => (0, None),
                }
            }
            _ => (i.scaled, None),
        }
    };
    m.last_desired = Some(desired);
    Count { desired, held }
}

/// How [`limit`] cut a plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limited {
    pub held: Option<Held>,
    /// When a drain slot frees, while drains wait for one.
    pub next_drain: Option<Duration>,
}

/// Cuts `plan` to the rate limits: at most `maxPodsAddedPerStep` creations, and drains only as far
/// as `maxDrainsPerMinute` leaves room in the last minute (planning lists the preferred victims
/// first; the rest wait). The drains kept are counted as started now (a failed PATCH then costs a
/// slot: erring toward fewer drains).
pub fn limit(k: &Knobs, m: &mut ControlMemory, plan: &mut Plan, now: Instant) -> Limited {
    let mut out = Limited::default();
    if let Some(cap) = k.max_pods_added_per_step.map(|c| c.max(1)) {
        if plan.create > cap {
            out.held = Some(Held::CreationsLimited {
                wanted: plan.create,
                allowed: cap,
            });
            plan.create = cap;
        }
    }
    let Some(cap) = k.max_drains_per_minute.map(|c| c.max(1) as usize) else {
        return out;
    };
    while m
        .drains
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= DRAIN_WINDOW)
    {
        m.drains.pop_front();
    }
    let room = cap.saturating_sub(m.drains.len());
    let cut = plan.drain.len() > room;
    if cut {
        out.held.get_or_insert(Held::DrainsLimited {
            wanted: plan.drain.len(),
            allowed: room,
        });
        plan.drain.truncate(room);
    }
    m.drains.extend(plan.drain.iter().map(|_| now));
    if cut {
        out.next_drain = m
            .drains
            .front()
            .map(|t| (*t + DRAIN_WINDOW).saturating_duration_since(now));
    }
    out
}

/// The pods as planning should see them while paused: every one current, so no rollout starts or
/// goes on (pods created meanwhile, to hold the count, get the current spec).
pub fn frozen_rollout(view: &[ObservedPod]) -> Vec<ObservedPod> {
    view.iter()
        .map(|p| ObservedPod {
            current: true,
            ..p.clone()
        })
        .collect()
}

/// Shows the controls in the status: Paused (set while paused, False once a pause ended),
/// ScaleLimited (set while a control holds, False once none does), and `keepWarmUntil`.
pub fn report(
    status: &mut QWorkerStatus,
    paused: bool,
    held: Option<&Held>,
    generation: Option<i64>,
    now: &Time,
) {
    let conds = &mut status.conditions;
    let present = |conds: &[Condition], t: &str| conditions::is_true(conds, t).is_some();
    if paused {
        let msg = held
            .filter(|h| matches!(h, Held::Paused { .. }))
            .map_or_else(|| "paused".to_string(), Held::message);
        conditions::set(
            conds,
            cond::PAUSED,
            true,
            reason::PAUSED,
            msg,
            generation,
            now,
        );
    } else if present(conds, cond::PAUSED) {
        let msg = "resumed: scaling follows the queue";
        conditions::set(
            conds,
            cond::PAUSED,
            false,
            reason::RESUMED,
            msg,
            generation,
            now,
        );
    }
    match held {
        Some(h) => {
            conditions::set(
                conds,
                cond::SCALE_LIMITED,
                true,
                h.reason(),
                h.message(),
                generation,
                now,
            );
        }
        None if present(conds, cond::SCALE_LIMITED) => {
            let msg = "no control holds the count";
            conditions::set(
                conds,
                cond::SCALE_LIMITED,
                false,
                reason::NOT_LIMITED,
                msg,
                generation,
                now,
            );
        }
        None => {}
    }
    status.keep_warm_until = match held {
        Some(Held::KeepWarm { until_ms }) => wall_time(*until_ms),
        _ => None,
    };
}

/// Wall-clock milliseconds as a status time, to the second (so it does not change every reconcile).
fn wall_time(ms: i64) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_second(ms.div_euclid(1000))
        .ok()
        .map(Time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qscaler_crds::names::DrainReason;

    const S: Duration = Duration::from_secs(1);

    struct World {
        k: Knobs,
        m: ControlMemory,
        t0: Instant,
    }

    impl World {
        fn new(k: Knobs) -> World {
            World {
                k,
                m: ControlMemory::default(),
                t0: Instant::now(),
            }
        }

        /// One reconcile `at` seconds in: the scaling rule asks `scaled`, `alive` run.
        fn at(&mut self, at: u64, scaled: i32, backlog: Option<u64>, alive: i32) -> Count {
            let i = CountInput {
                scaled,
                backlog,
                alive,
                last_desired: None,
                now: self.t0 + S * at as u32,
                now_ms: 1_000_000 + at as i64 * 1000,
            };
            count(&self.k, &mut self.m, &i)
        }
    }

    fn follows(c: Count, n: i32) {
        assert_eq!(
            c,
            Count {
                desired: n,
                held: None
            }
        );
    }

    #[test]
    fn unset_knobs_follow_the_scaling_rule() {
        let mut w = World::new(Knobs::default());
        follows(w.at(0, 0, Some(0), 0), 0);
        follows(w.at(1, 3, Some(3), 0), 3);
        follows(w.at(2, 0, Some(0), 3), 0);
        follows(w.at(500, 2, None, 0), 2);
        let mut plan = Plan {
            create: 50,
            drain: (0..50)
                .map(|i| (format!("p{i}"), DrainReason::ScaleDown))
                .collect(),
            ..Plan::default()
        };
        let before = plan.clone();
        assert_eq!(limit(&w.k, &mut w.m, &mut plan, w.t0), Limited::default());
        assert_eq!(plan, before);
    }

    #[test]
    fn a_pause_holds_the_count_of_when_it_began_or_paused_replicas() {
        let mut w = World::new(Knobs::default());
        follows(w.at(0, 2, Some(2), 0), 2);
        w.k.paused = true;
        let held = Some(Held::Paused { replicas: 2 });
        assert_eq!(
            w.at(1, 9, Some(40), 2),
            Count {
                desired: 2,
                held: held.clone()
            }
        );
        assert_eq!(w.at(2, 0, Some(0), 2), Count { desired: 2, held });
        w.k.paused_replicas = Some(0);
        assert_eq!(w.at(3, 9, Some(9), 2).desired, 0);
        w.k.paused_replicas = Some(7);
        w.k.max = 5;
        assert_eq!(w.at(4, 9, None, 2).desired, 5, "never above maxReplicas");
        w.k.paused = false;
        follows(w.at(5, 4, Some(4), 5), 4);
    }

    #[test]
    fn a_pause_without_history_holds_what_runs() {
        let mut w = World::new(Knobs {
            paused: true,
            ..Knobs::default()
        });
        assert_eq!(w.at(0, 8, Some(8), 3).desired, 3);
    }

    #[test]
    fn the_stored_desired_count_counts_as_history() {
        let mut w = World::new(Knobs {
            paused: true,
            ..Knobs::default()
        });
        let i = CountInput {
            scaled: 8,
            backlog: Some(8),
            alive: 1,
            last_desired: Some(4),
            now: w.t0,
            now_ms: 0,
        };
        assert_eq!(count(&w.k, &mut w.m, &i).desired, 4);
    }

    #[test]
    fn from_zero_a_backlog_under_the_activation_threshold_keeps_zero() {
        let mut w = World::new(Knobs {
            activation_backlog: 5,
            ..Knobs::default()
        });
        let held = |backlog| {
            Some(Held::BelowActivation {
                backlog,
                threshold: 5,
            })
        };
        assert_eq!(
            w.at(0, 4, Some(4), 0),
            Count {
                desired: 0,
                held: held(4)
            }
        );
        follows(w.at(1, 5, Some(5), 0), 5);
        // Once running, a smaller backlog scales as usual (activation is only from zero).
        follows(w.at(2, 2, Some(2), 5), 2);
        follows(w.at(3, 0, Some(0), 2), 0);
        assert_eq!(w.at(4, 1, Some(1), 0).held, held(1));
    }

    #[test]
    fn activation_respects_min_replicas() {
        let mut w = World::new(Knobs {
            activation_backlog: 10,
            min: 1,
            ..Knobs::default()
        });
        // With min 1 there is always a worker: not "from zero" once it runs.
        assert_eq!(w.at(0, 3, Some(3), 0).desired, 1);
        follows(w.at(1, 3, Some(3), 1), 3);
    }

    #[test]
    fn fallback_applies_after_the_queue_failed_for_a_while_and_holds_before() {
        let mut w = World::new(Knobs {
            fallback_replicas: Some(3),
            fallback_after: S * 10,
            ..Knobs::default()
        });
        follows(w.at(0, 1, Some(1), 0), 1);
        follows(w.at(1, 1, None, 1), 1);
        follows(w.at(10, 1, None, 1), 1);
        assert_eq!(
            w.at(11, 1, None, 1),
            Count {
                desired: 3,
                held: Some(Held::Fallback {
                    replicas: 3,
                    failing_for: S * 10
                })
            }
        );
        // A reading ends it, and the clock starts over on the next failure.
        follows(w.at(12, 2, Some(2), 3), 2);
        follows(w.at(13, 2, None, 2), 2);
        assert_eq!(w.at(23, 2, None, 2).desired, 3);
    }

    #[test]
    fn fallback_stays_within_min_and_max() {
        let mut w = World::new(Knobs {
            fallback_replicas: Some(0),
            fallback_after: Duration::ZERO,
            min: 2,
            max: 4,
            ..Knobs::default()
        });
        assert_eq!(w.at(0, 3, None, 3).desired, 2);
        w.k.fallback_replicas = Some(9);
        assert_eq!(w.at(1, 3, None, 3).desired, 4);
    }

    #[test]
    fn pause_wins_over_fallback() {
        let mut w = World::new(Knobs {
            paused: true,
            paused_replicas: Some(1),
            fallback_replicas: Some(3),
            fallback_after: Duration::ZERO,
            ..Knobs::default()
        });
        assert_eq!(w.at(0, 2, None, 2).held, Some(Held::Paused { replicas: 1 }));
    }

    #[test]
    fn keep_warm_keeps_one_worker_until_the_backlog_was_zero_long_enough() {
        let mut w = World::new(Knobs {
            keep_warm: S * 30,
            ..Knobs::default()
        });
        follows(w.at(0, 4, Some(4), 0), 4);
        follows(w.at(5, 2, Some(2), 4), 2);
        let until_ms = 1_000_000 + 36_000;
        let warm = Count {
            desired: 1,
            held: Some(Held::KeepWarm { until_ms }),
        };
        assert_eq!(w.at(6, 0, Some(0), 2), warm);
        assert_eq!(warm.ends_in(1_000_000 + 6_000), Some(S * 30));
        assert_eq!(w.at(35, 0, Some(0), 1), warm);
        follows(w.at(36, 0, Some(0), 1), 0);
        // At zero, an empty queue does not bring a worker back.
        follows(w.at(36, 0, Some(0), 0), 0);
    }

    #[test]
    fn keep_warm_does_not_start_a_worker_that_activation_held_back() {
        let mut w = World::new(Knobs {
            keep_warm: S * 30,
            activation_backlog: 5,
            ..Knobs::default()
        });
        assert_eq!(w.at(0, 2, Some(2), 0).desired, 0);
        follows(w.at(1, 0, Some(0), 0), 0);
    }

    #[test]
    fn keep_warm_after_a_restart_counts_from_the_first_look() {
        let mut w = World::new(Knobs {
            keep_warm: S * 30,
            ..Knobs::default()
        });
        let i = CountInput {
            scaled: 0,
            backlog: Some(0),
            alive: 2,
            last_desired: Some(2),
            now: w.t0,
            now_ms: 0,
        };
        assert_eq!(count(&w.k, &mut w.m, &i).desired, 1);
        follows(w.at(30, 0, Some(0), 1), 0);
    }

    #[test]
    fn keep_warm_never_exceeds_max_zero() {
        let mut w = World::new(Knobs {
            keep_warm: S * 30,
            max: 0,
            ..Knobs::default()
        });
        w.m.last_desired = Some(1);
        follows(w.at(0, 0, Some(0), 1), 0);
    }

    fn drains(n: usize) -> Vec<(String, DrainReason)> {
        (0..n)
            .map(|i| (format!("p{i}"), DrainReason::ScaleDown))
            .collect()
    }

    #[test]
    fn creations_are_capped_per_step() {
        let mut w = World::new(Knobs {
            max_pods_added_per_step: Some(2),
            ..Knobs::default()
        });
        let mut plan = Plan {
            create: 5,
            ..Plan::default()
        };
        let l = limit(&w.k, &mut w.m, &mut plan, w.t0);
        assert_eq!(plan.create, 2);
        assert_eq!(
            l.held,
            Some(Held::CreationsLimited {
                wanted: 5,
                allowed: 2
            })
        );
        let mut small = Plan {
            create: 2,
            ..Plan::default()
        };
        assert_eq!(limit(&w.k, &mut w.m, &mut small, w.t0).held, None);
        assert_eq!(small.create, 2);
    }

    #[test]
    fn drains_are_capped_over_a_sliding_minute() {
        let mut w = World::new(Knobs {
            max_drains_per_minute: Some(2),
            ..Knobs::default()
        });
        let t = |s: u64| w.t0 + S * s as u32;
        let mut plan = Plan {
            drain: drains(3),
            ..Plan::default()
        };
        let l = limit(&w.k, &mut w.m, &mut plan, t(0));
        assert_eq!(plan.drain, drains(2), "the preferred victims go first");
        assert_eq!(
            l,
            Limited {
                held: Some(Held::DrainsLimited {
                    wanted: 3,
                    allowed: 2
                }),
                next_drain: Some(S * 60)
            }
        );
        let mut again = Plan {
            drain: drains(1),
            ..Plan::default()
        };
        let l = limit(&w.k, &mut w.m, &mut again, t(59));
        assert!(again.drain.is_empty(), "both slots taken for a minute");
        assert_eq!(l.next_drain, Some(S));
        let mut later = Plan {
            drain: drains(1),
            ..Plan::default()
        };
        let l = limit(&w.k, &mut w.m, &mut later, t(60));
        assert_eq!(later.drain.len(), 1, "a minute later the slots are free");
        assert_eq!(l, Limited::default());
    }

    #[test]
    fn a_paused_view_has_no_rollout() {
        let view = vec![
            ObservedPod {
                name: "old".into(),
                current: false,
                ..ObservedPod::default()
            },
            ObservedPod {
                name: "new".into(),
                current: true,
                ..ObservedPod::default()
            },
        ];
        let frozen = frozen_rollout(&view);
        assert!(frozen.iter().all(|p| p.current));
        assert_eq!(frozen.len(), 2);
        assert_eq!(frozen[0].name, "old");
    }

    fn t(sec: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(sec).unwrap())
    }

    fn cond<'a>(s: &'a QWorkerStatus, ty: &str) -> Option<(&'a str, &'a str)> {
        s.conditions
            .iter()
            .find(|c| c.type_ == ty)
            .map(|c| (c.status.as_str(), c.reason.as_str()))
    }

    #[test]
    fn the_status_shows_the_controls_only_once_they_were_used() {
        let mut s = QWorkerStatus::default();
        report(&mut s, false, None, Some(1), &t(10));
        assert!(
            s.conditions.is_empty(),
            "nothing to show for an unused control"
        );
        let paused = Held::Paused { replicas: 2 };
        report(&mut s, true, Some(&paused), Some(1), &t(20));
        assert_eq!(cond(&s, cond::PAUSED), Some(("True", reason::PAUSED)));
        assert_eq!(
            cond(&s, cond::SCALE_LIMITED),
            Some(("True", reason::PAUSED))
        );
        let warm = Held::KeepWarm { until_ms: 65_500 };
        report(&mut s, false, Some(&warm), Some(1), &t(30));
        assert_eq!(cond(&s, cond::PAUSED), Some(("False", reason::RESUMED)));
        assert_eq!(
            cond(&s, cond::SCALE_LIMITED),
            Some(("True", reason::KEEP_WARM))
        );
        assert_eq!(s.keep_warm_until, Some(t(65)));
        report(&mut s, false, None, Some(1), &t(40));
        assert_eq!(
            cond(&s, cond::SCALE_LIMITED),
            Some(("False", reason::NOT_LIMITED))
        );
        assert_eq!(s.keep_warm_until, None);
    }

    #[test]
    fn every_hold_names_its_control() {
        let all = [
            Held::Paused { replicas: 1 },
            Held::BelowActivation {
                backlog: 1,
                threshold: 2,
            },
            Held::Fallback {
                replicas: 1,
                failing_for: S,
            },
            Held::KeepWarm { until_ms: 0 },
            Held::CreationsLimited {
                wanted: 2,
                allowed: 1,
            },
            Held::DrainsLimited {
                wanted: 2,
                allowed: 1,
            },
        ];
        let reasons: std::collections::BTreeSet<_> = all.iter().map(Held::reason).collect();
        assert_eq!(reasons.len(), all.len());
        for h in &all {
            assert!(!h.message().is_empty());
        }
    }

    #[test]
    fn knobs_from_a_qworker() {
        let mut qw = QWorker::new(
            "w",
            serde_json::from_value(serde_json::json!({
                "podSpec": {"containers": [{"name": "c", "image": "i"}]},
                "scaleConfig": {"scalerConfigRef": "s", "queue": "q", "maxReplicas": 5,
                    "maxPodsAddedPerStep": 2, "maxDrainsPerMinute": 3, "activationBacklog": 4,
                    "fallbackReplicas": 1, "keepWarmSeconds": 9, "pausedReplicas": 0}
            }))
            .unwrap(),
        );
        let k = Knobs::of(&qw);
        assert_eq!(
            k,
            Knobs {
                paused: false,
                paused_replicas: Some(0),
                max_pods_added_per_step: Some(2),
                max_drains_per_minute: Some(3),
                activation_backlog: 4,
                fallback_replicas: Some(1),
                fallback_after: DEFAULT_FALLBACK_AFTER,
                keep_warm: S * 9,
                min: 0,
                max: 5,
            }
        );
        qw.metadata.annotations = Some(
            [(
                qscaler_crds::names::ANNOTATION_PAUSED.to_string(),
                "true".to_string(),
            )]
            .into(),
        );
        assert!(Knobs::of(&qw).paused);
        qw.metadata.annotations = Some(
            [(
                qscaler_crds::names::ANNOTATION_PAUSED.to_string(),
                "false".to_string(),
            )]
            .into(),
        );
        assert!(!Knobs::of(&qw).paused);
    }
}
