//! The operator's whole loop on the local cluster: queue → operator → pods (stand-in kubelet running
//! qsupervisor + the test worker) → drain → exit → deletion.
//!
//! Each test gets its own namespace and runs its own `qscaler-operator --namespace <ns>` as a child
//! process, so tests stay isolated and can kill or restart "their" operator. Tests that stop Redis run
//! their own redis-server on a free port. Every wait is a condition with a timeout.
//!
//! Needs the local cluster: `tests/cluster.sh up && eval "$(tests/cluster.sh env)"`, and the binaries
//! built: `cargo build -p qscaler-operator -p qscaler-supervisor -p qscaler-tests`.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use qscaler_crds::names;
use qscaler_crds::ScalerConfig;
use qscaler_tests::operator::{push_subscribers, Operator};
use qscaler_tests::{wait_for, Cluster};
use redis::AsyncCommands;
use serde_json::json;

use common::*;

// ---------------------------------------------------------------------------------------------
// Tests

/// 50 tasks into an empty queue: ceil(50 × 0.1) = 5 pods exist within 2 s; when the queue is empty
/// the workers scale down to minReplicas by draining, every started task ends, and at no sample are
/// more than maxReplicas pods alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_up_fast_and_down_without_interrupting_tasks() {
    let (cluster, ns, op, _guard) = setup("op-scale", None, &[]).await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    create_qworker(&cluster, &ns, qworker("w", &queue, &["--task-ms", "300"],
        json!({"minReplicas": 1, "maxReplicas": 6, "scalingFactor": 0.1, "scaleDownStabilizationSeconds": 2}))).await;
    let (samples, sampler) = sample(&cluster, &ns, "w");
    // minReplicas first: one idle worker, Running.
    wait_for("minReplicas worker running", T, || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        (pods.len() == 1 && phase(&pods[0]) == "Running").then_some(())
    })
    .await;

    let pushed = Instant::now();
    push_tasks(&mut conn, &queue, 0..50).await;
    wait_for(
        "5 worker pods within 2 s of the push",
        Duration::from_secs(2),
        || async {
            let n = worker_pods(&cluster, &ns, "w")
                .await
                .iter()
                .filter(|p| alive(p))
                .count();
            (n >= 5).then_some(())
        },
    )
    .await;
    eprintln!("5 pods after {:?}", pushed.elapsed());

    // The queue drains, then the workers scale back to 1 by draining (not killing).
    wait_for("all 50 tasks finished", T, || {
        let mut conn = conn.clone();
        let queue = queue.clone();
        async move {
            let (_, ends) = task_events(&mut conn, &queue).await;
            (ends.len() >= 50).then_some(())
        }
    })
    .await;
    wait_for("scale-down to minReplicas", T, || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        (pods.len() == 1
            && pods
                .iter()
                .all(|p| phase(p) == "Running" && annotation(p, names::ANNOTATION_DRAIN).is_none()))
        .then_some(())
    })
    .await;
    sampler.abort();
    let (starts, ends) = task_events(&mut conn, &queue).await;
    assert_eq!(starts.len(), 50, "each task started once");
    assert_no_interrupted_task(&starts, &ends, &op);
    {
        let s = samples.lock().unwrap_or_else(|e| e.into_inner());
        assert!(s.samples > 20, "the sampler ran ({} samples)", s.samples);
        assert!(
            s.max_alive <= 6,
            "{} pods alive at once > maxReplicas 6",
            s.max_alive
        );
        assert!(s.max_alive >= 5);
    }

    // The status follows the pods by one reconcile (the last drained pod's deletion triggers it).
    let qw = wait_for("status: desired 1, current 1, none draining", T, || async {
        let qw = get_qworker(&cluster, &ns, "w").await;
        let st = qw.status.as_ref()?;
        ((
            st.desired_replicas,
            st.current_replicas,
            st.draining_replicas,
        ) == (1, 1, 0))
            .then_some(qw)
    })
    .await;
    let st = qw.status.clone().expect("status");
    assert_eq!(st.queue_depth, Some(0));
    assert!(st.last_scale_time.is_some());
    assert_eq!(st.observed_generation, qw.metadata.generation);
    assert_eq!(condition(&qw, "Ready").map(|c| c.0), Some("True"));
    // One Event per change of the desired count: none repeated while the cache lagged the
    // operator's own status write (each change in this wave goes to a new count).
    for reason in ["ScaledUp", "ScaledDown"] {
        let events = events_with_counts(&cluster, &ns, "w", reason).await;
        assert!(!events.is_empty(), "no {reason} Event");
        assert!(
            events.iter().all(|(_, count)| *count == 1),
            "{reason} Events published more than once: {events:?}"
        );
    }
    assert!(!events_with_reason(&cluster, &ns, "w", "Draining")
        .await
        .is_empty());

    let addr = op.metrics_addr().await;
    let metrics = reqwest_get(&format!("http://{addr}/metrics")).await;
    assert!(metrics.contains("qscaler_pods_created_total{"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "qscaler_desired_replicas{{namespace=\"{ns}\",qworker=\"w\"}} 1"
        )),
        "{metrics}"
    );
    let probes = op.probe_addr().await;
    assert_ne!(probes, addr, "metrics and probes on separate ports");
    assert_eq!(
        reqwest_get(&format!("http://{probes}/readyz")).await,
        "ok\n"
    );
    assert_eq!(reqwest_get(&format!("http://{probes}/livez")).await, "ok\n");
}

