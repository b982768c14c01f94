//! Issue 18, "eight ways the promises break": each test reproduces one defect on the local cluster
//! (real kube-apiserver and controller-manager, real Redis, the stand-in kubelet running qsupervisor)
//! and failed before its fix.
//!
//! Needs the local cluster: `tests/cluster.sh up && eval "$(tests/cluster.sh env)"`, and the binaries
//! built: `cargo build --workspace --bins`.

mod common;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::Api;
use qscaler_crds::names::{self, keys};
use qscaler_crds::{QWorker, ScalerConfig};
use qscaler_tests::{wait_for, workspace_bin, Cluster};
use redis::AsyncCommands;
use serde_json::{json, Value};

use common::*;

/// A task-mode QWorker: qsupervisor takes each task; the task records `start <payload> <pod>`, runs
/// `secs` seconds, then records `end <payload> <pod>` on `<queue>:events` (always in db 0, wherever
/// the queue is). No `>` or `&` in it: those are the subject of their own test.
fn task_qworker(name: &str, queue: &str, secs: f64, scale: Value) -> Value {
    let mut qw = qworker(name, queue, &[], scale);
    let script = format!(
        "t=$(cat); P=$QSCALER_REDIS_PORT; \
         redis-cli -p $P -n 0 rpush \"$QSCALER_QUEUE:events\" \"start $t $POD_NAME\"; \
         sleep {secs}; \
         redis-cli -p $P -n 0 rpush \"$QSCALER_QUEUE:events\" \"end $t $POD_NAME\""
    );
    qw["spec"]["podSpec"]["containers"][0]["args"] = json!(["--task", "--", "sh", "-c", script]);
    qw
}

/// The events lines of `queue` (`start t0 w-abc`, `end t0 w-abc`), oldest first.
async fn event_lines(conn: &mut redis::aio::MultiplexedConnection, queue: &str) -> Vec<String> {
    conn.lrange(format!("{queue}:events"), 0, -1)
        .await
        .expect("LRANGE events")
}

