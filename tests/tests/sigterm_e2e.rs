//! Issue 13, qsupervisor's part: the kubelet's SIGTERM (a `kubectl delete pod`, an eviction) is a
//! drain. A busy worker finishes its task in the same pod when the grace allows; a task longer than
//! the grace is signalled by qsupervisor only shortly before the kubelet's SIGKILL and goes back to
//! the queue once; a wrap-mode worker that overruns is SIGKILLed by qsupervisor itself, which says
//! so and writes its last usage report; and the node autoscalers' annotations follow idle/busy.
//!
//! On the local cluster: real kube-apiserver and controller-manager, the operator, real Redis, and
//! the stand-in kubelet, which on deletion sends SIGTERM, waits the grace, then SIGKILL.
//! `QSCALER_TEST_QSUPERVISOR=/path/to/qsupervisor` runs the workers with another build (e.g. an
//! older one, to see these tests fail).
//!
//! Needs the local cluster: `tests/cluster.sh up && eval "$(tests/cluster.sh env)"`, and the binaries
//! built: `cargo build --workspace --bins`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, WatchEvent, WatchParams};
use kube::Api;
use qscaler_crds::names::{
    self, keys, ANNOTATION_ACTIVITY, ANNOTATION_DO_NOT_DISRUPT, ANNOTATION_SAFE_TO_EVICT,
};
use qscaler_crds::usage::annotation_key;
use qscaler_tests::{wait_for, Cluster};
use redis::AsyncCommands;
use serde_json::{json, Value};

use common::*;

/// The qsupervisor the workers run: this workspace's, or `QSCALER_TEST_QSUPERVISOR`.
fn qsupervisor() -> String {
    std::env::var("QSCALER_TEST_QSUPERVISOR").unwrap_or_else(|_| "qsupervisor".into())
}

/// A QWorker whose one container runs [`qsupervisor`] with `args`, with the given grace.
fn worker(name: &str, queue: &str, grace: i64, args: Vec<String>, scale: Value) -> Value {
    let mut qw = qworker(name, queue, &[], scale);
    let c = &mut qw["spec"]["podSpec"];
    c["terminationGracePeriodSeconds"] = json!(grace);
    c["containers"][0]["command"] = json!([qsupervisor()]);
    c["containers"][0]["args"] = json!(args);
    qw
}

/// Task mode: task `<id>:<secs>` records `start <task> <pod>`, sleeps `secs`, records `end <task>
/// <pod>`; a SIGTERM that reaches it is recorded as `term <task> <pod>` and ends it (143).
fn task_worker(name: &str, queue: &str, grace: i64, scale: Value) -> Value {
    let script = "t=$(cat); P=$QSCALER_REDIS_PORT; \
         ev() { redis-cli -p $P rpush \"$QSCALER_QUEUE:events\" \"$1 $t $POD_NAME\" >/dev/null; }; \
         trap 'ev term; exit 143' TERM; ev start; sleep ${t#*:} & wait $!; ev end";
    let args = ["--task", "--", "sh", "-c", script];
    worker(name, queue, grace, args.map(str::to_owned).to_vec(), scale)
}

/// Wrap mode: qscaler-test-worker (BRPOP; a numeric payload is the task's length in ms; SIGTERM is
/// its warm shutdown). Usage is reported at most hourly, so a report after the deletion can only be
/// the last one, at exit.
fn wrap_worker(name: &str, queue: &str, grace: i64, scale: Value) -> Value {
    let args = ["--report-interval", "1h", "--", "qscaler-test-worker"];
    worker(name, queue, grace, args.map(str::to_owned).to_vec(), scale)
}

async fn event_lines(conn: &mut redis::aio::MultiplexedConnection, queue: &str) -> Vec<String> {
    conn.lrange(format!("{queue}:events"), 0, -1)
        .await
        .expect("LRANGE events")
}

/// The pods that recorded `what` for task `id`, in order.
fn pods_with(lines: &[String], what: &str, id: &str) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            (p.next() == Some(what) && p.next() == Some(id)).then(|| p.next().map(str::to_owned))?
        })
        .collect()
}

/// Waits for `what` of task `id`; returns the pod that recorded it first.
async fn recorded(
    conn: &redis::aio::MultiplexedConnection,
    queue: &str,
    what: &str,
    id: &str,
    timeout: Duration,
) -> String {
    wait_for(&format!("`{what} {id}`"), timeout, || {
        let mut conn = conn.clone();
        async move {
            pods_with(&event_lines(&mut conn, queue).await, what, id)
                .into_iter()
                .next()
        }
    })
    .await
}

