//! A bounded soak with faults, on the local cluster: tasks are produced in waves (so the workers scale
//! up and down again and again) for a wrap-mode and a task-mode QWorker while, in turn, the pod spec
//! rolls out twice, the operator is SIGKILLed twice, Redis restarts, the kube-apiserver restarts, and a
//! task-mode worker is SIGKILLed mid-task; with `tests/redis-topologies.sh` up, a third (task-mode)
//! QWorker consumes from a Sentinel-watched primary, which is SIGKILLed with the Redis restart (the
//! sentinels promote the replica; it loses no task). Every worker records "start <id> <pod>" and "end <id> <pod>".
//! Throughout, a neighbour QWorker on the same ScalerConfig reads a queue key of the wrong type (a
//! string): it alone is ScalerHealthy=False/QueueUnreadable and makes no pod. With the last wave comes
//! a poison task that kills its container each time it runs (the test plays the fatal bug: it SIGKILLs
//! any pod holding it once started): its pods' returns count as retries and it ends dead-lettered.
//!
//! It prints produced / completed / duplicated / lost / interrupted, the most pods alive against
//! maxReplicas, and the time to converge after each fault; it fails unless nothing is lost, no task is
//! interrupted by a scale-down or a rollout, and no sample ever shows more than maxReplicas pods.
//!
//! Its own test binary: restarting the apiserver would disturb tests running beside it, and test
//! binaries run one after another.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::Api;
use qscaler_crds::QWorker;
use qscaler_tests::cluster::workspace_root;
use qscaler_tests::operator::Operator;
use qscaler_tests::{wait_for, Cluster};
use redis::AsyncCommands;
use serde_json::json;

use common::topologies::{self, Revive, Topologies};
use common::*;

const MAX: usize = 4;
const WAVES: usize = 6;
const PER_WAVE: usize = 24;

/// The Sentinel QWorker: its queue on the Sentinel primary, its events on the soak's own Redis.
struct SentinelPart {
    topo: Topologies,
    queue: String,
    params: qscaler_queue::RedisParams,
}

impl SentinelPart {
    async fn start(cluster: &Cluster, ns: &str, events_url: &str) -> Option<SentinelPart> {
        let topo = Topologies::from_env()?;
        topologies::scaler_config_of(cluster, ns, "sentinel", topo.sentinel_config()).await;
        let queue = format!("{ns}-sentinel");
        let scale = json!({"scalerConfigRef": "sentinel", "minReplicas": 0, "maxReplicas": MAX,
                           "scalingFactor": 0.25, "scaleDownStabilizationSeconds": 1});
        let mut qw = qworker("sentinel", &queue, &[], scale);
        qw["spec"]["podSpec"]["containers"][0]["args"] = json!([
            "--task",
            "--",
            "qscaler-test-worker",
            "--stdin-task",
            "--task-ms",
            "300",
            "--redis-url",
            events_url,
            "--events",
            format!("{queue}:events")
        ]);
        create_qworker(cluster, ns, qw).await;
        let params = topo.sentinel_params();
        Some(SentinelPart {
            topo,
            queue,
            params,
        })
    }

    /// Pushes tasks `ids` and waits until the replica has them.
    async fn push(&self, ids: std::ops::Range<usize>) {
        let mut c = wait_for("the Sentinel primary", Duration::from_secs(60), || {
            topologies::connect(&self.params)
        })
        .await;
        let items: Vec<String> = ids.map(|i| format!("t{i}")).collect();
        let _: () = c.lpush(&self.queue, items).await.expect("LPUSH");
        topologies::replicated(&mut c).await;
    }
}