/// The pod that started task `id` (from its start event).
async fn started_on(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
    id: &str,
) -> Option<String> {
    event_lines(conn, queue).await.into_iter().find_map(|l| {
        let mut p = l.split_whitespace();
        (p.next() == Some("start") && p.next() == Some(id)).then(|| p.next().map(str::to_string))?
    })
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

async fn alive_pods(cluster: &Cluster, ns: &str, qw: &str) -> Vec<Pod> {
    worker_pods(cluster, ns, qw)
        .await
        .into_iter()
        .filter(alive)
        .collect()
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

// ---------------------------------------------------------------------------------------------
// 4. Reserved names in podMetadata

/// `quickube.com/drain` (and the hash label) in podMetadata made every pod drain at birth: hundreds
/// of pods created and deleted while SpecValid said True. Now it is an invalid spec: SpecValid False
/// naming each reserved key, an InvalidSpec Event, and no pod; once the keys are removed, it scales.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_pod_metadata_is_an_invalid_spec_and_creates_no_pod() {
    let (cluster, ns, op, _guard) = setup("def-reserved", None, &[]).await;
    let queue = format!("{ns}-jobs");
    let mut qw = idle_qworker("w", &queue, json!({"minReplicas": 2, "maxReplicas": 3}));
    qw["spec"]["podMetadata"] = json!({
        "annotations": {"quickube.com/drain": "scale-down", "note": "kept"},
        "labels": {"quickube.com/pod-spec-hash": "0000000000", "team": "a"}
    });
    let (samples, sampler) = sample(&cluster, &ns, "w");
    create_qworker(&cluster, &ns, qw).await;
    let (status, reason, message) = wait_for("a SpecValid condition on w", T, || async {
        let qw = get_qworker(&cluster, &ns, "w").await;
        condition(&qw, "SpecValid").map(|(s, r, m)| (s.to_string(), r.to_string(), m.to_string()))
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InvalidSpec"),
        "{message}\n{}",
        op.log()
    );
    assert!(
        message.contains("quickube.com/drain") && message.contains("quickube.com/pod-spec-hash"),
        "{message}"
    );
    assert!(
        !message.contains("note") && !message.contains("team"),
        "{message}"
    );
    wait_for("an InvalidSpec Event on w", T, || async {
        (!events_with_reason(&cluster, &ns, "w", "InvalidSpec")
            .await
            .is_empty())
        .then_some(())
    })
    .await;
    {
        let s = samples.lock().unwrap_or_else(|e| e.into_inner());
        assert!(s.names.is_empty(), "pods of an invalid spec: {:?}", s.names);
    }
    // Without the reserved keys the same QWorker scales to its minimum and stays there.
    patch_qworker(
        &cluster,
        &ns,
        "w",
        json!({"spec": {"podMetadata": {
            "annotations": {"quickube.com/drain": null},
            "labels": {"quickube.com/pod-spec-hash": null}
        }}}),
    )
    .await;
    wait_for("2 running workers", T, || async {
        let pods = alive_pods(&cluster, &ns, "w").await;
        (pods.len() == 2 && pods.iter().all(|p| phase(p) == "Running")).then_some(())
    })
    .await;
    let qw = get_qworker(&cluster, &ns, "w").await;
    assert_eq!(condition(&qw, "SpecValid").map(|c| c.0), Some("True"));
    sampler.abort();
    let s = samples.lock().unwrap_or_else(|e| e.into_inner());
    assert!(s.names.len() <= 3, "churn: {:?}\n{}", s.names, op.log());
}

// ---------------------------------------------------------------------------------------------
// 7. One bad key

/// `SET q x` on one queue failed the poller's whole pipeline: every QWorker of the ScalerConfig
/// showed BrokerUnreachable and none scaled. Now the bad queue is its own QWorker's condition
/// (ScalerHealthy False, QueueUnreadable, "queue key ... is a string, not a list") while a
/// neighbour on the same ScalerConfig scales to its backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_type_key_stops_only_its_own_qworker() {
    let (cluster, ns, op, _guard) = setup("def-wrongtype", None, &[]).await;
    let mut conn = cluster.redis().await;
    let (bad_q, good_q) = (format!("{ns}-bad"), format!("{ns}-good"));
    let _: () = conn.set(&bad_q, "x").await.expect("SET");
    create_qworker(&cluster, &ns, idle_qworker("bad", &bad_q, json!({}))).await;
    create_qworker(&cluster, &ns, idle_qworker("good", &good_q, json!({}))).await;
    // Idle workers take nothing: the backlog stays 3, so the neighbour wants 3 workers.
    push_tasks(&mut conn, &good_q, 0..3).await;
    wait_for("the neighbour scaled to 3 running workers", T, || async {
        let pods = alive_pods(&cluster, &ns, "good").await;
        (pods.len() == 3 && pods.iter().all(|p| phase(p) == "Running")).then_some(())
    })
    .await;
    let (status, reason, message) = wait_for("ScalerHealthy on bad", T, || async {
        let qw = get_qworker(&cluster, &ns, "bad").await;
        condition(&qw, "ScalerHealthy")
            .filter(|c| c.0 == "False")
            .map(|(s, r, m)| (s.to_string(), r.to_string(), m.to_string()))
    })
    .await;
    assert_eq!(
        reason,
        "QueueUnreadable",
        "{status} {message}\n{}",
        op.log()
    );
    assert_eq!(
        message,
        format!("queue key {bad_q} is a string, not a list")
    );
    let good = get_qworker(&cluster, &ns, "good").await;
    assert_eq!(
        condition(&good, "ScalerHealthy").map(|c| (c.0, c.1)),
        Some(("True", "QueueRead"))
    );
    assert_eq!(good.status.as_ref().map(|s| s.desired_replicas), Some(3));
    // The broker itself is fine.
    let sc = Api::<ScalerConfig>::namespaced(cluster.client.clone(), &ns)
        .get("redis")
        .await
        .expect("ScalerConfig");
    assert!(sc.status.map(|s| s.healthy).unwrap_or(false));
    assert!(alive_pods(&cluster, &ns, "bad").await.is_empty());
    // Fixed: the bad queue is read again.
    let _: () = conn.del(&bad_q).await.expect("DEL");
    wait_for("ScalerHealthy True on bad", T, || async {
        let qw = get_qworker(&cluster, &ns, "bad").await;
        (condition(&qw, "ScalerHealthy").map(|c| c.0) == Some("True")).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 5. A live pod that leaves the QWorker's view

/// Waits until a task-mode worker has started task `id`; returns its pod.
async fn busy_with(conn: &redis::aio::MultiplexedConnection, queue: &str, id: &str) -> String {
    wait_for(&format!("a worker started {id}"), T, || {
        let mut conn = conn.clone();
        async move { started_on(&mut conn, queue, id).await }
    })
    .await
}

/// A busy worker whose `quickube.com/qworker` label is removed still runs its task: its processing
/// list must not go back to the queue (the neighbour would run the task a second time). The pod's
/// own supervisor finishes and acknowledges it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_loses_its_label_keeps_its_task() {
    let (cluster, ns, op, _guard) = setup("def-unlabel", None, &[]).await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    create_qworker(
        &cluster,
        &ns,
        task_qworker(
            "w",
            &queue,
            6.0,
            json!({"minReplicas": 2, "maxReplicas": 2}),
        ),
    )
    .await;
    wait_for("2 running workers", T, || async {
        let pods = alive_pods(&cluster, &ns, "w").await;
        (pods.len() == 2 && pods.iter().all(|p| phase(p) == "Running")).then_some(())
    })
    .await;
    push_tasks(&mut conn, &queue, 0..1).await;
    let busy = busy_with(&conn, &queue, "t0").await;
    Api::<Pod>::namespaced(cluster.client.clone(), &ns)
        .patch(
            &busy,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {names::LABEL_QWORKER: null}}})),
        )
        .await
        .expect("removing the label");
    // The operator saw it leave: it replaced it.
    wait_for("a replacement for the unlabelled pod", T, || async {
        let pods = alive_pods(&cluster, &ns, "w").await;
        (pods.len() == 2 && pods.iter().all(|p| name_of(p) != busy)).then_some(())
    })
    .await;
    wait_for("t0 finished on the unlabelled pod", T, || {
        let (mut conn, queue, busy) = (conn.clone(), queue.clone(), busy.clone());
        async move {
            event_lines(&mut conn, &queue)
                .await
                .contains(&format!("end t0 {busy}"))
                .then_some(())
        }
    })
    .await;
    let lines = event_lines(&mut conn, &queue).await;
    assert_eq!(
        count(&lines, "start", "t0"),
        1,
        "t0 ran twice: {lines:?}\n{}",
        op.log()
    );
    assert!(
        !op.log().contains("returned in-flight tasks"),
        "{}",
        op.log()
    );
    let processing = keys::processing(&queue, &keys::consumer(Some(&ns), &busy));
    wait_for("the unlabelled pod acknowledged t0", T, || {
        let (mut conn, processing) = (conn.clone(), processing.clone());
        async move { (conn.llen::<_, i64>(&processing).await.ok()? == 0).then_some(()) }
    })
    .await;
    let queued: i64 = conn.llen(&queue).await.expect("LLEN");
    assert_eq!(queued, 0);
}

