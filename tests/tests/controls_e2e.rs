//! Issue 15.4, the controls every autoscaler has, each seen working on the local cluster (real
//! kube-apiserver, the stand-in kubelet running qsupervisor, real Redis): pause, the two rate
//! limits, activation from zero, fallback on a broken broker address, keep-warm before zero. Each
//! test fails with its control removed (the operator would follow the queue instead).
//!
//! Needs the local cluster: `tests/cluster.sh up && eval "$(tests/cluster.sh env)"`, and the binaries
//! built: `cargo build --workspace --bins`.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::Api;
use qscaler_crds::conditions::{self as cond, reason};
use qscaler_crds::names;
use qscaler_crds::{QWorker, ScalerConfig};
use qscaler_tests::operator::{strip_ansi, Operator};
use qscaler_tests::{wait_for, Cluster};
use redis::AsyncCommands;
use serde_json::{json, Value};

use common::*;

/// A test's operator and namespace, in the order they must go: the operator first (fields drop in
/// order). A live operator could put its finalizer back on a QWorker between the guard lifting
/// it and the namespace controller deleting it, and the namespace would never go.
struct Test {
    op: Operator,
    _guard: NamespaceGuard,
}

async fn start(prefix: &str) -> (Cluster, String, Test) {
    let (cluster, ns, op, guard) = setup(prefix, None, &[]).await;
    let t = Test { op, _guard: guard };
    (cluster, ns, t)
}

async fn patch_qworker(cluster: &Cluster, ns: &str, name: &str, patch: Value) {
    Api::<QWorker>::namespaced(cluster.client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patching the QWorker");
}

/// Alive workers not told to drain.
fn active(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| alive(p) && annotation(p, names::ANNOTATION_DRAIN).is_none())
        .count()
}

async fn running(cluster: &Cluster, ns: &str, qw: &str) -> usize {
    worker_pods(cluster, ns, qw)
        .await
        .iter()
        .filter(|p| phase(p) == "Running" && annotation(p, names::ANNOTATION_DRAIN).is_none())
        .count()
}

/// Waits for the status to show a reconcile that read `depth` with ScaleLimited True for
/// `reason`, and returns that status's desired count.
async fn held_at_depth(cluster: &Cluster, ns: &str, qw: &str, depth: i64, why: &str) -> i32 {
    wait_for(
        &format!("queueDepth {depth} with ScaleLimited {why}"),
        T,
        || async {
            let q = get_qworker(cluster, ns, qw).await;
            let limited =
                condition(&q, cond::SCALE_LIMITED).map(|c| (c.0 == "True", c.1.to_string()));
            let st = q.status?;
            (st.queue_depth == Some(depth) && limited == Some((true, why.to_string())))
                .then_some(st.desired_replicas)
        },
    )
    .await
}

async fn q_hash(cluster: &Cluster, ns: &str) -> String {
    let q = get_qworker(cluster, ns, "w").await;
    q.status
        .map(|s| s.current_pod_spec_hash)
        .unwrap_or_default()
}

fn names_of(pods: &[Pod]) -> Vec<String> {
    let mut names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    names
}

async fn wait_running(cluster: &Cluster, ns: &str, qw: &str, n: usize) {
    wait_for(&format!("{n} running workers"), T, || async {
        (running(cluster, ns, qw).await == n).then_some(())
    })
    .await;
}

