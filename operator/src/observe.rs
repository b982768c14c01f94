//! Turning API objects into what the pure core reads: a worker pod as an [`ObservedPod`], the
//! replica counts of status, and the supervisors' usage reports folded into per-container peaks.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use qscaler_crds::names::{self, DrainReason};
use qscaler_crds::ownership::controlled_by;
use qscaler_crds::quantity::{bytes, cpu_millis};
use qscaler_crds::qworker::ContainerUsage;
use qscaler_crds::usage::{self, UsageReport};
use qscaler_crds::QWorker;

use crate::planning::{ObservedPod, Phase};

/// Whether `pod` is a worker of `qw`: the label names it and its controller owner reference is this
/// very QWorker (by uid, so a QWorker re-created with the same name does not adopt old pods).
pub fn owned_by(pod: &Pod, qw: &QWorker) -> bool {
    let label = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(names::LABEL_QWORKER));
    let Some(uid) = qw.metadata.uid.as_deref() else {
        return false;
    };
    label.map(String::as_str) == qw.metadata.name.as_deref()
        && pod.metadata.namespace == qw.metadata.namespace
        && controlled_by(&pod.metadata, uid)
}

/// The planning view of one pod; `current_short` is the short hash of the current pod spec.
pub fn observe_pod(pod: &Pod, current_short: &str) -> ObservedPod {
    let meta = &pod.metadata;
    let annotations = meta.annotations.as_ref();
    let hash = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(names::LABEL_POD_SPEC_HASH));
    ObservedPod {
        name: meta.name.clone().unwrap_or_default(),
        phase: Phase::parse(pod.status.as_ref().and_then(|s| s.phase.as_deref())),
        current: hash.map(String::as_str) == Some(current_short),
        draining: annotations
            .and_then(|a| a.get(names::ANNOTATION_DRAIN))
            .map(|r| DrainReason::parse(r).unwrap_or(DrainReason::ScaleDown)),
        idle: annotations
            .and_then(|a| a.get(names::ANNOTATION_ACTIVITY))
            .is_some_and(|v| v == "idle"),
        deleting: meta.deletion_timestamp.is_some(),
        created: meta
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .unwrap_or(i64::MAX),
        started: started(pod),
        stopped: stopped(pod),
    }
}

/// Whether work may have been taken in `pod`: a container runs or has run (its state or last
/// state running or terminated), or the supervisor reported activity. The pod phase is no guide:
/// a pod is Pending while any container waits, even with the worker's container at work.
pub fn started(pod: &Pod) -> bool {
    let ran = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .any(|cs| {
            let state_ran = |st: Option<&k8s_openapi::api::core::v1::ContainerState>| {
                st.is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            };
            state_ran(cs.state.as_ref()) || state_ran(cs.last_state.as_ref())
        });
    let reported = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(names::ANNOTATION_ACTIVITY));
    ran || reported
}

/// Whether what ran in `pod` has stopped: no container runs now and one has terminated.
pub fn stopped(pod: &Pod) -> bool {
    let states: Vec<&k8s_openapi::api::core::v1::ContainerState> = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|cs| cs.state.as_ref())
        .collect();
    !states.iter().any(|s| s.running.is_some()) && states.iter().any(|s| s.terminated.is_some())
}

/// The replica counts of status, from the planning view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub alive: i32,
    pub updated: i32,
    pub available: i32,
    pub old: i32,
    pub draining: i32,
}

pub fn counts(pods: &[ObservedPod]) -> Counts {
    let mut c = Counts::default();
    for p in pods.iter().filter(|p| p.phase.is_alive()) {
        c.alive += 1;
        if p.draining.is_some() {
            c.draining += 1;
        }
        if p.current && p.draining.is_none() && !p.deleting {
            c.updated += 1;
            if p.phase == Phase::Running {
                c.available += 1;
            }
        }
        if !p.current {
            c.old += 1;
        }
    }
    c
}

