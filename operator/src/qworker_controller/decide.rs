//! The decision of one reconcile, a pure function of (memory, settings, QWorker, observed pods,
//! queue reading, now): desired count (scaling rule, stabilization, hold on missing data),
//! crash-loop backoff, and the plan over the cache overlaid with the operator's own unconfirmed
//! writes. "How does queue depth become pods": [`crate::scaling`] and this file; "which pod
//! drains": [`crate::planning`] and this file. [`requeue_after`] says when to look again.

use std::time::{Duration, Instant};

use qscaler_crds::QWorker;

use crate::broker::Depth;
use crate::context::Settings;
use crate::controls::{self, CountInput, Held, Knobs};
use crate::memory::Memory;
use crate::planning::{self, ObservedPod, Pacing, Phase, Plan, PlanInput};
use crate::scaling::{hold, wanted, Stabilizer};

/// What one reconcile decided.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Decision {
    pub desired: i32,
    pub plan: Plan,
    /// The cached pods as they will be once the operator's unconfirmed writes show.
    pub view: Vec<ObservedPod>,
    pub crashing: bool,
    /// Whether the crash-loop Event is due (once per streak).
    pub crash_event: bool,
    pub new_failures: u32,
    pub streak: u32,
    pub backoff_wait: Duration,
    /// When stabilization lets the desired count fall.
    pub next_change: Option<Duration>,
    pub expectations_pending: bool,
    /// Paused: the count held, nothing rolled out (see [`crate::controls`]).
    pub paused: bool,
    /// The control that held the count or cut the plan, if one did.
    pub held: Option<Held>,
}

/// What a reconcile saw, as the decision needs it.
pub(super) struct Seen<'a> {
    /// The desired count in the stored status, if a status was ever written.
    pub last_desired: Option<i32>,
    pub observed: &'a [ObservedPod],
    /// The queue reading (`None`: unknown, replicas are held).
    pub depth: Option<Depth>,
    /// The workers that ran long enough (or succeeded) to count as healthy.
    pub healthy: &'a [String],
    pub now: Instant,
    /// Wall-clock now in milliseconds (the creation time of pods created but not seen).
    pub now_ms: i64,
}

pub(super) fn decide(
    m: &mut Memory,
    settings: &Settings,
    qw: &QWorker,
    seen: &Seen<'_>,
) -> Decision {
    let Seen {
        last_desired,
        observed,
        depth,
        healthy,
        now,
        now_ms,
    } = *seen;
    let failed = observed
        .iter()
        .filter(|p| p.phase == Phase::Failed)
        .map(|p| p.name.as_str());
    let sc_cfg = &qw.spec.scale_config;
    let window = sc_cfg
        .scale_down_stabilization_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(settings.stabilization);
    let stabilizer = m
        .stabilizer
        .get_or_insert_with(|| Stabilizer::seeded(now, last_desired));
    let alive = observed
        .iter()
        .filter(|p| p.phase.is_alive() && p.draining.is_none())
        .count() as i32;
    let desired = match depth {
        Some(dp) => stabilizer
            .recommend(now, wanted(sc_cfg, dp), window)
            .clamp(sc_cfg.min_replicas.max(0), sc_cfg.max_replicas.max(0)),
        None => hold(
            stabilizer.current(now, window).or(last_desired),
            alive,
            sc_cfg.min_replicas,
            sc_cfg.max_replicas,
        ),
    };
    let mut next_change = stabilizer.next_change(now, window);
    let knobs = Knobs::of(qw);
    let counted = controls::count(
        &knobs,
        &mut m.controls,
        &CountInput {
            scaled: desired,
            backlog: depth.map(|d| d.backlog()),
            alive,
            last_desired,
            now,
            now_ms,
        },
    );
    let desired = counted.desired;
    next_change = next_change.into_iter().chain(counted.ends_in(now_ms)).min();
    let new_failures = m.crash.observe(
        failed,
        healthy.iter().map(String::as_str),
        observed.iter().map(|p| p.name.as_str()),
        now,
        &settings.backoff,
    );
    let backoff_wait = m.crash.wait(now, &settings.backoff);
    let view = m
        .expectations
        .overlay(observed, now, settings.expectation_timeout, now_ms);
    let frozen;
    let pods = if knobs.paused {
        frozen = controls::frozen_rollout(&view);
        &frozen
    } else {
        &view
    };
    let mut plan = planning::plan(&PlanInput {
        pods,
        desired,
        max_replicas: sc_cfg.max_replicas,
        pacing: Pacing::resolve(&qw.rollout_strategy(), desired),
        may_create: backoff_wait.is_zero(),
    });
    let limited = controls::limit(&knobs, &mut m.controls, &mut plan, now);
    next_change = next_change.into_iter().chain(limited.next_drain).min();
    let crashing = m.crash.crashing();
    let crash_event = crashing && !m.crash_reported;
    m.crash_reported = crashing;
    Decision {
        desired,
        next_change,
        plan,
        view,
        crashing,
        crash_event,
        new_failures,
        streak: m.crash.streak(),
        backoff_wait,
        expectations_pending: !m.expectations.is_empty(),
        paused: knobs.paused,
        held: counted.held.or(limited.held),
    }
}