/// Paused by the annotation, the count stays while the queue fills, and the Paused condition and a
/// Paused Event say why; `spec.paused` with `pausedReplicas: 0` empties it although work waits;
/// resumed, it follows the queue again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_while_the_queue_fills() {
    let (cluster, ns, _t) = start("ctl-pause").await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    let qw = idle_qworker("w", &queue, json!({"scaleDownStabilizationSeconds": 0}));
    create_qworker(&cluster, &ns, qw).await;
    push_tasks(&mut conn, &queue, 0..1).await;
    wait_running(&cluster, &ns, "w", 1).await;

    patch_qworker(
        &cluster,
        &ns,
        "w",
        json!({"metadata": {"annotations": {names::ANNOTATION_PAUSED: "true"}}}),
    )
    .await;
    wait_for("Paused True", T, || async {
        let q = get_qworker(&cluster, &ns, "w").await;
        (condition(&q, cond::PAUSED).map(|c| (c.0, c.1)) == Some(("True", reason::PAUSED)))
            .then_some(())
    })
    .await;
    push_tasks(&mut conn, &queue, 1..4).await;
    let desired = held_at_depth(&cluster, &ns, "w", 4, reason::PAUSED).await;
    assert_eq!(
        desired, 1,
        "paused, the count of when the pause began is held"
    );
    let pods = worker_pods(&cluster, &ns, "w").await;
    assert_eq!(active(&pods), 1, "no worker added while paused: {pods:?}");
    assert_eq!(pods.iter().filter(|p| alive(p)).count(), 1);
    let notes = events_with_reason(&cluster, &ns, "w", reason::PAUSED).await;
    assert!(
        notes.iter().any(|n| n.contains("holding 1 workers")),
        "a Paused Event says what is held: {notes:?}"
    );

    // A new template while paused rolls nothing out: the old worker stays, undrained.
    let old_hash = q_hash(&cluster, &ns).await;
    patch_qworker(
        &cluster,
        &ns,
        "w",
        json!({"spec": {"podMetadata": {"labels": {"rev": "2"}}}}),
    )
    .await;
    wait_for("the new hash in the status, one old worker", T, || async {
        let st = get_qworker(&cluster, &ns, "w").await.status?;
        (st.current_pod_spec_hash != old_hash && st.old_replicas == 1).then_some(())
    })
    .await;
    let after = worker_pods(&cluster, &ns, "w").await;
    assert_eq!(
        names_of(&after),
        names_of(&pods),
        "no pod created or deleted while paused"
    );
    assert_eq!(
        active(&after),
        1,
        "the old worker is not drained while paused"
    );

    // spec.paused (annotation gone) with pausedReplicas 0: no worker although 4 tasks wait.
    patch_qworker(
        &cluster,
        &ns,
        "w",
        json!({"metadata": {"annotations": {names::ANNOTATION_PAUSED: null}},
               "spec": {"paused": true, "scaleConfig": {"pausedReplicas": 0}}}),
    )
    .await;
    wait_for("no worker while paused at 0", T, || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        (pods.iter().filter(|p| alive(p)).count() == 0).then_some(())
    })
    .await;
    let q = get_qworker(&cluster, &ns, "w").await;
    assert_eq!(q.status.map(|s| s.desired_replicas), Some(0));

    patch_qworker(&cluster, &ns, "w", json!({"spec": {"paused": false}})).await;
    wait_running(&cluster, &ns, "w", 4).await;
    wait_for("Paused False (Resumed)", T, || async {
        let q = get_qworker(&cluster, &ns, "w").await;
        (condition(&q, cond::PAUSED).map(|c| (c.0, c.1)) == Some(("False", reason::RESUMED)))
            .then_some(())
    })
    .await;
}

/// The `create=N` of every plan the operator applied (its log).
fn creations(log: &str) -> Vec<u32> {
    strip_ansi(log)
        .lines()
        .filter(|l| l.contains("applied plan"))
        .filter_map(|l| {
            let rest = &l[l.find(" create=")? + " create=".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// A queue asking for 6 workers at once gets them 2 per reconcile (maxPodsAddedPerStep 2), and
/// ScaleLimited says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creations_are_capped_per_step() {
    let (cluster, ns, t) = start("ctl-step").await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    let qw = idle_qworker(
        "w",
        &queue,
        json!({"maxReplicas": 6, "maxPodsAddedPerStep": 2}),
    );
    create_qworker(&cluster, &ns, qw).await;
    push_tasks(&mut conn, &queue, 0..6).await;
    wait_running(&cluster, &ns, "w", 6).await;
    let created = creations(&t.op.log());
    assert!(
        created.iter().sum::<u32>() >= 6,
        "the log shows the creations: {created:?}"
    );
    assert!(
        created.iter().all(|n| *n <= 2),
        "at most 2 pods created per step: {created:?}"
    );
    let notes = events_with_reason(&cluster, &ns, "w", reason::MAX_PODS_ADDED_PER_STEP).await;
    assert!(!notes.is_empty(), "a MaxPodsAddedPerStep Event");
}

/// The queue empties under 3 workers with maxDrainsPerMinute 1: one drains, the next only a
/// minute later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_are_capped_per_minute() {
    let (cluster, ns, _t) = start("ctl-drains").await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    let qw = idle_qworker(
        "w",
        &queue,
        json!({"scaleDownStabilizationSeconds": 0, "maxDrainsPerMinute": 1}),
    );
    create_qworker(&cluster, &ns, qw).await;
    push_tasks(&mut conn, &queue, 0..3).await;
    wait_running(&cluster, &ns, "w", 3).await;
    let (samples, sampler) = sample(&cluster, &ns, "w");
    let _: () = conn.del(&queue).await.expect("DEL");
    let emptied = Instant::now();
    held_at_depth(&cluster, &ns, "w", 0, reason::MAX_DRAINS_PER_MINUTE).await;
    wait_for("the first drained worker gone", T, || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        (pods.iter().filter(|p| alive(p)).count() == 2).then_some(())
    })
    .await;
    let pods = worker_pods(&cluster, &ns, "w").await;
    assert_eq!(active(&pods), 2, "the others are not draining yet");
    wait_for("a second drain", Duration::from_secs(120), || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        (active(&pods) < 2).then_some(())
    })
    .await;
    let second = emptied.elapsed();
    sampler.abort();
    assert!(
        second >= Duration::from_secs(55),
        "the second drain came {second:?} after the queue emptied, within the minute"
    );
    let s = samples.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        s.history.iter().all(|(_, _, draining)| *draining <= 1),
        "never two drains at once: {:?}",
        s.history.iter().map(|h| (h.1, h.2)).collect::<Vec<_>>()
    );
}