/// Whether a pod has run for at least `secs` (for the crash-loop healthy period).
pub fn running_for(pod: &Pod, now: chrono::DateTime<chrono::Utc>, secs: i64) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.start_time.as_ref())
            .is_some_and(|t| now.timestamp() - t.0.as_second() >= secs)
}

/// Containers of `pods` that were OOM-killed: a terminated state with reason OOMKilled, or an OOM
/// count in the supervisor's usage report.
pub fn oom_killed<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for pod in pods {
        for cs in pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
        {
            let reason = |st: Option<&k8s_openapi::api::core::v1::ContainerState>| {
                st.and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t.reason.as_deref())
                    == Some("OOMKilled")
            };
            if reason(cs.state.as_ref()) || reason(cs.last_state.as_ref()) {
                out.insert(cs.name.clone());
            }
        }
        for (key, value) in pod.metadata.annotations.iter().flatten() {
            if let (Some(c), Ok(r)) = (usage::container_of_key(key), UsageReport::parse(value)) {
                if r.oom_kills > 0 {
                    out.insert(c.to_string());
                }
            }
        }
    }
    out
}

/// Per-container peaks: the previous status peaks and every valid report on `pods`, folded by max.
/// Malformed or implausible reports are skipped (they are the reporter's bug, not a peak). The caller
/// passes only this QWorker's pods.
pub fn fold_usage<'a>(
    previous: &[ContainerUsage],
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Vec<ContainerUsage> {
    let mut peaks: BTreeMap<String, (Option<u64>, Option<u64>)> = BTreeMap::new();
    for u in previous {
        let e = peaks.entry(u.name.clone()).or_default();
        e.0 = max_opt(e.0, u.cpu.as_ref().and_then(|q| cpu_millis(&q.0)));
        e.1 = max_opt(e.1, u.memory.as_ref().and_then(|q| bytes(&q.0)));
    }
    for pod in pods {
        for (key, value) in pod.metadata.annotations.iter().flatten() {
            let Some(container) = usage::container_of_key(key) else {
                continue;
            };
            let Ok(report) = UsageReport::parse(value) else {
                continue;
            };
            let e = peaks.entry(container.to_string()).or_default();
            e.0 = max_opt(e.0, Some(report.cpu_millicores));
            e.1 = max_opt(e.1, Some(report.memory_bytes));
        }
    }
    peaks
        .into_iter()
        .map(|(name, (cpu, mem))| ContainerUsage {
            name,
            cpu: cpu.map(|m| Quantity(format!("{m}m"))),
            memory: mem.map(|b| Quantity(b.to_string())),
        })
        .collect()
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use proptest::prelude::*;

    fn pod_with(annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("w-1".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn report(cpu: u64, mem: u64) -> String {
        UsageReport {
            cpu_millicores: cpu,
            memory_bytes: mem,
            ..Default::default()
        }
        .to_json()
    }

    #[test]
    fn usage_folds_by_max_and_skips_malformed() {
        let k = usage::annotation_key("worker");
        let a = pod_with(&[(&k, &report(100, 5000))]);
        let b = pod_with(&[
            (&k, &report(300, 1000)),
            ("quickube.com/usage-side", "{nope"),
        ]);
        let c = pod_with(&[(&k, "{\"cpuMillicores\":99999999999,\"memoryBytes\":1}")]);
        let folded = fold_usage(&[], [&a, &b, &c]);
        assert_eq!(
            folded,
            vec![ContainerUsage {
                name: "worker".into(),
                cpu: Some(Quantity("300m".into())),
                memory: Some(Quantity("5000".into())),
            }]
        );
        // Previous peaks stay when the pods that reported them are gone.
        let prev = vec![ContainerUsage {
            name: "worker".into(),
            cpu: Some(Quantity("1".into())),
            memory: Some(Quantity("1Ki".into())),
        }];
        let folded = fold_usage(&prev, [&a]);
        assert_eq!(folded[0].cpu, Some(Quantity("1000m".into())));
        assert_eq!(folded[0].memory, Some(Quantity("5000".into())));
        assert_eq!(
            fold_usage(&prev, []),
            fold_usage(&fold_usage(&prev, []), [])
        );
    }

    #[test]
    fn ownership_needs_label_and_controller_uid() {
        let mut qw = QWorker::new(
            "w",
            serde_json::from_value(serde_json::json!({
                "podSpec": {"containers": [{"name": "c", "image": "i"}]},
                "scaleConfig": {"scalerConfigRef": "s", "queue": "q", "maxReplicas": 3}
            }))
            .unwrap(),
        );
        qw.metadata.namespace = Some("ns".into());
        qw.metadata.uid = Some("u1".into());
        let mut pod = pod_with(&[]);
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.labels = Some([(names::LABEL_QWORKER.to_string(), "w".to_string())].into());
        assert!(!owned_by(&pod, &qw));
        pod.metadata.owner_references = Some(vec![OwnerReference {
            uid: "u1".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        assert!(owned_by(&pod, &qw));
        qw.metadata.uid = Some("u2".into());
        assert!(!owned_by(&pod, &qw));
    }

    #[test]
    fn observe_reads_phase_hash_drain_and_activity() {
        let mut pod = pod_with(&[
            (names::ANNOTATION_DRAIN, "rollout"),
            (names::ANNOTATION_ACTIVITY, "idle"),
        ]);
        pod.metadata.labels =
            Some([(names::LABEL_POD_SPEC_HASH.to_string(), "abc".to_string())].into());
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        let o = observe_pod(&pod, "abc");
        assert_eq!(o.phase, Phase::Running);
        assert!(o.current && o.idle);
        assert_eq!(o.draining, Some(DrainReason::Rollout));
        assert!(!observe_pod(&pod, "abd").current);
        let counts = counts(&[o]);
        assert_eq!(
            counts,
            Counts {
                alive: 1,
                updated: 0,
                available: 0,
                old: 0,
                draining: 1
            }
        );
    }

    fn with_containers(phase: &str, states: &[&str]) -> Pod {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
            ContainerStatus,
        };
        let statuses = states
            .iter()
            .enumerate()
            .map(|(i, st)| ContainerStatus {
                name: format!("c{i}"),
                state: Some(match *st {
                    "running" => ContainerState {
                        running: Some(ContainerStateRunning::default()),
                        ..Default::default()
                    },
                    "terminated" => ContainerState {
                        terminated: Some(ContainerStateTerminated::default()),
                        ..Default::default()
                    },
                    _ => ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("CreateContainerConfigError".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            })
            .collect();
        let mut pod = pod_with(&[]);
        pod.status = Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: Some(statuses),
            ..Default::default()
        });
        pod
    }

    #[test]
    fn a_pending_pod_with_a_running_container_has_started() {
        // The worker runs, a sidecar waits for its ConfigMap: Pending, but at work.
        let o = observe_pod(&with_containers("Pending", &["running", "waiting"]), "h");
        assert_eq!(o.phase, Phase::Pending);
        assert!(o.started && !o.stopped && !o.nothing_runs());
        // Nothing ran yet.
        let o = observe_pod(&with_containers("Pending", &["waiting", "waiting"]), "h");
        assert!(!o.started && o.nothing_runs());
        let o = observe_pod(&pod_with(&[]), "h");
        assert!(!o.started && o.nothing_runs());
        // The supervisor reported, the status lags.
        let o = observe_pod(&pod_with(&[(names::ANNOTATION_ACTIVITY, "busy")]), "h");
        assert!(o.started && !o.nothing_runs());
        // The worker exited (after a drain), the sidecar still waits: nothing runs.
        let o = observe_pod(&with_containers("Pending", &["terminated", "waiting"]), "h");
        assert!(o.started && o.stopped && o.nothing_runs());
    }

    proptest! {
        #[test]
        fn any_annotation_value_is_safe(v in ".*") {
            let p = pod_with(&[(&usage::annotation_key("c"), &v)]);
            let _ = fold_usage(&[], [&p]);
        }
    }
}
