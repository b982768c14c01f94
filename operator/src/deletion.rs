//! What deleting a QWorker does to its pods (pure): the QWorker carries a finalizer, and until
//! every worker has ended and its in-flight tasks are back in the queue, the deletion waits.
//!
//! Per pod of the QWorker (owned by it):
//! - ended (Succeeded/Failed): its processing list goes back to the queue, then the pod is deleted;
//! - nothing runs in it (Pending, never started, or what ran has stopped): deleted outright;
//! - alive and not draining: drained (`quickube.com/drain=deleted`): the supervisor finishes its
//!   task and exits;
//! - alive past its grace (the pod's `terminationGracePeriodSeconds`, default 30 s, counted from
//!   the QWorker's `deletionTimestamp`): deleted, so the kubelet ends it (SIGTERM, then SIGKILL
//!   after the grace); its list is returned once it is gone;
//! - already being deleted: waited for.
//!
//! An orphaning delete (`--cascade=orphan`, the `orphan` finalizer) leaves the pods alone: they run
//! on without owner and keep their lists (see the poller).

use crate::planning::{ObservedPod, Phase};

/// The Kubernetes default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// One pod of a QWorker being deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    pub pod: ObservedPod,
    /// The pod's own `terminationGracePeriodSeconds`.
    pub grace_seconds: i64,
}

/// What to do next for a QWorker being deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeletionPlan {
    /// Pods to drain (reason `deleted`).
    pub drain: Vec<String>,
    /// Pods to delete: nothing runs in them, or their grace is over.
    pub delete: Vec<String>,
    /// Ended pods whose processing lists go back to the queue (then the pod is deleted).
    pub give_back: Vec<String>,
    /// Pods still alive: the deletion waits for them.
    pub waiting: Vec<String>,
}

/// The plan for the pods of a QWorker deleted `elapsed_seconds` ago; `orphaning`: the pods are
/// to outlive it (nothing is done to them).
pub fn plan_deletion(pods: &[PodFacts], elapsed_seconds: i64, orphaning: bool) -> DeletionPlan {
    let mut out = DeletionPlan::default();
    if orphaning {
        return out;
    }
    for f in pods {
        let p = &f.pod;
        let name = p.name.clone();
        if !p.phase.is_alive() {
            out.give_back.push(name);
            continue;
        }
        out.waiting.push(name.clone());
        if p.deleting {
            continue;
        }
        if (p.phase == Phase::Pending && p.nothing_runs()) || elapsed_seconds > f.grace_seconds {
            out.delete.push(name);
        } else if p.draining.is_none() {
            out.drain.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use qscaler_crds::names::DrainReason;

    fn pod(name: &str, phase: Phase) -> PodFacts {
        PodFacts {
            pod: ObservedPod {
                name: name.into(),
                phase,
                started: phase != Phase::Pending,
                ..Default::default()
            },
            grace_seconds: 30,
        }
    }

    #[test]
    fn running_pods_are_drained_ended_ones_give_back_unstarted_ones_go() {
        let mut draining = pod("draining", Phase::Running);
        draining.pod.draining = Some(DrainReason::ScaleDown);
        let mut leaving = pod("leaving", Phase::Running);
        leaving.pod.deleting = true;
        let mut at_work = pod("pending-at-work", Phase::Pending);
        at_work.pod.started = true;
        let pods = vec![
            pod("run", Phase::Running),
            draining,
            leaving,
            pod("done", Phase::Succeeded),
            pod("crashed", Phase::Failed),
            pod("new", Phase::Pending),
            at_work,
        ];
        let p = plan_deletion(&pods, 5, false);
        assert_eq!(p.drain, vec!["run", "pending-at-work"]);
        assert_eq!(p.delete, vec!["new"]);
        assert_eq!(p.give_back, vec!["done", "crashed"]);
        assert_eq!(
            p.waiting,
            vec!["run", "draining", "leaving", "new", "pending-at-work"]
        );
    }

    #[test]
    fn past_its_grace_a_pod_is_deleted_and_still_waited_for() {
        let mut short = pod("short", Phase::Running);
        short.grace_seconds = 10;
        let mut drained = pod("drained", Phase::Running);
        drained.pod.draining = Some(DrainReason::Deleted);
        drained.grace_seconds = 10;
        let long = pod("long", Phase::Running);
        let p = plan_deletion(&[short, drained, long], 11, false);
        assert_eq!(p.delete, vec!["short", "drained"]);
        assert_eq!(p.drain, vec!["long"]);
        assert_eq!(p.waiting, vec!["short", "drained", "long"]);
        // Exactly at the grace: not yet.
        let mut at = pod("at", Phase::Running);
        at.grace_seconds = 11;
        at.pod.draining = Some(DrainReason::Deleted);
        assert!(plan_deletion(&[at], 11, false).delete.is_empty());
    }

    #[test]
    fn nothing_left_means_done_and_orphaning_touches_nothing() {
        assert_eq!(plan_deletion(&[], 100, false), DeletionPlan::default());
        let pods = vec![pod("run", Phase::Running), pod("done", Phase::Succeeded)];
        assert_eq!(plan_deletion(&pods, 100, true), DeletionPlan::default());
    }
}
