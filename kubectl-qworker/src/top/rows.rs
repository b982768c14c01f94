//! The flat row model of `top`, built from objects by pure functions.

use std::cmp::Reverse;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use qscaler_crds::conditions::{self as cond, reason};
use qscaler_crds::hash::{pod_spec_hash, SHORT_LEN};
use qscaler_crds::qworker::ContainerUsage;
use qscaler_crds::usage::{annotation_key, UsageReport};
use qscaler_crds::worker_pod::WorkerPod;
use qscaler_crds::QWorker;
use serde::Serialize;

use crate::cli::SortBy;
use qscaler_crds::quantity::{bytes, cpu_millis};

/// One QWorker: its queue and its worker counts.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QWorkerRow {
    pub namespace: String,
    pub name: String,
    /// Tasks waiting in the queue; `None` until the operator has read it.
    pub queue: Option<i64>,
    pub in_flight: Option<i64>,
    /// Seconds per task the operator learned (task mode); `None` until enough tasks were timed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_seconds: Option<f64>,
    pub desired: i32,
    /// What keeps the count from what the queue asks: `Paused` while paused, else the reason of
    /// the `ScaleLimited` condition (KeepWarm, BelowActivation, MaxPodsAddedPerStep...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    pub current: i32,
    pub updated: i32,
    pub draining: i32,
}

/// Whether a worker runs the QWorker's current pod spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Revision {
    Current,
    Old,
}

/// One worker pod, or one of its containers with `--containers`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRow {
    pub namespace: String,
    pub qworker: String,
    pub pod: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The short pod-spec hash of the pod.
    pub hash: String,
    pub revision: Revision,
    /// The pod phase, `Draining(<reason>)` or `Terminating`, with the activity the worker reports.
    pub status: String,
    /// In millicores.
    pub cpu: Usage,
    /// In bytes.
    pub memory: Usage,
}

/// Use of one resource against what was asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub report: Report,
    /// At the last report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub now: Option<u64>,
    /// Highest since the container started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// What vertical sizing recommends (only with `activateVPA`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recommended: Option<u64>,
}

/// Whether the supervisor has reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Report {
    Reported,
    #[default]
    NoneYet,
    /// The annotation is there but cannot be read.
    Malformed,
}

pub fn qworker_rows(qworkers: &[QWorker]) -> Vec<QWorkerRow> {
    qworkers
        .iter()
        .map(|qw| {
            let s = qw.status.clone().unwrap_or_default();
            QWorkerRow {
                namespace: qw.metadata.namespace.clone().unwrap_or_default(),
                name: qw.metadata.name.clone().unwrap_or_default(),
                queue: s.queue_depth,
                in_flight: s.in_flight,
                task_seconds: s.task_seconds,
                desired: s.desired_replicas,
                held_by: held_by(qw, &s.conditions),
                current: s.current_replicas,
                updated: s.updated_replicas,
                draining: s.draining_replicas,
            }
        })
        .collect()
}

fn held_by(qw: &QWorker, conditions: &[Condition]) -> Option<String> {
    if qw.paused() {
        return Some(reason::PAUSED.to_owned());
    }
    conditions
        .iter()
        .find(|c| c.type_ == cond::SCALE_LIMITED && c.status == "True")
        .map(|c| c.reason.clone())
        .filter(|r| !r.is_empty())
}

/// The alive worker pods of `qworkers` (pods of other QWorkers and finished pods left out),
/// one row per pod, or per container when `per_container`.
pub fn worker_rows(qworkers: &[QWorker], pods: &[Pod], per_container: bool) -> Vec<WorkerRow> {
    let mut rows = Vec::new();
    for qw in qworkers {
        // The operator's rule (label, namespace and controller owner), so `top` shows exactly
        // the pods the operator counts.
        let mine = pods.iter().filter_map(|p| {
            WorkerPod::from_pod(p, qw)
                .filter(|w| !w.phase.is_terminal())
                .map(|w| (p, w))
        });
        for (pod, worker) in mine {
            rows.extend(rows_of_pod(qw, pod, &worker, per_container));
        }
    }
    rows
}

