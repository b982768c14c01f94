//! qsupervisor as PID 1 of real pods under the stand-in kubelet, against the real apiserver and
//! Redis: a drain mid-task lets the task finish and ends the pod Succeeded (wrap and task mode), a
//! worker that does not handle the drain signal is reported as cut, a removed annotation cancels
//! the drain, and usage/activity annotations appear.
//!
//! Needs the local cluster: `tests/cluster.sh up && eval "$(tests/cluster.sh env)"`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::ResourceExt;
use qscaler_crds::names::{env, ANNOTATION_ACTIVITY, ANNOTATION_DRAIN};
use qscaler_crds::usage::{annotation_key, UsageReport};
use qscaler_tests::{terminated, wait_for, Cluster, TestPod};
use redis::AsyncCommands;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// A namespace whose default ServiceAccount may get, watch and patch pods (what qsupervisor needs).
async fn setup(c: &Cluster, prefix: &str) -> String {
    let ns = c.namespace(prefix).await;
    c.grant_pods(&ns, "qsupervisor", &["get", "watch", "patch"])
        .await;
    ns
}

/// A pod running `qsupervisor ARGS` with the downward-API env the operator gives worker pods.
fn supervised(name: &str, args: &[&str]) -> TestPod {
    TestPod::new(name)
        .image("qscaler/qsupervisor")
        .args(args)
        .env_field(env::POD_NAME, "metadata.name")
        .env_field(env::POD_NAMESPACE, "metadata.namespace")
        .env(env::CONTAINER_NAME, "main")
        .env("RUST_LOG", "info")
}

/// A pod `w` whose qsupervisor (with `flags`) wraps the test worker consuming `queue` (with
/// `worker_flags`).
fn wrapping_test_worker(
    c: &Cluster,
    queue: &str,
    flags: &[&str],
    worker_flags: &[&str],
) -> TestPod {
    let mut args = flags.to_vec();
    args.extend([
        "--",
        "qscaler-test-worker",
        "--redis-url",
        &c.redis_url,
        "--queue",
        queue,
    ]);
    args.extend(worker_flags);
    supervised("w", &args)
}

async fn annotate(c: &Cluster, ns: &str, pod: &str, key: &str, value: Option<&str>) {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    c.pods(ns)
        .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("annotating {ns}/{pod}: {e}"));
}

async fn events(c: &Cluster, key: &str) -> Vec<String> {
    let mut r = c.redis().await;
    r.lrange(key, 0, -1).await.expect("LRANGE")
}

async fn wait_event(c: &Cluster, key: &str, event: &str) {
    wait_for(&format!("{event:?} in {key}"), T, || async {
        events(c, key)
            .await
            .iter()
            .any(|e| e == event)
            .then_some(())
    })
    .await;
}

fn usage(pod: &Pod) -> Option<UsageReport> {
    pod.annotations()
        .get(&annotation_key("main"))
        .and_then(|v| UsageReport::parse(v).ok())
}

fn exit_code(pod: &Pod) -> i32 {
    terminated(pod, "main").map(|t| t.exit_code).unwrap_or(-1)
}

#[tokio::test]
async fn wrap_mode_drain_lets_the_task_finish() {
    let c = Cluster::connect().await;
    let ns = setup(&c, "sup-wrap").await;
    let queue = format!("{ns}:jobs");
    let ev = format!("{queue}:events");
    let pod = wrapping_test_worker(&c, &queue, &["--report-interval", "1s"], &[]);
    c.create_pod(&ns, pod).await;
    c.wait_log(&ns, "w", "main", "consuming", T).await;
    let mut r = c.redis().await;
    let _: () = r.lpush(&queue, "3000").await.unwrap();
    wait_event(&c, &ev, "start 3000 w").await;

    annotate(&c, &ns, "w", ANNOTATION_DRAIN, Some("scale-down")).await;
    let done = c.wait_phase(&ns, "w", "Succeeded", T).await;
    assert_eq!(events(&c, &ev).await, vec!["start 3000 w", "end 3000 w"]);
    assert_eq!(exit_code(&done), 0);
    let log = c.pod_log(&ns, "w", "main");
    assert!(log.contains("drain requested: sending SIGTERM"), "{log}");
    assert!(
        log.contains("finished after the drain request (its own exit code 0)"),
        "{log}"
    );
    // Usage was reported on the pod (at the latest once at exit).
    let u =
        usage(&done).unwrap_or_else(|| panic!("no usage annotation on {:?}", done.annotations()));
    assert!(u.memory_bytes > 0, "{u:?}");
    c.delete_namespace(&ns).await;
}