/// A plain HTTP GET with a TcpStream (the operator's endpoint speaks HTTP/1.1 and closes).
async fn reqwest_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .expect("connect metrics");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The sum of counter `name`'s series whose labels include every one of `labels`, from the
/// operator's /metrics.
async fn counter(op: &Operator, name: &str, labels: &[(&str, &str)]) -> f64 {
    let addr = op.metrics_addr().await;
    let text = reqwest_get(&format!("http://{addr}/metrics")).await;
    text.lines()
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            (rest.is_empty() || rest.starts_with('{')).then_some(())?;
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Waits until the operator has had its chances: `ticks` more poller ticks (queue reads with
/// `result`) of the namespace's ScalerConfig and `reconciles` more QWorker reconciles than now.
async fn wait_for_chances(op: &Operator, ns: &str, result: &str, ticks: f64, reconciles: f64) {
    let reads = [("namespace", ns), ("result", result)];
    let qworker = [("controller", "qworker")];
    let t0 = counter(op, "qscaler_queue_reads_total", &reads).await;
    let r0 = counter(op, "qscaler_reconciles_total", &qworker).await;
    wait_for(
        &format!("{ticks} more poller ticks ({result}) and {reconciles} more reconciles"),
        Duration::from_secs(90),
        || async {
            let t = counter(op, "qscaler_queue_reads_total", &reads).await;
            let r = counter(op, "qscaler_reconciles_total", &qworker).await;
            (t >= t0 + ticks && r >= r0 + reconciles).then_some(())
        },
    )
    .await;
}

/// A push wakes the poller: with keyspace notifications on (`notify-keyspace-events Kl` on the
/// test's own Redis) and a 30 s poll interval, a task pushed to an empty queue has its pod within a
/// few seconds, by a tick a notification started; the ScalerConfig's status says pushes wake it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_wakes_the_poller() {
    let redis = OwnRedis::start().await;
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Kl")
        .query_async(&mut conn)
        .await
        .expect("CONFIG SET notify-keyspace-events");
    let (cluster, ns, op, _guard) =
        setup("op-push", Some(redis.port), &["--poll-interval", "30s"]).await;
    let queue = format!("{ns}-jobs");
    create_qworker(
        &cluster,
        &ns,
        idle_qworker("w", &queue, json!({"maxReplicas": 2})),
    )
    .await;
    wait_for(
        "the ScalerConfig says a push wakes the poller",
        T,
        || async {
            let sc = Api::<ScalerConfig>::namespaced(cluster.client.clone(), &ns)
                .get("redis")
                .await
                .ok()?;
            sc.status?
                .message
                .contains("a push wakes the poller")
                .then_some(())
        },
    )
    .await;
    wait_for("the operator subscribed to the queue's key", T, || async {
        (push_subscribers(&mut conn.clone(), &queue).await? >= 1).then_some(())
    })
    .await;
    let wakes = [("namespace", ns.as_str())];
    let woken_before = counter(&op, "qscaler_poller_wakes_total", &wakes).await;
    let pushed = Instant::now();
    push_tasks(&mut conn, &queue, 0..1).await;
    wait_for(
        "a pod within 5 s of the push",
        Duration::from_secs(5),
        || async { (!worker_pods(&cluster, &ns, "w").await.is_empty()).then_some(()) },
    )
    .await;
    eprintln!("a pod {:?} after the push", pushed.elapsed());
    assert!(
        counter(&op, "qscaler_poller_wakes_total", &wakes).await > woken_before,
        "the tick was a push's\n{}",
        op.log()
    );
}

/// Redis stops: the replicas are held (no pod drained or deleted), ScalerHealthy turns False with
/// BrokerUnreachable and the ScalerConfig is unhealthy; Redis comes back: both recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_holds_replicas_and_recovers() {
    let mut redis = OwnRedis::start().await;
    let (cluster, ns, op, _guard) = setup("op-outage", Some(redis.port), &[]).await;
    let mut conn = redis.conn().await;
    // The workers consume another (empty) queue, so "jobs" stays at 3 and desired stays 3.
    let qw = idle_qworker(
        "w",
        "jobs",
        json!({"maxReplicas": 5, "scaleDownStabilizationSeconds": 0}),
    );
    create_qworker(&cluster, &ns, qw).await;
    push_tasks(&mut conn, "jobs", 0..3).await;
    wait_for("3 running workers", T, || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        (pods.iter().filter(|p| phase(p) == "Running").count() == 3).then_some(())
    })
    .await;
    let before: BTreeSet<String> = worker_pods(&cluster, &ns, "w")
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();

    redis.stop().await;
    let (samples, sampler) = sample(&cluster, &ns, "w");
    wait_for("ScalerHealthy False (BrokerUnreachable)", T, || async {
        let qw = get_qworker(&cluster, &ns, "w").await;
        (condition(&qw, "ScalerHealthy").map(|c| (c.0, c.1))
            == Some(("False", "BrokerUnreachable")))
        .then_some(())
    })
    .await;
    wait_for("ScalerConfig unhealthy", T, || async {
        let sc = Api::<ScalerConfig>::namespaced(cluster.client.clone(), &ns)
            .get("redis")
            .await
            .ok()?;
        let st = sc.status?;
        (!st.healthy
            && st.conditions.iter().any(|c| {
                c.type_ == "Ready" && c.status == "False" && c.reason == "BrokerUnreachable"
            }))
        .then_some(())
    })
    .await;
    // The operator has had its chances to act on the outage (stabilization window 0 s): several
    // failed reads and reconciles after it showed.
    wait_for_chances(&op, &ns, "error", 10.0, 2.0).await;
    let after: BTreeSet<String> = worker_pods(&cluster, &ns, "w")
        .await
        .into_iter()
        .filter(alive)
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(
        before, after,
        "the same workers are alive during the outage"
    );
    {
        let s = samples.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            s.history.iter().all(|(_, n, drain)| *n == 3 && *drain == 0),
            "replicas held without drains: {:?}",
            s.history.iter().map(|h| (h.1, h.2)).collect::<Vec<_>>()
        );
    }
    sampler.abort();
    assert_eq!(
        get_qworker(&cluster, &ns, "w")
            .await
            .status
            .map(|s| s.desired_replicas),
        Some(3)
    );

    redis.resume().await;
    wait_for("ScalerHealthy True again", T, || async {
        let qw = get_qworker(&cluster, &ns, "w").await;
        (condition(&qw, "ScalerHealthy").map(|c| c.0) == Some("True")).then_some(())
    })
    .await;
    wait_for("ScalerConfig healthy again", T, || async {
        let sc = Api::<ScalerConfig>::namespaced(cluster.client.clone(), &ns)
            .get("redis")
            .await
            .ok()?;
        sc.status?.healthy.then_some(())
    })
    .await;
    // The queue survived the restart (saved on SIGTERM): still 3 workers, then scale to 0 when emptied.
    let mut conn = redis.conn().await;
    let _: () = conn.del("jobs").await.expect("DEL");
    wait_for("scale to 0 once the queue is empty", T, || async {
        worker_pods(&cluster, &ns, "w")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    drop(op);
}

/// The operator is SIGKILLed right after its first pods appear and restarted: the QWorker converges to
/// its desired count and no pod beyond it was ever created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_mid_scale_converges_without_over_creation() {
    let (cluster, ns, mut op, _guard) = setup("op-restart", None, &[]).await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    let qw = idle_qworker(
        "w",
        &queue,
        json!({"maxReplicas": 8, "scaleDownStabilizationSeconds": 0}),
    );
    create_qworker(&cluster, &ns, qw).await;
    let (samples, sampler) = sample(&cluster, &ns, "w");
    push_tasks(&mut conn, &queue, 0..6).await;
    wait_for("the first pod", T, || async {
        (!worker_pods(&cluster, &ns, "w").await.is_empty()).then_some(())
    })
    .await;
    op.kill().await;
    let created_before = worker_pods(&cluster, &ns, "w").await.len();
    let op2 = Operator::start(&cluster, &ns, &[]).await;
    wait_for("6 running workers", T, || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        (pods.iter().filter(|p| phase(p) == "Running").count() == 6).then_some(())
    })
    .await;
    // Settle: several reconciles and poll ticks after convergence.
    wait_for("status desired 6 current 6", T, || async {
        let st = get_qworker(&cluster, &ns, "w").await.status?;
        (st.desired_replicas == 6 && st.current_replicas == 6).then_some(())
    })
    .await;
    wait_for_chances(&op2, &ns, "ok", 10.0, 1.0).await;
    sampler.abort();
    let s = samples.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(
        s.names.len(),
        6,
        "pods ever created ({} before the kill): {:?}\n{}",
        created_before,
        s.names,
        op2.log()
    );
    assert!(s.max_alive <= 6);
}