/// Start/end events per (id, pod) of one queue.
async fn events(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
) -> Vec<(String, String, String)> {
    let lines: Vec<String> = conn
        .lrange(format!("{queue}:events"), 0, -1)
        .await
        .unwrap_or_default();
    lines
        .iter()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            Some((
                p.next()?.to_string(),
                p.next()?.to_string(),
                p.next().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

/// Waits until both QWorkers' statuses say the operator caught up: observed the spec and has as many
/// up-to-date workers as it wants. Returns how long that took.
async fn converge(cluster: &Cluster, ns: &str, what: &str) -> Duration {
    let start = Instant::now();
    let api: Api<QWorker> = Api::namespaced(cluster.client.clone(), ns);
    wait_for(
        &format!("convergence after {what}"),
        Duration::from_secs(90),
        || {
            let api = api.clone();
            async move {
                for name in ["wrap", "task"] {
                    let qw = api.get(name).await.ok()?;
                    let st = qw.status.as_ref()?;
                    let caught_up = st.observed_generation == qw.metadata.generation
                        && st.current_pod_spec_hash
                            == qscaler_crds::hash::pod_spec_hash(&qw.spec).full()
                        && st.updated_replicas == st.desired_replicas
                        && st.old_replicas == 0;
                    if !caught_up {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await;
    start.elapsed()
}

async fn roll_out(cluster: &Cluster, ns: &str, n: usize) {
    let api: Api<QWorker> = Api::namespaced(cluster.client.clone(), ns);
    let patch = json!({"spec": {"podMetadata": {"annotations": {"soak/rollout": n.to_string()}}}});
    for name in ["wrap", "task"] {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("rolling out");
    }
}

/// SIGKILLs the qsupervisor (PID 1 of its namespace: the whole container dies) of a task-mode pod that
/// holds a task. Returns the pod's name.
async fn kill_a_busy_task_worker(
    cluster: &Cluster,
    ns: &str,
    queue: &str,
    conn: &mut redis::aio::MultiplexedConnection,
) -> String {
    wait_for(
        "a task-mode worker in the middle of a task",
        Duration::from_secs(60),
        || {
            let mut conn = conn.clone();
            async move {
                for pod in worker_pods(cluster, ns, "task")
                    .await
                    .iter()
                    .filter(|p| phase(p) == "Running")
                {
                    let name = pod.metadata.name.clone()?;
                    let held: i64 = conn
                        .llen(qscaler_crds::names::keys::processing(
                            queue,
                            &qscaler_crds::names::keys::consumer(Some(ns), &name),
                        ))
                        .await
                        .ok()?;
                    if held == 0 {
                        continue;
                    }
                    let launcher: i32 =
                        std::fs::read_to_string(cluster.pod_dir(ns, &name).join("worker.pid"))
                            .ok()?
                            .trim()
                            .parse()
                            .ok()?;
                    let children = std::fs::read_to_string(format!(
                        "/proc/{launcher}/task/{launcher}/children"
                    ))
                    .ok()?;
                    let init: i32 = children.split_whitespace().next()?.parse().ok()?;
                    nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(init),
                        nix::sys::signal::Signal::SIGKILL,
                    )
                    .ok()?;
                    return Some(name);
                }
                None
            }
        },
    )
    .await
}

/// The poison's effect: every task-mode pod that holds `poison` and has started it is SIGKILLed,
/// once. A fresh Redis connection each round (Redis restarts during the soak). Returns the pods
/// killed so far.
fn poison_killer(
    cluster: &Cluster,
    ns: &str,
    queue: &str,
    url: String,
) -> (Arc<Mutex<BTreeSet<String>>>, tokio::task::JoinHandle<()>) {
    let killed = Arc::new(Mutex::new(BTreeSet::new()));
    let (cluster, ns, queue, out) = (
        cluster.clone(),
        ns.to_string(),
        queue.to_string(),
        killed.clone(),
    );
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Ok(client) = redis::Client::open(url.as_str()) else {
                continue;
            };
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                continue;
            };
            let started: BTreeSet<String> = events(&mut conn, &queue)
                .await
                .into_iter()
                .filter(|e| e.0 == "start" && e.1 == "poison")
                .map(|e| e.2)
                .collect();
            for p in worker_pods(&cluster, &ns, "task")
                .await
                .iter()
                .filter(|p| alive(p))
            {
                let Some(name) = p.metadata.name.clone() else {
                    continue;
                };
                if !started.contains(&name) || out.lock().unwrap().contains(&name) {
                    continue;
                }
                let list = qscaler_crds::names::keys::processing(
                    &queue,
                    &qscaler_crds::names::keys::consumer(Some(&ns), &name),
                );
                let held: Vec<String> = conn.lrange(&list, 0, -1).await.unwrap_or_default();
                if held.iter().any(|t| t == "poison") && cluster.kill_container(&ns, &name) {
                    out.lock().unwrap().insert(name);
                }
            }
        }
    });
    (killed, task)
}

/// A Running task-mode pod (not `not`) that has started a task it still holds.
async fn busy_task_pod(
    cluster: &Cluster,
    ns: &str,
    queue: &str,
    conn: &mut redis::aio::MultiplexedConnection,
    not: &str,
) -> String {
    wait_for("a busy task-mode worker", Duration::from_secs(60), || {
        let mut conn = conn.clone();
        async move {
            let evs = events(&mut conn, queue).await;
            for pod in worker_pods(cluster, ns, "task")
                .await
                .iter()
                .filter(|p| phase(p) == "Running")
            {
                let name = pod.metadata.name.clone()?;
                let held: Vec<String> = conn
                    .lrange(
                        qscaler_crds::names::keys::processing(
                            queue,
                            &qscaler_crds::names::keys::consumer(Some(ns), &name),
                        ),
                        0,
                        -1,
                    )
                    .await
                    .ok()?;
                let started = held.iter().any(|t| {
                    evs.iter()
                        .any(|e| e.0 == "start" && &e.1 == t && e.2 == name)
                });
                if name != not && started {
                    return Some(name);
                }
            }
            None
        }
    })
    .await
}

/// Issue 18's "transient API-server refusal at pod start": a task-mode worker that restarts in place
/// (`restartPolicy: OnFailure`, so the stand-in kubelet starts its container again without the API)
/// is SIGKILLed mid-task while the kube-apiserver is down for a restart; its qsupervisor starts
/// again while the API refuses connections, retries until it is back (taking no task before), reruns
/// the task it held and works off the rest. Returns the summary line; panics when a task is lost or
/// cut, or when the refusal did not happen.
async fn api_refused_at_container_start(cluster: &Cluster, ns: &str, redis: &OwnRedis) -> String {
    let queue = format!("{ns}-restart");
    let mut qw = qworker(
        "restart",
        &queue,
        &[],
        json!({"minReplicas": 0, "maxReplicas": 1}),
    );
    let script = "t=$(cat); P=$QSCALER_REDIS_PORT; redis-cli -p $P rpush \"$QSCALER_QUEUE:events\" \"start $t $POD_NAME\" >/dev/null; \
                  sleep 1; redis-cli -p $P rpush \"$QSCALER_QUEUE:events\" \"end $t $POD_NAME\" >/dev/null";
    qw["spec"]["podSpec"]["restartPolicy"] = json!("OnFailure");
    qw["spec"]["podSpec"]["containers"][0]["args"] = json!(["--task", "--", "sh", "-c", script]);
    create_qworker(cluster, ns, qw).await;
    let ids: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    let mut conn = redis.conn().await;
    let _: () = conn.lpush(&queue, ids.clone()).await.expect("LPUSH");
    // A worker holding a task it has started.
    let victim = wait_for("a busy restart worker", Duration::from_secs(60), || {
        let mut conn = conn.clone();
        let queue = queue.clone();
        async move {
            let evs = events(&mut conn, &queue).await;
            for pod in worker_pods(cluster, ns, "restart")
                .await
                .iter()
                .filter(|p| phase(p) == "Running")
            {
                let name = pod.metadata.name.clone()?;
                let list = qscaler_crds::names::keys::processing(
                    &queue,
                    &qscaler_crds::names::keys::consumer(Some(ns), &name),
                );
                let held: Vec<String> = conn.lrange(list, 0, -1).await.ok()?;
                if held.iter().any(|t| {
                    evs.iter()
                        .any(|e| e.0 == "start" && &e.1 == t && e.2 == name)
                }) {
                    return Some(name);
                }
            }
            None
        }
    })
    .await;
    let before = cluster.pod_log(ns, &victim, "worker").len();
    // The apiserver goes down (its port refuses), then the worker's container dies; the kubelet
    // starts it again after 1 s, while the apiserver is still starting (~5 s).
    let api_port: u16 = std::fs::read_to_string(cluster.state_dir.join("apiserver.port"))
        .expect("the apiserver's port")
        .trim()
        .parse()
        .expect("a port number");
    let restart = tokio::process::Command::new("bash")
        .arg(workspace_root().join("tests/cluster.sh"))
        .arg("restart-apiserver")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tests/cluster.sh restart-apiserver");
    wait_for(
        "the apiserver to refuse connections",
        Duration::from_secs(30),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", api_port))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    assert!(
        cluster.kill_container(ns, &victim),
        "SIGKILLing the worker of {victim}"
    );
    let out = restart.wait_with_output().await.expect("restart-apiserver");
    assert!(
        out.status.success(),
        "restarting the apiserver: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let since = || cluster.pod_log(ns, &victim, "worker")[before..].to_string();
    wait_for(
        "the restarted qsupervisor to reach the API",
        Duration::from_secs(60),
        || async { since().contains("connected after").then_some(()) },
    )
    .await;
    let log = since();
    let refused = log.matches("Kubernetes API not usable yet").count();
    assert!(
        refused >= 1,
        "the restarted worker never met the refusal:\n{log}"
    );
    wait_for("every restart task done", Duration::from_secs(90), || {
        let (url, queue, ids) = (redis.url(), queue.clone(), ids.clone());
        async move {
            let client = redis::Client::open(url).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let ends: BTreeSet<String> = events(&mut conn, &queue)
                .await
                .into_iter()
                .filter(|e| e.0 == "end")
                .map(|e| e.1)
                .collect();
            ids.iter().all(|i| ends.contains(i)).then_some(())
        }
    })
    .await;
    // Every start has an end in the same pod (the killed task was run again by the restarted
    // container of the same pod: at least once), nothing is left in the queue.
    let evs = events(&mut conn, &queue).await;
    let mut open: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (kind, id, pod) in &evs {
        match kind.as_str() {
            "start" => {
                open.insert((id, pod));
            }
            "end" => {
                open.remove(&(id.as_str(), pod.as_str()));
            }
            _ => {}
        }
    }
    let runs = evs.iter().filter(|e| e.0 == "start").count();
    let cut: Vec<_> = open.iter().collect();
    // The killed task's own first run is closed by its rerun in the same pod; any other start
    // without an end was cut.
    assert!(cut.is_empty(), "cut: {cut:?}\n{evs:?}");
    let queued: usize = conn.llen(&queue).await.expect("LLEN");
    assert_eq!(queued, 0);
    format!(
        "restart: SIGKILLed {victim} during an apiserver restart; its qsupervisor met {refused} refusal(s) \
         at start, then connected; {} tasks, {runs} runs, 0 lost, 0 cut",
        ids.len()
    )
}

#[tokio::test]
async fn soak_with_faults_loses_and_interrupts_nothing() {
    let mut redis = OwnRedis::start().await;
    let (cluster, ns, op, _guard) = setup("soak", Some(redis.port), &[]).await;
    let mut op = Some(op);
    let wrap_q = format!("{ns}-wrap");
    let task_q = format!("{ns}-task");
    let scale = json!({"minReplicas": 0, "maxReplicas": MAX, "scalingFactor": 0.25, "scaleDownStabilizationSeconds": 1});
    create_qworker(
        &cluster,
        &ns,
        qworker("wrap", &wrap_q, &["--task-ms", "300"], scale.clone()),
    )
    .await;
    let mut task = qworker("task", &task_q, &[], scale);
    let script = "t=$(cat); P=$QSCALER_REDIS_PORT; redis-cli -p $P rpush \"$QSCALER_QUEUE:events\" \"start $t $POD_NAME\" >/dev/null; \
                  sleep 0.5; redis-cli -p $P rpush \"$QSCALER_QUEUE:events\" \"end $t $POD_NAME\" >/dev/null";
    task["spec"]["podSpec"]["containers"][0]["args"] = json!(["--task", "--", "sh", "-c", script]);
    create_qworker(&cluster, &ns, task.clone()).await;
    // The neighbour whose queue key is a string.
    let bad_q = format!("{ns}-bad");
    {
        let mut conn = redis.conn().await;
        let _: () = conn.set(&bad_q, "not a list").await.expect("SET");
    }
    create_qworker(
        &cluster,
        &ns,
        idle_qworker("bad", &bad_q, json!({"minReplicas": 0, "maxReplicas": MAX})),
    )
    .await;
    let (wrap_samples, wrap_sampler) = sample(&cluster, &ns, "wrap");
    let (task_samples, task_sampler) = sample(&cluster, &ns, "task");
    let (bad_samples, bad_sampler) = sample(&cluster, &ns, "bad");
    let (poisoned, killer) = poison_killer(&cluster, &ns, &task_q, redis.url());
    let sentinel = SentinelPart::start(&cluster, &ns, &redis.url()).await;
    let mut revive: Option<Revive> = None;

    let mut produced = 0usize;
    let mut fault_times: Vec<(String, Duration, Duration)> = Vec::new();
    let mut killed_task_pod = String::new();
    for wave in 0..WAVES {
        let mut conn = redis.conn().await;
        push_tasks(&mut conn, &wrap_q, produced..produced + PER_WAVE).await;
        push_tasks(&mut conn, &task_q, produced..produced + PER_WAVE).await;
        if let Some(s) = &sentinel {
            s.push(produced..produced + PER_WAVE).await;
        }
        produced += PER_WAVE;
        // A fault while the wave is being worked off.
        wait_for(
            "workers busy with the wave",
            Duration::from_secs(60),
            || async {
                (worker_pods(&cluster, &ns, "wrap")
                    .await
                    .iter()
                    .any(|p| phase(p) == "Running"))
                .then_some(())
            },
        )
        .await;
        let fault_at = Instant::now();
        let fault = match wave {
            0 => {
                roll_out(&cluster, &ns, 1).await;
                "rollout 1"
            }
            1 => {
                if let Some(mut o) = op.take() {
                    o.kill().await;
                }
                op = Some(Operator::start(&cluster, &ns, &[]).await);
                "operator SIGKILL 1"
            }
            2 => {
                redis.stop().await;
                redis.resume().await;
                match &sentinel {
                    Some(s) => {
                        revive = Some(Revive);
                        s.topo.kill_primary().await;
                        "Redis restart + Sentinel primary SIGKILL"
                    }
                    None => "Redis restart",
                }
            }
            3 => {
                let out = std::process::Command::new("bash")
                    .arg(workspace_root().join("tests/cluster.sh"))
                    .arg("restart-apiserver")
                    .output()
                    .expect("tests/cluster.sh restart-apiserver");
                assert!(
                    out.status.success(),
                    "restarting the apiserver: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                "kube-apiserver restart"
            }
            4 => {
                killed_task_pod = kill_a_busy_task_worker(&cluster, &ns, &task_q, &mut conn).await;
                roll_out(&cluster, &ns, 2).await;
                "task worker SIGKILL + rollout 2"
            }
            _ => {
                let _: () = conn.lpush(&task_q, "poison").await.expect("LPUSH poison");
                if let Some(mut o) = op.take() {
                    o.kill().await;
                }
                op = Some(Operator::start(&cluster, &ns, &[]).await);
                "poison task + operator SIGKILL 2"
            }
        };
        let took = converge(&cluster, &ns, fault).await;
        // The wave is worked off, and the workers scale down before the next one.
        wait_for(
            &format!("wave {wave} worked off"),
            Duration::from_secs(120),
            || {
                let (url, wrap_q, task_q) = (redis.url(), wrap_q.clone(), task_q.clone());
                let sentinel_q = sentinel.as_ref().map(|s| s.queue.clone());
                async move {
                    // A fresh connection each time: a Redis restart breaks old ones.
                    let client = redis::Client::open(url).ok()?;
                    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                    for q in [Some(&wrap_q), Some(&task_q), sentinel_q.as_ref()]
                        .into_iter()
                        .flatten()
                    {
                        let ends: BTreeSet<String> = events(&mut conn, q)
                            .await
                            .into_iter()
                            .filter(|e| e.0 == "end")
                            .map(|e| e.1)
                            .collect();
                        if ends.len() < produced {
                            return None;
                        }
                    }
                    Some(())
                }
            },
        )
        .await;
        fault_times.push((fault.to_string(), took, fault_at.elapsed()));
        // The killed Sentinel primary comes back as a replica before the next fault.
        drop(revive.take());
    }
    let op = op.expect("an operator");
    // Dropped before `op`: the operator releases the QWorkers' finalizers.
    let _first = DeleteNamespaceFirst::new(&cluster, &ns);
    let dead_letter = qscaler_crds::names::keys::dead_letter(&task_q);
    // Each of its runs is a container death: kill, Failed, return, the crash backoff (doubling per
    // death), a new pod, its start. On a loaded 2-core machine four of them took over 120 s.
    wait_for(
        "the poison task dead-lettered",
        Duration::from_secs(300),
        || {
            let (url, dead_letter) = (redis.url(), dead_letter.clone());
            async move {
                let client = redis::Client::open(url).ok()?;
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                let dead: Vec<String> = conn.lrange(&dead_letter, 0, -1).await.ok()?;
                (dead == ["poison"]).then_some(())
            }
        },
    )
    .await;
    killer.abort();

    let restart_line = api_refused_at_container_start(&cluster, &ns, &redis).await;

    // Issue 13: a busy task worker deleted with `kubectl delete pod`, then the task QWorker itself
    // deleted with tasks in flight (its finalizer drains the workers and returns what they hold),
    // and created again to work off the rest. Nothing lost, nothing cut.
    let d_ids: Vec<String> = (0..PER_WAVE).map(|i| format!("d{i}")).collect();
    {
        let mut conn = redis.conn().await;
        let _: () = conn.lpush(&task_q, d_ids.clone()).await.expect("LPUSH");
        let victim = busy_task_pod(&cluster, &ns, &task_q, &mut conn, "").await;
        let out = cluster
            .kubectl(&["-n", &ns, "delete", "pod", &victim, "--wait=false"])
            .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        busy_task_pod(&cluster, &ns, &task_q, &mut conn, &victim).await;
    }
    let qws: Api<QWorker> = Api::namespaced(cluster.client.clone(), &ns);
    qws.delete("task", &Default::default())
        .await
        .expect("deleting the task QWorker");
    let deleting = Instant::now();
    wait_for("the task QWorker gone", Duration::from_secs(90), || async {
        qws.get_opt("task").await.ok()?.is_none().then_some(())
    })
    .await;
    let deletion_took = deleting.elapsed();
    create_qworker(&cluster, &ns, task).await;
    wait_for(
        "the tasks of the deleted QWorker's wave all done",
        Duration::from_secs(120),
        || {
            let (url, task_q, d_ids) = (redis.url(), task_q.clone(), d_ids.clone());
            async move {
                let client = redis::Client::open(url).ok()?;
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                let ends: BTreeSet<String> = events(&mut conn, &task_q)
                    .await
                    .into_iter()
                    .filter(|e| e.0 == "end")
                    .map(|e| e.1)
                    .collect();
                d_ids.iter().all(|d| ends.contains(d)).then_some(())
            }
        },
    )
    .await;
    wait_for(
        "scaled down to 0 at the end",
        Duration::from_secs(90),
        || async {
            (worker_pods(&cluster, &ns, "wrap")
                .await
                .iter()
                .chain(worker_pods(&cluster, &ns, "task").await.iter())
                .all(|p| !alive(p)))
            .then_some(())
        },
    )
    .await;
    wrap_sampler.abort();
    task_sampler.abort();
    bad_sampler.abort();
    let poisoned = poisoned.lock().unwrap().clone();
    println!(
        "  task QWorker deleted with tasks in flight: gone after {:.1}s",
        deletion_took.as_secs_f64()
    );

    let mut conn = redis.conn().await;
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (q, samples) in [(&wrap_q, &wrap_samples), (&task_q, &task_samples)] {
        let evs = events(&mut conn, q).await;
        let mut ends: BTreeMap<&str, usize> = BTreeMap::new();
        let mut open: BTreeSet<(&str, &str)> = BTreeSet::new();
        for (kind, id, pod) in &evs {
            match kind.as_str() {
                "start" => {
                    open.insert((id, pod));
                }
                "end" => {
                    *ends.entry(id).or_default() += 1;
                    open.remove(&(id.as_str(), pod.as_str()));
                }
                _ => {}
            }
        }
        // A start with no end from the same pod was cut; only the SIGKILLed pods may have one.
        let by_kill = |pod: &str| pod == killed_task_pod || poisoned.contains(pod);
        let interrupted: Vec<_> = open.iter().filter(|(_, pod)| !by_kill(pod)).collect();
        let killed: Vec<_> = open.iter().filter(|(_, pod)| by_kill(pod)).collect();
        let completed = ends.len();
        let duplicated = ends.values().filter(|n| **n > 1).count();
        let lost = produced
            - (0..produced)
                .filter(|i| ends.contains_key(format!("t{i}").as_str()))
                .count();
        let max_alive = samples.lock().unwrap_or_else(|e| e.into_inner()).max_alive;
        report.push(format!(
            "{q}: produced {produced}, completed {completed}, duplicated {duplicated}, lost {lost}, interrupted {} (+{} by the SIGKILL), most pods alive {max_alive} of max {MAX}",
            interrupted.len(),
            killed.len()
        ));
        if lost > 0 {
            failures.push(format!("{q}: {lost} tasks lost"));
        }
        if !interrupted.is_empty() {
            failures.push(format!(
                "{q}: interrupted by scale-down or rollout: {interrupted:?}"
            ));
        }
        if max_alive > MAX {
            failures.push(format!(
                "{q}: {max_alive} pods alive, above maxReplicas {MAX}"
            ));
        }
    }
    // The Sentinel queue: every task ended at least once across the failover.
    if let Some(s) = &sentinel {
        let ends: BTreeSet<String> = events(&mut conn, &s.queue)
            .await
            .into_iter()
            .filter(|e| e.0 == "end")
            .map(|e| e.1)
            .collect();
        let lost = (0..produced)
            .filter(|i| !ends.contains(&format!("t{i}")))
            .count();
        report.push(format!(
            "{}: produced {produced}, completed {}, lost {lost} (across a Sentinel failover)",
            s.queue,
            ends.len()
        ));
        if lost > 0 {
            failures.push(format!("{}: {lost} tasks lost", s.queue));
        }
    }
    // The poison: every run cut by its own kill, then dead-lettered; never retried past the limit.
    let poison_runs = events(&mut conn, &task_q)
        .await
        .iter()
        .filter(|e| e.0 == "start" && e.1 == "poison")
        .count();
    report.push(format!(
        "poison: ran {poison_runs} times on {} pods SIGKILLed by it, dead-lettered",
        poisoned.len()
    ));
    if poison_runs > 1 + qscaler_crds::task::DEFAULT_MAX_RETRIES as usize {
        failures.push(format!("poison ran {poison_runs} times"));
    }
    // The neighbour with the string key: its own condition, no pod, and the others scaled on.
    let bad = get_qworker(&cluster, &ns, "bad").await;
    let bad_condition = condition(&bad, "ScalerHealthy")
        .map(|(s, r, m)| format!("{s}/{r}: {m}"))
        .unwrap_or_default();
    report.push(format!("bad: ScalerHealthy {bad_condition}"));
    if !bad_condition.starts_with("False/QueueUnreadable") {
        failures.push(format!("bad: ScalerHealthy {bad_condition}"));
    }
    let bad_pods = bad_samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .names
        .len();
    if bad_pods > 0 {
        failures.push(format!("bad: {bad_pods} pods for an unreadable queue"));
    }
    report.push(restart_line);
    println!("soak summary:");
    for line in &report {
        println!("  {line}");
    }
    for (fault, converged, worked_off) in &fault_times {
        println!(
            "  {fault}: status converged after {:.1}s, the wave was worked off after {:.1}s",
            converged.as_secs_f64(),
            worked_off.as_secs_f64()
        );
    }
    assert!(
        failures.is_empty(),
        "{failures:?}\n{}\noperator log:\n{}",
        report.join("\n"),
        op.log()
    );
}