#[tokio::test]
async fn wrap_mode_reports_a_worker_cut_by_the_drain_signal() {
    let c = Cluster::connect().await;
    let ns = setup(&c, "sup-cut").await;
    let queue = format!("{ns}:jobs");
    let ev = format!("{queue}:events");
    let pod = wrapping_test_worker(&c, &queue, &[], &["--no-warm-shutdown"]);
    c.create_pod(&ns, pod).await;
    c.wait_log(&ns, "w", "main", "consuming", T).await;
    let mut r = c.redis().await;
    let _: () = r.lpush(&queue, "5000").await.unwrap();
    wait_event(&c, &ev, "start 5000 w").await;
    annotate(&c, &ns, "w", ANNOTATION_DRAIN, Some("scale-down")).await;
    let done = c.wait_phase(&ns, "w", "Failed", T).await;
    assert_eq!(exit_code(&done), 143);
    assert_eq!(events(&c, &ev).await, vec!["start 5000 w"]);
    let log = c.pod_log(&ns, "w", "main");
    assert!(log.contains("was killed by the drain signal"), "{log}");
    c.delete_namespace(&ns).await;
}

#[tokio::test]
async fn a_removed_annotation_cancels_the_drain() {
    let c = Cluster::connect().await;
    let ns = setup(&c, "sup-cancel").await;
    let queue = format!("{ns}:jobs");
    let ev = format!("{queue}:events");
    let pod = wrapping_test_worker(&c, &queue, &["--drain-debounce", "5s"], &[]);
    c.create_pod(&ns, pod).await;
    c.wait_log(&ns, "w", "main", "consuming", T).await;
    annotate(&c, &ns, "w", ANNOTATION_DRAIN, Some("scale-down")).await;
    c.wait_log(&ns, "w", "main", "drain annotation seen", T)
        .await;
    annotate(&c, &ns, "w", ANNOTATION_DRAIN, None).await;
    c.wait_log(&ns, "w", "main", "drain cancelled", T).await;
    // Still working: a new task runs to its end.
    let mut r = c.redis().await;
    let _: () = r.lpush(&queue, "100").await.unwrap();
    wait_event(&c, &ev, "end 100 w").await;
    let pod = c.pods(&ns).get("w").await.unwrap();
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    assert!(!c.pod_log(&ns, "w", "main").contains("sending SIGTERM"));
    c.delete_namespace(&ns).await;
}

#[tokio::test]
async fn task_mode_drain_finishes_the_current_task_and_takes_no_new_one() {
    let c = Cluster::connect().await;
    let ns = setup(&c, "sup-task").await;
    let queue = format!("{ns}:tasks");
    let ev = format!("{queue}:events");
    let (host, port) = c
        .redis_url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .and_then(|hp| hp.rsplit_once(':'))
        .map(|(h, p)| (h.to_owned(), p.to_owned()))
        .expect("REDIS_URL is redis://host:port");
    // The task records start/end through redis-cli, so the test sees it from outside.
    let script = format!(
        "p=$(cat); redis-cli -h {host} -p {port} rpush {ev} \"start $p\" >/dev/null; sleep 3; \
         redis-cli -h {host} -p {port} rpush {ev} \"end $p\" >/dev/null"
    );
    let pod = supervised("t", &["--task", "--", "sh", "-c", &script])
        .env(env::QUEUE, &queue)
        .env(env::REDIS_HOST, &host)
        .env(env::REDIS_PORT, &port);
    let mut r = c.redis().await;
    let _: () = r.lpush(&queue, "a").await.unwrap();
    let _: () = r.lpush(&queue, "b").await.unwrap();
    c.create_pod(&ns, pod).await;
    wait_event(&c, &ev, "start a").await;
    c.wait_pod(&ns, "t", "activity busy", T, |p| {
        p.annotations().get(ANNOTATION_ACTIVITY).map(String::as_str) == Some("busy")
    })
    .await;
    annotate(&c, &ns, "t", ANNOTATION_DRAIN, Some("scale-down")).await;
    let done = c.wait_phase(&ns, "t", "Succeeded", T).await;
    assert_eq!(exit_code(&done), 0);
    assert_eq!(events(&c, &ev).await, vec!["start a", "end a"]);
    let left: Vec<String> = r.lrange(&queue, 0, -1).await.unwrap();
    assert_eq!(left, vec!["b"]);
    let processing: usize = r
        .llen(qscaler_crds::names::keys::processing(
            &queue,
            &qscaler_crds::names::keys::consumer(Some(&ns), "t"),
        ))
        .await
        .unwrap();
    assert_eq!(processing, 0);
    assert!(
        usage(&done).is_some(),
        "usage annotation: {:?}",
        done.annotations()
    );
    c.delete_namespace(&ns).await;
}