fn rows_of_pod(qw: &QWorker, pod: &Pod, worker: &WorkerPod, per_container: bool) -> Vec<WorkerRow> {
    let hash = worker.hash.clone().unwrap_or_default();
    let current_full = match qw.status.as_ref().map(|s| s.current_pod_spec_hash.as_str()) {
        Some(h) if !h.is_empty() => h.to_owned(),
        _ => pod_spec_hash(&qw.spec).full().to_owned(),
    };
    let revision = if hash.len() == SHORT_LEN && current_full.starts_with(&hash) {
        Revision::Current
    } else {
        Revision::Old
    };
    let base = WorkerRow {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        qworker: qw.metadata.name.clone().unwrap_or_default(),
        pod: worker.name.clone(),
        container: None,
        hash,
        revision,
        status: status(worker),
        cpu: Usage::default(),
        memory: Usage::default(),
    };
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let cells: Vec<(String, Usage, Usage)> = containers
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                cpu_usage(qw, pod, c),
                memory_usage(qw, pod, c),
            )
        })
        .collect();
    if per_container {
        cells
            .into_iter()
            .map(|(name, cpu, memory)| WorkerRow {
                container: Some(name),
                cpu,
                memory,
                ..base.clone()
            })
            .collect()
    } else {
        let cpu = sum(cells.iter().map(|c| &c.1));
        let memory = sum(cells.iter().map(|c| &c.2));
        vec![WorkerRow {
            cpu,
            memory,
            ..base
        }]
    }
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// `Running`, `Draining(rollout)`, `Terminating`; `(busy)`/`(idle)` when the worker says.
fn status(worker: &WorkerPod) -> String {
    let base = if worker.deleting {
        "Terminating".to_owned()
    } else if let Some(reason) = worker.draining {
        format!("Draining({})", reason.as_str())
    } else {
        worker.phase.as_str().to_owned()
    };
    match worker.activity.as_deref() {
        Some(activity) if !activity.is_empty() => format!("{base} ({activity})"),
        _ => base,
    }
}

fn report(pod: &Pod, container: &str) -> Result<Option<UsageReport>, ()> {
    match annotation(pod, &annotation_key(container)) {
        None => Ok(None),
        Some(text) => UsageReport::parse(text).map(Some).map_err(|_| ()),
    }
}

fn usage(
    report: Result<Option<UsageReport>, ()>,
    values: impl Fn(&UsageReport) -> (Option<u64>, u64),
    request: Option<u64>,
    limit: Option<u64>,
    recommended: Option<u64>,
) -> Usage {
    let (report, now, peak) = match report {
        Ok(Some(r)) => {
            let (now, peak) = values(&r);
            (Report::Reported, now, Some(peak))
        }
        Ok(None) => (Report::NoneYet, None, None),
        Err(()) => (Report::Malformed, None, None),
    };
    Usage {
        report,
        now,
        peak,
        request,
        limit,
        recommended,
    }
}

/// A container's request (`limits: false`) or limit of one resource.
fn amount<'a>(c: &'a Container, limits: bool, key: &str) -> Option<&'a Quantity> {
    let r = c.resources.as_ref()?;
    if limits {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    }?
    .get(key)
}

fn recommendation<'a>(qw: &'a QWorker, container: &str) -> Option<&'a ContainerUsage> {
    if !qw.spec.scale_config.activate_vpa {
        return None;
    }
    qw.status
        .as_ref()?
        .recommended_requests
        .iter()
        .find(|r| r.name == container)
}

fn cpu_usage(qw: &QWorker, pod: &Pod, c: &Container) -> Usage {
    usage(
        report(pod, &c.name),
        |r| (r.current_cpu_millicores, r.cpu_millicores),
        amount(c, false, "cpu").and_then(|q| cpu_millis(&q.0)),
        amount(c, true, "cpu").and_then(|q| cpu_millis(&q.0)),
        recommendation(qw, &c.name)
            .and_then(|r| r.cpu.as_ref())
            .and_then(|q| cpu_millis(&q.0)),
    )
}

fn memory_usage(qw: &QWorker, pod: &Pod, c: &Container) -> Usage {
    usage(
        report(pod, &c.name),
        |r| (r.current_memory_bytes, r.memory_bytes),
        amount(c, false, "memory").and_then(|q| bytes(&q.0)),
        amount(c, true, "memory").and_then(|q| bytes(&q.0)),
        recommendation(qw, &c.name)
            .and_then(|r| r.memory.as_ref())
            .and_then(|q| bytes(&q.0)),
    )
}

