//! One typed view of a QWorker's worker pod: whose it is, its phase, the drain and activity
//! annotations, the pod-spec hash label and what its containers did. The operator (planning, the
//! poller, the deletion) and the plugin read a pod through this, so the rules are written once.
//!
//! Ownership is the operator's rule: the `quickube.com/qworker` label names the QWorker, the pod
//! is in the QWorker's namespace and its controller owner reference is that very QWorker (by uid).
//! A label alone is not enough: `kubectl delete qworker --cascade=orphan` leaves labelled pods that
//! no QWorker owns, and a QWorker re-created under the same name must not adopt them.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ContainerState, Pod};
use k8s_openapi::jiff::Timestamp;

use crate::names::{self, DrainReason};
use crate::ownership::controlled_by;
use crate::QWorker;

/// A pod's lifecycle phase (`status.phase`; absent or unrecognised reads as Pending).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Phase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl Phase {
    pub fn parse(phase: Option<&str>) -> Phase {
        match phase {
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            Some("Unknown") => Phase::Unknown,
            _ => Phase::Pending,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Unknown => "Unknown",
        }
    }

    /// Pending, Running or Unknown: its processes may still run.
    pub fn is_alive(self) -> bool {
        !self.is_terminal()
    }

    /// Succeeded or Failed: its containers have stopped for good.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// A worker pod of one QWorker, as the operator reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerPod {
    pub name: String,
    pub namespace: String,
    pub phase: Phase,
    /// The short pod-spec hash label (the revision it was created from).
    pub hash: Option<String>,
    /// The drain annotation, if set; an unknown reason reads as scale-down.
    pub draining: Option<DrainReason>,
    /// The activity the supervisor reports (`idle`, `busy`), if any.
    pub activity: Option<String>,
    /// A deletion is under way (deletionTimestamp set).
    pub deleting: bool,
    pub created: Option<Timestamp>,
    /// When the kubelet started the pod (`status.startTime`).
    pub started_at: Option<Timestamp>,
    /// A container runs or has run (its state or last state running or terminated).
    pub containers_ran: bool,
    /// No container runs now and one has terminated.
    pub containers_stopped: bool,
    /// Containers whose state or last state is a termination with reason OOMKilled.
    pub oom_killed: BTreeSet<String>,
    /// `spec.terminationGracePeriodSeconds`, if set.
    pub grace_seconds: Option<i64>,
}

impl WorkerPod {
    /// The worker-pod view of `pod` if it is a worker of `qw` (see the module doc for the rule).
    pub fn from_pod(pod: &Pod, qw: &QWorker) -> Option<WorkerPod> {
        is_worker_of(pod, qw).then(|| WorkerPod::read(pod))
    }

    /// The view of `pod` without the ownership check: for a pod already known to be a worker (a
    /// GET by name) or in tests.
    pub fn read(pod: &Pod) -> WorkerPod {
        let meta = &pod.metadata;
        let annotation = |k: &str| meta.annotations.as_ref().and_then(|a| a.get(k));
        let statuses: Vec<_> = pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .collect();
        let ran = |st: Option<&ContainerState>| {
            st.is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        };
        let states: Vec<&ContainerState> =
            statuses.iter().filter_map(|cs| cs.state.as_ref()).collect();
        let oom = |st: Option<&ContainerState>| {
            st.and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.reason.as_deref())
                == Some("OOMKilled")
        };
        WorkerPod {
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            phase: Phase::parse(pod.status.as_ref().and_then(|s| s.phase.as_deref())),
            hash: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(names::LABEL_POD_SPEC_HASH))
                .cloned(),
            draining: annotation(names::ANNOTATION_DRAIN)
                .map(|r| DrainReason::parse(r).unwrap_or(DrainReason::ScaleDown)),
            activity: annotation(names::ANNOTATION_ACTIVITY).cloned(),
            deleting: meta.deletion_timestamp.is_some(),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            started_at: pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0),
            containers_ran: statuses
                .iter()
                .any(|cs| ran(cs.state.as_ref()) || ran(cs.last_state.as_ref())),
            containers_stopped: !states.iter().any(|s| s.running.is_some())
                && states.iter().any(|s| s.terminated.is_some()),
            oom_killed: statuses
                .iter()
                .filter(|cs| oom(cs.state.as_ref()) || oom(cs.last_state.as_ref()))
                .map(|cs| cs.name.clone())
                .collect(),
            grace_seconds: pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds),
        }
    }

    /// The supervisor reported the worker idle.
    pub fn idle(&self) -> bool {
        self.activity.as_deref() == Some("idle")
    }

    /// Whether work may have been taken: a container runs or has run, or the supervisor reported
    /// activity. The phase is no guide: a pod is Pending while any container waits.
    pub fn started(&self) -> bool {
        self.containers_ran || self.activity.is_some()
    }

    /// Whether the pod has been Running for at least `secs` at `now`.
    pub fn running_for(&self, now: Timestamp, secs: i64) -> bool {
        self.phase == Phase::Running
            && self
                .started_at
                .is_some_and(|t| now.as_second() - t.as_second() >= secs)
    }
}

