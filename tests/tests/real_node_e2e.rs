//! The whole loop on a real node: kubelet 1.20 + Docker 20.10 + kube-proxy, the project's images built
//! FROM scratch, the operator installed by install.sh as a real pod reaching the API through the
//! `kubernetes` Service, workers whose qsupervisor is PID 1 of a real container.
//!
//! Needs `tests/node.sh up` and the images (`docker/build.sh --debug --test --tag e2e` with the node's
//! DOCKER_HOST); tests/run.sh does both and runs this suite with `--ignored`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::Api;
use qscaler_crds::names;
use qscaler_crds::quantity;
use qscaler_crds::usage::{annotation_key, UsageReport};
use qscaler_crds::QWorker;
use qscaler_tests::real_node::{self, image, install_sh, logs, operator_installed};
use qscaler_tests::{wait_for, Cluster};
use redis::AsyncCommands;
use serde_json::{json, Value};

/// Real containers start in seconds, not milliseconds: waits are longer than on the stand-in.
const NODE_T: Duration = Duration::from_secs(180);
const NODE: &str = "qscaler-real-node";

/// A test namespace on the real node with the operator installed (once per process), the worker RBAC
/// from `install.sh --worker-rbac`, and the ScalerConfig `redis` for the node's Redis.
async fn setup(
    prefix: &str,
) -> (
    Cluster,
    String,
    NamespaceGuard,
    redis::aio::MultiplexedConnection,
) {
    let cluster = real_node::connect().await;
    operator_installed(&cluster);
    let ns = cluster.namespace(prefix).await;
    let guard = NamespaceGuard {
        kubeconfig: cluster.kubeconfig.clone(),
        ns: ns.clone(),
    };
    install_sh(&cluster, &["--worker-rbac", &ns]);
    let (host, port) = real_node::redis_host_port(&cluster);
    scaler_config_with(&cluster, &ns, port, json!({ "host": host })).await;
    let conn = cluster.redis().await;
    (cluster, ns, guard, conn)
}