/// A worker that exits 1 at once: replacements back off exponentially (no pod storm) and the QWorker
/// reports WorkersCrashing (CrashLoop) with a Warning Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_looping_workers_back_off_with_a_condition() {
    let (cluster, ns, op, _guard) = setup(
        "op-crash",
        None,
        &["--crash-backoff-base", "500ms", "--crash-backoff-max", "8s"],
    )
    .await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    let mut qw = qworker("w", &queue, &[], json!({"maxReplicas": 2}));
    qw["spec"]["podSpec"]["containers"][0]["args"] = json!(["--", "sh", "-c", "exit 1"]);
    create_qworker(&cluster, &ns, qw).await;
    let (samples, sampler) = sample(&cluster, &ns, "w");
    push_tasks(&mut conn, &queue, 0..2).await;
    let started = Instant::now();
    wait_for("WorkersCrashing True (CrashLoop)", T, || async {
        let qw = get_qworker(&cluster, &ns, "w").await;
        (condition(&qw, "WorkersCrashing").map(|c| (c.0, c.1)) == Some(("True", "CrashLoop")))
            .then_some(())
    })
    .await;
    wait_for("a CrashLoop Warning Event", T, || async {
        (!events_with_reason(&cluster, &ns, "w", "CrashLoop")
            .await
            .is_empty())
        .then_some(())
    })
    .await;
    // Let it have its chances (about 10 s of ticks, and reconciles, each of which would refill the
    // slots without backoff): with 0.5 s doubling to 8 s, only a handful of pods may be created.
    wait_for_chances(&op, &ns, "ok", 50.0, 10.0).await;
    sampler.abort();
    let elapsed = started.elapsed();
    let s = samples.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!("{} pods created in {elapsed:?}", s.names.len());
    // Without backoff, 2 slots refilled every ~100 ms would be >100 pods over this time.
    assert!(
        s.names.len() <= 16,
        "{} pods in {elapsed:?}: a pod storm\n{}",
        s.names.len(),
        op.log()
    );
    assert!(
        s.names.len() >= 3,
        "failed workers are replaced ({} pods)",
        s.names.len()
    );
    assert!(s.max_alive <= 2);
}

