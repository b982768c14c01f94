//! The RQ and Celery presets (`scaleConfig.format`, README "Framework presets") against the real
//! frameworks from PyPI: their own workers under qsupervisor in wrap mode, as pods of the stand-in
//! kubelet, tasks enqueued with their own clients (`tests/frameworks/python/produce.py`), each
//! task noting its start and end in Redis (`tests/frameworks/python/record.py`).
//!
//! Each test: (1) as many long tasks as two workers hold at once, so the framework's list reads 0
//! while all of it is in flight: the status must count it, and no worker may be drained before a
//! task has ended; two more wait behind them and show as queued (Celery: in a priority list);
//! (2) the scale-down to minReplicas once they are done; (3) a rollout under a second batch.
//! Every task must run and every start end (a start without an end is a cut task), RQ's exactly
//! once, Celery's at least once (late acks); and no worker pod may fail (a drain signal that
//! killed the worker fails it).
//! Celery's `unacked` hash is shared by all queues: a second QWorker's worker holds a task of its
//! own queue in it throughout, and the first QWorker's count must leave it out.
//!
//! Needs the local cluster, the binaries, and `tests/frameworks.sh rq celery` (tests/run.sh runs
//! it).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use qscaler_crds::names;
use qscaler_tests::cluster::bin_dir;
use qscaler_tests::{wait_for, Cluster};
use redis::AsyncCommands;
use serde_json::{json, Value};

use common::*;

/// One Python framework as the test drives it.
struct Framework {
    /// Its `scaleConfig.format`, and produce.py's first argument.
    name: &'static str,
    /// Tasks one worker holds at once: RQ runs one; Celery (concurrency 2, prefetch multiplier 1,
    /// late acks) holds two.
    per_worker: usize,
    /// Whether a task may run twice. Celery's late acks are at least once: a task that ends during
    /// a warm shutdown can lose its ack and be given back at exit, then run again (seen here).
    exactly_once: bool,
}

