//! The `sidekiq` and `bullmq` presets against the real frameworks (issue #15): a real Sidekiq (Debian's
//! ruby-sidekiq) or BullMQ (npm) worker under qsupervisor in wrap mode, as pods of the stand-in kubelet,
//! jobs enqueued with the framework's own client (`tests/frameworks/<fw>/`). Each job counts its start
//! and its end in Redis hashes, so the test proves every job ran exactly once and none was cut.
//!
//! 1. In flight is counted: three long jobs, two of them held by one worker (concurrency 2). The queue
//!    list empties at once; the QWorker's status must show the held jobs as `inFlight`, and no pod may
//!    be told to drain before the first job ends (with the list alone the operator would drain after
//!    the stabilization window, which is shorter than a job). Then the scale-down to zero: the drained
//!    workers exit 0 (Succeeded).
//! 2. A rollout under load: nine more jobs, a new pod template while six of them run; the old
//!    workers get the drain signal (SIGTERM: Sidekiq waits for its busy jobs up to `-t`, the BullMQ
//!    worker calls `worker.close()`), finish their jobs, and exit 0; the new workers take the rest.
//!
//! Needs the local cluster and the binaries; each test runs `tests/frameworks.sh <fw>` (quick when
//! installed).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use qscaler_crds::names;
use qscaler_tests::cluster::{bin_dir, skip_suite_without_cluster, workspace_root};
use qscaler_tests::{wait_for, Cluster};
use redis::AsyncCommands;
use serde_json::{json, Value};

use common::*;