async fn delete_pod(cluster: &Cluster, ns: &str, pod: &str) {
    Api::<Pod>::namespaced(cluster.client.clone(), ns)
        .delete(pod, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting pod {pod}: {e}"));
}

/// `kubectl drain`'s way: the eviction subresource (policy/v1beta1 on 1.20), with the pod's grace.
async fn evict_pod(cluster: &Cluster, ns: &str, pod: &str) {
    let body = json!({"apiVersion": "policy/v1beta1", "kind": "Eviction",
                      "metadata": {"name": pod, "namespace": ns}});
    let file = std::env::temp_dir().join(format!("qscaler-eviction-{ns}-{pod}.json"));
    std::fs::write(&file, body.to_string()).expect("writing the eviction");
    let path = format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction");
    let file_arg = file.display().to_string();
    let out = cluster
        .kubectl(&["create", "--raw", &path, "-f", &file_arg])
        .await;
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "evicting {pod}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn wait_pod_gone(cluster: &Cluster, ns: &str, pod: &str, timeout: Duration) {
    let api = Api::<Pod>::namespaced(cluster.client.clone(), ns);
    wait_for(&format!("pod {pod} to be gone"), timeout, || {
        let api = api.clone();
        async move {
            matches!(api.get(pod).await, Err(kube::Error::Api(e)) if e.code == 404).then_some(())
        }
    })
    .await;
}

/// Every version of pod `pod` the API shows from now until its deletion.
fn watch_pod(cluster: &Cluster, ns: &str, pod: &str) -> Arc<Mutex<Vec<Pod>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (api, pod, out) = (
        Api::<Pod>::namespaced(cluster.client.clone(), ns),
        pod.to_owned(),
        seen.clone(),
    );
    tokio::spawn(async move {
        let params = WatchParams::default().fields(&format!("metadata.name={pod}"));
        let Ok(current) = api.get(&pod).await else {
            return;
        };
        let version = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        out.lock().unwrap().push(current);
        let Ok(stream) = api.watch(&params, &version).await else {
            return;
        };
        let mut stream = stream.boxed();
        while let Some(Ok(ev)) = stream.next().await {
            match ev {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => out.lock().unwrap().push(p),
                WatchEvent::Deleted(p) => {
                    out.lock().unwrap().push(p);
                    return;
                }
                _ => {}
            }
        }
    });
    seen
}

fn epoch_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One fresh namespace and operator per test, workers consuming `<ns>-jobs` on the cluster's Redis.
async fn start(
    prefix: &str,
) -> (
    Cluster,
    String,
    qscaler_tests::operator::Operator,
    NamespaceGuard,
    String,
) {
    let (cluster, ns, op, guard) = setup(prefix, None, &[]).await;
    let queue = format!("{ns}-jobs");
    (cluster, ns, op, guard, queue)
}

