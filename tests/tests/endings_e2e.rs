//! Issue 13, the operator's part: however a worker ends, no task is cut or stranded. Each test runs
//! on the local cluster (real kube-apiserver and controller-manager, real Redis, the stand-in
//! kubelet running qsupervisor) and failed before its change.
//!
//! Needs the local cluster: `tests/cluster.sh up && eval "$(tests/cluster.sh env)"`, and the binaries
//! built: `cargo build --workspace --bins`.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::Api;
use qscaler_crds::names::{self, keys};
use qscaler_crds::{QWorker, ScalerConfig};
use qscaler_tests::{wait_for, Cluster};
use redis::AsyncCommands;
use serde_json::{json, Value};

use common::*;

/// A task-mode QWorker whose task `<id>:<secs>` records `start <task> <pod>`, sleeps `secs`, then
/// records `end <task> <pod>` on `<queue>:events`.
fn task_qworker(name: &str, queue: &str, scale: Value) -> Value {
    let mut qw = qworker(name, queue, &[], scale);
    let script = "t=$(cat); P=$QSCALER_REDIS_PORT; \
         redis-cli -p $P rpush \"$QSCALER_QUEUE:events\" \"start $t $POD_NAME\"; \
         sleep ${t#*:}; \
         redis-cli -p $P rpush \"$QSCALER_QUEUE:events\" \"end $t $POD_NAME\"";
    qw["spec"]["podSpec"]["containers"][0]["args"] = json!(["--task", "--", "sh", "-c", script]);
    qw
}

async fn event_lines(conn: &mut redis::aio::MultiplexedConnection, queue: &str) -> Vec<String> {
    conn.lrange(format!("{queue}:events"), 0, -1)
        .await
        .expect("LRANGE events")
}

fn count(lines: &[String], what: &str, id: &str) -> usize {
    lines
        .iter()
        .filter(|l| {
            let mut p = l.split_whitespace();
            p.next() == Some(what) && p.next() == Some(id)
        })
        .count()
}

/// The pod that started task `id`, once it has.
async fn busy_with(conn: &redis::aio::MultiplexedConnection, queue: &str, id: &str) -> String {
    wait_for(&format!("a worker started {id}"), T, || {
        let mut conn = conn.clone();
        async move {
            event_lines(&mut conn, queue)
                .await
                .into_iter()
                .find_map(|l| {
                    let mut p = l.split_whitespace();
                    (p.next() == Some("start") && p.next() == Some(id))
                        .then(|| p.next().map(str::to_string))?
                })
        }
    })
    .await
}

async fn running_pods(cluster: &Cluster, ns: &str, qw: &str, n: usize) -> Vec<Pod> {
    wait_for(&format!("{n} running workers of {qw}"), T, || async {
        let pods: Vec<Pod> = worker_pods(cluster, ns, qw)
            .await
            .into_iter()
            .filter(alive)
            .collect();
        (pods.len() == n && pods.iter().all(|p| phase(p) == "Running")).then_some(pods)
    })
    .await
}