/// Whether `pod` is a worker of `qw`: the label names it, it is in its namespace, and its
/// controller owner reference is this very QWorker (by uid).
pub fn is_worker_of(pod: &Pod, qw: &QWorker) -> bool {
    let Some(uid) = qw.metadata.uid.as_deref() else {
        return false;
    };
    let label = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(names::LABEL_QWORKER));
    label.map(String::as_str) == qw.metadata.name.as_deref()
        && pod.metadata.namespace == qw.metadata.namespace
        && controlled_by(&pod.metadata, uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn qworker(uid: &str) -> QWorker {
        let mut qw = QWorker::new(
            "w",
            serde_json::from_value(serde_json::json!({
                "podSpec": {"containers": [{"name": "c", "image": "i"}]},
                "scaleConfig": {"scalerConfigRef": "s", "queue": "q", "maxReplicas": 3}
            }))
            .unwrap(),
        );
        qw.metadata.namespace = Some("ns".into());
        qw.metadata.uid = Some(uid.into());
        qw
    }

    fn labelled() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w-1", "namespace": "ns",
                "labels": {names::LABEL_QWORKER: "w", names::LABEL_POD_SPEC_HASH: "abc"},
                "annotations": {names::ANNOTATION_DRAIN: "rollout", names::ANNOTATION_ACTIVITY: "idle"}},
            "spec": {"containers": [], "terminationGracePeriodSeconds": 7},
            "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z",
                "containerStatuses": [
                    {"name": "c", "image": "", "imageID": "", "ready": true, "restartCount": 1,
                     "state": {"running": {}},
                     "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
        }))
        .unwrap()
    }

    fn owned(mut pod: Pod, uid: &str) -> Pod {
        pod.metadata.owner_references = Some(vec![OwnerReference {
            uid: uid.into(),
            controller: Some(true),
            ..Default::default()
        }]);
        pod
    }

    #[test]
    fn a_label_alone_does_not_make_a_worker() {
        let qw = qworker("u1");
        assert!(WorkerPod::from_pod(&labelled(), &qw).is_none());
        assert!(WorkerPod::from_pod(&owned(labelled(), "u1"), &qw).is_some());
        // The same name re-created: another uid, not adopted.
        assert!(WorkerPod::from_pod(&owned(labelled(), "u1"), &qworker("u2")).is_none());
        let mut elsewhere = owned(labelled(), "u1");
        elsewhere.metadata.namespace = Some("other".into());
        assert!(WorkerPod::from_pod(&elsewhere, &qw).is_none());
        let mut relabelled = owned(labelled(), "u1");
        relabelled.metadata.labels = None;
        assert!(WorkerPod::from_pod(&relabelled, &qw).is_none());
    }

    #[test]
    fn reads_phase_hash_drain_activity_and_containers() {
        let w = WorkerPod::read(&labelled());
        assert_eq!(w.phase, Phase::Running);
        assert_eq!(w.hash.as_deref(), Some("abc"));
        assert_eq!(w.draining, Some(DrainReason::Rollout));
        assert!(w.idle() && w.started() && w.containers_ran && !w.containers_stopped);
        assert_eq!(w.oom_killed, BTreeSet::from(["c".to_string()]));
        assert_eq!(w.grace_seconds, Some(7));
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(w.running_for(start + k8s_openapi::jiff::SignedDuration::from_secs(60), 60));
        assert!(!w.running_for(start + k8s_openapi::jiff::SignedDuration::from_secs(59), 60));
    }

    #[test]
    fn an_unknown_drain_reason_is_a_scale_down_and_no_status_is_pending() {
        let mut pod = labelled();
        pod.metadata.annotations =
            Some([(names::ANNOTATION_DRAIN.to_string(), "??".to_string())].into());
        pod.status = Some(PodStatus::default());
        let w = WorkerPod::read(&pod);
        assert_eq!(w.draining, Some(DrainReason::ScaleDown));
        assert_eq!(w.phase, Phase::Pending);
        assert!(!w.started() && !w.idle());
        assert!(Phase::Failed.is_terminal() && Phase::Unknown.is_alive());
    }
}