const RQ: Framework = Framework {
    name: "rq",
    per_worker: 1,
    exactly_once: true,
};
const CELERY: Framework = Framework {
    name: "celery",
    per_worker: 2,
    exactly_once: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rq_in_flight_counted_nothing_lost_or_cut() {
    scenario(&RQ).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_unacked_counted_nothing_lost_or_cut() {
    scenario(&CELERY).await;
}

/// The venv of `tests/frameworks.sh`, beside the workspace's binaries in the target directory.
fn venv() -> PathBuf {
    let venv = bin_dir()
        .parent()
        .map(|target| target.join("frameworks/py"))
        .expect("the binaries' directory has a parent");
    assert!(
        venv.join("bin/python").exists(),
        "no Python frameworks at {}: run tests/frameworks.sh rq celery",
        venv.display()
    );
    venv
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("frameworks/python")
}

/// qsupervisor's arguments: the framework's own worker command for `queue`.
fn worker_args(fw: &Framework, queue: &str, redis_url: &str) -> Vec<String> {
    let bin = |b: &str| venv().join("bin").join(b).display().to_string();
    let scripts = scripts().display().to_string();
    let mut args = vec!["--".to_string()];
    let worker: Vec<&str> = match fw.name {
        // RQ runs its maintenance (which retries a job a stop left in the intermediate list, see
        // README "Framework presets") between dequeues: a short dequeue timeout (TTL − 15 s) and
        // interval make that happen within the test.
        "rq" => vec![
            "worker",
            "--url",
            redis_url,
            "--path",
            &scripts,
            "--worker-ttl",
            "20",
            "--maintenance-interval",
            "5",
            queue,
        ],
        _ => vec![
            "--workdir",
            &scripts,
            "-A",
            "celery_app",
            "worker",
            "-Q",
            queue,
            "-c",
            "2",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
    };
    args.push(bin(fw.name));
    args.extend(worker.into_iter().map(str::to_string));
    args
}

fn preset_qworker(fw: &Framework, name: &str, queue: &str, redis_url: &str) -> Value {
    let mut qw = qworker(
        name,
        queue,
        &[],
        json!({"format": fw.name, "minReplicas": 1, "maxReplicas": 2}),
    );
    let c = &mut qw["spec"]["podSpec"]["containers"][0];
    c["args"] = json!(worker_args(fw, queue, redis_url));
    c["env"] = json!([
        {"name": "REDIS_URL", "value": redis_url},
        {"name": "EVENTS", "value": format!("{queue}:events")},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    ]);
    qw
}

/// Enqueues tasks t<first>.. with the framework's own client (Celery: at `priority`, if given).
async fn produce(
    fw: &Framework,
    redis_url: &str,
    queue: &str,
    first: usize,
    count: usize,
    secs: f64,
    priority: Option<u8>,
) {
    let out = tokio::process::Command::new(venv().join("bin/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(scripts().join("produce.py"))
        .args([fw.name, redis_url, queue])
        .args([first.to_string(), count.to_string(), secs.to_string()])
        .args(priority.map(|p| p.to_string()))
        .output()
        .await
        .expect("running produce.py");
    assert!(
        out.status.success(),
        "produce.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn draining(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| annotation(p, names::ANNOTATION_DRAIN).is_some())
        .count()
}

/// Panics on a failed worker pod: qsupervisor exits non-zero when the drain signal killed the
/// worker (its task cut) or the worker died.
fn assert_none_failed(pods: &[Pod]) {
    let failed: Vec<_> = pods
        .iter()
        .filter(|p| phase(p) == "Failed")
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    assert!(failed.is_empty(), "failed worker pods: {failed:?}");
}

fn on_hash(p: &Pod, short: &str) -> bool {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(names::LABEL_POD_SPEC_HASH))
        .map(String::as_str)
        == Some(short)
}

/// Panics when a worker is being drained while no task has ended yet: the framework still holds
/// every task, so the backlog never fell below two workers. Pods are read before the events, so an
/// end that allowed the drain is always seen.
async fn assert_no_early_drain(cluster: &Cluster, ns: &str, queue: &str) -> usize {
    let pods = worker_pods(cluster, ns, "w").await;
    assert_none_failed(&pods);
    let mut conn = cluster.redis().await;
    let ended = task_events(&mut conn, queue).await.1.len();
    assert!(
        draining(&pods) == 0 || ended > 0,
        "a worker was drained while the framework held all its tasks"
    );
    ended
}

async fn scenario(fw: &Framework) {
    let (cluster, ns, op, _guard) = setup(&format!("preset-{}", fw.name), None, &[]).await;
    // Dropped before the operator, which releases its finalizers: no namespace left Terminating.
    let _delete_first = DeleteNamespaceFirst::new(&cluster, &ns);
    let queue = format!("{ns}-jobs");
    let url = cluster.redis_url.clone();
    let mut conn = cluster.redis().await;
    if fw.name == "celery" {
        // Another queue's worker holds a task in the same `unacked` hash: "w" must not count it.
        let other = format!("{ns}-other");
        create_qworker(&cluster, &ns, preset_qworker(fw, "o", &other, &url)).await;
        produce(fw, &url, &other, 100, 1, 60.0, None).await;
        wait_for("the other queue's task in flight", T, || async {
            let st = get_qworker(&cluster, &ns, "o").await.status?;
            (st.queue_depth == Some(0) && st.in_flight == Some(1)).then_some(())
        })
        .await;
    }
    create_qworker(&cluster, &ns, preset_qworker(fw, "w", &queue, &url)).await;
    wait_for("the minReplicas worker running", T, || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        (pods.iter().filter(|p| phase(p) == "Running").count() == 1).then_some(())
    })
    .await;

    // 1. Held work: the framework's list empties while every task is still in flight. A worker
    // holds at most `per_worker`, so the second one must take its share: the tasks outlast its
    // start.
    let held = 2 * fw.per_worker;
    // 40 s: the status writes a change of depth alone at most every 10 s, and it must show two.
    produce(fw, &url, &queue, 0, held, 40.0, None).await;
    wait_for(
        "status: queueDepth 0 and every task in flight",
        Duration::from_secs(90),
        || async {
            assert_no_early_drain(&cluster, &ns, &queue).await;
            let st = get_qworker(&cluster, &ns, "w").await.status?;
            (st.queue_depth == Some(0) && st.in_flight == Some(held as i64)).then_some(())
        },
    )
    .await;
    if fw.name == "celery" {
        let (started, ended) = task_events(&mut conn, &format!("{ns}-other")).await;
        assert!(
            started.len() == 1 && ended.is_empty(),
            "the other queue's task was not held throughout"
        );
    }
    // Two more wait behind them (Celery: at priority 9, so in the queue's priority list), and the
    // status shows them queued beside the same tasks in flight.
    let extra = 2;
    let priority = (fw.name == "celery").then_some(9);
    produce(fw, &url, &queue, held, extra, 1.0, priority).await;
    if priority.is_some() {
        let in_priority_list: usize = conn.llen(format!("{queue}\x06\x169")).await.expect("LLEN");
        assert_eq!(in_priority_list, extra, "kombu's priority list for step 9");
    }
    wait_for("status: the extra tasks queued", T, || async {
        assert_no_early_drain(&cluster, &ns, &queue).await;
        let st = get_qworker(&cluster, &ns, "w").await.status?;
        (st.queue_depth == Some(extra as i64) && st.in_flight == Some(held as i64)).then_some(())
    })
    .await;
    wait_for(
        "the held and extra tasks ended",
        Duration::from_secs(90),
        || async {
            (assert_no_early_drain(&cluster, &ns, &queue).await >= held + extra).then_some(())
        },
    )
    .await;

    // 2. Scale-down to minReplicas once the framework holds nothing.
    wait_for("one worker left", T, || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        assert_none_failed(&pods);
        let up: Vec<&Pod> = pods.iter().filter(|p| alive(p)).collect();
        let drained = up
            .iter()
            .any(|p| annotation(p, names::ANNOTATION_DRAIN).is_some());
        (up.len() == 1 && !drained).then_some(())
    })
    .await;

    // 3. A rollout while a second batch runs.
    let old_hash = current_hash(&cluster, &ns, "w").await;
    let batch = 8;
    produce(fw, &url, &queue, held + extra, batch, 1.0, None).await;
    let mut patched = preset_qworker(fw, "w", &queue, &url)["spec"]["podSpec"].clone();
    patched["containers"][0]["env"]
        .as_array_mut()
        .expect("env")
        .push(json!({"name": "ROLLOUT", "value": "2"}));
    let new_hash = roll_out(&cluster, &ns, "w", patched, &old_hash).await;
    let short = new_hash[..10].to_string();
    wait_for(
        "every task done, every alive worker on the new hash",
        Duration::from_secs(180),
        || async {
            let pods = worker_pods(&cluster, &ns, "w").await;
            assert_none_failed(&pods);
            let mut conn = cluster.redis().await;
            // Every task ended, and no run (a second one included) is still going.
            let (starts, ends) = task_events(&mut conn, &queue).await;
            let done = ends.len() >= held + extra + batch && starts == ends;
            let up: Vec<&Pod> = pods.iter().filter(|p| alive(p)).collect();
            (done && !up.is_empty() && up.iter().all(|p| on_hash(p, &short))).then_some(())
        },
    )
    .await;

    let (starts, ends) = task_events(&mut conn, &queue).await;
    assert_no_interrupted_task(&starts, &ends, &op);
    let want: Vec<String> = (0..held + extra + batch).map(|i| format!("t{i}")).collect();
    assert_eq!(
        starts.keys().collect::<BTreeSet<_>>(),
        want.iter().collect::<BTreeSet<_>>(),
        "the tasks that ran"
    );
    for id in &want {
        let (started, ended) = (starts.get(id), ends.get(id));
        // Every start ended (none cut), as often as it started.
        assert_eq!(started, ended, "{id}: starts {started:?}, ends {ended:?}");
        if fw.exactly_once {
            assert_eq!(
                started,
                Some(&1),
                "{id} did not run exactly once: {starts:?}"
            );
        }
    }
    let again: Vec<_> = starts.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "{}: tasks run more than once (allowed: {}): {again:?}",
        fw.name, !fw.exactly_once
    );
}