/// From zero, 2 tasks under activationBacklog 3 start no worker (BelowActivation); the third does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_keeps_zero_under_the_threshold() {
    let (cluster, ns, _t) = start("ctl-activation").await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    let qw = idle_qworker("w", &queue, json!({"activationBacklog": 3}));
    create_qworker(&cluster, &ns, qw).await;
    push_tasks(&mut conn, &queue, 0..2).await;
    let desired = held_at_depth(&cluster, &ns, "w", 2, reason::BELOW_ACTIVATION).await;
    assert_eq!(desired, 0);
    assert!(
        worker_pods(&cluster, &ns, "w").await.is_empty(),
        "no worker under the activation threshold"
    );
    push_tasks(&mut conn, &queue, 2..3).await;
    wait_running(&cluster, &ns, "w", 3).await;
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// With the ScalerConfig pointed at a closed port, the count holds for fallbackAfterSeconds, then
/// becomes fallbackReplicas (ScaleLimited FallbackReplicas); fixed, it follows the queue again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_count_on_a_broken_broker() {
    let (cluster, ns, _t) = start("ctl-fallback").await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    let qw = idle_qworker(
        "w",
        &queue,
        json!({"fallbackReplicas": 3, "fallbackAfterSeconds": 3}),
    );
    create_qworker(&cluster, &ns, qw).await;
    push_tasks(&mut conn, &queue, 0..1).await;
    wait_running(&cluster, &ns, "w", 1).await;

    let scalers = Api::<ScalerConfig>::namespaced(cluster.client.clone(), &ns);
    let good_port = redis_port(&cluster.redis_url).to_string();
    let set_port = |port: String| {
        let scalers = scalers.clone();
        async move {
            let patch = json!({"spec": {"config": {"port": port}}});
            scalers
                .patch("redis", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("patching the ScalerConfig");
        }
    };
    set_port(closed_port().to_string()).await;
    let broken = Instant::now();
    wait_for("ScaleLimited FallbackReplicas", T, || async {
        let q = get_qworker(&cluster, &ns, "w").await;
        (condition(&q, cond::SCALE_LIMITED).map(|c| (c.0, c.1))
            == Some(("True", reason::FALLBACK_REPLICAS)))
        .then_some(())
    })
    .await;
    assert!(
        broken.elapsed() >= Duration::from_secs(3),
        "held for fallbackAfterSeconds first"
    );
    wait_running(&cluster, &ns, "w", 3).await;

    set_port(good_port).await;
    wait_running(&cluster, &ns, "w", 1).await;
}

/// The queue empties under 2 workers with keepWarmSeconds 8: one worker stays (keepWarmUntil in
/// the status, ScaleLimited KeepWarm) until the backlog has been zero that long, then none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_warm_keeps_one_worker_then_goes_to_zero() {
    let (cluster, ns, _t) = start("ctl-warm").await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    let qw = idle_qworker(
        "w",
        &queue,
        json!({"scaleDownStabilizationSeconds": 0, "keepWarmSeconds": 8}),
    );
    create_qworker(&cluster, &ns, qw).await;
    push_tasks(&mut conn, &queue, 0..2).await;
    wait_running(&cluster, &ns, "w", 2).await;
    let _: () = conn.del(&queue).await.expect("DEL");
    let emptied = k8s_openapi::jiff::Timestamp::now();
    let until = wait_for("keepWarmUntil in the status", T, || async {
        let q = get_qworker(&cluster, &ns, "w").await;
        let limited = condition(&q, cond::SCALE_LIMITED).map(|c| (c.0 == "True", c.1.to_string()));
        let st = q.status?;
        (limited == Some((true, reason::KEEP_WARM.to_string())) && st.desired_replicas == 1)
            .then_some(st.keep_warm_until?.0)
    })
    .await;
    assert!(
        until > emptied,
        "keepWarmUntil {until} is after the queue emptied ({emptied})"
    );
    wait_for("one worker kept warm", T, || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        (pods.iter().filter(|p| alive(p)).count() == 1).then_some(())
    })
    .await;
    let zero = wait_for("no worker after the keep-warm window", T, || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        let draining = active(&pods) == 0;
        draining.then(k8s_openapi::jiff::Timestamp::now)
    })
    .await;
    // keepWarmUntil is rounded down to the second.
    assert!(
        zero.as_millisecond() >= until.as_millisecond(),
        "the last worker was drained at {zero}, before keepWarmUntil {until}"
    );
    let elapsed = zero.as_millisecond() - emptied.as_millisecond();
    assert!(
        elapsed >= 7000,
        "kept warm {elapsed} ms after the queue emptied, not keepWarmSeconds (8 s)"
    );
}
