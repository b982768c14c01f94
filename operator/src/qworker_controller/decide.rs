//! The decision of one reconcile, made under the memory lock: desired count (scaling rule,
//! stabilization, hold on missing data), crash-loop backoff, and the plan over the cache overlaid
//! with the operator's own unconfirmed writes. The rules themselves are pure functions elsewhere;
//! this file gathers their inputs. [`requeue_after`] says when to look again.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use qscaler_crds::{QWorker, QWorkerStatus};

use crate::broker::Depth;
use crate::context::{lock, Context, Key};
use crate::planning::{self, ObservedPod, Pacing, Phase, Plan, PlanInput};
use crate::scaling::{hold, raw_desired, Stabilizer};

/// Everything decided under the memory lock.
pub(super) struct Decision {
    pub desired: i32,
    pub plan: Plan,
    pub view: Vec<ObservedPod>,
    pub crashing: bool,
    pub crash_event: bool,
    pub new_failures: u32,
    pub streak: u32,
    pub backoff_wait: Duration,
    pub next_change: Option<Duration>,
    pub expectations_pending: bool,
}

/// What a reconcile saw, as the decision needs it.
pub(super) struct Seen<'a> {
    pub old: &'a QWorkerStatus,
    pub observed: &'a [ObservedPod],
    pub depth: Option<Depth>,
    /// The workers that ran long enough (or succeeded) to count as healthy.
    pub healthy: &'a [String],
    pub now: &'a Time,
}

pub(super) fn decide(ctx: &Context, qw: &QWorker, key: &Key, seen: &Seen<'_>) -> Decision {
    let Seen {
        old,
        observed,
        depth,
        healthy,
        now: now_t,
    } = *seen;
    let failed = observed
        .iter()
        .filter(|p| p.phase == Phase::Failed)
        .map(|p| p.name.as_str());
    let sc_cfg = &qw.spec.scale_config;
    let window = sc_cfg
        .scale_down_stabilization_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(ctx.settings.stabilization);
    let now = Instant::now();
    let mut mem = lock(&ctx.memory);
    let m = mem.entry(key.clone()).or_default();
    let had_status = qw
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .is_some();
    let stabilizer = m
        .stabilizer
        .get_or_insert_with(|| Stabilizer::seeded(now, had_status.then_some(old.desired_replicas)));
    let alive = observed
        .iter()
        .filter(|p| p.phase.is_alive() && p.draining.is_none())
        .count() as i32;
    let desired = match depth {
        Some(dp) => {
            let raw = raw_desired(
                dp.backlog(),
                sc_cfg.scaling_factor,
                sc_cfg.min_replicas,
                sc_cfg.max_replicas,
            );
            stabilizer
                .recommend(now, raw, window)
                .clamp(sc_cfg.min_replicas.max(0), sc_cfg.max_replicas.max(0))
        }
        None => hold(
            stabilizer
                .current(now, window)
                .or(had_status.then_some(old.desired_replicas)),
            alive,
            sc_cfg.min_replicas,
            sc_cfg.max_replicas,
        ),
    };
    let new_failures = m.crash.observe(
        failed,
        healthy.iter().map(String::as_str),
        observed.iter().map(|p| p.name.as_str()),
        now,
        &ctx.settings.backoff,
    );
    let backoff_wait = m.crash.wait(now, &ctx.settings.backoff);
    let now_ms = now_t.0.as_millisecond();
    let view = m
        .expectations
        .overlay(observed, now, ctx.settings.expectation_timeout, now_ms);
    let plan = planning::plan(&PlanInput {
        pods: &view,
        desired,
        max_replicas: sc_cfg.max_replicas,
        pacing: Pacing::resolve(&qw.rollout_strategy(), desired),
        may_create: backoff_wait.is_zero(),
    });
    let crashing = m.crash.crashing();
    let crash_event = crashing && !m.crash_reported;
    m.crash_reported = crashing;
    Decision {
        desired,
        next_change: stabilizer.next_change(now, window),
        plan,
        view,
        crashing,
        crash_event,
        new_failures,
        streak: m.crash.streak(),
        backoff_wait,
        expectations_pending: !m.expectations.is_empty(),
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
