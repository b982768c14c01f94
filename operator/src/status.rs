//! The QWorker status as a pure function of what one reconcile saw and did. The reconcile writes it
//! only when it differs from the stored one; conditions keep their transition time unless they flip.
//!
//! Conditions: SpecValid (set by the caller before), ScalerHealthy (QueueRead / BrokerUnreachable /
//! ScalerConfigNotFound; left as it is while no reading exists yet), Progressing (True, RollingOut
//! while old-hash workers are alive, RolloutComplete after), WorkersCrashing (CrashLoop /
//! WorkersHealthy), Ready (Scaled when the available updated workers reach desired and nothing
//! crash-loops, else Scaling).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use qscaler_crds::conditions::{self as cond, reason};
use qscaler_crds::qworker::ContainerUsage;
use qscaler_crds::QWorkerStatus;

use crate::broker::Depth;
use crate::conditions;
use crate::observe::Counts;

/// The ScalerHealthy condition a reconcile sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScalerHealth {
    pub healthy: bool,
    pub reason: &'static str,
    pub message: String,
}

impl ScalerHealth {
    pub fn bad(reason: &'static str, message: impl Into<String>) -> ScalerHealth {
        ScalerHealth {
            healthy: false,
            reason,
            message: message.into(),
        }
    }
}

/// What the reconcile knows when it writes status.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub generation: Option<i64>,
    pub now: &'a Time,
    pub short_hash: &'a str,
    pub full_hash: &'a str,
    /// Counts after the plan was applied.
    pub counts: Counts,
    pub desired: i32,
    pub depth: Option<Depth>,
    /// ScalerHealthy to set, or None to leave it.
    pub scaler: Option<ScalerHealth>,
    /// Failures in a row when crash-looping.
    pub crash_streak: Option<u32>,
    /// Whether this reconcile created or removed pods.
    pub acted: bool,
    pub peaks: Vec<ContainerUsage>,
    pub recommended: Vec<ContainerUsage>,
}