/// `delete qworker --cascade=orphan` with a task in flight: the garbage collector removes the owner
/// references first, so the pods leave the QWorker's view while they run. Their tasks stay with
/// them (not run twice), and the orphaning delete completes although the pod spec holds `>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaning_delete_leaves_running_tasks_alone() {
    let (cluster, ns, op, _guard) = setup("def-orphan", None, &[]).await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    create_qworker(
        &cluster,
        &ns,
        task_qworker(
            "w",
            &queue,
            6.0,
            json!({"minReplicas": 2, "maxReplicas": 2}),
        ),
    )
    .await;
    let pods = wait_for("2 running workers", T, || async {
        let pods = alive_pods(&cluster, &ns, "w").await;
        (pods.len() == 2 && pods.iter().all(|p| phase(p) == "Running")).then_some(pods)
    })
    .await;
    push_tasks(&mut conn, &queue, 0..1).await;
    let busy = busy_with(&conn, &queue, "t0").await;
    Api::<QWorker>::namespaced(cluster.client.clone(), &ns)
        .delete(
            "w",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Orphan),
                ..Default::default()
            },
        )
        .await
        .expect("deleting the QWorker with --cascade=orphan");
    wait_for("the QWorker gone (orphan finalizer done)", T, || async {
        Api::<QWorker>::namespaced(cluster.client.clone(), &ns)
            .get_opt("w")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    wait_for("t0 finished on its orphaned pod", T, || {
        let (mut conn, queue, busy) = (conn.clone(), queue.clone(), busy.clone());
        async move {
            event_lines(&mut conn, &queue)
                .await
                .contains(&format!("end t0 {busy}"))
                .then_some(())
        }
    })
    .await;
    let lines = event_lines(&mut conn, &queue).await;
    assert_eq!(
        count(&lines, "start", "t0"),
        1,
        "t0 ran twice: {lines:?}\n{}",
        op.log()
    );
    // The orphans run on, without owner.
    let api = Api::<Pod>::namespaced(cluster.client.clone(), &ns);
    for p in pods {
        let now = api.get(&name_of(&p)).await.expect("orphaned pod");
        assert!(alive(&now), "{} ended", name_of(&p));
        assert!(now.metadata.owner_references.unwrap_or_default().is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// 6. ControllerRevisions of specs with `>` or `&`

async fn revision_of(cluster: &Cluster, ns: &str, full_hash: &str) -> Option<ControllerRevision> {
    Api::<ControllerRevision>::namespaced(cluster.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .ok()?
        .items
        .into_iter()
        .find(|r| {
            r.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(names::ANNOTATION_REVISION_HASH))
                .map(String::as_str)
                == Some(full_hash)
        })
}

async fn current_hash(cluster: &Cluster, ns: &str, name: &str, not: &str) -> String {
    wait_for("status.currentPodSpecHash", T, || async {
        let st = get_qworker(cluster, ns, name).await.status?;
        (!st.current_pod_spec_hash.is_empty() && st.current_pod_spec_hash != not)
            .then_some(st.current_pod_spec_hash)
    })
    .await
}

/// A pod spec holding `>` and `&` (`sleep 1 >/dev/null && ...`): going back to it with `kubectl
/// qworker rollout undo` renumbers its revision to the top, and `delete --cascade=orphan`
/// completes. Both are patches of the revision, which the API server refused when the stored bytes
/// were not the ones it re-encodes (`data: field is immutable`). A revision recorded in plain bytes by an earlier
/// operator is replaced when it must be renumbered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_of_specs_with_html_characters_can_be_patched() {
    let (cluster, ns, op, _guard) = setup("def-revisions", None, &[]).await;
    let queue = format!("{ns}-jobs");
    let mut qw = idle_qworker("w", &queue, json!({"maxReplicas": 2}));
    qw["spec"]["podSpec"]["containers"][0]["args"] = json!([
        "--",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 0.2 >/dev/null && true; done <&-"
    ]);
    create_qworker(&cluster, &ns, qw).await;
    let a = current_hash(&cluster, &ns, "w", "").await;
    wait_for("revision 1 of template A", T, || async {
        (revision_of(&cluster, &ns, &a).await?.revision == Some(1)).then_some(())
    })
    .await;
    patch_qworker(&cluster, &ns, "w", json!({"spec": {"podSpec": {"containers": [
        {"name": "worker", "image": "qscaler/qsupervisor", "env": [{"name": "B", "value": "1"}],
         "args": ["--", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2 >/dev/null && true; done <&-"]}
    ]}}}))
    .await;
    let b = current_hash(&cluster, &ns, "w", &a).await;
    wait_for("revision 2 of template B", T, || async {
        (revision_of(&cluster, &ns, &b).await?.revision == Some(2)).then_some(())
    })
    .await;
    // `kubectl qworker rollout undo` puts A back: A's revision goes to the top.
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let undo = tokio::process::Command::new(workspace_bin("kubectl-qworker"))
        .args([
            "--kubeconfig",
            &kubeconfig,
            "-n",
            &ns,
            "rollout",
            "undo",
            "w",
        ])
        .output()
        .await
        .expect("kubectl-qworker (cargo build -p kubectl-qworker)");
    assert!(
        undo.status.success(),
        "rollout undo: {}",
        String::from_utf8_lossy(&undo.stderr)
    );
    assert_eq!(current_hash(&cluster, &ns, "w", &b).await, a);
    wait_for("template A renumbered to revision 3", T, || async {
        (revision_of(&cluster, &ns, &a).await?.revision == Some(3)).then_some(())
    })
    .await;

    // A revision written in plain bytes (as operators before this fix did): its renumbering is
    // refused by the API server, so the operator records it again under the new number.
    let api = Api::<ControllerRevision>::namespaced(cluster.client.clone(), &ns);
    let mut plain = revision_of(&cluster, &ns, &b).await.expect("revision of B");
    let name = plain.metadata.name.clone().expect("name");
    api.delete(&name, &Default::default())
        .await
        .expect("delete B");
    wait_for("B's revision deleted", T, || async {
        api.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    plain.metadata = ObjectMeta {
        name: plain.metadata.name.clone(),
        labels: plain.metadata.labels.clone(),
        annotations: plain.metadata.annotations.clone(),
        owner_references: plain.metadata.owner_references.clone(),
        ..Default::default()
    };
    plain.revision = Some(2);
    api.create(&Default::default(), &plain)
        .await
        .expect("B recorded in plain bytes");
    patch_qworker(&cluster, &ns, "w", json!({"spec": {"podSpec": {"containers": [
        {"name": "worker", "image": "qscaler/qsupervisor", "env": [{"name": "B", "value": "1"}],
         "args": ["--", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2 >/dev/null && true; done <&-"]}
    ]}}}))
    .await;
    assert_eq!(current_hash(&cluster, &ns, "w", &a).await, b);
    wait_for("template B renumbered to revision 4", T, || async {
        (revision_of(&cluster, &ns, &b).await?.revision == Some(4)).then_some(())
    })
    .await;

    // An orphaning delete patches every revision (owner reference removed) and completes.
    Api::<QWorker>::namespaced(cluster.client.clone(), &ns)
        .delete(
            "w",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Orphan),
                ..Default::default()
            },
        )
        .await
        .expect("delete --cascade=orphan");
    wait_for("the QWorker gone (orphan finalizer done)", T, || async {
        Api::<QWorker>::namespaced(cluster.client.clone(), &ns)
            .get_opt("w")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    for h in [&a, &b] {
        let rev = revision_of(&cluster, &ns, h).await.expect("revision kept");
        assert!(
            rev.metadata.owner_references.unwrap_or_default().is_empty(),
            "{}",
            op.log()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. "Pending" pods at work

/// A pod whose second container cannot start (env from a missing ConfigMap) stays Pending while
/// qsupervisor's container runs and holds a task. Scaling to zero must drain it (the task ends),
/// not delete it as "not started" (the task was cut); once its worker has exited, the pod, which
/// would stay Pending for good, is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_pod_at_work_is_drained_not_deleted() {
    let (cluster, ns, op, _guard) = setup("def-pending", None, &[]).await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    let mut qw = task_qworker(
        "w",
        &queue,
        5.0,
        json!({"minReplicas": 1, "maxReplicas": 1}),
    );
    qw["spec"]["podSpec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({
            "name": "side", "image": "debian", "command": ["sh", "-c", "sleep 3600"],
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k"}}}]
        }));
    create_qworker(&cluster, &ns, qw).await;
    let pod = wait_for("a Pending pod whose worker container runs", T, || async {
        let pods = alive_pods(&cluster, &ns, "w").await;
        let p = pods.first()?;
        let running = p
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .any(|c| c.name == "worker" && c.state.as_ref().is_some_and(|s| s.running.is_some()));
        (phase(p) == "Pending" && running).then(|| name_of(p))
    })
    .await;
    push_tasks(&mut conn, &queue, 0..1).await;
    assert_eq!(busy_with(&conn, &queue, "t0").await, pod);
    patch_qworker(
        &cluster,
        &ns,
        "w",
        json!({"spec": {"scaleConfig": {"minReplicas": 0, "maxReplicas": 0}}}),
    )
    .await;
    wait_for("the pod gone", T, || async {
        worker_pods(&cluster, &ns, "w")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let lines = event_lines(&mut conn, &queue).await;
    assert_eq!(
        (count(&lines, "start", "t0"), count(&lines, "end", "t0")),
        (1, 1),
        "t0 cut: {lines:?}\n{}",
        op.log()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A task that kills its container

/// A poison task kills its container every time it runs (the test plays the fatal bug: it
/// SIGKILLs the container of any pod that holds the task). Its returns used to carry no count, so
/// it ran forever. Each death now counts as a retry of the task; past the supervisor's limit
/// (`--max-retries 1`, read from the pod spec: two runs) it goes to the dead-letter list, and the
/// other tasks are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_kills_its_container_is_dead_lettered() {
    let (cluster, ns, op, _guard) = setup(
        "def-poison",
        None,
        &["--crash-backoff-base", "200ms", "--crash-backoff-max", "2s"],
    )
    .await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    let mut qw = task_qworker("w", &queue, 0.3, json!({"maxReplicas": 2}));
    let args = qw["spec"]["podSpec"]["containers"][0]["args"]
        .as_array()
        .cloned()
        .expect("args");
    let mut with_limit = vec![json!("--task"), json!("--max-retries"), json!("1")];
    with_limit.extend(args.into_iter().skip(1));
    qw["spec"]["podSpec"]["containers"][0]["args"] = Value::Array(with_limit);
    create_qworker(&cluster, &ns, qw).await;
    let killer = {
        let (cluster, ns, queue, mut conn) =
            (cluster.clone(), ns.clone(), queue.clone(), conn.clone());
        tokio::spawn(async move {
            let mut killed = std::collections::BTreeSet::new();
            loop {
                for p in alive_pods(&cluster, &ns, "w").await {
                    let name = name_of(&p);
                    let list = keys::processing(&queue, &keys::consumer(Some(&ns), &name));
                    let held: Vec<String> = conn.lrange(&list, 0, -1).await.unwrap_or_default();
                    // Once the run has begun (its start event is written), like a real crash.
                    let started = event_lines(&mut conn, &queue)
                        .await
                        .contains(&format!("start poison {name}"));
                    if held.iter().any(|t| t == "poison")
                        && started
                        && !killed.contains(&name)
                        && cluster.kill_container(&ns, &name)
                    {
                        eprintln!("killed {name}: it held the poison task");
                        killed.insert(name);
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
    };
    let _: () = conn.lpush(&queue, "poison").await.expect("LPUSH");
    push_tasks(&mut conn, &queue, 0..4).await;
    wait_for("the poison task dead-lettered", T, || {
        let (mut conn, dead) = (conn.clone(), keys::dead_letter(&queue));
        async move {
            let dead: Vec<String> = conn.lrange(&dead, 0, -1).await.ok()?;
            (dead == ["poison"]).then_some(())
        }
    })
    .await;
    wait_for("the other tasks done", T, || {
        let (mut conn, queue) = (conn.clone(), queue.clone());
        async move {
            let lines = event_lines(&mut conn, &queue).await;
            (0..4)
                .all(|i| count(&lines, "end", &format!("t{i}")) >= 1)
                .then_some(())
        }
    })
    .await;
    killer.abort();
    let lines = event_lines(&mut conn, &queue).await;
    assert_eq!(
        count(&lines, "start", "poison"),
        2,
        "one run and one retry: {lines:?}\n{}",
        op.log()
    );
    let count_left: Option<i64> = conn
        .hget(keys::retries(&queue), "poison")
        .await
        .expect("HGET");
    assert_eq!(count_left, None, "a dead-lettered task's count is cleared");
    let queued: i64 = conn.llen(&queue).await.expect("LLEN");
    assert_eq!(queued, 0);
    assert!(op.log().contains("dead-letter"), "{}", op.log());
}

// ---------------------------------------------------------------------------------------------
// 8. A ScalerConfig change strands a dead worker's task

/// The ScalerConfig moves to db 1 while a worker (which keeps db 0: broker settings are copied
/// into pods when they are created) holds a task; then the worker's container is killed. Its
/// processing list is in db 0, where the operator used to never look again; it now returns the
/// list on the broker the pod used (from the pod's env).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_pods_tasks_go_back_on_the_broker_it_used() {
    let (cluster, ns, op, _guard) = setup("def-switch", None, &[]).await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    create_qworker(
        &cluster,
        &ns,
        task_qworker(
            "w",
            &queue,
            60.0,
            json!({"minReplicas": 1, "maxReplicas": 1}),
        ),
    )
    .await;
    push_tasks(&mut conn, &queue, 0..1).await;
    let busy = busy_with(&conn, &queue, "t0").await;
    let scalers = Api::<ScalerConfig>::namespaced(cluster.client.clone(), &ns);
    scalers
        .patch(
            "redis",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"config": {"db": 1}}})),
        )
        .await
        .expect("switching the ScalerConfig to db 1");
    wait_for("the operator on db 1", T, || async {
        let sc = scalers.get("redis").await.ok()?;
        let st = sc.status?;
        (st.observed_generation == sc.metadata.generation && st.healthy).then_some(())
    })
    .await;
    assert!(cluster.kill_container(&ns, &busy), "no container to kill");
    let processing = keys::processing(&queue, &keys::consumer(Some(&ns), &busy));
    wait_for("t0 back in db 0's queue", T, || {
        let (mut conn, queue, processing) = (conn.clone(), queue.clone(), processing.clone());
        async move {
            let queued: Vec<String> = conn.lrange(&queue, 0, -1).await.ok()?;
            let held: i64 = conn.llen(&processing).await.ok()?;
            (queued == ["t0"] && held == 0).then_some(())
        }
    })
    .await;
    assert!(op.log().contains("on the broker it used"), "{}", op.log());
    // The replacement consumes db 1.
    let pod = wait_for("a replacement", T, || async {
        alive_pods(&cluster, &ns, "w")
            .await
            .into_iter()
            .find(|p| name_of(p) != busy)
    })
    .await;
    let env = pod.spec.expect("spec").containers[0]
        .env
        .clone()
        .unwrap_or_default();
    assert!(
        env.iter()
            .any(|e| e.name == names::env::REDIS_DB && e.value.as_deref() == Some("1")),
        "{env:?}"
    );
}