/// A pod-spec change under load: new-hash pods replace old ones by draining, no task is
/// interrupted, at most maxSurge (1) extra pod is alive, revisions are recorded, and status ends
/// with every worker updated and Progressing RolloutComplete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_under_load_interrupts_no_task() {
    let (cluster, ns, op, _guard) = setup("op-rollout", None, &[]).await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    create_qworker(
        &cluster,
        &ns,
        qworker(
            "w",
            &queue,
            &["--task-ms", "400"],
            json!({"minReplicas": 3, "maxReplicas": 6}),
        ),
    )
    .await;
    wait_for("3 running workers", T, || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        (pods.iter().filter(|p| phase(p) == "Running").count() == 3).then_some(())
    })
    .await;
    let old_hash = current_hash(&cluster, &ns, "w").await;
    let (samples, sampler) = sample(&cluster, &ns, "w");
    // Steady load: enough tasks that every worker is busy through the rollout.
    push_tasks(&mut conn, &queue, 0..12).await;
    let pod_spec = json!({"containers": [{"name": "worker", "image": "qscaler/qsupervisor",
        "args": ["--", "qscaler-test-worker", "--task-ms", "400"], "env": [{"name": "ROLLOUT", "value": "2"}]}]});
    let new_hash = roll_out(&cluster, &ns, "w", pod_spec, &old_hash).await;
    let short = &new_hash[..10];
    wait_for(
        "every alive worker on the new hash, all tasks done",
        Duration::from_secs(90),
        || {
            let (cluster, ns, mut conn, queue) =
                (cluster.clone(), ns.clone(), conn.clone(), queue.clone());
            async move {
                let pods = worker_pods(&cluster, &ns, "w").await;
                let done = task_events(&mut conn, &queue).await.1.len() >= 12;
                (done
                    && pods.len() >= 3
                    && pods.iter().all(|p| {
                        p.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(names::LABEL_POD_SPEC_HASH))
                            .map(String::as_str)
                            == Some(short)
                    }))
                .then_some(())
            }
        },
    )
    .await;
    sampler.abort();
    let (starts, ends) = task_events(&mut conn, &queue).await;
    assert_no_interrupted_task(&starts, &ends, &op);
    {
        let s = samples.lock().unwrap_or_else(|e| e.into_inner());
        assert!(s.max_alive <= 6, "{} alive > maxReplicas", s.max_alive);
    }
    wait_for("status: rollout complete", T, || async {
        let qw = get_qworker(&cluster, &ns, "w").await;
        let st = qw.status.clone()?;
        (st.old_replicas == 0
            && st.updated_replicas >= 3
            && condition(&qw, "Progressing").map(|c| c.1) == Some("RolloutComplete"))
        .then_some(())
    })
    .await;
    let revs = Api::<ControllerRevision>::namespaced(cluster.client.clone(), &ns)
        .list(&ListParams::default().labels(&format!("{}=w", names::LABEL_QWORKER)))
        .await
        .expect("list revisions");
    let mut by_rev: Vec<(i64, String)> = revs
        .items
        .iter()
        .map(|r| {
            (
                r.revision.unwrap_or(0),
                r.metadata
                    .annotations
                    .clone()
                    .unwrap_or_default()
                    .get(names::ANNOTATION_REVISION_HASH)
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .collect();
    by_rev.sort();
    assert_eq!(by_rev, vec![(1, old_hash.clone()), (2, new_hash.clone())]);
    assert!(!events_with_reason(&cluster, &ns, "w", "RollingOut")
        .await
        .is_empty());
}

/// An invalid QWorker (minReplicas > maxReplicas, which the schema cannot say) gets SpecValid False and
/// an InvalidSpec Event; a valid QWorker beside it keeps scaling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_qworker_is_reported_and_others_keep_working() {
    let (cluster, ns, _op, _guard) = setup("op-invalid", None, &[]).await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    create_qworker(
        &cluster,
        &ns,
        qworker(
            "bad",
            &queue,
            &[],
            json!({"minReplicas": 4, "maxReplicas": 2}),
        ),
    )
    .await;
    create_qworker(
        &cluster,
        &ns,
        qworker(
            "good",
            &format!("{queue}-good"),
            &["--task-ms", "100"],
            json!({}),
        ),
    )
    .await;
    wait_for("SpecValid False (InvalidSpec) on bad", T, || async {
        let qw = get_qworker(&cluster, &ns, "bad").await;
        let c = condition(&qw, "SpecValid")?;
        (c.0 == "False" && c.1 == "InvalidSpec" && c.2.contains("minReplicas")).then_some(())
    })
    .await;
    wait_for("an InvalidSpec Event on bad", T, || async {
        (!events_with_reason(&cluster, &ns, "bad", "InvalidSpec")
            .await
            .is_empty())
        .then_some(())
    })
    .await;
    push_tasks(&mut conn, &format!("{queue}-good"), 0..3).await;
    wait_for("the good QWorker's tasks done", T, || {
        let (mut conn, q) = (conn.clone(), format!("{queue}-good"));
        async move { (task_events(&mut conn, &q).await.1.len() >= 3).then_some(()) }
    })
    .await;
    assert!(
        worker_pods(&cluster, &ns, "bad").await.is_empty(),
        "no pods for an invalid spec"
    );
    let good = get_qworker(&cluster, &ns, "good").await;
    assert_eq!(condition(&good, "SpecValid").map(|c| c.0), Some("True"));
}

/// A task-mode pod that vanishes with tasks in its processing list: they count as in flight while it
/// lives (status.inFlight, and the backlog), and go back to the queue when it is gone. The sweep for
/// lists of pods that vanished unseen returns an orphan of this namespace, and leaves alone the
/// list of a same-named QWorker's pod in another namespace that consumes the same queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_tasks_of_a_vanished_pod_return_to_the_queue() {
    let (cluster, ns, op, _guard) = setup("op-inflight", None, &[]).await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    create_qworker(
        &cluster,
        &ns,
        idle_qworker("w", &queue, json!({"minReplicas": 1, "maxReplicas": 4})),
    )
    .await;
    let pod = wait_for("one running worker", T, || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        (pods.len() == 1 && phase(&pods[0]) == "Running")
            .then(|| pods[0].metadata.name.clone())
            .flatten()
    })
    .await;
    let processing = names::keys::processing(&queue, &names::keys::consumer(Some(&ns), &pod));
    let _: () = conn
        .rpush(&processing, vec!["a", "b"])
        .await
        .expect("RPUSH processing");
    let orphan = names::keys::processing(&queue, &names::keys::consumer(Some(&ns), "w-orphan"));
    let elsewhere = names::keys::processing(
        &queue,
        &names::keys::consumer(Some(&format!("{ns}-elsewhere")), "w-elsewhere"),
    );
    let _: () = conn.rpush(&orphan, "c").await.expect("RPUSH orphan");
    let _: () = conn.rpush(&elsewhere, "x").await.expect("RPUSH elsewhere");
    // Both consumers joined the queue's registry before taking, as qsupervisor does: that is where
    // the sweep finds their lists.
    let registered = [
        names::keys::consumer(Some(&ns), "w-orphan"),
        names::keys::consumer(Some(&format!("{ns}-elsewhere")), "w-elsewhere"),
    ];
    let _: () = conn
        .sadd(names::keys::consumers(&queue), &registered)
        .await
        .expect("SADD consumers");
    wait_for("inFlight 2 and desired 2 in status", T, || async {
        let st = get_qworker(&cluster, &ns, "w").await.status?;
        (st.in_flight == Some(2) && st.desired_replicas == 2).then_some(())
    })
    .await;
    Api::<Pod>::namespaced(cluster.client.clone(), &ns)
        .delete(&pod, &Default::default())
        .await
        .expect("deleting the pod");
    wait_for(
        "the vanished pod's and the orphan's tasks back in the queue",
        T,
        || {
            let (mut conn, queue, processing) = (conn.clone(), queue.clone(), processing.clone());
            async move {
                let queued: Vec<String> = conn.lrange(&queue, 0, -1).await.ok()?;
                let left: i64 = conn.llen(&processing).await.ok()?;
                let mut q = queued.clone();
                q.sort();
                (left == 0 && q == ["a", "b", "c"]).then_some(())
            }
        },
    )
    .await;
    let kept: Vec<String> = conn
        .lrange(&elsewhere, 0, -1)
        .await
        .expect("LRANGE elsewhere");
    assert_eq!(
        kept,
        ["x"],
        "another namespace's in-flight list was touched"
    );
    assert!(
        op.log().contains("returned in-flight tasks"),
        "{}",
        op.log()
    );
}

