//! Redis Streams as a queue (issue #16 item 3), on the local cluster (real kube-apiserver, the
//! stand-in kubelet running qsupervisor, real Redis): a `format: stream` QWorker scales on its
//! group's lag plus pending entries, and a SIGKILLed consumer's pending entry is claimed back by
//! the operator and completed by another worker, once, with nothing lost.
//!
//! Needs the local cluster: `tests/cluster.sh up && eval "$(tests/cluster.sh env)"`, and the binaries
//! built: `cargo build --workspace --bins`.

mod common;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use qscaler_crds::names::{keys, stream};
use qscaler_tests::{wait_for, Cluster};
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use serde_json::json;

use common::*;

/// A task-mode QWorker on the stream `queue`: each task records `start <payload> <pod>` on the list
/// `<queue>:events`, runs `secs` seconds, then records `end <payload> <pod>`.
fn stream_qworker(name: &str, queue: &str, secs: f64, max_replicas: i32) -> serde_json::Value {
    let mut qw = qworker(
        name,
        queue,
        &[],
        json!({"format": "stream", "maxReplicas": max_replicas, "scaleDownStabilizationSeconds": 2}),
    );
    let script = format!(
        "t=$(cat); P=$QSCALER_REDIS_PORT; \
         redis-cli -p $P rpush \"$QSCALER_QUEUE:events\" \"start $t $POD_NAME\"; \
         sleep {secs}; \
         redis-cli -p $P rpush \"$QSCALER_QUEUE:events\" \"end $t $POD_NAME\""
    );
    qw["spec"]["podSpec"]["containers"][0]["args"] = json!(["--task", "--", "sh", "-c", script]);
    qw
}

async fn event_lines(conn: &mut MultiplexedConnection, queue: &str) -> Vec<String> {
    conn.lrange(format!("{queue}:events"), 0, -1)
        .await
        .unwrap_or_default()
}

/// How many `what` (start/end) lines there are per payload.
fn tally(lines: &[String], what: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for l in lines {
        let mut p = l.split_whitespace();
        if let (Some(w), Some(id)) = (p.next(), p.next()) {
            if w == what {
                *out.entry(id.to_string()).or_insert(0) += 1;
            }
        }
    }
    out
}

/// The group's pending entries: (entry id, consumer).
async fn pending(conn: &mut MultiplexedConnection, queue: &str) -> Vec<(String, String)> {
    let v: Vec<(String, String, i64, i64)> = redis::cmd("XPENDING")
        .arg(queue)
        .arg(stream::DEFAULT_GROUP)
        .arg("-")
        .arg("+")
        .arg(100)
        .query_async(conn)
        .await
        .unwrap_or_default();
    v.into_iter().map(|(id, who, _, _)| (id, who)).collect()
}

async fn alive_pods(cluster: &Cluster, ns: &str, qw: &str) -> Vec<Pod> {
    worker_pods(cluster, ns, qw)
        .await
        .into_iter()
        .filter(alive)
        .collect()
}