/// A QWorker whose one container runs `image` with `args` (qsupervisor is the image's entrypoint).
fn real_qworker(name: &str, queue: &str, image: &str, args: Value, scale: Value) -> Value {
    let mut sc = json!({"scalerConfigRef": "redis", "queue": queue, "minReplicas": 0, "maxReplicas": 4,
                        "scalingFactor": 1, "scaleDownStabilizationSeconds": 2});
    merge(&mut sc, scale);
    json!({
        "apiVersion": "quickube.com/v1alpha1", "kind": "QWorker",
        "metadata": {"name": name},
        "spec": {
            "podSpec": {"serviceAccountName": "qscaler-worker", "terminationGracePeriodSeconds": 30,
                        "containers": [{"name": "worker", "image": image, "args": args,
                                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
            "scaleConfig": sc
        }
    })
}

/// Every task's events in order: id → [(start|end, pod)].
async fn events_by_task(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
) -> BTreeMap<String, Vec<(String, String)>> {
    let lines: Vec<String> = conn
        .lrange(format!("{queue}:events"), 0, -1)
        .await
        .expect("LRANGE events");
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for l in lines {
        let parts: Vec<&str> = l.split_whitespace().collect();
        if let [kind, id, pod] = parts[..] {
            out.entry(id.to_string())
                .or_default()
                .push((kind.to_string(), pod.to_string()));
        }
    }
    out
}

/// Waits until every task of `ids` has ended, then until the QWorker has no worker left.
async fn all_ended_then_zero(
    cluster: &Cluster,
    ns: &str,
    qworker: &str,
    conn: &redis::aio::MultiplexedConnection,
    queue: &str,
    ids: &[String],
) {
    wait_for(
        &format!("all {} tasks ended", ids.len()),
        NODE_T * 2,
        || async {
            let ev = events_by_task(&mut conn.clone(), queue).await;
            let ended = |id: &String| {
                ev.get(id)
                    .is_some_and(|e| e.iter().any(|(k, _)| k == "end"))
            };
            ids.iter().all(ended).then_some(())
        },
    )
    .await;
    wait_for("the workers scaled back to zero", NODE_T, || async {
        let pods = worker_pods(cluster, ns, qworker).await;
        (!pods.iter().any(alive)).then_some(())
    })
    .await;
}

/// Each of `ids` ran exactly once: one start and one end, both from the same pod.
fn assert_each_ran_once_whole(events: &BTreeMap<String, Vec<(String, String)>>, ids: &[String]) {
    for id in ids {
        let ev = events.get(id).map(Vec::as_slice).unwrap_or_default();
        match ev {
            [(s, p1), (e, p2)] if s == "start" && e == "end" && p1 == p2 => {}
            _ => panic!(
                "task {id} did not run exactly once, whole, in one pod: {ev:?}\nall: {events:?}"
            ),
        }
    }
    let extra: Vec<&String> = events.keys().filter(|k| !ids.contains(k)).collect();
    assert!(extra.is_empty(), "events of tasks never pushed: {extra:?}");
}

/// The short pod-spec hash in a worker pod's name (`<qworker>-<hash>-<suffix>`).
fn hash_of(pod: &str) -> &str {
    pod.rsplit('-').nth(1).unwrap_or("")
}

fn memory_request(p: &Pod) -> Option<u64> {
    let c = p.spec.as_ref()?.containers.first()?;
    quantity::bytes(&c.resources.as_ref()?.requests.as_ref()?.get("memory")?.0)
}

fn usage_report(p: &Pod) -> Option<UsageReport> {
    UsageReport::parse(annotation(p, &annotation_key("worker"))?).ok()
}

#[tokio::test]
#[ignore = "needs the real node: tests/node.sh up (tests/run.sh runs it)"]
async fn operator_runs_as_a_pod_from_its_image_with_plain_logs() {
    let cluster = real_node::connect().await;
    let out = operator_installed(&cluster);
    assert!(
        out.contains("successfully rolled out"),
        "install.sh did not wait for the rollout:\n{out}"
    );
    let deploy: Deployment = Api::namespaced(cluster.client.clone(), "qscaler-system")
        .get("qscaler-operator")
        .await
        .expect("the operator Deployment");
    let ready = deploy
        .status
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    assert_eq!(ready, 1, "operator Deployment not available");

    let pods: Vec<Pod> = Api::<Pod>::namespaced(cluster.client.clone(), "qscaler-system")
        .list(&ListParams::default())
        .await
        .expect("listing operator pods")
        .items;
    let op = pods
        .iter()
        .find(|p| phase(p) == "Running")
        .unwrap_or_else(|| panic!("no Running operator pod: {pods:?}"));
    let spec = op.spec.as_ref().expect("pod spec");
    assert_eq!(
        spec.node_name.as_deref(),
        Some(NODE),
        "scheduled onto the real node"
    );
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some(image("operator").as_str())
    );
    let status = op.status.as_ref().expect("pod status");
    let cid = status
        .container_statuses
        .as_ref()
        .expect("container statuses")[0]
        .container_id
        .clone()
        .unwrap_or_default();
    assert!(
        cid.starts_with("docker://"),
        "a real Docker container, not {cid:?}"
    );

    let name = op.metadata.name.as_deref().expect("pod name");
    let log = wait_for(
        "the operator's log through kubectl logs",
        NODE_T,
        || async {
            let l = logs(&cluster, "qscaler-system", name, "operator");
            (!l.is_empty()).then_some(l)
        },
    )
    .await;
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in the operator's log:\n{log}"
    );
}

#[tokio::test]
#[ignore = "needs the real node: tests/node.sh up (tests/run.sh runs it)"]
async fn task_mode_scales_zero_to_many_to_zero_losing_and_cutting_nothing() {
    let (cluster, ns, _guard, mut conn) = setup("rn-task").await;
    let queue = format!("{ns}-q");
    let args = json!([
        "--task",
        "--",
        "qscaler-test-worker",
        "--stdin-task",
        "--task-ms",
        "2000"
    ]);
    let scale = json!({"maxReplicas": 4, "scalingFactor": 0.25});
    create_qworker(
        &cluster,
        &ns,
        real_qworker("task", &queue, &image("test-worker"), args, scale),
    )
    .await;
    let (samples, sampler) = sample(&cluster, &ns, "task");

    push_tasks(&mut conn, &queue, 0..16).await;
    let ids: Vec<String> = (0..16).map(|i| format!("t{i}")).collect();
    all_ended_then_zero(&cluster, &ns, "task", &conn, &queue, &ids).await;
    sampler.abort();

    assert_each_ran_once_whole(&events_by_task(&mut conn, &queue).await, &ids);
    let dead: usize = conn
        .llen(qscaler_crds::names::keys::dead_letter(&queue))
        .await
        .expect("LLEN dead");
    assert_eq!(dead, 0, "nothing dead-lettered");
    let s = samples.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        s.max_alive >= 2,
        "scaled to several workers (most alive: {})",
        s.max_alive
    );
    assert!(
        s.max_alive <= 4,
        "never above maxReplicas (most alive: {})",
        s.max_alive
    );
}