/// Two operators with leader election on one Lease: one decides (no double creation); when it is
/// killed the other takes over and keeps scaling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_one_decider_and_failover() {
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace("op-leader").await;
    let _guard = NamespaceGuard {
        kubeconfig: cluster.kubeconfig.clone(),
        ns: ns.clone(),
    };
    worker_rbac(&cluster, &ns).await;
    scaler_config(&cluster, &ns, redis_port(&cluster.redis_url)).await;
    let args = [
        "--leader-elect=true",
        "--lease-namespace",
        ns.as_str(),
        "--lease-name",
        "qscaler",
    ];
    let mut a = Operator::start(&cluster, &ns, &args).await;
    let mut b = Operator::start(&cluster, &ns, &args).await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    create_qworker(
        &cluster,
        &ns,
        idle_qworker("w", &queue, json!({"maxReplicas": 8})),
    )
    .await;
    let (samples, sampler) = sample(&cluster, &ns, "w");
    push_tasks(&mut conn, &queue, 0..3).await;
    wait_for("3 running workers", T, || async {
        (worker_pods(&cluster, &ns, "w")
            .await
            .iter()
            .filter(|p| phase(p) == "Running")
            .count()
            == 3)
            .then_some(())
    })
    .await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(cluster.client.clone(), &ns);
    let holder = leases
        .get("qscaler")
        .await
        .expect("the Lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a holder");
    let a_pid = a.pid().expect("pid").to_string();
    let (leader, follower) = if holder.ends_with(&format!("_{a_pid}")) {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    leader.kill().await;
    push_tasks(&mut conn, &queue, 3..5).await;
    wait_for(
        "5 running workers after failover",
        Duration::from_secs(90),
        || async {
            (worker_pods(&cluster, &ns, "w")
                .await
                .iter()
                .filter(|p| phase(p) == "Running")
                .count()
                == 5)
                .then_some(())
        },
    )
    .await;
    let new_holder = leases
        .get("qscaler")
        .await
        .expect("the Lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a holder");
    assert_ne!(new_holder, holder, "{}", follower.log());
    wait_for_chances(follower, &ns, "ok", 5.0, 1.0).await;
    sampler.abort();
    let s = samples.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(s.names.len(), 5, "pods ever created: {:?}", s.names);
}