/// Three entries of 6 s: the QWorker scales to three workers on the lag (no group yet: the whole
/// stream), and keeps three while the entries are pending (lag 0, in flight 3), which a rule on
/// lag alone would scale down. One worker is SIGKILLed mid-task: the operator claims its pending
/// entry back to the pool, a worker takes it from there and completes it. Every entry ends once,
/// the killed one started twice, nothing is pending or dead-lettered at the end, and the workers
/// scale back to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_qworker_scales_on_lag_and_pending_and_a_killed_consumers_entry_completes() {
    let (cluster, ns, op, _guard) = setup("streams", None, &[]).await;
    let queue = format!("{ns}-events");
    let mut conn = cluster.redis().await;
    for i in 0..3 {
        let _: String = redis::cmd("XADD")
            .arg(&queue)
            .arg("*")
            .arg(stream::PAYLOAD_FIELD)
            .arg(format!("t{i}"))
            .query_async(&mut conn)
            .await
            .expect("XADD");
    }
    create_qworker(&cluster, &ns, stream_qworker("w", &queue, 6.0, 5)).await;

    // Scaled on the lag: three queued, three workers.
    wait_for("three workers for three queued entries", T, || async {
        let qw = get_qworker(&cluster, &ns, "w").await;
        let st = qw.status?;
        (st.desired_replicas == 3 && alive_pods(&cluster, &ns, "w").await.len() == 3).then_some(())
    })
    .await;
    // Every entry delivered and running: lag 0, 3 pending, still three workers.
    let busy = wait_for("three entries pending, all started", T, || {
        let (mut conn, queue) = (conn.clone(), queue.clone());
        async move {
            let p = pending(&mut conn, &queue).await;
            let starts = tally(&event_lines(&mut conn, &queue).await, "start");
            (p.len() == 3 && starts.len() == 3).then_some(p)
        }
    })
    .await;
    wait_for("status: 0 queued, 3 in flight, 3 desired", T, || async {
        let st = get_qworker(&cluster, &ns, "w").await.status?;
        (st.queue_depth == Some(0) && st.in_flight == Some(3) && st.desired_replicas == 3)
            .then_some(())
    })
    .await;
    assert_eq!(alive_pods(&cluster, &ns, "w").await.len(), 3);

    // SIGKILL the container of the consumer holding the first entry.
    let (victim_entry, victim_consumer) = busy[0].clone();
    let victim_pod = victim_consumer
        .strip_prefix(&format!("{ns}/"))
        .expect("consumer is <namespace>/<pod>")
        .to_string();
    let entry: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&queue)
        .arg(&victim_entry)
        .arg(&victim_entry)
        .query_async(&mut conn)
        .await
        .expect("XRANGE");
    let victim_task = entry[0].1[0].1.clone();
    assert!(
        cluster.kill_container(&ns, &victim_pod),
        "no container to kill in {victim_pod}"
    );
    eprintln!("killed {victim_pod} holding {victim_entry} ({victim_task})");

    // Claimed back and completed by another worker; every entry ends once.
    let lines = wait_for(
        "every entry completed",
        std::time::Duration::from_secs(120),
        || {
            let (mut conn, queue) = (conn.clone(), queue.clone());
            async move {
                let lines = event_lines(&mut conn, &queue).await;
                let ends = tally(&lines, "end");
                (ends.len() == 3 && pending(&mut conn, &queue).await.is_empty()).then_some(lines)
            }
        },
    )
    .await;
    // The operator claimed it back (the killed supervisor could not give it back itself).
    let log = op.log();
    assert!(
        log.lines().any(
            |l| l.contains("returned in-flight tasks of a dead pod") && l.contains(&victim_pod)
        ),
        "{log}"
    );
    let (starts, ends) = (tally(&lines, "start"), tally(&lines, "end"));
    assert!(
        ends.values().all(|n| *n == 1),
        "each entry ends once: {lines:?}"
    );
    assert_eq!(
        starts[&victim_task], 2,
        "the killed run and the claimed one: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("end {victim_task} ")) && !l.ends_with(&victim_pod)),
        "completed by another worker: {lines:?}"
    );
    let retries: Option<i64> = conn
        .hget(keys::retries(&queue), &victim_entry)
        .await
        .expect("HGET");
    assert_eq!(retries, None, "a done entry's count is cleared");
    let dead: i64 = redis::cmd("XLEN")
        .arg(keys::dead_letter(&queue))
        .query_async(&mut conn)
        .await
        .expect("XLEN");
    assert_eq!(dead, 0, "nothing dead-lettered\n{}", op.log());

    // Nothing left: the workers go, and leave the group and the registry as they do.
    wait_for(
        "no workers left",
        std::time::Duration::from_secs(120),
        || async {
            alive_pods(&cluster, &ns, "w")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let registry: Vec<String> = conn
        .smembers(keys::consumers(&queue))
        .await
        .expect("SMEMBERS");
    assert!(registry.is_empty(), "registry: {registry:?}");
    let st = get_qworker(&cluster, &ns, "w")
        .await
        .status
        .expect("status");
    assert_eq!((st.queue_depth, st.in_flight), (Some(0), Some(0)));
    // The three completed runs (6 s each) were timed: the operator learned the task time.
    let learned = wait_for("a learned task time", T, || async {
        get_qworker(&cluster, &ns, "w").await.status?.task_seconds
    })
    .await;
    assert!((6.0..30.0).contains(&learned), "{learned} s per task");
}