fn name_of(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

async fn patch_qworker(cluster: &Cluster, ns: &str, name: &str, patch: Value) {
    Api::<QWorker>::namespaced(cluster.client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patching the QWorker");
}

fn env_value(p: &Pod, name: &str) -> Option<String> {
    p.spec.as_ref()?.containers[0]
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

// ---------------------------------------------------------------------------------------------
// 2. Grace periods from scaleConfig.maxTaskSeconds

/// `maxTaskSeconds: 50` gives pods without their own grace 60 s (50 + the 10 s margin) and the env
/// var qsupervisor reads; changing it is a scale setting: the hash stays, no pod is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_task_seconds_sets_the_grace_and_the_env_without_a_rollout() {
    let (cluster, ns, op, _guard) = setup("end-grace", None, &[]).await;
    let _first = DeleteNamespaceFirst::new(&cluster, &ns);
    let queue = format!("{ns}-jobs");
    let mut qw = idle_qworker(
        "w",
        &queue,
        json!({"minReplicas": 1, "maxReplicas": 1, "maxTaskSeconds": 50}),
    );
    qw["spec"]["podSpec"]
        .as_object_mut()
        .expect("podSpec")
        .remove("terminationGracePeriodSeconds");
    create_qworker(&cluster, &ns, qw).await;
    let pod = running_pods(&cluster, &ns, "w", 1).await.remove(0);
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(
        spec.termination_grace_period_seconds,
        Some(60),
        "{}",
        op.log()
    );
    assert_eq!(
        env_value(&pod, names::env::MAX_TASK_SECONDS).as_deref(),
        Some("50")
    );
    let hash = get_qworker(&cluster, &ns, "w")
        .await
        .status
        .expect("status")
        .current_pod_spec_hash;

    patch_qworker(
        &cluster,
        &ns,
        "w",
        json!({"spec": {"scaleConfig": {"maxTaskSeconds": 100}}}),
    )
    .await;
    let generation = get_qworker(&cluster, &ns, "w").await.metadata.generation;
    let status = wait_for("the new generation observed", T, || async {
        let qw = get_qworker(&cluster, &ns, "w").await;
        qw.status.filter(|s| s.observed_generation == generation)
    })
    .await;
    assert_eq!(
        status.current_pod_spec_hash, hash,
        "maxTaskSeconds is not part of the hash"
    );
    let now: Vec<Pod> = worker_pods(&cluster, &ns, "w")
        .await
        .into_iter()
        .filter(alive)
        .collect();
    assert_eq!(now.len(), 1);
    assert_eq!(name_of(&now[0]), name_of(&pod), "no rollout");
    assert!(annotation(&now[0], names::ANNOTATION_DRAIN).is_none());
}

// ---------------------------------------------------------------------------------------------
// 6. Bad pod specs are refused up front

/// Operator log lines of failed pod creations.
fn failed_creates(op: &qscaler_tests::operator::Operator) -> usize {
    op.log().matches("creating a worker pod failed").count()
}

async fn spec_valid(cluster: &Cluster, ns: &str, generation: Option<i64>) -> (String, String) {
    wait_for("SpecValid of the current generation", T, || async {
        let qw = get_qworker(cluster, ns, "w").await;
        let current = qw.metadata.generation;
        if generation.is_some() && current != generation {
            return None;
        }
        let c = qw
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "SpecValid")?
            .clone();
        (c.observed_generation == current).then(|| (c.status.clone(), c.message.clone()))
    })
    .await
}

/// A container named `Bad_Name`, then `cpu: lots`: SpecValid False with a readable message naming
/// the QWorker's field, no pod and no creation attempted (no FailedCreate Event) however often it
/// reconciles; the fixed spec creates its pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_spec_the_api_server_refuses_is_spec_valid_false_and_never_retried() {
    let (cluster, ns, op, _guard) = setup("end-badspec", None, &[]).await;
    let _first = DeleteNamespaceFirst::new(&cluster, &ns);
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    let mut qw = idle_qworker("w", &queue, json!({"minReplicas": 1, "maxReplicas": 3}));
    qw["spec"]["podSpec"]["containers"][0]["name"] = json!("Bad_Name");
    let (samples, sampler) = sample(&cluster, &ns, "w");
    create_qworker(&cluster, &ns, qw).await;
    let (status, message) = spec_valid(&cluster, &ns, None).await;
    assert_eq!(status, "False", "{message}\n{}", op.log());
    assert!(
        message.contains("spec.podSpec.containers[0].name") && message.contains("Bad_Name"),
        "{message}"
    );
    let notes = wait_for("an InvalidSpec Event on w", T, || async {
        let notes = events_with_reason(&cluster, &ns, "w", "InvalidSpec").await;
        (!notes.is_empty()).then_some(notes)
    })
    .await;
    assert!(notes.iter().any(|n| n.contains("Bad_Name")), "{notes:?}");
    // More reasons to create: a deeper queue, and reconciles of an unchanged generation.
    push_tasks(&mut conn, &queue, 0..3).await;
    for i in 0..3 {
        patch_qworker(
            &cluster,
            &ns,
            "w",
            json!({"metadata": {"annotations": {"poke": i.to_string()}}}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(failed_creates(&op), 0, "{}", op.log());
    assert!(events_with_reason(&cluster, &ns, "w", "FailedCreate")
        .await
        .is_empty());
    assert!(samples.lock().unwrap().names.is_empty());

    // A quantity the API server cannot read.
    patch_qworker(
        &cluster,
        &ns,
        "w",
        json!({"spec": {"podSpec": {"containers": [{"name": "worker", "image": "qscaler/qsupervisor",
            "args": ["--", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"],
            "resources": {"requests": {"cpu": "lots"}}}]}}}),
    )
    .await;
    let generation = get_qworker(&cluster, &ns, "w").await.metadata.generation;
    let (status, message) = spec_valid(&cluster, &ns, generation).await;
    assert_eq!(status, "False", "{message}\n{}", op.log());
    assert!(
        message.contains("requests") && message.contains("lots"),
        "{message}"
    );
    assert_eq!(failed_creates(&op), 0, "{}", op.log());

    // Fixed: pods at last.
    patch_qworker(
        &cluster,
        &ns,
        "w",
        json!({"spec": {"podSpec": {"containers": [{"name": "worker", "image": "qscaler/qsupervisor",
            "args": ["--", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"],
            "resources": {"requests": {"cpu": "10m"}}}]}}}),
    )
    .await;
    let generation = get_qworker(&cluster, &ns, "w").await.metadata.generation;
    let (status, message) = spec_valid(&cluster, &ns, generation).await;
    assert_eq!(status, "True", "{message}");
    running_pods(&cluster, &ns, "w", 3).await;
    sampler.abort();
    assert_eq!(failed_creates(&op), 0, "{}", op.log());
}

// ---------------------------------------------------------------------------------------------
// 3. Deleting a QWorker returns its in-flight tasks

/// A QWorker deleted with two tasks in flight: its finalizer keeps it while its workers drain
/// (`quickube.com/drain=deleted`); the short task finishes on the pod that started it; the pod of
/// the long one dies hard meanwhile (SIGKILL of its qsupervisor: nothing of it cleans up), and its
/// task is back in the queue, counted as a retry, before the QWorker goes. Its ScalerConfig,
/// deleted first, waits for it (condition Deleting, naming it) and keeps working meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_qworker_returns_its_in_flight_tasks() {
    let (cluster, ns, op, _guard) = setup("end-delete", None, &[]).await;
    let _first = DeleteNamespaceFirst::new(&cluster, &ns);
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    create_qworker(
        &cluster,
        &ns,
        task_qworker("w", &queue, json!({"minReplicas": 2, "maxReplicas": 2})),
    )
    .await;
    running_pods(&cluster, &ns, "w", 2).await;
    let _: () = conn
        .lpush(&queue, vec!["short:3", "long:120"])
        .await
        .expect("LPUSH");
    let short_pod = busy_with(&conn, &queue, "short:3").await;
    let long_pod = busy_with(&conn, &queue, "long:120").await;

    // The ScalerConfig first: it must wait for the QWorker that uses it.
    let scs = Api::<ScalerConfig>::namespaced(cluster.client.clone(), &ns);
    scs.delete("redis", &DeleteParams::default())
        .await
        .expect("deleting the ScalerConfig");
    let message = wait_for("the ScalerConfig's Deleting condition", T, || async {
        let sc = scs.get_opt("redis").await.ok()??;
        let c = sc
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Deleting" && c.status == "True")?;
        Some(c.message)
    })
    .await;
    assert!(message.contains("w"), "{message}");

    let qws = Api::<QWorker>::namespaced(cluster.client.clone(), &ns);
    qws.delete("w", &DeleteParams::default())
        .await
        .expect("deleting the QWorker");
    wait_for("both workers drained for the deletion", T, || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| annotation(p, names::ANNOTATION_DRAIN) == Some("deleted")))
        .then_some(())
    })
    .await;
    assert!(
        qws.get_opt("w").await.expect("GET").is_some(),
        "the QWorker went before its workers"
    );
    assert!(cluster.kill_container(&ns, &long_pod), "kill {long_pod}");

    wait_for("the QWorker gone", Duration::from_secs(90), || async {
        qws.get_opt("w").await.ok()?.is_none().then_some(())
    })
    .await;
    let lines = event_lines(&mut conn, &queue).await;
    assert!(
        lines.contains(&format!("end short:3 {short_pod}")),
        "the short task did not finish on its pod: {lines:?}\n{}",
        op.log()
    );
    assert_eq!(count(&lines, "start", "short:3"), 1, "{lines:?}");
    let queued: Vec<String> = conn.lrange(&queue, 0, -1).await.expect("LRANGE");
    assert_eq!(
        queued,
        vec!["long:120".to_string()],
        "the long task is back in the queue\n{}",
        op.log()
    );
    let retries: Option<i64> = conn
        .hget(keys::retries(&queue), "long:120")
        .await
        .expect("HGET");
    assert_eq!(retries, Some(1));
    let left: Vec<String> = conn
        .keys(format!("{{{queue}}}:processing:*"))
        .await
        .expect("KEYS");
    assert!(left.is_empty(), "lists left behind: {left:?}");
    // And the ScalerConfig follows its last QWorker.
    wait_for("the ScalerConfig gone", T, || async {
        scs.get_opt("redis").await.ok()?.is_none().then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 5. Eviction: the /scale subresource and PodDisruptionBudgets

/// `/scale` shows minReplicas as spec.replicas, the alive workers as status.replicas and their
/// selector, so a PodDisruptionBudget with `maxUnavailable` (which needs the owner's scale) is
/// computed and the eviction API evicts within it; `kubectl scale` sets the floor (minReplicas).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdb_with_max_unavailable_lets_evictions_through_the_scale_subresource() {
    let (cluster, ns, op, _guard) = setup("end-evict", None, &[]).await;
    let _first = DeleteNamespaceFirst::new(&cluster, &ns);
    let queue = format!("{ns}-jobs");
    create_qworker(
        &cluster,
        &ns,
        idle_qworker("w", &queue, json!({"minReplicas": 2, "maxReplicas": 4})),
    )
    .await;
    let pods = running_pods(&cluster, &ns, "w", 2).await;
    let scale = wait_for("the scale subresource with 2 replicas", T, || async {
        let out = cluster
            .kubectl(&[
                "get",
                "--raw",
                &format!("/apis/quickube.com/v1alpha1/namespaces/{ns}/qworkers/w/scale"),
            ])
            .await;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["status"]["replicas"] == 2).then_some(v)
    })
    .await;
    assert_eq!(scale["spec"]["replicas"], 2, "{scale}");
    assert_eq!(
        scale["status"]["selector"], "quickube.com/qworker=w",
        "{scale}"
    );

    pdb(&cluster, &ns, "w", "1", 1).await;

    // The eviction API (policy/v1beta1 on 1.20), as kubectl drain uses it.
    let victim = name_of(&pods[0]);
    let out = evict(&cluster, &ns, &victim).await;
    assert!(
        out.status.success(),
        "eviction refused: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        op.log()
    );
    wait_for("the evicted pod gone and replaced", T, || async {
        let pods: Vec<Pod> = worker_pods(&cluster, &ns, "w")
            .await
            .into_iter()
            .filter(alive)
            .collect();
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| name_of(p) != victim && phase(p) == "Running"))
        .then_some(())
    })
    .await;

    // kubectl scale sets the floor.
    let out = cluster
        .kubectl(&["-n", &ns, "scale", "qworker/w", "--replicas=3"])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let qw = get_qworker(&cluster, &ns, "w").await;
    assert_eq!(qw.spec.scale_config.min_replicas, 3);
    running_pods(&cluster, &ns, "w", 3).await;
}