/// The broker password from a Secret: missing Secret → Ready False (SecretNotFound); Secret created
/// → healthy; password rotated (Secret and Redis, connections dropped) → healthy again with the new
/// one after the next health check. Workers get the password only as a secretKeyRef.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_password_and_rotation() {
    let redis = OwnRedis::start().await;
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("first")
        .query_async(&mut conn)
        .await
        .expect("requirepass");
    let (cluster, ns, op, _guard) =
        setup("op-secret", Some(redis.port), &["--health-interval", "1s"]).await;
    let sc: ScalerConfig = serde_json::from_value(json!({
        "apiVersion": "quickube.com/v1alpha1", "kind": "ScalerConfig",
        "metadata": {"name": "secure"},
        "spec": {"type": "redis", "config": {"host": "127.0.0.1", "port": redis.port,
                 "password": {"valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}}}}}
    }))
    .expect("ScalerConfig");
    let scs = Api::<ScalerConfig>::namespaced(cluster.client.clone(), &ns);
    scs.create(&PostParams::default(), &sc)
        .await
        .expect("creating ScalerConfig");
    let ready = |want: &'static str, reason: &'static str| {
        let scs = scs.clone();
        move || {
            let scs = scs.clone();
            async move {
                let st = scs.get("secure").await.ok()?.status?;
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == want && c.reason == reason)
                    .then_some(())
            }
        }
    };
    wait_for(
        "Ready False (SecretNotFound)",
        T,
        ready("False", "SecretNotFound"),
    )
    .await;
    let secrets =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(cluster.client.clone(), &ns);
    let secret = |pw: &str| -> k8s_openapi::api::core::v1::Secret {
        serde_json::from_value(
            json!({"metadata": {"name": "redis-auth"}, "stringData": {"password": pw}}),
        )
        .expect("Secret")
    };
    secrets
        .create(&PostParams::default(), &secret("first"))
        .await
        .expect("creating Secret");
    wait_for(
        "Ready True (Connected) with the secret's password",
        T,
        ready("True", "Connected"),
    )
    .await;

    // Rotate: new password in Redis and in the Secret, and drop every connection.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("second")
        .query_async(&mut conn)
        .await
        .expect("requirepass");
    secrets
        .replace("redis-auth", &PostParams::default(), &secret("second"))
        .await
        .expect("replacing Secret");
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut conn)
        .await
        .unwrap_or(redis::Value::Nil);
    wait_for("Ready True again with the rotated password", T, || async {
        let st = scs.get("secure").await.ok()?.status?;
        // The poller reconnected after the kill: with the old password it would be unhealthy.
        let mut c = redis::Client::open(format!("redis://:second@127.0.0.1:{}/", redis.port))
            .ok()?
            .get_multiplexed_async_connection()
            .await
            .ok()?;
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut c)
            .await
            .ok()?;
        (st.healthy && clients.lines().count() >= 2).then_some(())
    })
    .await;

    // A worker of this ScalerConfig gets the password as a secretKeyRef only.
    create_qworker(
        &cluster,
        &ns,
        idle_qworker(
            "w",
            "jobs",
            json!({"minReplicas": 1, "scalerConfigRef": "secure"}),
        ),
    )
    .await;
    let pod = wait_for("a worker pod", T, || async {
        worker_pods(&cluster, &ns, "w").await.into_iter().next()
    })
    .await;
    let env = pod.spec.expect("spec").containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let pw = env
        .iter()
        .find(|e| e.name == names::env::REDIS_PASSWORD)
        .expect("password env");
    assert!(pw.value.is_none());
    let sel = pw
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("secretKeyRef");
    assert_eq!(
        (sel.name.as_str(), sel.key.as_str()),
        ("redis-auth", "password")
    );
    drop(op);
}