/// The new status from the old one and this reconcile's observations.
pub fn compute(old: &QWorkerStatus, o: &Observed<'_>) -> QWorkerStatus {
    let mut s = old.clone();
    let (g, now) = (o.generation, o.now);
    let c = o.counts;
    s.observed_generation = g;
    s.current_pod_spec_hash = o.full_hash.to_string();
    s.current_replicas = c.alive;
    s.desired_replicas = o.desired;
    s.updated_replicas = c.updated;
    s.available_replicas = c.available;
    s.old_replicas = c.old;
    s.draining_replicas = c.draining;
    if let Some(d) = o.depth {
        s.queue_depth = Some(i64::try_from(d.queued).unwrap_or(i64::MAX));
        s.in_flight = Some(i64::try_from(d.in_flight).unwrap_or(i64::MAX));
        if let Some(ms) = d.task_millis {
            s.task_seconds = Some(ms as f64 / 1000.0);
        }
    }
    if o.desired != old.desired_replicas || (old.last_scale_time.is_none() && o.acted) {
        s.last_scale_time = Some(now.clone());
    }
    s.max_container_resources_usage = o.peaks.clone();
    s.recommended_requests = o.recommended.clone();
    let conds = &mut s.conditions;
    if let Some(h) = &o.scaler {
        conditions::set(
            conds,
            cond::SCALER_HEALTHY,
            h.healthy,
            h.reason,
            h.message.clone(),
            g,
            now,
        );
    }
    if c.old > 0 {
        let msg = format!(
            "{} of {} updated workers are available, {} old workers remain",
            c.available, o.desired, c.old
        );
        conditions::set(
            conds,
            cond::PROGRESSING,
            true,
            reason::ROLLING_OUT,
            msg,
            g,
            now,
        );
    } else {
        let msg = format!("every worker runs pod-spec hash {}", o.short_hash);
        conditions::set(
            conds,
            cond::PROGRESSING,
            true,
            reason::ROLLOUT_COMPLETE,
            msg,
            g,
            now,
        );
    }
    match o.crash_streak {
        Some(n) => {
            let msg = format!(
                "{n} workers failed in a row; replacements are created with exponential backoff"
            );
            conditions::set(
                conds,
                cond::WORKERS_CRASHING,
                true,
                reason::CRASH_LOOP,
                msg,
                g,
                now,
            );
        }
        None => {
            let msg = "no worker failed repeatedly";
            conditions::set(
                conds,
                cond::WORKERS_CRASHING,
                false,
                reason::WORKERS_HEALTHY,
                msg,
                g,
                now,
            );
        }
    }
    let msg = format!("{} of {} workers available", c.available, o.desired);
    if c.available >= o.desired && o.crash_streak.is_none() {
        conditions::set(conds, cond::READY, true, reason::SCALED, msg, g, now);
    } else {
        conditions::set(conds, cond::READY, false, reason::SCALING, msg, g, now);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sec: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(sec).unwrap())
    }

    fn observed(now: &Time) -> Observed<'_> {
        Observed {
            generation: Some(3),
            now,
            short_hash: "abc",
            full_hash: "abcdef",
            counts: Counts {
                alive: 3,
                updated: 3,
                available: 3,
                old: 0,
                draining: 0,
            },
            desired: 3,
            depth: Some(Depth {
                queued: 7,
                in_flight: 2,
                tally: None,
                task_millis: Some(1500),
                due_backlog: None,
            }),
            scaler: Some(ScalerHealth {
                healthy: true,
                reason: reason::QUEUE_READ,
                message: "reading queue q".into(),
            }),
            crash_streak: None,
            acted: true,
            peaks: vec![],
            recommended: vec![],
        }
    }

    fn cond<'a>(s: &'a QWorkerStatus, t: &str) -> (&'a str, &'a str, &'a Time) {
        let c = s.conditions.iter().find(|c| c.type_ == t).unwrap();
        (
            c.status.as_str(),
            c.reason.as_str(),
            &c.last_transition_time,
        )
    }

    #[test]
    fn every_field_from_one_reconcile() {
        let now = t(100);
        let s = compute(&QWorkerStatus::default(), &observed(&now));
        assert_eq!(
            (
                s.current_replicas,
                s.desired_replicas,
                s.updated_replicas,
                s.available_replicas
            ),
            (3, 3, 3, 3)
        );
        assert_eq!((s.old_replicas, s.draining_replicas), (0, 0));
        assert_eq!((s.queue_depth, s.in_flight), (Some(7), Some(2)));
        assert_eq!(s.task_seconds, Some(1.5));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.current_pod_spec_hash, "abcdef");
        assert_eq!(s.last_scale_time, Some(now.clone()));
        assert_eq!(cond(&s, cond::READY).0, "True");
        assert_eq!(cond(&s, cond::SCALER_HEALTHY).1, reason::QUEUE_READ);
        assert_eq!(cond(&s, cond::PROGRESSING).1, reason::ROLLOUT_COMPLETE);
        assert_eq!(cond(&s, cond::WORKERS_CRASHING).0, "False");
    }

    #[test]
    fn unchanged_world_gives_an_unchanged_status() {
        let (t1, t2) = (t(100), t(200));
        let first = compute(&QWorkerStatus::default(), &observed(&t1));
        let mut again = observed(&t2);
        again.acted = false;
        assert_eq!(
            compute(&first, &again),
            first,
            "no write when nothing changed"
        );
    }

    #[test]
    fn transitions_and_held_values() {
        let (t1, t2) = (t(100), t(200));
        let first = compute(&QWorkerStatus::default(), &observed(&t1));
        let mut o = observed(&t2);
        o.depth = None;
        o.scaler = Some(ScalerHealth::bad(reason::BROKER_UNREACHABLE, "down"));
        o.counts = Counts {
            alive: 4,
            updated: 1,
            available: 1,
            old: 3,
            draining: 1,
        };
        o.crash_streak = Some(4);
        o.desired = 4;
        let s = compute(&first, &o);
        assert_eq!(
            (s.queue_depth, s.in_flight),
            (Some(7), Some(2)),
            "last depth kept while unknown"
        );
        assert_eq!(
            cond(&s, cond::SCALER_HEALTHY),
            ("False", reason::BROKER_UNREACHABLE, &t2)
        );
        assert_eq!(cond(&s, cond::PROGRESSING).1, reason::ROLLING_OUT);
        assert_eq!(
            cond(&s, cond::PROGRESSING).2,
            &t1,
            "Progressing stayed True"
        );
        assert_eq!(
            cond(&s, cond::WORKERS_CRASHING),
            ("True", reason::CRASH_LOOP, &t2)
        );
        assert_eq!(cond(&s, cond::READY), ("False", reason::SCALING, &t2));
        assert_eq!(s.last_scale_time, Some(t2.clone()));
        // No reading yet: ScalerHealthy left as it was.
        let mut o3 = o.clone();
        o3.scaler = None;
        assert_eq!(
            cond(&compute(&s, &o3), cond::SCALER_HEALTHY).1,
            reason::BROKER_UNREACHABLE
        );
    }
}
