//! Golden-output tests of the tables: typed objects → rows → text, compared with tests/golden/*.
//! Regenerate after an intended change with `UPDATE_GOLDEN=1 cargo test -p kubectl-qworker --test golden`
//! and review the diff.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use kubectl_qworker::cli::{OutputFormat, SortBy};
use kubectl_qworker::output::write_structured;
use kubectl_qworker::revisions::{history, write_history, write_revision, ANNOTATION_CHANGE_CAUSE};
use kubectl_qworker::testing::{container_usage, pod, qworker, revision};
use kubectl_qworker::top::render::{write_top, View};
use kubectl_qworker::top::rows::{qworker_rows, sort, worker_rows};
use kubectl_qworker::top::Top;
use qscaler_crds::QWorker;

const MI: u64 = 1024 * 1024;

fn check(name: &str, actual: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let actual = String::from_utf8(actual.to_vec()).expect("utf-8 output");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{name} differs from the golden file (UPDATE_GOLDEN=1 regenerates it)\n--- expected\n{expected}--- actual\n{actual}"
    );
}

/// `mail`, mid-rollout: one old worker draining while busy, two new ones reporting, one new one
/// that has not reported yet; `thumbs` with vertical sizing in `team-b`.
fn fleet() -> (Vec<QWorker>, Vec<Pod>) {
    let mail_v1 = qworker("mail")
        .container(
            "worker",
            (Some("500m"), Some("128Mi")),
            (Some("1"), Some("256Mi")),
        )
        .build();
    let mail = qworker("mail")
        .container(
            "worker",
            (Some("500m"), Some("128Mi")),
            (Some("1"), Some("256Mi")),
        )
        .image("worker:v2")
        .status(|s| {
            s.queue_depth = Some(42);
            s.in_flight = Some(3);
            s.task_seconds = Some(1.25);
            s.desired_replicas = 3;
            s.current_replicas = 4;
            s.updated_replicas = 3;
            s.available_replicas = 2;
            s.old_replicas = 1;
            s.draining_replicas = 1;
        })
        .build();
    let thumbs = qworker("thumbs")
        .namespace("team-b")
        .container(
            "resize",
            (Some("200m"), Some("64Mi")),
            (None, Some("512Mi")),
        )
        .container(
            "uploader",
            (Some("50m"), Some("32Mi")),
            (Some("100m"), Some("64Mi")),
        )
        .vpa()
        .status(|s| {
            s.queue_depth = Some(0);
            s.in_flight = Some(1);
            s.desired_replicas = 1;
            s.current_replicas = 1;
            s.updated_replicas = 1;
            s.available_replicas = 1;
            s.recommended_requests = vec![
                container_usage("resize", "360m", "230Mi"),
                container_usage("uploader", "60m", "40Mi"),
            ];
        })
        .build();
    let pods = vec![
        pod(&mail_v1, "mail-7c9d2")
            .draining("rollout")
            .activity("busy")
            .usage("worker", (410, 730), (88 * MI, 120 * MI))
            .build(),
        pod(&mail, "mail-x2k8p")
            .activity("busy")
            .usage("worker", (120, 250), (50 * MI, 70 * MI))
            .build(),
        pod(&mail, "mail-q4n7z")
            .activity("idle")
            .usage("worker", (3, 480), (31 * MI, 95 * MI))
            .build(),
        pod(&mail, "mail-h8s1f").phase("Pending").build(),
        pod(&thumbs, "thumbs-k2l9m")
            .requests("resize", "360m", "230Mi")
            .usage("resize", (300, 310), (190 * MI, 201 * MI))
            .usage("uploader", (20, 45), (20 * MI, 33 * MI))
            .build(),
    ];
    (vec![mail, thumbs], pods)
}

fn render(
    qworkers: &[QWorker],
    pods: &[Pod],
    containers: bool,
    by: Option<SortBy>,
    view: View,
) -> Vec<u8> {
    let mut workers = worker_rows(qworkers, pods, containers);
    sort(&mut workers, by);
    let mut out = Vec::new();
    write_top(&mut out, &qworker_rows(qworkers), &workers, view).unwrap();
    out
}

#[test]
fn top_all_namespaces() {
    let (qws, pods) = fleet();
    let view = View {
        all_namespaces: true,
        headers: true,
        ..Default::default()
    };
    check(
        "top_all_namespaces.txt",
        &render(&qws, &pods, false, None, view),
    );
}

#[test]
fn top_one_qworker_per_container_sorted_by_memory() {
    let (qws, pods) = fleet();
    let view = View {
        single: true,
        containers: true,
        headers: true,
        ..Default::default()
    };
    check(
        "top_thumbs_containers.txt",
        &render(&qws[1..], &pods, true, Some(SortBy::Memory), view),
    );
}

#[test]
fn top_sorted_by_cpu_without_headers() {
    let (qws, pods) = fleet();
    let view = View {
        single: true,
        ..Default::default()
    };
    check(
        "top_mail_sorted_no_headers.txt",
        &render(&qws[..1], &pods, false, Some(SortBy::Cpu), view),
    );
}

#[test]
fn top_without_pods() {
    let idle = qworker("idle").status(|s| s.queue_depth = None).build();
    let view = View {
        headers: true,
        ..Default::default()
    };
    check("top_no_pods.txt", &render(&[idle], &[], false, None, view));
}

#[test]
fn top_as_json() {
    let (qws, pods) = fleet();
    let top = Top {
        qworkers: qworker_rows(&qws[..1]),
        workers: worker_rows(&qws[..1], &pods, false),
    };
    let mut out = Vec::new();
    write_structured(&mut out, OutputFormat::Json, &top).unwrap();
    check("top_mail.json", &out);
}

fn mail_history() -> Vec<kubectl_qworker::revisions::Revision> {
    let v = |i: u32| qworker("mail").image(&format!("worker:v{i}")).build();
    let mut r2 = revision(&v(2), 2);
    r2.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_CHANGE_CAUSE.into(), "image worker:v2".into());
    let restarted = qworker("mail")
        .image("worker:v2")
        .annotation("quickube.com/restartedAt", "2026-11-28T01:00:00Z")
        .build();
    history(
        &restarted,
        &[revision(&v(1), 1), r2, revision(&restarted, 3)],
    )
}

#[test]
fn history_table() {
    let mut out = Vec::new();
    write_history(&mut out, "mail", &mail_history()).unwrap();
    check("history.txt", &out);
    let mut empty = Vec::new();
    write_history(&mut empty, "mail", &[]).unwrap();
    check("history_empty.txt", &empty);
}

#[test]
fn history_of_one_revision() {
    let mut out = Vec::new();
    write_revision(&mut out, "mail", &mail_history()[2]).unwrap();
    check("history_revision_3.txt", &out);
}

#[test]
fn history_as_yaml() {
    let mut out = Vec::new();
    write_structured(&mut out, OutputFormat::Yaml, &mail_history()[..2].to_vec()).unwrap();
    check("history.yaml", &out);
}