/// Usage reports fold into status.maxContainerResourcesUsage; with activateVPA the next pod gets
/// requests derived from the observed peak (annotated), and the pod-spec hash does not change (no
/// rollout). A malformed usage annotation changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_folds_into_status_and_sizes_new_pods() {
    let (cluster, ns, op, _guard) = setup("op-vpa", None, &[]).await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    // The worker holds ~40 MB (a shell variable) and idles.
    let mut qw = idle_qworker("w", &queue, json!({"minReplicas": 1, "activateVPA": true}));
    qw["spec"]["podSpec"]["containers"][0]["args"] = json!(["--", "sh", "-c",
        "x=$(head -c 40000000 /dev/zero | tr '\\0' a); trap 'exit 0' TERM; while :; do sleep 0.2; done"]);
    create_qworker(&cluster, &ns, qw).await;
    let first = wait_for("one running worker", T, || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        (pods.len() == 1 && phase(&pods[0]) == "Running").then(|| pods[0].clone())
    })
    .await;
    let first_name = first.metadata.name.clone().expect("name");
    let peak = wait_for("a memory peak of at least 40 MB in status", T, || async {
        let st = get_qworker(&cluster, &ns, "w").await.status?;
        let u = st
            .max_container_resources_usage
            .iter()
            .find(|u| u.name == "worker")?;
        let bytes: u64 = u.memory.as_ref()?.0.parse().ok()?;
        (bytes >= 40_000_000).then_some(bytes)
    })
    .await;
    // A malformed report on the pod changes nothing.
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns);
    let bad = json!({"metadata": {"annotations": {"quickube.com/usage-worker": "{\"cpuMillicores\": \"lots\"}"}}});
    pods.patch(&first_name, &PatchParams::default(), &Patch::Merge(&bad))
        .await
        .expect("patching a malformed report");
    // One more worker: its requests come from the peak (+20 %).
    push_tasks(&mut conn, &queue, 0..2).await;
    let second = wait_for("a second worker", T, || async {
        worker_pods(&cluster, &ns, "w")
            .await
            .into_iter()
            .find(|p| p.metadata.name.as_deref() != Some(first_name.as_str()))
    })
    .await;
    let requests = second.spec.as_ref().expect("spec").containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.requests.clone())
        .expect("requests on the new pod");
    let mem: u64 = requests["memory"].0.parse().expect("bytes");
    assert!(
        mem >= peak && mem <= peak * 13 / 10,
        "memory request {mem} for peak {peak}"
    );
    assert!(annotation(&second, names::ANNOTATION_VPA_REQUESTS).is_some());
    let label = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(names::LABEL_POD_SPEC_HASH))
            .cloned()
    };
    assert_eq!(
        label(&first),
        label(&second),
        "sizing never changes the hash"
    );
    // The reconcile that created the pod writes the recommendation to status just after.
    let st = wait_for("recommended requests in status", T, || async {
        let st = get_qworker(&cluster, &ns, "w").await.status?;
        (!st.recommended_requests.is_empty()).then_some(st)
    })
    .await;
    assert_eq!(st.old_replicas, 0, "no rollout");
    let still: u64 = st
        .max_container_resources_usage
        .iter()
        .find(|u| u.name == "worker")
        .and_then(|u| u.memory.as_ref())
        .and_then(|m| m.0.parse().ok())
        .expect("peak kept");
    assert!(still >= peak, "{}", op.log());
}