/// One framework: how its worker runs and how jobs are enqueued.
struct Framework {
    name: &'static str,
    /// The worker under qsupervisor, with `{queue}` replaced.
    worker: Vec<String>,
    /// Extra container env besides `REDIS_URL`.
    env: Vec<(&'static str, String)>,
    /// The producer command; `QUEUE RECORD FIRST COUNT SECONDS` are appended.
    produce: Vec<String>,
    /// Longer than the stabilization window, so a scale-down that ignores in-flight jobs would show,
    /// and than the 10 s between two status writes of a depth change alone.
    long_seconds: u64,
    short_seconds: u64,
    stabilization_seconds: u64,
}

fn framework_file(fw: &str, file: &str) -> String {
    workspace_root()
        .join("tests/frameworks")
        .join(fw)
        .join(file)
        .display()
        .to_string()
}

/// Where `tests/frameworks.sh` installs npm packages: `<target>/frameworks` (bin_dir is `<target>/debug`).
fn node_modules() -> PathBuf {
    let target = bin_dir()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("frameworks/bullmq/node_modules")
}

/// `tests/frameworks.sh <fw>`: idempotent and quick when installed (tests/run.sh runs it before the
/// tests), so a test run alone finds its framework too.
fn install(fw: &str) {
    let out = std::process::Command::new("bash")
        .arg(workspace_root().join("tests/frameworks.sh"))
        .arg(fw)
        .env(
            "CARGO_TARGET_DIR",
            bin_dir().parent().unwrap_or(&workspace_root()),
        )
        .output()
        .expect("running tests/frameworks.sh");
    assert!(
        out.status.success(),
        "tests/frameworks.sh {fw} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sidekiq() -> Framework {
    install("sidekiq");
    Framework {
        name: "sidekiq",
        // -t: how long a TERM waits for busy jobs before Sidekiq requeues them; longer than any job.
        worker: vec![
            "sidekiq".into(),
            "-r".into(),
            framework_file("sidekiq", "worker.rb"),
            "-q".into(),
            "{queue}".into(),
            "-c".into(),
            "2".into(),
            "-t".into(),
            "60".into(),
        ],
        env: vec![],
        produce: vec!["ruby".into(), framework_file("sidekiq", "produce.rb")],
        long_seconds: 24,
        short_seconds: 5,
        // A job fetched since Sidekiq's last heartbeat (every 5 s) is not in Redis yet, and a change
        // of depth alone wakes a reconcile at most every 10 s: the window must outlast both.
        stabilization_seconds: 20,
    }
}

fn bullmq() -> Framework {
    install("bullmq");
    let modules = node_modules();
    Framework {
        name: "bullmq",
        worker: vec![
            "node".into(),
            framework_file("bullmq", "worker.js"),
            "{queue}".into(),
            "2".into(),
        ],
        env: vec![("NODE_PATH", modules.display().to_string())],
        produce: vec!["node".into(), framework_file("bullmq", "produce.js")],
        long_seconds: 15,
        short_seconds: 4,
        stabilization_seconds: 2,
    }
}

impl Framework {
    fn qworker(&self, queue: &str, redis_url: &str, rollout: &str) -> Value {
        let mut args = vec!["--".to_string()];
        args.extend(self.worker.iter().map(|a| a.replace("{queue}", queue)));
        let mut env = vec![
            json!({"name": "REDIS_URL", "value": redis_url}),
            json!({"name": "ROLLOUT", "value": rollout}),
        ];
        env.extend(self.env.iter().map(|(k, v)| json!({"name": k, "value": v})));
        json!({
            "apiVersion": "quickube.com/v1alpha1", "kind": "QWorker",
            "metadata": {"name": "w"},
            "spec": {
                "podSpec": {"terminationGracePeriodSeconds": 60,
                            "containers": [{"name": "worker", "image": "qscaler/qsupervisor",
                                            "args": args, "env": env}]},
                "scaleConfig": {"scalerConfigRef": "redis", "queue": queue, "format": self.name,
                                "minReplicas": 0, "maxReplicas": 3, "scalingFactor": 1,
                                "scaleDownStabilizationSeconds": self.stabilization_seconds}
            }
        })
    }

    /// Enqueues jobs `first..first+count` with the framework's own client.
    fn produce(
        &self,
        redis_url: &str,
        queue: &str,
        record: &str,
        first: u32,
        count: u32,
        secs: u64,
    ) {
        let out = std::process::Command::new(&self.produce[0])
            .args(&self.produce[1..])
            .args([queue, record, &first.to_string(), &count.to_string()])
            .arg(secs.to_string())
            .env("REDIS_URL", redis_url)
            .env("NODE_PATH", node_modules())
            .output()
            .expect("running the producer");
        assert!(
            out.status.success(),
            "{} producer failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

async fn counts(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> BTreeMap<String, i64> {
    conn.hgetall(key).await.expect("HGETALL")
}

fn draining(p: &Pod) -> bool {
    annotation(p, names::ANNOTATION_DRAIN).is_some()
}

fn hash_of(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(names::LABEL_POD_SPEC_HASH)
        .map(String::as_str)
}

/// Waits until no worker pod is alive; panics on any pod that ended Failed.
async fn wait_scaled_to_zero(cluster: &Cluster, ns: &str, what: &str) {
    wait_for(what, Duration::from_secs(120), || async {
        let pods = worker_pods(cluster, ns, "w").await;
        for p in &pods {
            assert_ne!(
                phase(p),
                "Failed",
                "worker {:?} failed: {:?}",
                p.metadata.name,
                p.status
            );
        }
        pods.iter().all(|p| !alive(p)).then_some(())
    })
    .await;
}

async fn scenario(fw: Framework) {
    let (cluster, ns, op, _guard) = setup(&format!("preset-{}", fw.name), None, &[]).await;
    let redis_url = cluster.redis_url.clone();
    let queue = format!("{ns}-jobs");
    let record = format!("{ns}-record");
    let (started_key, ended_key) = (format!("{record}:started"), format!("{record}:ended"));
    let mut conn = cluster.redis().await;
    create_qworker(&cluster, &ns, fw.qworker(&queue, &redis_url, "1")).await;

    // 1. In flight is counted, and no scale-down while the framework holds work.
    fw.produce(&redis_url, &queue, &record, 0, 3, fw.long_seconds);
    let max_in_flight = Arc::new(AtomicI64::new(0));
    wait_for(
        "the three long jobs ended",
        Duration::from_secs(120),
        || {
            let (cluster, ns, mut conn) = (cluster.clone(), ns.clone(), conn.clone());
            let (ended_key, max_in_flight) = (ended_key.clone(), max_in_flight.clone());
            async move {
                let st = get_qworker(&cluster, &ns, "w").await.status;
                if let Some(st) = st.filter(|st| st.queue_depth == Some(0)) {
                    max_in_flight.fetch_max(st.in_flight.unwrap_or(0), Ordering::Relaxed);
                }
                let ended = counts(&mut conn, &ended_key).await.len();
                let pods = worker_pods(&cluster, &ns, "w").await;
                if ended == 0 {
                    if let Some(p) = pods.iter().find(|p| draining(p)) {
                        panic!(
                            "pod {:?} told to drain while the framework held every job (none ended); status: {:?}",
                            p.metadata.name,
                            get_qworker(&cluster, &ns, "w").await.status
                        );
                    }
                }
                (ended == 3).then_some(())
            }
        },
    )
    .await;
    let max_in_flight = max_in_flight.load(Ordering::Relaxed);
    assert!(
        max_in_flight >= 2,
        "status never showed the held jobs in flight while the queue list was empty (max {max_in_flight})"
    );
    wait_scaled_to_zero(
        &cluster,
        &ns,
        "scale-down to zero, the drained workers Succeeded",
    )
    .await;

    // 2. A rollout while jobs run.
    // More jobs than the first template's workers hold (3 pods × 2), so the new ones take some.
    fw.produce(&redis_url, &queue, &record, 3, 9, fw.short_seconds);
    wait_for("jobs running on the first template", T, || async {
        let started = counts(&mut conn.clone(), &started_key).await.len();
        let ended = counts(&mut conn.clone(), &ended_key).await.len();
        (started >= 5 && started > ended).then_some(())
    })
    .await;
    let old_hash = current_hash(&cluster, &ns, "w").await;
    let new_spec = fw.qworker(&queue, &redis_url, "2");
    let pod_spec = new_spec["spec"]["podSpec"].clone();
    let new_hash = roll_out(&cluster, &ns, "w", pod_spec, &old_hash).await;
    wait_for("a worker of the new template started", T, || async {
        let pods = worker_pods(&cluster, &ns, "w").await;
        pods.iter()
            .any(|p| hash_of(p) == Some(&new_hash[..10]) && phase(p) == "Running")
            .then_some(())
    })
    .await;
    wait_for(
        "all twelve jobs ended",
        Duration::from_secs(120),
        || async { (counts(&mut conn.clone(), &ended_key).await.len() == 12).then_some(()) },
    )
    .await;
    wait_scaled_to_zero(&cluster, &ns, "scale-down to zero after the rollout").await;

    // Nothing lost, nothing cut: every job started once and ended once.
    let started = counts(&mut conn, &started_key).await;
    let ended = counts(&mut conn, &ended_key).await;
    let want: BTreeMap<String, i64> = (0..12).map(|i| (i.to_string(), 1)).collect();
    assert_eq!(started, want, "starts per job (operator log: {})", op.log());
    assert_eq!(ended, want, "ends per job");
    let _: () = conn
        .del(&[&started_key, &ended_key])
        .await
        .expect("DEL records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidekiq_in_flight_counted_nothing_lost_or_cut() {
    skip_suite_without_cluster();
    scenario(sidekiq()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bullmq_in_flight_counted_nothing_lost_or_cut() {
    skip_suite_without_cluster();
    scenario(bullmq()).await;
}