/// Applies a PodDisruptionBudget (policy/v1beta1, as 1.20 serves it) over the QWorker's pods and
/// waits until the disruption controller allows `allowed` disruptions.
async fn pdb(cluster: &Cluster, ns: &str, qw: &str, max_unavailable: &str, allowed: i64) {
    let pdb = format!(
        "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata: {{name: {qw}, namespace: {ns}}}\n\
         spec:\n  maxUnavailable: {max_unavailable}\n  selector: {{matchLabels: {{quickube.com/qworker: {qw}}}}}\n"
    );
    let file = std::env::temp_dir().join(format!("{ns}-{qw}-pdb.yaml"));
    std::fs::write(&file, pdb).expect("pdb file");
    let out = cluster
        .kubectl(&["apply", "-f", file.to_str().expect("path")])
        .await;
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        &format!("the PDB allows {allowed} disruption(s)"),
        T,
        || async {
            let out = cluster
                .kubectl(&["-n", ns, "get", "pdb", qw, "-o", "json"])
                .await;
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["status"]["disruptionsAllowed"] == allowed).then_some(())
        },
    )
    .await;
}

/// POSTs an Eviction of `pod` (policy/v1beta1), as `kubectl drain` does; the API's answer.
async fn evict(cluster: &Cluster, ns: &str, pod: &str) -> std::process::Output {
    let eviction = json!({"apiVersion": "policy/v1beta1", "kind": "Eviction",
                          "metadata": {"name": pod, "namespace": ns}});
    let file = std::env::temp_dir().join(format!("{ns}-{pod}-eviction.json"));
    std::fs::write(&file, eviction.to_string()).expect("eviction file");
    let out = cluster
        .kubectl(&[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction"),
            "-f",
            file.to_str().expect("path"),
        ])
        .await;
    let _ = std::fs::remove_file(&file);
    out
}