/// Task mode (qsupervisor takes each task into a per-pod processing list): in-flight tasks count
/// toward the backlog and show in status, every task runs exactly once, scale-down to zero drains
/// between tasks, and no processing list is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_mode_counts_in_flight_and_loses_nothing() {
    let (cluster, ns, op, _guard) = setup("op-task", None, &[]).await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    let mut qw = qworker(
        "w",
        &queue,
        &[],
        json!({"maxReplicas": 4, "scalingFactor": 0.25}),
    );
    let script = "t=$(cat); P=$QSCALER_REDIS_PORT; redis-cli -p $P rpush \"$QSCALER_QUEUE:events\" \"start $t $POD_NAME\" >/dev/null; \
                  sleep 0.4; redis-cli -p $P rpush \"$QSCALER_QUEUE:events\" \"end $t $POD_NAME\" >/dev/null";
    qw["spec"]["podSpec"]["containers"][0]["args"] = json!(["--task", "--", "sh", "-c", script]);
    create_qworker(&cluster, &ns, qw).await;
    push_tasks(&mut conn, &queue, 0..20).await;
    let seen_in_flight = wait_for("status.inFlight > 0", T, || async {
        let st = get_qworker(&cluster, &ns, "w").await.status?;
        st.in_flight.filter(|n| *n > 0)
    })
    .await;
    wait_for("all 20 tasks finished", T, || {
        let (mut conn, queue) = (conn.clone(), queue.clone());
        async move { (task_events(&mut conn, &queue).await.1.len() >= 20).then_some(()) }
    })
    .await;
    wait_for("scale to zero", T, || async {
        worker_pods(&cluster, &ns, "w")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let (starts, ends) = task_events(&mut conn, &queue).await;
    assert_no_interrupted_task(&starts, &ends, &op);
    assert!(
        starts.values().all(|n| *n == 1),
        "a task ran twice: {starts:?}"
    );
    let leftovers: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{queue}}}:processing:*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(leftovers.is_empty(), "processing lists left: {leftovers:?}");
    eprintln!("in flight seen: {seen_in_flight}");
}

/// A worker with a known load: it holds 200 MiB (filled, so every page is real) and keeps one core
/// busy for 4 s, then idles. The peaks in status must match that load: memory within 10 % of the
/// 200 MiB plus the interpreter, CPU at most one core (one thread cannot use more) and clearly busy.
#[tokio::test]
async fn status_peaks_match_a_known_load() {
    let (cluster, ns, _op, _guard) = setup("op-known-load", None, &[]).await;
    let queue = format!("{ns}-jobs");
    let script = "import signal, sys\n\
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n\
        held = b'\\x01' * (200 * 1024 * 1024)\n\
        while True: pass\n";
    // The thread stays busy until the pod ends. The CPU it really got is read from the kernel
    // (/proc/PID/stat), not assumed: tests run in parallel on 2 cores, so one busy thread may get
    // less than a core. The peak over sampling windows is at least the lifetime average.
    let marker = format!("{ns}-known-load");
    let mut qw = idle_qworker("w", &queue, json!({"minReplicas": 1}));
    qw["spec"]["podSpec"]["containers"][0]["args"] =
        json!(["--", "python3", "-c", script, marker.as_str()]);
    create_qworker(&cluster, &ns, qw).await;
    const MIB: u64 = 1 << 20;
    let (cpu, mem, average) = wait_for("peaks of the known load in status", T, || async {
        let average = cpu_average_millis(&marker)?;
        let st = get_qworker(&cluster, &ns, "w").await.status?;
        let u = st
            .max_container_resources_usage
            .iter()
            .find(|u| u.name == "worker")?;
        let mem = qscaler_crds::quantity::bytes(&u.memory.as_ref()?.0)?;
        let cpu = qscaler_crds::quantity::cpu_millis(&u.cpu.as_ref()?.0)?;
        (mem >= 200 * MIB && cpu >= 100 && cpu as f64 >= average * 0.9)
            .then_some((cpu, mem, average))
    })
    .await;
    println!(
        "known load: status peaks cpu {cpu}m (kernel: {average:.0}m on average), memory {} MiB",
        mem / MIB
    );
    // The interpreter and the supervisor add ~20 MiB to the 200 MiB the worker holds.
    assert!(
        mem <= 220 * MIB * 11 / 10,
        "memory peak {mem} is more than 10% above ~220 MiB"
    );
    assert!(cpu <= 1100, "cpu peak {cpu}m for a single busy thread");
}

/// The CPU a process (found by a marker in its command line) has used over its lifetime so far, in
/// millicores, from its `utime + stime` and start time in /proc.
fn cpu_average_millis(marker: &str) -> Option<f64> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()? as f64;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let dir = entry.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.first().is_none_or(|a| !a.ends_with(b"python3"))
            || !args.contains(&marker.as_bytes())
        {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the command name (which may contain spaces) start at field 3 (state).
        let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| -> Option<f64> { rest.get(n - 3)?.parse().ok() };
        let used = (field(14)? + field(15)?) / ticks;
        let alive = uptime - field(22)? / ticks;
        return (alive > 0.5).then(|| used / alive * 1000.0);
    }
    None
}