/// A pod's use: the sum over its containers. The pod has a limit only if every container has one.
fn sum<'a>(cells: impl Iterator<Item = &'a Usage> + Clone) -> Usage {
    let total = |f: fn(&Usage) -> Option<u64>| cells.clone().filter_map(f).reduce(|a, b| a + b);
    let all_limited = cells.clone().all(|u| u.limit.is_some());
    let report = if cells.clone().any(|u| u.report == Report::Reported) {
        Report::Reported
    } else if cells.clone().any(|u| u.report == Report::Malformed) {
        Report::Malformed
    } else {
        Report::NoneYet
    };
    Usage {
        report,
        now: total(|u| u.now),
        peak: total(|u| u.peak),
        request: total(|u| u.request),
        limit: if all_limited {
            total(|u| u.limit)
        } else {
            None
        },
        recommended: total(|u| u.recommended),
    }
}

/// Sorts by the QWorker and pod names, or by current use (the peak when no current value), highest
/// first, workers without a report last.
pub fn sort(rows: &mut [WorkerRow], by: Option<SortBy>) {
    rows.sort_by(|a, b| {
        (&a.namespace, &a.qworker, &a.pod, &a.container).cmp(&(
            &b.namespace,
            &b.qworker,
            &b.pod,
            &b.container,
        ))
    });
    if let Some(by) = by {
        let key = |r: &WorkerRow| {
            let u = match by {
                SortBy::Cpu => &r.cpu,
                SortBy::Memory => &r.memory,
            };
            Reverse(u.now.or(u.peak))
        };
        rows.sort_by_key(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{condition, container_usage, pod, qworker};

    const MI: u64 = 1024 * 1024;

    fn two_containers() -> QWorker {
        qworker("mail")
            .container(
                "worker",
                (Some("500m"), Some("128Mi")),
                (Some("1"), Some("256Mi")),
            )
            .container("sidecar", (Some("100m"), None), (None, Some("64Mi")))
            .status(|s| s.current_replicas = 1)
            .build()
    }

    #[test]
    fn a_paused_or_limited_qworker_says_what_holds_its_count() {
        let held = |qw: QWorker| qworker_rows(&[qw])[0].held_by.clone();
        assert_eq!(held(qworker("mail").build()), None);
        let limited = |status: &str| {
            qworker("mail").status(|s| {
                s.conditions = vec![condition(cond::SCALE_LIMITED, status, "KeepWarm", "")]
            })
        };
        assert_eq!(held(limited("True").build()), Some("KeepWarm".into()));
        assert_eq!(held(limited("False").build()), None);
        // A pause is shown from the spec at once, before the operator's condition says so.
        let mut paused = limited("True").build();
        paused.spec.paused = true;
        assert_eq!(held(paused), Some("Paused".into()));
    }

    #[test]
    fn a_pod_sums_its_containers_and_has_a_limit_only_if_all_do() {
        let qw = two_containers();
        let p = pod(&qw, "mail-1")
            .usage("worker", (120, 250), (50 * MI, 70 * MI))
            .usage("sidecar", (5, 10), (MI, 2 * MI))
            .build();
        let rows = worker_rows(std::slice::from_ref(&qw), &[p], false);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.revision, Revision::Current);
        assert_eq!(r.status, "Running");
        assert_eq!(
            r.cpu,
            Usage {
                report: Report::Reported,
                now: Some(125),
                peak: Some(260),
                request: Some(600),
                limit: None,
                recommended: None
            }
        );
        assert_eq!(
            r.memory,
            Usage {
                report: Report::Reported,
                now: Some(51 * MI),
                peak: Some(72 * MI),
                request: Some(128 * MI),
                limit: Some(320 * MI),
                recommended: None
            }
        );
    }

    #[test]
    fn per_container_rows_and_the_report_states() {
        let qw = two_containers();
        let p = pod(&qw, "mail-1")
            .usage("worker", (120, 250), (50 * MI, 70 * MI))
            .annotation(&annotation_key("sidecar"), "{not json")
            .build();
        let rows = worker_rows(std::slice::from_ref(&qw), &[p], true);
        assert_eq!(
            rows.iter()
                .map(|r| r.container.as_deref())
                .collect::<Vec<_>>(),
            vec![Some("worker"), Some("sidecar")]
        );
        assert_eq!(rows[0].cpu.report, Report::Reported);
        assert_eq!(rows[1].cpu.report, Report::Malformed);
        assert_eq!(rows[1].cpu.request, Some(100));

        let fresh = pod(&qw, "mail-2").build();
        let rows = worker_rows(std::slice::from_ref(&qw), &[fresh], false);
        assert_eq!(
            rows[0].cpu,
            Usage {
                report: Report::NoneYet,
                request: Some(600),
                ..Default::default()
            }
        );
    }

    #[test]
    fn old_hash_draining_finished_and_foreign_pods() {
        let qw = qworker("mail").status(|_| {}).build();
        let other = qworker("other").status(|_| {}).build();
        let pods = [
            pod(&qw, "mail-old")
                .hash("0123456789")
                .draining("rollout")
                .activity("busy")
                .build(),
            pod(&qw, "mail-done").phase("Succeeded").build(),
            pod(&qw, "mail-pending").phase("Pending").build(),
            pod(&other, "other-1").build(),
            pod(&qw.clone(), "elsewhere")
                .build()
                .tap_namespace("team-b"),
        ];
        let rows = worker_rows(std::slice::from_ref(&qw), &pods, false);
        let seen: Vec<(&str, Revision, &str)> = rows
            .iter()
            .map(|r| (r.pod.as_str(), r.revision, r.status.as_str()))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("mail-old", Revision::Old, "Draining(rollout) (busy)"),
                ("mail-pending", Revision::Current, "Pending")
            ]
        );
    }

    /// The operator's rule: a pod that only carries the label (its owner reference removed, or
    /// another object's) is not a worker, so `top` does not show it either.
    #[test]
    fn a_pod_with_the_label_but_not_the_owner_is_left_out() {
        let qw = two_containers();
        let mut orphan = pod(&qw, "mail-orphan").build();
        orphan.metadata.owner_references = None;
        let mut adopted = pod(&qw, "mail-adopted").build();
        if let Some(o) = adopted.metadata.owner_references.as_mut() {
            o[0].uid = "someone-else".into();
        }
        let mine = pod(&qw, "mail-1").build();
        let rows = worker_rows(std::slice::from_ref(&qw), &[orphan, adopted, mine], false);
        let names: Vec<&str> = rows.iter().map(|r| r.pod.as_str()).collect();
        assert_eq!(names, ["mail-1"]);
    }

    #[test]
    fn the_recommendation_shows_only_with_activate_vpa() {
        let base = qworker("mail").container("worker", (Some("500m"), Some("128Mi")), (None, None));
        let with_rec = |b: crate::testing::QWorkerBuilder| {
            b.status(|s| s.recommended_requests = vec![container_usage("worker", "300m", "96Mi")])
                .build()
        };
        let vpa = with_rec(
            qworker("mail")
                .container("worker", (Some("500m"), Some("128Mi")), (None, None))
                .vpa(),
        );
        let rows = worker_rows(std::slice::from_ref(&vpa), &[pod(&vpa, "p").build()], false);
        assert_eq!(
            (rows[0].cpu.recommended, rows[0].memory.recommended),
            (Some(300), Some(96 * MI))
        );
        let plain = with_rec(base);
        let rows = worker_rows(
            std::slice::from_ref(&plain),
            &[pod(&plain, "p").build()],
            false,
        );
        assert_eq!(rows[0].cpu.recommended, None);
    }

    #[test]
    fn sorting_by_use_puts_unreported_last() {
        let qw = qworker("mail").status(|_| {}).build();
        let pods = [
            pod(&qw, "a").build(),
            pod(&qw, "b")
                .usage("worker", (10, 900), (5 * MI, 5 * MI))
                .build(),
            pod(&qw, "c").usage("worker", (700, 700), (1, 1)).build(),
        ];
        let mut rows = worker_rows(std::slice::from_ref(&qw), &pods, false);
        sort(&mut rows, Some(SortBy::Cpu));
        assert_eq!(
            rows.iter().map(|r| r.pod.as_str()).collect::<Vec<_>>(),
            vec!["c", "b", "a"]
        );
        sort(&mut rows, Some(SortBy::Memory));
        assert_eq!(
            rows.iter().map(|r| r.pod.as_str()).collect::<Vec<_>>(),
            vec!["b", "c", "a"]
        );
        sort(&mut rows, None);
        assert_eq!(
            rows.iter().map(|r| r.pod.as_str()).collect::<Vec<_>>(),
            vec!["a", "b", "c"]
        );
    }

    trait TapNamespace {
        fn tap_namespace(self, ns: &str) -> Self;
    }
    impl TapNamespace for Pod {
        fn tap_namespace(mut self, ns: &str) -> Self {
            self.metadata.namespace = Some(ns.into());
            self
        }
    }
}