#[tokio::test]
#[ignore = "needs the real node: tests/node.sh up (tests/run.sh runs it)"]
async fn scale_down_drains_exactly_the_excess_and_exec_and_logs_work() {
    let (cluster, ns, _guard, mut conn) = setup("rn-down").await;
    let queue = format!("{ns}-q");
    // Workers that consume nothing: the queue depth, so the desired count, is what the test sets.
    let args = json!([
        "--",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 1; done"
    ]);
    create_qworker(
        &cluster,
        &ns,
        real_qworker("idle", &queue, &image("worker"), args, json!({})),
    )
    .await;
    let _: () = conn
        .lpush(&queue, vec!["a", "b", "c"])
        .await
        .expect("LPUSH");
    let running = wait_for("three Running workers", NODE_T, || async {
        let pods = worker_pods(&cluster, &ns, "idle").await;
        let running: Vec<String> = pods
            .iter()
            .filter(|p| phase(p) == "Running")
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        (running.len() == 3).then_some(running)
    })
    .await;

    // kubectl exec and logs reach a real container through the kubelet.
    let exec = cluster
        .kubectl(&[
            "-n",
            &ns,
            "exec",
            &running[0],
            "-c",
            "worker",
            "--",
            "sh",
            "-c",
            "echo exec-$((6*7))",
        ])
        .await;
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout).trim(),
        "exec-42",
        "kubectl exec: {exec:?}"
    );
    let log = wait_for(
        "qsupervisor watching its pod (in-cluster API)",
        NODE_T,
        || async {
            let l = logs(&cluster, &ns, &running[0], "worker");
            l.contains("watching pod").then_some(l)
        },
    )
    .await;
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in qsupervisor's log:\n{log}"
    );

    let _: () = redis::cmd("LTRIM")
        .arg(&queue)
        .arg(0)
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("LTRIM");
    // Every pod seen, and those seen with the drain annotation.
    let seen = std::sync::Mutex::new((BTreeSet::new(), BTreeSet::new()));
    wait_for(
        "one worker left, the two drained ones gone",
        NODE_T,
        || async {
            let pods = worker_pods(&cluster, &ns, "idle").await;
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            for p in &pods {
                let n = p.metadata.name.clone().unwrap_or_default();
                if annotation(p, names::ANNOTATION_DRAIN).is_some() {
                    seen.1.insert(n.clone());
                }
                seen.0.insert(n);
            }
            let alive = pods.iter().filter(|p| alive(p)).count();
            (alive == 1 && seen.1.len() == 2).then_some(())
        },
    )
    .await;
    let (all, drained) = seen.into_inner().unwrap_or_else(|e| e.into_inner());
    assert_eq!(all.len(), 3, "no pod created while scaling down: {all:?}");
    let survivor: Vec<&String> = all.difference(&drained).collect();
    assert_eq!(
        survivor.len(),
        1,
        "exactly the excess drained: drained {drained:?} of {all:?}"
    );
    let pods = worker_pods(&cluster, &ns, "idle").await;
    let left = pods.iter().find(|p| alive(p)).expect("the survivor");
    assert_eq!(left.metadata.name.as_ref(), Some(survivor[0]));
    assert!(
        annotation(left, names::ANNOTATION_DRAIN).is_none(),
        "the survivor is not draining"
    );
}