/// When to reconcile again: soon while writes are unconfirmed or the queue unread, at backoff
/// expiry, or when stabilization allows a scale-down; otherwise a minute (watches and the poller
/// bring every other change sooner).
pub(super) fn requeue_after(d: &Decision, depth_known: bool) -> Duration {
    let mut next = Duration::from_secs(60);
    if d.expectations_pending || !d.plan.is_empty() || !depth_known {
        next = next.min(Duration::from_secs(2));
    }
    if !d.backoff_wait.is_zero() {
        next = next.min(d.backoff_wait + Duration::from_millis(50));
    }
    if let Some(n) = d.next_change {
        next = next.min(n + Duration::from_millis(50));
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> Decision {
        Decision {
            desired: 1,
            plan: Plan::default(),
            view: vec![],
            crashing: false,
            crash_event: false,
            new_failures: 0,
            streak: 0,
            backoff_wait: Duration::ZERO,
            next_change: None,
            expectations_pending: false,
            paused: false,
            held: None,
        }
    }

    #[test]
    fn a_quiet_qworker_is_looked_at_every_minute() {
        assert_eq!(requeue_after(&quiet(), true), Duration::from_secs(60));
    }

    #[test]
    fn unconfirmed_writes_a_pending_plan_or_an_unread_queue_look_again_soon() {
        let two = Duration::from_secs(2);
        let pending = Decision {
            expectations_pending: true,
            ..quiet()
        };
        assert_eq!(requeue_after(&pending, true), two);
        let acting = Decision {
            plan: Plan {
                create: 1,
                ..Plan::default()
            },
            ..quiet()
        };
        assert_eq!(requeue_after(&acting, true), two);
        assert_eq!(requeue_after(&quiet(), false), two);
    }

    #[test]
    fn backoff_expiry_and_stabilization_end_set_the_time_when_sooner() {
        let backing_off = Decision {
            backoff_wait: Duration::from_secs(8),
            ..quiet()
        };
        assert_eq!(
            requeue_after(&backing_off, true),
            Duration::from_millis(8050)
        );
        let stabilizing = Decision {
            next_change: Some(Duration::from_millis(300)),
            backoff_wait: Duration::from_secs(8),
            ..quiet()
        };
        assert_eq!(
            requeue_after(&stabilizing, true),
            Duration::from_millis(350)
        );
        let far = Decision {
            next_change: Some(Duration::from_secs(600)),
            ..quiet()
        };
        assert_eq!(requeue_after(&far, true), Duration::from_secs(60));
    }
}

/// The decision over many reconciles, with the pod cache one reconcile behind the API: the
/// stabilizer, the crash backoff, the expectations and the plan together.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::crash::BackoffSettings;
    use crate::expectations::Expect;
    use proptest::prelude::*;

    const MAX: i32 = 5;

    fn settings() -> Settings {
        Settings {
            poll_interval: Duration::from_secs(1),
            stabilization: Duration::from_secs(5),
            backoff: BackoffSettings {
                base: Duration::from_secs(2),
                max: Duration::from_secs(30),
                healthy_after: Duration::from_secs(20),
            },
            expectation_timeout: Duration::from_secs(60),
            health_interval: Duration::from_secs(30),
            broker_timeout: Duration::from_secs(1),
            reading_max_age: Duration::from_secs(10),
        }
    }

    fn qworker() -> QWorker {
        QWorker::new(
            "w",
            serde_json::from_value(serde_json::json!({
                "podSpec": {"containers": [{"name": "c", "image": "i"}]},
                "scaleConfig": {"scalerConfigRef": "s", "queue": "q", "maxReplicas": MAX}
            }))
            .unwrap(),
        )
    }

    /// One reconcile's world: a queue reading (if any), time passing, and which running workers
    /// crash before it.
    #[derive(Clone, Debug)]
    struct Step {
        depth: Option<u64>,
        dt_ms: u64,
        crash: Vec<bool>,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            prop::option::weighted(0.8, 0u64..12),
            0u64..4000,
            prop::collection::vec(prop::bool::weighted(0.15), 0..6),
        )
            .prop_map(|(depth, dt_ms, crash)| Step {
                depth,
                dt_ms,
                crash,
            })
    }

    fn alive(pods: &[ObservedPod]) -> usize {
        pods.iter().filter(|p| p.phase.is_alive()).count()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// With the cache a reconcile late, the operator never runs more than maxReplicas pods,
        /// never drains a pod twice, creates nothing while backing off, never deletes a pod that
        /// may hold a task, and follows the queue: desired stays in [min, max] and never below
        /// what the current reading asks.
        #[test]
        fn a_lagging_cache_never_makes_it_overshoot_or_repeat(steps in prop::collection::vec(step(), 1..40)) {
            let (s, qw) = (settings(), qworker());
            let mut m = Memory::default();
            let mut cluster: Vec<ObservedPod> = vec![];
            let mut cache: Vec<ObservedPod> = vec![];
            let t0 = Instant::now();
            let mut now = t0;
            let mut created = 0;
            for st in &steps {
                now += Duration::from_millis(st.dt_ms);
                let now_ms = now.duration_since(t0).as_millis() as i64;
                // The kubelet's turn: pending pods start, drained ones finish, some crash.
                let mut crash = st.crash.iter();
                for p in cluster.iter_mut().filter(|p| p.phase.is_alive()) {
                    if p.draining.is_some() {
                        p.phase = Phase::Succeeded;
                    } else if p.phase == Phase::Pending {
                        p.phase = Phase::Running;
                        p.started = true;
                    } else if crash.next() == Some(&true) {
                        p.phase = Phase::Failed;
                    }
                }
                let seen = Seen {
                    last_desired: None,
                    observed: &cache,
                    depth: st.depth.map(|q| Depth { queued: q, ..Depth::default() }),
                    healthy: &[],
                    now,
                    now_ms,
                };
                let d = decide(&mut m, &s, &qw, &seen);
                let sc = &qw.spec.scale_config;
                prop_assert!((sc.min_replicas..=sc.max_replicas).contains(&d.desired));
                if let Some(q) = seen.depth {
                    prop_assert!(d.desired >= wanted(sc, q), "stabilized below the reading");
                }
                if !d.backoff_wait.is_zero() {
                    prop_assert_eq!(d.plan.create, 0, "created while backing off");
                }
                // The API's turn: apply the plan to the real pods, remembering each write.
                for (name, _) in &d.plan.delete {
                    // As far as the operator can know (its view): a worker that may hold a task
                    // is drained, never deleted.
                    let p = d.view.iter().find(|p| p.name == *name);
                    prop_assert!(
                        p.is_some_and(|p| !p.phase.is_alive() || p.nothing_runs()),
                        "deleted a pod that may hold a task: {:?}", p
                    );
                    cluster.retain(|p| p.name != *name);
                    m.expect(name, Expect::Deleted, now);
                }
                for name in &d.plan.undrain {
                    if let Some(p) = cluster.iter_mut().find(|p| p.name == *name) {
                        p.draining = None;
                    }
                    m.expect(name, Expect::Undrained, now);
                }
                for (name, why) in &d.plan.drain {
                    if let Some(p) = cluster.iter_mut().find(|p| p.name == *name) {
                        prop_assert!(p.draining.is_none(), "drained {} twice", name);
                        p.draining = Some(*why);
                    }
                    m.expect(name, Expect::Drained(*why), now);
                }
                for _ in 0..d.plan.create {
                    created += 1;
                    let name = format!("w-{created}");
                    cluster.push(ObservedPod {
                        name: name.clone(),
                        current: true,
                        created: now_ms,
                        ..ObservedPod::default()
                    });
                    m.expect(&name, Expect::Created, now);
                }
                prop_assert!(alive(&cluster) <= MAX as usize, "{} alive > maxReplicas", alive(&cluster));
                // The cache catches up one reconcile late.
                cache = cluster.clone();
            }
        }
    }
}