/// The task of a busy task-mode worker finishes in the same pod when it is deleted (or evicted)
/// 2 s into a 6 s task with 30 s of grace; it is acknowledged, nothing is left anywhere.
async fn task_finishes_in_the_same_pod(prefix: &str, evict: bool) {
    let (cluster, ns, op, _guard, queue) = start(prefix).await;
    let mut conn = cluster.redis().await;
    create_qworker(
        &cluster,
        &ns,
        task_worker("w", &queue, 30, json!({"minReplicas": 0, "maxReplicas": 2})),
    )
    .await;
    let _: () = conn.lpush(&queue, "a:6").await.unwrap();
    let pod = recorded(&conn, &queue, "start", "a:6", T).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    if evict {
        evict_pod(&cluster, &ns, &pod).await;
    } else {
        delete_pod(&cluster, &ns, &pod).await;
    }
    let ended_in = recorded(&conn, &queue, "end", "a:6", Duration::from_secs(20)).await;
    let lines = event_lines(&mut conn, &queue).await;
    assert_eq!(ended_in, pod, "the task ended in another pod: {lines:?}");
    assert_eq!(
        pods_with(&lines, "start", "a:6"),
        vec![pod.clone()],
        "{lines:?}"
    );
    assert!(pods_with(&lines, "term", "a:6").is_empty(), "{lines:?}");
    wait_pod_gone(&cluster, &ns, &pod, T).await;
    let processing = keys::processing(&queue, &keys::consumer(Some(&ns), &pod));
    assert_eq!(conn.llen::<_, usize>(&processing).await.unwrap(), 0);
    assert_eq!(conn.llen::<_, usize>(&queue).await.unwrap(), 0);
    let lines = event_lines(&mut conn, &queue).await;
    assert_eq!(
        pods_with(&lines, "start", "a:6").len(),
        1,
        "ran again: {lines:?}\noperator log:\n{}",
        op.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_busy_task_mode_worker_lets_its_task_finish_in_the_same_pod() {
    task_finishes_in_the_same_pod("sig-del", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicting_a_busy_task_mode_worker_lets_its_task_finish_in_the_same_pod() {
    task_finishes_in_the_same_pod("sig-evict", true).await;
}

/// Grace 5 s, a 9 s task, deleted 1 s in: the task gets SIGTERM from qsupervisor ~3 s after the
/// deletion (2 s before the kubelet's SIGKILL), not at once; its payload goes back to the queue once
/// (no retry counted: nobody else returned it), runs again in another pod and ends there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_longer_than_the_grace_is_signalled_late_returned_once_and_run_again() {
    let (cluster, ns, op, _guard, queue) = start("sig-long").await;
    let mut conn = cluster.redis().await;
    create_qworker(
        &cluster,
        &ns,
        task_worker("w", &queue, 5, json!({"minReplicas": 0, "maxReplicas": 1})),
    )
    .await;
    let _: () = conn.lpush(&queue, "b:9").await.unwrap();
    let first = recorded(&conn, &queue, "start", "b:9", T).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deleted = Instant::now();
    delete_pod(&cluster, &ns, &first).await;
    let termed = recorded(&conn, &queue, "term", "b:9", Duration::from_secs(10)).await;
    let after = deleted.elapsed().as_secs_f64();
    assert_eq!(termed, first);
    assert!(
        (2.0..4.5).contains(&after),
        "the task got SIGTERM {after:.1} s after the deletion (want ~3 s: 2 s before the 5 s grace ends)"
    );
    wait_pod_gone(&cluster, &ns, &first, Duration::from_secs(20)).await;
    let processing = keys::processing(&queue, &keys::consumer(Some(&ns), &first));
    assert_eq!(conn.llen::<_, usize>(&processing).await.unwrap(), 0);
    // Returned by qsupervisor itself: the operator never had to (it counts a retry when it does).
    assert!(!conn
        .hexists::<_, _, bool>(keys::retries(&queue), "b:9")
        .await
        .unwrap());
    let second = recorded(&conn, &queue, "end", "b:9", T).await;
    let lines = event_lines(&mut conn, &queue).await;
    assert_ne!(second, first, "{lines:?}");
    assert_eq!(
        pods_with(&lines, "start", "b:9"),
        vec![first.clone(), second.clone()],
        "returned once, run once more: {lines:?}\noperator log:\n{}",
        op.log()
    );
    assert_eq!(conn.llen::<_, usize>(&queue).await.unwrap(), 0);
}

/// Wrap mode, grace 30 s, deleted 2 s into a 6 s task; with `drained` the operator has drained the
/// worker first (scale-down: the queue is empty once its task is taken), so the drain signal already
/// went out. Either way the worker gets its warm-shutdown signal once and finishes the task in the
/// same pod.
async fn wrap_task_finishes_in_the_same_pod(prefix: &str, drained: bool) {
    let (cluster, ns, op, _guard, queue) = start(prefix).await;
    let mut conn = cluster.redis().await;
    let min = if drained { 0 } else { 1 };
    create_qworker(
        &cluster,
        &ns,
        wrap_worker(
            "w",
            &queue,
            30,
            json!({"minReplicas": min, "maxReplicas": 2}),
        ),
    )
    .await;
    let _: () = conn.lpush(&queue, "6000").await.unwrap();
    let pod = recorded(&conn, &queue, "start", "6000", T).await;
    if drained {
        let api = Api::<Pod>::namespaced(cluster.client.clone(), &ns);
        wait_for("the operator to drain the busy worker", T, || {
            let (api, pod) = (api.clone(), pod.clone());
            async move {
                let p = api.get(&pod).await.ok()?;
                annotation(&p, names::ANNOTATION_DRAIN).map(drop)
            }
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    delete_pod(&cluster, &ns, &pod).await;
    let ended_in = recorded(&conn, &queue, "end", "6000", Duration::from_secs(20)).await;
    assert_eq!(ended_in, pod);
    wait_pod_gone(&cluster, &ns, &pod, T).await;
    let log = cluster.pod_log(&ns, &pod, "worker");
    assert_eq!(
        log.matches("test-worker: SIGTERM").count(),
        1,
        "{log}\noperator log:\n{}",
        op.log()
    );
}

/// A plain deletion. (Forwarding SIGTERM did this before too; kept as it was.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_busy_wrap_mode_worker_lets_its_task_finish_in_the_same_pod() {
    wrap_task_finishes_in_the_same_pod("sig-wrap", false).await;
}

/// Drained, then deleted: before, the kubelet's SIGTERM was forwarded as a second SIGTERM, which
/// Celery-like workers take as a cold shutdown, cutting the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_drained_busy_wrap_mode_worker_does_not_send_a_second_sigterm() {
    wrap_task_finishes_in_the_same_pod("sig-wrapdr", true).await;
}

/// Wrap mode, grace 5 s, a 30 s task: qsupervisor SIGKILLs the worker itself ~1 s before the
/// kubelet would, logs why, and writes its last usage report on the pod before it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrap_mode_worker_past_its_grace_is_killed_by_qsupervisor_with_a_last_report() {
    let (cluster, ns, _op, _guard, queue) = start("sig-wrapkill").await;
    let mut conn = cluster.redis().await;
    create_qworker(
        &cluster,
        &ns,
        wrap_worker("w", &queue, 5, json!({"minReplicas": 0, "maxReplicas": 1})),
    )
    .await;
    let _: () = conn.lpush(&queue, "30000").await.unwrap();
    let pod = recorded(&conn, &queue, "start", "30000", T).await;
    let key = annotation_key("worker");
    let api = Api::<Pod>::namespaced(cluster.client.clone(), &ns);
    // The first report (at start); later ones only hourly.
    wait_for("the first usage report", T, || {
        let api = api.clone();
        let key = key.clone();
        let pod = pod.clone();
        async move {
            let p = api.get(&pod).await.ok()?;
            annotation(&p, &key).map(drop)
        }
    })
    .await;
    let seen = watch_pod(&cluster, &ns, &pod);
    // A whole second later, so a report stamped at or after this second came after the deletion.
    let first_second = epoch_secs();
    wait_for("the next second", Duration::from_secs(3), || async {
        (epoch_secs() > first_second).then_some(())
    })
    .await;
    let deleted_at = epoch_secs();
    delete_pod(&cluster, &ns, &pod).await;
    wait_pod_gone(&cluster, &ns, &pod, Duration::from_secs(20)).await;
    let log = cluster.pod_log(&ns, &pod, "worker");
    assert!(
        log.contains("killed by qsupervisor shortly before the kubelet's SIGKILL"),
        "{log}"
    );
    let last_report = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|p| annotation(p, &key).map(str::to_owned))
        .filter_map(|j| serde_json::from_str::<Value>(&j).ok())
        .filter_map(|v| v["reportedAt"].as_i64())
        .max();
    assert!(
        last_report.is_some_and(|at| at >= deleted_at),
        "no usage report after the deletion at {deleted_at}: {last_report:?}\n{log}"
    );
}

/// The activity and the node autoscalers' annotations of a task-mode worker, as the API shows them.
fn autoscaler_view(p: &Pod) -> (Option<String>, Option<String>, Option<String>) {
    let get = |k: &str| annotation(p, k).map(str::to_owned);
    (
        get(ANNOTATION_ACTIVITY),
        get(ANNOTATION_SAFE_TO_EVICT),
        get(ANNOTATION_DO_NOT_DISRUPT),
    )
}

/// Waits until the alive worker of `w` shows `want` (activity, safe-to-evict, do-not-disrupt);
/// returns its name.
async fn wait_view(cluster: &Cluster, ns: &str, want: [Option<&str>; 3]) -> String {
    let want = (
        want[0].map(str::to_owned),
        want[1].map(str::to_owned),
        want[2].map(str::to_owned),
    );
    wait_for(&format!("a worker showing {want:?}"), T, || {
        let want = want.clone();
        async move {
            let pods = worker_pods(cluster, ns, "w").await;
            let p = pods.iter().find(|p| alive(p))?;
            (autoscaler_view(p) == want).then(|| p.metadata.name.clone().unwrap_or_default())
        }
    })
    .await
}

/// A task-mode worker: idle (safe-to-evict "true", no do-not-disrupt), busy with a 3 s task
/// (safe-to-evict "false", do-not-disrupt "true"), idle again (do-not-disrupt removed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_autoscaler_annotations_follow_idle_busy_idle() {
    let (cluster, ns, _op, _guard, queue) = start("sig-annot").await;
    let conn = cluster.redis().await;
    create_qworker(
        &cluster,
        &ns,
        task_worker("w", &queue, 30, json!({"minReplicas": 1, "maxReplicas": 1})),
    )
    .await;
    let idle = wait_view(&cluster, &ns, [Some("idle"), Some("true"), None]).await;
    let _: () = conn.clone().lpush(&queue, "c:3").await.unwrap();
    let busy = wait_view(&cluster, &ns, [Some("busy"), Some("false"), Some("true")]).await;
    assert_eq!(busy, idle);
    recorded(&conn, &queue, "end", "c:3", T).await;
    let again = wait_view(&cluster, &ns, [Some("idle"), Some("true"), None]).await;
    assert_eq!(again, idle);
}