#[tokio::test]
async fn pod_deletion_is_forwarded_at_once_and_the_worker_shuts_down_warm() {
    let c = Cluster::connect().await;
    let ns = setup(&c, "sup-delete").await;
    let queue = format!("{ns}:jobs");
    let ev = format!("{queue}:events");
    let pod = wrapping_test_worker(&c, &queue, &[], &[]).grace_period(30);
    c.create_pod(&ns, pod).await;
    c.wait_log(&ns, "w", "main", "consuming", T).await;
    let mut r = c.redis().await;
    let _: () = r.lpush(&queue, "2000").await.unwrap();
    wait_event(&c, &ev, "start 2000 w").await;
    c.delete_pod(&ns, "w", None).await;
    c.wait_log(&ns, "w", "main", "forwarding SIGTERM", T).await;
    wait_event(&c, &ev, "end 2000 w").await;
    c.wait_log(&ns, "w", "main", "warm shutdown complete", T)
        .await;
    c.wait_gone(&ns, "w", T).await;
    c.delete_namespace(&ns).await;
}

#[tokio::test]
async fn drain_timeout_kills_a_worker_that_does_not_finish() {
    let c = Cluster::connect().await;
    let ns = setup(&c, "sup-timeout").await;
    let pod = supervised(
        "w",
        &[
            "--drain-timeout",
            "1s",
            "--",
            "sh",
            "-c",
            "trap '' TERM; echo ready; sleep 300",
        ],
    );
    c.create_pod(&ns, pod).await;
    c.wait_log(&ns, "w", "main", "ready", T).await;
    annotate(&c, &ns, "w", ANNOTATION_DRAIN, Some("rollout")).await;
    let done = c.wait_phase(&ns, "w", "Failed", T).await;
    assert_eq!(exit_code(&done), 137);
    let log = c.pod_log(&ns, "w", "main");
    assert!(
        log.contains("did not finish within --drain-timeout"),
        "{log}"
    );
    c.delete_namespace(&ns).await;
}

#[tokio::test]
async fn the_worker_activity_is_mirrored_to_the_pod() {
    let c = Cluster::connect().await;
    let ns = setup(&c, "sup-activity").await;
    let sock = format!("/tmp/{ns}.activity.sock");
    // The worker says "busy" through the socket named in its environment, then "idle".
    let script = r#"send() { perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Type => SOCK_DGRAM, Peer => $ENV{QSCALER_ACTIVITY_SOCKET})->send($ARGV[0]) or die' "$1"; }
send busy; echo said-busy; while [ ! -e "$FLAG" ]; do sleep 0.1; done; send idle; echo said-idle; sleep 300"#;
    let flag = format!("/tmp/{ns}.flag");
    let pod =
        supervised("w", &["--activity-socket", &sock, "--", "sh", "-c", script]).env("FLAG", &flag);
    c.create_pod(&ns, pod).await;
    c.wait_pod(&ns, "w", "activity busy", T, |p| {
        p.annotations().get(ANNOTATION_ACTIVITY).map(String::as_str) == Some("busy")
    })
    .await;
    std::fs::write(&flag, "").unwrap();
    c.wait_pod(&ns, "w", "activity idle", T, |p| {
        p.annotations().get(ANNOTATION_ACTIVITY).map(String::as_str) == Some("idle")
    })
    .await;
    let _ = std::fs::remove_file(&flag);
    c.delete_namespace(&ns).await;
}
