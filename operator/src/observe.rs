//! Turning API objects into what the pure core reads: a [`WorkerPod`] as an [`ObservedPod`], the
//! replica counts of status, and the supervisors' usage reports folded into per-container peaks.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use qscaler_crds::quantity::{bytes, cpu_millis};
use qscaler_crds::qworker::ContainerUsage;
use qscaler_crds::usage::{self, UsageReport};
use qscaler_crds::worker_pod::WorkerPod;

use crate::planning::{ObservedPod, Phase};

/// The planning view of one worker pod; `current_short` is the short hash of the current pod spec.
pub(crate) fn observe_pod(pod: &WorkerPod, current_short: &str) -> ObservedPod {
    ObservedPod {
        name: pod.name.clone(),
        phase: pod.phase,
        current: pod.hash.as_deref() == Some(current_short),
        draining: pod.draining,
        idle: pod.idle(),
        deleting: pod.deleting,
        created: pod.created.map(|t| t.as_millisecond()).unwrap_or(i64::MAX),
        started: pod.started(),
        stopped: pod.containers_stopped,
    }
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

/// Containers of `pods` that were OOM-killed: a terminated state with reason OOMKilled, or an OOM
/// count in the supervisor's usage report.
pub fn oom_killed<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for pod in pods {
        out.extend(WorkerPod::read(pod).oom_killed);
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use proptest::prelude::*;
    use qscaler_crds::names::{self, DrainReason};

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
        let o = observe_pod(&WorkerPod::read(&pod), "abc");
        assert_eq!(o.phase, Phase::Running);
        assert!(o.current && o.idle);
        assert_eq!(o.draining, Some(DrainReason::Rollout));
        assert!(!observe_pod(&WorkerPod::read(&pod), "abd").current);
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

    fn observe(pod: &Pod, short: &str) -> ObservedPod {
        observe_pod(&WorkerPod::read(pod), short)
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
        let o = observe(&with_containers("Pending", &["running", "waiting"]), "h");
        assert_eq!(o.phase, Phase::Pending);
        assert!(o.started && !o.stopped && !o.nothing_runs());
        // Nothing ran yet.
        let o = observe(&with_containers("Pending", &["waiting", "waiting"]), "h");
        assert!(!o.started && o.nothing_runs());
        let o = observe(&pod_with(&[]), "h");
        assert!(!o.started && o.nothing_runs());
        // The supervisor reported, the status lags.
        let o = observe(&pod_with(&[(names::ANNOTATION_ACTIVITY, "busy")]), "h");
        assert!(o.started && !o.nothing_runs());
        // The worker exited (after a drain), the sidecar still waits: nothing runs.
        let o = observe(&with_containers("Pending", &["terminated", "waiting"]), "h");
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