/// A busy task-mode worker evicted (the eviction API, under a `maxUnavailable: 1` PDB that works
/// through `/scale`) with grace left (`maxTaskSeconds: 10` gives 20 s): its task finishes on it,
/// runs once, and the pod goes; a replacement comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_busy_worker_finishes_its_task() {
    let (cluster, ns, op, _guard) = setup("end-evict-busy", None, &[]).await;
    let _first = DeleteNamespaceFirst::new(&cluster, &ns);
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    let mut qw = task_qworker(
        "w",
        &queue,
        json!({"minReplicas": 2, "maxReplicas": 2, "maxTaskSeconds": 10}),
    );
    qw["spec"]["podSpec"]
        .as_object_mut()
        .expect("podSpec")
        .remove("terminationGracePeriodSeconds");
    create_qworker(&cluster, &ns, qw).await;
    running_pods(&cluster, &ns, "w", 2).await;
    pdb(&cluster, &ns, "w", "1", 1).await;
    let _: () = conn.lpush(&queue, "job:4").await.expect("LPUSH");
    let busy = busy_with(&conn, &queue, "job:4").await;
    let out = evict(&cluster, &ns, &busy).await;
    assert!(
        out.status.success(),
        "eviction refused: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        op.log()
    );
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns);
    wait_for("the evicted pod gone", T, || async {
        pods.get_opt(&busy).await.ok()?.is_none().then_some(())
    })
    .await;
    let lines = event_lines(&mut conn, &queue).await;
    assert!(
        lines.contains(&format!("end job:4 {busy}")),
        "the task was cut: {lines:?}\n{}",
        op.log()
    );
    assert_eq!(count(&lines, "start", "job:4"), 1, "{lines:?}");
    running_pods(&cluster, &ns, "w", 2).await;
}