#[tokio::test]
#[ignore = "needs the real node: tests/node.sh up (tests/run.sh runs it)"]
async fn wrap_mode_scales_and_rolls_out_finishing_every_task() {
    let (cluster, ns, _guard, mut conn) = setup("rn-wrap").await;
    let queue = format!("{ns}-q");
    let args = json!(["--", "qscaler-test-worker", "--task-ms", "1500"]);
    let scale = json!({"maxReplicas": 3, "scalingFactor": 0.5});
    create_qworker(
        &cluster,
        &ns,
        real_qworker("wrap", &queue, &image("test-worker"), args, scale),
    )
    .await;
    let (samples, sampler) = sample(&cluster, &ns, "wrap");

    push_tasks(&mut conn, &queue, 0..14).await;
    let ids: Vec<String> = (0..14).map(|i| format!("t{i}")).collect();
    let first_hash = wait_for("three tasks under way", NODE_T, || async {
        let ev = events_by_task(&mut conn.clone(), &queue).await;
        let started: Vec<String> = ev
            .values()
            .filter_map(|e| e.first())
            .map(|(_, p)| p.clone())
            .collect();
        (started.len() >= 3).then(|| hash_of(&started[0]).to_string())
    })
    .await;

    // A new revision mid-wave: every old worker must finish its task before it goes.
    let patch = json!({"spec": {"podSpec": {"containers": [{"name": "worker", "image": image("test-worker"),
        "args": ["--", "qscaler-test-worker", "--task-ms", "1500"], "env": [{"name": "ROLL", "value": "2"}],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}});
    Api::<QWorker>::namespaced(cluster.client.clone(), &ns)
        .patch("wrap", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patching the QWorker");

    all_ended_then_zero(&cluster, &ns, "wrap", &conn, &queue, &ids).await;
    sampler.abort();

    let events = events_by_task(&mut conn, &queue).await;
    assert_each_ran_once_whole(&events, &ids);
    let hashes: BTreeSet<&str> = events.values().flatten().map(|(_, p)| hash_of(p)).collect();
    assert!(
        hashes.contains(first_hash.as_str()),
        "old workers ran tasks: {hashes:?}"
    );
    assert!(
        hashes.len() >= 2,
        "new-revision workers ran tasks after the rollout: {hashes:?}"
    );
    let max_alive = samples.lock().unwrap_or_else(|e| e.into_inner()).max_alive;
    assert!(
        max_alive <= 3,
        "never above maxReplicas (most alive: {max_alive})"
    );
    let qw = get_qworker(&cluster, &ns, "wrap").await;
    let current = qw
        .status
        .map(|s| s.current_pod_spec_hash)
        .unwrap_or_default();
    assert!(
        !current.starts_with(&first_hash),
        "status moved to the new revision"
    );
}

#[tokio::test]
#[ignore = "needs the real node: tests/node.sh up (tests/run.sh runs it)"]
async fn oom_kill_is_seen_in_the_cgroup_and_bumps_the_next_request() {
    let (cluster, ns, _guard, mut conn) = setup("rn-oom").await;
    let queue = format!("{ns}-q");
    // The shell grows a 200 MB string under a 64 MiB limit: the kernel kills it, not qsupervisor.
    let args = json!([
        "--",
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); sleep 600"
    ]);
    let mut qw = real_qworker(
        "oom",
        &queue,
        &image("worker"),
        args,
        json!({"activateVPA": true, "maxReplicas": 1}),
    );
    qw["spec"]["podSpec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}});
    create_qworker(&cluster, &ns, qw).await;
    let _: () = conn.lpush(&queue, "hold").await.expect("LPUSH");

    let (first, report) = wait_for("a usage report with an OOM kill", NODE_T, || async {
        worker_pods(&cluster, &ns, "oom")
            .await
            .into_iter()
            .find_map(|p| {
                let r = usage_report(&p)?;
                (r.oom_kills >= 1).then(|| (p.metadata.name.clone().unwrap_or_default(), r))
            })
    })
    .await;
    let limit = 64u64 << 20;
    assert!(
        report.memory_bytes >= limit * 3 / 4 && report.memory_bytes <= limit + (4 << 20),
        "peak near the 64 MiB limit, from the cgroup: {report:?}"
    );
    let bumped = wait_for(
        "a replacement pod with a larger memory request",
        NODE_T,
        || async {
            worker_pods(&cluster, &ns, "oom")
                .await
                .into_iter()
                .find_map(|p| {
                    (p.metadata.name.as_deref() != Some(first.as_str()))
                        .then(|| memory_request(&p))
                        .flatten()
                        .filter(|m| *m > 32 << 20)
                })
        },
    )
    .await;
    assert!(
        bumped <= limit,
        "the request stays within the limit: {bumped}"
    );
    let qw = get_qworker(&cluster, &ns, "oom").await;
    let peak = qw
        .status
        .and_then(|s| {
            s.max_container_resources_usage
                .into_iter()
                .find(|u| u.name == "worker")
        })
        .and_then(|u| quantity::bytes(&u.memory?.0))
        .unwrap_or(0);
    assert!(
        peak >= limit * 3 / 4,
        "status.maxContainerResourcesUsage has the peak: {peak}"
    );
}

#[tokio::test]
#[ignore = "needs the real node: tests/node.sh up (tests/run.sh runs it)"]
async fn a_held_memory_peak_reaches_the_status() {
    let (cluster, ns, _guard, mut conn) = setup("rn-mem").await;
    let queue = format!("{ns}-q");
    let args = json!([
        "--",
        "sh",
        "-c",
        "x=$(head -c 120000000 /dev/zero | tr '\\0' a); sleep 600"
    ]);
    let mut qw = real_qworker(
        "hold",
        &queue,
        &image("worker"),
        args,
        json!({"maxReplicas": 1}),
    );
    qw["spec"]["podSpec"]["containers"][0]["resources"]["limits"] = json!({"memory": "512Mi"});
    create_qworker(&cluster, &ns, qw).await;
    let _: () = conn.lpush(&queue, "hold").await.expect("LPUSH");

    let peak = wait_for(
        "status.maxContainerResourcesUsage ≥ 120 MB",
        NODE_T,
        || async {
            let st = get_qworker(&cluster, &ns, "hold").await.status?;
            let u = st
                .max_container_resources_usage
                .into_iter()
                .find(|u| u.name == "worker")?;
            let m = quantity::bytes(&u.memory?.0)?;
            (m >= 120_000_000).then_some(m)
        },
    )
    .await;
    assert!(peak < 512 << 20, "below the limit: {peak}");
    let pods = worker_pods(&cluster, &ns, "hold").await;
    let report = pods.iter().find_map(usage_report).expect("a usage report");
    assert_eq!(report.oom_kills, 0, "no OOM kill: {report:?}");
}

/// A QWorker of one worker taking one task of `task_ms` in `mode` ("task" or "wrap"), with the grace.
async fn one_busy_worker(
    cluster: &Cluster,
    ns: &str,
    conn: &mut redis::aio::MultiplexedConnection,
    name: &str,
    mode: &str,
    task_ms: u64,
    grace_seconds: i64,
) -> (String, String) {
    let queue = format!("{ns}-{name}");
    let args = match mode {
        "task" => json!(["--task", "--", "qscaler-test-worker", "--stdin-task"]),
        _ => json!(["--", "qscaler-test-worker"]),
    };
    // One worker always (minReplicas 1): only the test's deletion ends it, never a scale-down.
    let scale = json!({"minReplicas": 1, "maxReplicas": 1});
    let mut qw = real_qworker(name, &queue, &image("test-worker"), args, scale);
    qw["spec"]["podSpec"]["terminationGracePeriodSeconds"] = json!(grace_seconds);
    create_qworker(cluster, ns, qw).await;
    let _: () = conn
        .lpush(&queue, task_ms.to_string())
        .await
        .expect("LPUSH");
    let id = task_ms.to_string();
    let pod = wait_for(&format!("{name}: the task started"), NODE_T, || async {
        let ev = events_by_task(&mut conn.clone(), &queue).await;
        ev.get(&id)?.first().map(|(_, pod)| pod.clone())
    })
    .await;
    (queue, pod)
}

/// The task's events once it has ended: [(start|end, pod)].
async fn when_ended(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
    id: &str,
    timeout: Duration,
) -> Vec<(String, String)> {
    wait_for(&format!("task {id} of {queue} ended"), timeout, || async {
        let ev = events_by_task(&mut conn.clone(), queue).await;
        let e = ev.get(id)?;
        e.iter().any(|(k, _)| k == "end").then(|| e.clone())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the real node: tests/node.sh up (tests/run.sh runs it)"]
async fn deleting_busy_workers_lets_their_tasks_finish_within_the_grace() {
    let (cluster, ns, _guard, mut conn) = setup("rn-delete").await;
    // Task mode and wrap mode, each busy with an 8 s task, deleted 1 s in with 30 s of grace.
    let mut busy = vec![];
    for mode in ["task", "wrap"] {
        let (queue, pod) = one_busy_worker(&cluster, &ns, &mut conn, mode, mode, 8000, 30).await;
        busy.push((mode, queue, pod));
    }
    for (_, _, pod) in &busy {
        let out = cluster
            .kubectl(&["-n", &ns, "delete", "pod", pod, "--wait=false"])
            .await;
        assert!(out.status.success(), "kubectl delete pod {pod}: {out:?}");
    }
    for (mode, queue, pod) in &busy {
        let ev = when_ended(&mut conn, queue, "8000", NODE_T).await;
        assert_eq!(
            ev,
            vec![
                ("start".to_string(), pod.clone()),
                ("end".to_string(), pod.clone())
            ],
            "{mode} mode: the task finished in the deleted pod, once"
        );
    }
}

#[tokio::test]
#[ignore = "needs the real node: tests/node.sh up (tests/run.sh runs it)"]
async fn a_task_longer_than_the_grace_is_returned_once_and_not_lost() {
    let (cluster, ns, _guard, mut conn) = setup("rn-grace").await;
    // A 20 s task in a pod with 6 s of grace: it is cut before the kubelet's SIGKILL, goes back to the
    // queue, and runs again (to its end) in the replacement pod.
    let (queue, pod) = one_busy_worker(&cluster, &ns, &mut conn, "long", "task", 20_000, 6).await;
    let out = cluster
        .kubectl(&["-n", &ns, "delete", "pod", &pod, "--wait=false"])
        .await;
    assert!(out.status.success(), "kubectl delete pod {pod}: {out:?}");
    let ev = when_ended(&mut conn, &queue, "20000", NODE_T).await;
    let starts: Vec<&String> = ev
        .iter()
        .filter(|(k, _)| k == "start")
        .map(|(_, p)| p)
        .collect();
    let ends: Vec<&String> = ev
        .iter()
        .filter(|(k, _)| k == "end")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(starts.len(), 2, "cut once, run again: {ev:?}");
    assert_eq!(starts[0], &pod, "first run in the deleted pod: {ev:?}");
    assert_eq!(ends.len(), 1, "ended once: {ev:?}");
    assert_ne!(ends[0], &pod, "the rerun ended in another pod: {ev:?}");
    let dead: usize = conn
        .llen(qscaler_crds::names::keys::dead_letter(&queue))
        .await
        .expect("LLEN dead");
    assert_eq!(dead, 0, "not dead-lettered");
}

/// Uncordons the node when the drain test ends, passed or not.
struct Uncordon(Cluster);

impl Drop for Uncordon {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.0.kubeconfig)
            .args(["uncordon", NODE])
            .output();
    }
}

/// Cordons the one node, so tests/run.sh runs it alone, after the rest of the suite.
#[tokio::test]
#[ignore = "needs the real node, alone: tests/run.sh runs it after the suite"]
async fn node_drain_lets_a_busy_worker_finish_its_task() {
    let (cluster, ns, _guard, mut conn) = setup("rn-drain").await;
    let (queue, pod) = one_busy_worker(&cluster, &ns, &mut conn, "drained", "task", 8000, 30).await;
    let _uncordon = Uncordon(cluster.clone());
    // kubectl drain: cordon, then the eviction API for the selected pods, waiting until they are gone.
    let out = cluster
        .kubectl(&[
            "drain",
            NODE,
            "--pod-selector",
            &format!("{}=drained", names::LABEL_QWORKER),
            "--timeout",
            "120s",
        ])
        .await;
    assert!(out.status.success(), "kubectl drain: {out:?}");
    let ev = when_ended(&mut conn, &queue, "8000", Duration::from_secs(10)).await;
    assert_eq!(
        ev,
        vec![("start".to_string(), pod.clone()), ("end".to_string(), pod)],
        "the task finished in the evicted pod, once"
    );
}
