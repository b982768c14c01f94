//! `kubectl qworker` through the real kubectl (the plugin found on PATH) against the local cluster.
//! The tests play the operator's part: they record ControllerRevisions and write QWorker status
//! as the contract says, and check what the plugin prints and changes.
//!
//! Needs `cargo build -p kubectl-qworker` (tests/run.sh builds every binary) and the cluster up.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use qscaler_crds::hash::{pod_spec_hash, template_value};
use qscaler_crds::names::{
    revision_name, ANNOTATION_ACTIVITY, ANNOTATION_DRAIN, ANNOTATION_PAUSED,
    ANNOTATION_RESTARTED_AT, ANNOTATION_REVISION_HASH, LABEL_POD_SPEC_HASH, LABEL_QWORKER,
};
use qscaler_crds::usage::{annotation_key, UsageReport};
use qscaler_crds::QWorker;
use qscaler_tests::{workspace_bin, Cluster};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// How long one plugin command may take before the test calls it hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A directory holding only the plugin and its completion helper (as the krew archive has them):
/// `target/debug` itself also holds cargo's `kubectl-qworker.d` dep-info file, which `kubectl
/// plugin list` flags as a broken plugin. Made once per test process: the tests run on parallel
/// threads, and a check-then-link per call raced (`File exists`).
fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("qscaler-plugin-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the plugin dir");
        for name in ["kubectl-qworker", "kubectl_complete-qworker"] {
            let bin = workspace_bin(name);
            assert!(
                bin.is_file(),
                "{} is missing: run cargo build -p kubectl-qworker",
                bin.display()
            );
            match std::os::unix::fs::symlink(&bin, dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("link {name} into {}: {e}", dir.display()),
            }
        }
        dir
    })
}

/// `kubectl <args>` with the plugin first on PATH and the cluster's kubeconfig.
fn kubectl(cluster: &Cluster, args: &[&str]) -> tokio::process::Command {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.args(args)
        .env("PATH", format!("{}:{path}", plugin_dir().display()))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .kill_on_drop(true);
    cmd
}

async fn run(cluster: &Cluster, args: &[&str]) -> Output {
    let output = tokio::time::timeout(COMMAND_TIMEOUT, kubectl(cluster, args).output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "kubectl {} did not finish within {COMMAND_TIMEOUT:?}",
                args.join(" ")
            )
        })
        .unwrap_or_else(|e| panic!("running kubectl: {e}"));
    eprintln!(
        "$ kubectl {}\n{}{}(exit {:?})",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        output.status.code()
    );
    output
}

/// `kubectl qworker -n NS <args>`, which must succeed; its stdout.
async fn plugin_ok(cluster: &Cluster, ns: &str, args: &[&str]) -> String {
    let output = run(cluster, &[&["qworker", "-n", ns], args].concat()).await;
    assert!(
        output.status.success(),
        "kubectl qworker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `kubectl qworker -n NS <args>`, which must fail with exit code 1; its stderr.
async fn plugin_err(cluster: &Cluster, ns: &str, args: &[&str]) -> String {
    let output = run(cluster, &[&["qworker", "-n", ns], args].concat()).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "kubectl qworker {} should exit 1",
        args.join(" ")
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn setup(prefix: &str) -> (Cluster, String) {
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace(prefix).await;
    (cluster, ns)
}

/// A QWorker whose worker pods never run here (its ScalerConfig does not exist).
fn qworker_json(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "quickube.com/v1alpha1",
        "kind": "QWorker",
        "metadata": {"name": name},
        "spec": {
            "podSpec": {"containers": [{
                "name": "worker",
                "image": image,
                "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
            }]},
            "scaleConfig": {"scalerConfigRef": "nowhere", "queue": "jobs", "maxReplicas": 3},
        },
    })
}

async fn create_qworker(cluster: &Cluster, ns: &str, object: Value) -> QWorker {
    let api: Api<QWorker> = Api::namespaced(cluster.client.clone(), ns);
    let qw: QWorker = serde_json::from_value(object).expect("a valid QWorker");
    api.create(&PostParams::default(), &qw)
        .await
        .expect("create the QWorker")
}

async fn get_qworker(cluster: &Cluster, ns: &str, name: &str) -> QWorker {
    Api::<QWorker>::namespaced(cluster.client.clone(), ns)
        .get(name)
        .await
        .expect("get the QWorker")
}

/// What the operator records for `qw`'s current template.
async fn record_revision(cluster: &Cluster, qw: &QWorker, number: i64, change_cause: Option<&str>) {
    let name = qw.metadata.name.clone().unwrap_or_default();
    let ns = qw.metadata.namespace.clone().unwrap_or_default();
    let hash = pod_spec_hash(&qw.spec);
    let mut annotations = json!({ANNOTATION_REVISION_HASH: hash.full()});
    if let Some(cause) = change_cause {
        annotations["kubernetes.io/change-cause"] = json!(cause);
    }
    let revision: ControllerRevision = serde_json::from_value(json!({
        "metadata": {
            "name": revision_name(&name, hash.short()),
            "labels": {LABEL_QWORKER: name, LABEL_POD_SPEC_HASH: hash.short()},
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "quickube.com/v1alpha1", "kind": "QWorker", "name": name,
                "uid": qw.metadata.uid, "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "data": template_value(&qw.spec),
        "revision": number,
    }))
    .expect("a valid ControllerRevision");
    Api::<ControllerRevision>::namespaced(cluster.client.clone(), &ns)
        .create(&PostParams::default(), &revision)
        .await
        .expect("create the ControllerRevision");
}

/// Sets the image of the QWorker's one container and its pod annotations (`None`: no podMetadata).
async fn set_template(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    image: &str,
    annotations: Option<Value>,
) -> QWorker {
    let api: Api<QWorker> = Api::namespaced(cluster.client.clone(), ns);
    let mut qw = api.get(name).await.expect("get the QWorker");
    qw.spec.pod_spec.containers[0].image = Some(image.to_owned());
    qw.spec.pod_metadata = annotations
        .map(|a| serde_json::from_value(json!({"annotations": a})).expect("pod metadata"));
    api.replace(name, &PostParams::default(), &qw)
        .await
        .expect("replace the QWorker")
}

/// Writes status as the operator would (merge patch of the status subresource).
async fn patch_status(cluster: &Cluster, ns: &str, name: &str, status: Value) {
    Api::<QWorker>::namespaced(cluster.client.clone(), ns)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .expect("patch the QWorker status");
}

fn image_of(qw: &QWorker) -> String {
    qw.spec.pod_spec.containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

#[tokio::test]
async fn the_plugin_is_found_on_path_and_documents_itself() {
    let cluster = Cluster::connect().await;
    let list = run(&cluster, &["plugin", "list"]).await;
    assert!(list.status.success(), "kubectl plugin list failed");
    let expected = plugin_dir().join("kubectl-qworker");
    assert!(String::from_utf8_lossy(&list.stdout).contains(&expected.display().to_string()));

    let help = run(&cluster, &["qworker", "--help"]).await;
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for word in ["rollout", "top", "--namespace", "--context", "--kubeconfig"] {
        assert!(help.contains(word), "--help lacks {word}");
    }
    for (sub, flag) in [
        (&["rollout", "status"][..], "--timeout"),
        (&["rollout", "history"][..], "--revision"),
        (&["rollout", "undo"][..], "--to-revision"),
        (&["rollout", "restart"][..], "restartedAt"),
        (&["top"][..], "--sort-by"),
    ] {
        let out = run(&cluster, &[&["qworker"], sub, &["--help"]].concat()).await;
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(flag),
            "{sub:?} --help lacks {flag}"
        );
    }
    let version = run(&cluster, &["qworker", "--version"]).await;
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("kubectl-qworker {}", env!("CARGO_PKG_VERSION"))
    );
    // A usage error exits 1, as kubectl's own do (clap's default is 2), and says what is wrong.
    for args in [
        &["qworker", "top", "--sort-by=disk"][..],
        &["qworker", "rollout", "status"],
        &["qworker", "frobnicate"],
        &["qworker", "top", "--watch", "--interval", "0"],
        &["qworker"],
    ] {
        let bad = run(&cluster, args).await;
        assert_eq!(bad.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(
            err.starts_with("error: ") || err.contains("Usage: kubectl qworker"),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test]
async fn history_undo_and_restart_change_the_spec() {
    let (cluster, ns) = setup("plugin-history").await;
    let v1 = create_qworker(&cluster, &ns, qworker_json("mail", "worker:v1")).await;
    record_revision(&cluster, &v1, 1, None).await;
    let v2 = set_template(
        &cluster,
        &ns,
        "mail",
        "worker:v2",
        Some(json!({"team": "mail"})),
    )
    .await;
    record_revision(&cluster, &v2, 2, Some("image worker:v2")).await;
    let (h1, h2) = (pod_spec_hash(&v1.spec), pod_spec_hash(&v2.spec));

    let history = plugin_ok(&cluster, &ns, &["rollout", "history", "mail"]).await;
    let lines: Vec<Vec<&str>> = history
        .lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(lines[0], vec!["qworker.quickube.com/mail"]);
    assert_eq!(lines[1], vec!["REVISION", "HASH", "CHANGE-CAUSE"]);
    assert_eq!(lines[2], vec!["1", h1.short(), "<none>"]);
    assert_eq!(lines[3], vec!["2", h2.short(), "image worker:v2"]);

    let one = plugin_ok(
        &cluster,
        &ns,
        &["rollout", "history", "mail", "--revision", "1"],
    )
    .await;
    assert!(
        one.starts_with("qworker.quickube.com/mail with revision #1\n"),
        "{one}"
    );
    assert!(
        one.contains("image: worker:v1") && !one.contains("team"),
        "{one}"
    );
    let json: Value = serde_json::from_str(
        &plugin_ok(&cluster, &ns, &["rollout", "history", "mail", "-o", "json"]).await,
    )
    .unwrap();
    assert_eq!(json[1]["hash"], h2.full());
    assert_eq!(json[1]["current"], true);
    assert_eq!(json[0]["template"], template_value(&v1.spec));

    // Undo: back to revision 1, its pod metadata (none) included.
    let out = plugin_ok(&cluster, &ns, &["rollout", "undo", "mail"]).await;
    assert_eq!(out, "qworker.quickube.com/mail rolled back to revision 1\n");
    let now = get_qworker(&cluster, &ns, "mail").await;
    assert_eq!(image_of(&now), "worker:v1");
    assert_eq!(now.spec.pod_metadata, None);
    assert_eq!(pod_spec_hash(&now.spec), h1);

    // Already there: kubectl's words, exit 0. A revision that does not exist: exit 1.
    let out = plugin_ok(
        &cluster,
        &ns,
        &["rollout", "undo", "mail", "--to-revision", "1"],
    )
    .await;
    assert_eq!(out, "qworker.quickube.com/mail skipped rollback (current template already matches revision 1)\n");
    let err = plugin_err(
        &cluster,
        &ns,
        &["rollout", "undo", "mail", "--to-revision", "9"],
    )
    .await;
    assert!(
        err.contains("qworker \"mail\" has no revision 9 in its history"),
        "{err}"
    );
    let err = plugin_err(
        &cluster,
        &ns,
        &["rollout", "history", "mail", "--revision", "9"],
    )
    .await;
    assert!(err.contains("has no revision 9"), "{err}");

    // Forward again to 2: the pod metadata comes back whole.
    plugin_ok(
        &cluster,
        &ns,
        &["rollout", "undo", "mail", "--to-revision", "2"],
    )
    .await;
    let now = get_qworker(&cluster, &ns, "mail").await;
    assert_eq!(pod_spec_hash(&now.spec), h2);
    assert_eq!(
        now.spec.pod_metadata.map(|m| m.annotations),
        Some([("team".to_owned(), "mail".to_owned())].into())
    );

    // Restart: a restartedAt annotation beside the others, a new hash, the pod spec untouched.
    let before = k8s_openapi::jiff::Timestamp::now() - std::time::Duration::from_secs(2);
    let out = plugin_ok(&cluster, &ns, &["rollout", "restart", "mail"]).await;
    assert_eq!(out, "qworker.quickube.com/mail restarted\n");
    let now = get_qworker(&cluster, &ns, "mail").await;
    let annotations = now
        .spec
        .pod_metadata
        .clone()
        .unwrap_or_default()
        .annotations;
    assert_eq!(annotations.get("team").map(String::as_str), Some("mail"));
    let at: k8s_openapi::jiff::Timestamp = annotations[ANNOTATION_RESTARTED_AT]
        .parse()
        .expect("an RFC 3339 time");
    assert!(at >= before, "restartedAt {at} is older than the command");
    assert_eq!(now.spec.pod_spec, v2.spec.pod_spec);
    assert_ne!(pod_spec_hash(&now.spec), h2);
}

#[tokio::test]
async fn rollout_status_follows_the_status_until_it_is_rolled_out() {
    let (cluster, ns) = setup("plugin-status").await;
    let qw = create_qworker(&cluster, &ns, qworker_json("mail", "worker:v1")).await;
    let hash = pod_spec_hash(&qw.spec).full().to_owned();
    let generation = qw.metadata.generation.unwrap_or(1);

    let mut child = kubectl(
        &cluster,
        &[
            "qworker",
            "-n",
            &ns,
            "rollout",
            "status",
            "mail",
            "--timeout",
            "2m",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start kubectl qworker rollout status");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut expect_line = async |expected: &str| {
        let line = tokio::time::timeout(COMMAND_TIMEOUT, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line within {COMMAND_TIMEOUT:?}; expected {expected:?}"))
            .expect("read stdout")
            .unwrap_or_else(|| panic!("rollout status ended; expected {expected:?}"));
        assert_eq!(line, expected);
    };

    expect_line("Waiting for qworker \"mail\" spec update to be observed...").await;
    let base =
        json!({"observedGeneration": generation, "currentPodSpecHash": hash, "desiredReplicas": 3});
    let step = |extra: Value| {
        let mut s = base.clone();
        s.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s
    };
    patch_status(
        &cluster,
        &ns,
        "mail",
        step(json!({"updatedReplicas": 1, "oldReplicas": 2, "currentReplicas": 3})),
    )
    .await;
    expect_line("Waiting for qworker \"mail\" rollout to finish: 1 out of 3 new workers have been updated...").await;
    patch_status(&cluster, &ns, "mail", step(json!({"updatedReplicas": 3, "oldReplicas": 2, "drainingReplicas": 2, "currentReplicas": 5}))).await;
    expect_line("Waiting for qworker \"mail\" rollout to finish: 2 old workers are draining...")
        .await;
    patch_status(&cluster, &ns, "mail", step(json!({"oldReplicas": 0, "drainingReplicas": 0, "currentReplicas": 3, "availableReplicas": 1}))).await;
    expect_line(
        "Waiting for qworker \"mail\" rollout to finish: 1 of 3 updated workers are available...",
    )
    .await;
    patch_status(&cluster, &ns, "mail", step(json!({"availableReplicas": 3}))).await;
    expect_line("qworker \"mail\" successfully rolled out").await;
    let status = tokio::time::timeout(COMMAND_TIMEOUT, child.wait())
        .await
        .expect("exits")
        .expect("wait");
    assert!(status.success(), "rollout status exited {status:?}");

    // Done already: one line, exit 0, with or without --watch.
    assert_eq!(
        plugin_ok(&cluster, &ns, &["rollout", "status", "mail"]).await,
        "qworker \"mail\" successfully rolled out\n"
    );

    // A spec change the operator has not seen yet: --watch=false says so and exits 0 (as kubectl).
    set_template(&cluster, &ns, "mail", "worker:v2", None).await;
    assert_eq!(
        plugin_ok(
            &cluster,
            &ns,
            &["rollout", "status", "mail", "--watch=false"]
        )
        .await,
        "Waiting for qworker \"mail\" spec update to be observed...\n"
    );
    // ...and waiting for it times out with exit 1.
    let started = std::time::Instant::now();
    let err = plugin_err(
        &cluster,
        &ns,
        &["rollout", "status", "mail", "--timeout", "2s"],
    )
    .await;
    assert!(
        err.contains("timed out after 2s waiting for qworker \"mail\" to roll out"),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn rollout_status_fails_on_an_invalid_spec() {
    let (cluster, ns) = setup("plugin-invalid").await;
    let qw = create_qworker(&cluster, &ns, qworker_json("mail", "worker:v1")).await;
    patch_status(
        &cluster,
        &ns,
        "mail",
        json!({
            "observedGeneration": qw.metadata.generation,
            "currentPodSpecHash": pod_spec_hash(&qw.spec).full(),
            "conditions": [{
                "type": "SpecValid", "status": "False", "reason": "InvalidSpec",
                "message": "scaleConfig.maxReplicas (3) is below minReplicas (5)",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        }),
    )
    .await;
    for args in [
        &["rollout", "status", "mail"][..],
        &["rollout", "status", "mail", "--watch=false"][..],
    ] {
        let err = plugin_err(&cluster, &ns, args).await;
        assert!(
            err.contains("qworker \"mail\" has an invalid spec, so it cannot roll out: scaleConfig.maxReplicas (3) is below minReplicas (5)"),
            "{err}"
        );
    }
}

/// A node no kubelet serves: pods bound to it stay Pending even where the stand-in kubelet runs.
/// It must exist as an object, or the controller-manager's pod GC deletes the pods as orphans.
const IDLE_NODE: &str = "plugin-e2e-no-kubelet";

async fn ensure_idle_node(cluster: &Cluster) {
    let node: Node = serde_json::from_value(
        json!({"metadata": {"name": IDLE_NODE, "labels": {"qscaler-test": "true"}}}),
    )
    .expect("a valid Node");
    match Api::<Node>::all(cluster.client.clone())
        .create(&PostParams::default(), &node)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating node {IDLE_NODE}: {e}"),
    }
}

/// A worker pod as the operator creates it, bound to [`IDLE_NODE`].
/// A pod as the operator makes one: labelled for `qworker` and, when that is `owner`, controlled by
/// it (the plugin, like the operator, counts only pods their QWorker controls).
fn worker_pod(
    name: &str,
    owner: &QWorker,
    qworker: &str,
    short_hash: &str,
    annotations: Value,
) -> Pod {
    let owners = if owner.metadata.name.as_deref() == Some(qworker) {
        json!([{
            "apiVersion": qscaler_crds::API_VERSION, "kind": "QWorker", "name": qworker,
            "uid": owner.metadata.uid, "controller": true, "blockOwnerDeletion": true,
        }])
    } else {
        json!([])
    };
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {LABEL_QWORKER: qworker, LABEL_POD_SPEC_HASH: short_hash},
            "annotations": annotations,
            "ownerReferences": owners,
        },
        "spec": {
            "nodeName": IDLE_NODE,
            "containers": [{
                "name": "worker", "image": "worker:v1",
                "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
            }],
        },
    }))
    .expect("a valid Pod")
}

fn report(now_cpu: u64, peak_cpu: u64, now_mem: u64, peak_mem: u64) -> String {
    UsageReport {
        cpu_millicores: peak_cpu,
        memory_bytes: peak_mem,
        oom_kills: 0,
        current_cpu_millicores: Some(now_cpu),
        current_memory_bytes: Some(now_mem),
        reported_at: Some(1_800_000_000),
    }
    .to_json()
}

#[tokio::test]
async fn top_shows_the_queue_the_workers_and_their_usage() {
    const MI: u64 = 1024 * 1024;
    let (cluster, ns) = setup("plugin-top").await;
    let qw = create_qworker(&cluster, &ns, qworker_json("mail", "worker:v1")).await;
    let hash = pod_spec_hash(&qw.spec);
    patch_status(
        &cluster,
        &ns,
        "mail",
        json!({"observedGeneration": 1, "currentPodSpecHash": hash.full(), "queueDepth": 42, "inFlight": 3,
               "desiredReplicas": 3, "currentReplicas": 3, "updatedReplicas": 2, "drainingReplicas": 1}),
    )
    .await;
    ensure_idle_node(&cluster).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let usage_key = annotation_key("worker");
    for pod in [
        worker_pod(
            "mail-busy",
            &qw,
            "mail",
            hash.short(),
            json!({usage_key.clone(): report(120, 250, 50 * MI, 70 * MI), ANNOTATION_ACTIVITY: "busy"}),
        ),
        worker_pod(
            "mail-old",
            &qw,
            "mail",
            "0123456789",
            json!({usage_key.clone(): report(410, 730, 88 * MI, 120 * MI), ANNOTATION_DRAIN: "rollout"}),
        ),
        worker_pod("mail-new", &qw, "mail", hash.short(), json!({})),
        worker_pod(
            "mail-broken",
            &qw,
            "mail",
            hash.short(),
            json!({usage_key.clone(): "{not json"}),
        ),
        worker_pod("stray", &qw, "other", hash.short(), json!({})),
    ] {
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create a worker pod");
    }

    let out = plugin_ok(&cluster, &ns, &["top", "mail", "--sort-by=cpu"]).await;
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        rows[0],
        vec![
            "NAME",
            "QUEUE",
            "IN-FLIGHT",
            "TASK-TIME",
            "DESIRED",
            "CURRENT",
            "UPDATED",
            "DRAINING"
        ]
    );
    assert_eq!(rows[1], vec!["mail", "42", "3", "-", "3", "3", "2", "1"]);
    assert!(rows[2].is_empty());
    assert_eq!(
        rows[3],
        vec!["POD", "HASH", "STATUS", "CPU(NOW/PEAK)", "MEMORY(NOW/PEAK)"]
    );
    let current = format!("{} (current)", hash.short());
    assert_eq!(
        rows[4],
        vec![
            "mail-old",
            "0123456789 (old)",
            "Draining(rollout)",
            "410m/730m (req 500m, lim 1)",
            "88Mi/120Mi (req 128Mi, lim 256Mi)"
        ]
    );
    assert_eq!(
        rows[5],
        vec![
            "mail-busy",
            &current,
            "Pending (busy)",
            "120m/250m (req 500m, lim 1)",
            "50Mi/70Mi (req 128Mi, lim 256Mi)"
        ]
    );
    // The two without a usable report, by name.
    assert_eq!(
        rows[6],
        vec![
            "mail-broken",
            &current,
            "Pending",
            "<unreadable report> (req 500m, lim 1)",
            "<unreadable report> (req 128Mi, lim 256Mi)"
        ]
    );
    assert_eq!(
        rows[7],
        vec![
            "mail-new",
            &current,
            "Pending",
            "<none reported> (req 500m, lim 1)",
            "<none reported> (req 128Mi, lim 256Mi)"
        ]
    );
    assert_eq!(rows.len(), 8, "the pod of another QWorker is not shown");

    // A control that holds the count is named beside it: the operator's ScaleLimited reason, and a
    // pause as soon as the spec asks for it.
    let desired_cell = |out: &str| -> String {
        let row = out.lines().nth(1).unwrap_or_default();
        row.split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .nth(4)
            .unwrap_or_default()
            .to_owned()
    };
    patch_status(
        &cluster,
        &ns,
        "mail",
        json!({"conditions": [{"type": "ScaleLimited", "status": "True", "reason": "MaxPodsAddedPerStep",
               "message": "at most 2 pods added per step", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
    )
    .await;
    let out = plugin_ok(&cluster, &ns, &["top", "mail"]).await;
    assert_eq!(desired_cell(&out), "3 (MaxPodsAddedPerStep)", "{out}");
    Api::<QWorker>::namespaced(cluster.client.clone(), &ns)
        .patch(
            "mail",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {ANNOTATION_PAUSED: "true"}}})),
        )
        .await
        .expect("pause the QWorker");
    let out = plugin_ok(&cluster, &ns, &["top", "mail"]).await;
    assert_eq!(desired_cell(&out), "3 (Paused)", "{out}");

    // -A, --containers and -o json.
    let all = plugin_ok(
        &cluster,
        &ns,
        &["top", "-A", "--containers", "--no-headers"],
    )
    .await;
    assert!(
        all.lines()
            .any(|l| l.starts_with(&ns) && l.contains("mail-old") && l.contains("worker")),
        "{all}"
    );
    let json: Value =
        serde_json::from_str(&plugin_ok(&cluster, &ns, &["top", "-o", "json"]).await).unwrap();
    assert_eq!(json["qworkers"][0]["queue"], 42);
    assert_eq!(json["qworkers"][0]["heldBy"], "Paused");
    assert_eq!(json["workers"].as_array().map(Vec::len), Some(4));
    // --kubeconfig as a flag works as well as $KUBECONFIG.
    let kubeconfig = cluster.kubeconfig.display().to_string();
    plugin_ok(&cluster, &ns, &["top", "mail", "--kubeconfig", &kubeconfig]).await;
}

#[tokio::test]
async fn errors_say_what_is_wrong_and_exit_1() {
    let (cluster, ns) = setup("plugin-errors").await;
    for args in [
        &["rollout", "status", "ghost"][..],
        &["rollout", "restart", "ghost"][..],
        &["rollout", "history", "ghost"][..],
        &["rollout", "undo", "ghost"][..],
        &["top", "ghost"][..],
    ] {
        let err = plugin_err(&cluster, &ns, args).await;
        assert_eq!(
            err,
            format!("error: qworkers.quickube.com \"ghost\" not found in namespace {ns}\n"),
            "{args:?}"
        );
    }
    // Restart must not have created anything.
    assert!(Api::<QWorker>::namespaced(cluster.client.clone(), &ns)
        .get_opt("ghost")
        .await
        .unwrap()
        .is_none());
    let err = plugin_err(
        &cluster,
        &ns,
        &["rollout", "status", "ghost", "--context", "no-such-context"],
    )
    .await;
    assert!(
        err.starts_with("error: cannot load the kubeconfig"),
        "{err}"
    );
    // An empty namespace lists nothing, and says so, with exit 0.
    let out = run(&cluster, &["qworker", "-n", &ns, "top"]).await;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("No resources found in {ns} namespace.\n")
    );

    // --kubeconfig and --context: a context whose namespace is the test's, and one whose user
    // (the cluster's unprivileged `nobody`) RBAC forbids everything.
    create_qworker(&cluster, &ns, qworker_json("mail", "worker:v1")).await;
    let kubeconfig = contexts_kubeconfig(&cluster, &ns);
    let kubeconfig = kubeconfig.display().to_string();
    let out = run(
        &cluster,
        &[
            "qworker",
            "--kubeconfig",
            &kubeconfig,
            "--context",
            "scoped",
            "top",
            "mail",
        ],
    )
    .await;
    assert!(out.status.success(), "the context's namespace is used");
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .is_some_and(|l| l.starts_with("mail ")));
    for args in [&["top", "mail"][..], &["rollout", "history", "mail"][..]] {
        let out = run(
            &cluster,
            &[
                &[
                    "qworker",
                    "--kubeconfig",
                    &kubeconfig,
                    "--context",
                    "nobody",
                    "-n",
                    &ns,
                ],
                args,
            ]
            .concat(),
        )
        .await;
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!("error: forbidden: you may not get qworkers.quickube.com in namespace {ns}; ask a cluster admin for an RBAC rule allowing \"get\" on qworkers.quickube.com")),
            "{err}"
        );
        assert!(
            err.contains("User \"nobody\" cannot get resource \"qworkers\""),
            "{err}"
        );
    }
    let out = run(
        &cluster,
        &[
            "qworker",
            "--kubeconfig",
            &kubeconfig,
            "--context",
            "nobody",
            "top",
            "-A",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with(
        "error: forbidden: you may not list qworkers.quickube.com at the cluster scope"
    ));
    let out = run(
        &cluster,
        &[
            "qworker",
            "--kubeconfig",
            &kubeconfig,
            "--context",
            "unreachable",
            "top",
            "mail",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot get qworkers.quickube.com in namespace default: "),
        "{err}"
    );
    assert!(
        err.contains("Connection refused")
            && err.ends_with("is the cluster reachable? Check --context and --kubeconfig\n"),
        "{err}"
    );
    // A label selector that matches nothing lists nothing.
    let out = run(
        &cluster,
        &["qworker", "-n", &ns, "top", "-l", "team=nobody"],
    )
    .await;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("No resources found in {ns} namespace.\n")
    );
    let _ = std::fs::remove_file(&kubeconfig);
}

/// The cluster's kubeconfig plus two contexts: `scoped` (admin, namespace `ns`) and `nobody` (the
/// unprivileged user whose token is `nobody-<admin token>`, see tests/cluster.sh).
fn contexts_kubeconfig(cluster: &Cluster, ns: &str) -> PathBuf {
    let text = std::fs::read_to_string(&cluster.kubeconfig).expect("read the kubeconfig");
    let mut config: Value = serde_saphyr::from_str(&text).expect("parse the kubeconfig");
    let cluster_name = config["clusters"][0]["name"].clone();
    let admin = config["users"][0].clone();
    let token = admin["user"]["token"]
        .as_str()
        .expect("the admin token")
        .to_owned();
    config["users"]
        .as_array_mut()
        .expect("users")
        .push(json!({"name": "nobody", "user": {"token": format!("nobody-{token}")}}));
    let contexts = config["contexts"].as_array_mut().expect("contexts");
    contexts.push(json!({"name": "scoped", "context": {"cluster": cluster_name, "user": admin["name"], "namespace": ns}}));
    contexts
        .push(json!({"name": "nobody", "context": {"cluster": cluster_name, "user": "nobody"}}));
    contexts.push(json!({"name": "unreachable", "context": {"cluster": "closed-port", "user": admin["name"]}}));
    let mut closed = config["clusters"][0].clone();
    closed["name"] = json!("closed-port");
    closed["cluster"]["server"] = json!("https://127.0.0.1:1");
    config["clusters"]
        .as_array_mut()
        .expect("clusters")
        .push(closed);
    let path = std::env::temp_dir().join(format!("qscaler-plugin-e2e-{ns}.kubeconfig"));
    std::fs::write(&path, serde_saphyr::to_string(&config).expect("write YAML"))
        .expect("write the kubeconfig");
    path
}

#[tokio::test]
async fn restart_adds_pod_metadata_when_there_is_none() {
    let (cluster, ns) = setup("plugin-restart").await;
    let qw = create_qworker(&cluster, &ns, qworker_json("mail", "worker:v1")).await;
    assert_eq!(qw.spec.pod_metadata, None);
    plugin_ok(&cluster, &ns, &["rollout", "restart", "mail"]).await;
    let now = get_qworker(&cluster, &ns, "mail").await;
    let annotations = now.spec.pod_metadata.unwrap_or_default().annotations;
    assert_eq!(
        annotations.keys().collect::<Vec<_>>(),
        vec![ANNOTATION_RESTARTED_AT]
    );
    assert_eq!(now.spec.pod_spec, qw.spec.pod_spec);
}

#[tokio::test]
async fn rollout_status_fails_when_the_qworker_is_deleted() {
    let (cluster, ns) = setup("plugin-deleted").await;
    create_qworker(&cluster, &ns, qworker_json("mail", "worker:v1")).await;
    let mut child = kubectl(
        &cluster,
        &["qworker", "-n", &ns, "rollout", "status", "mail"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start kubectl qworker rollout status");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(COMMAND_TIMEOUT, lines.next_line())
        .await
        .expect("a first line")
        .expect("read stdout");
    assert_eq!(
        first.as_deref(),
        Some("Waiting for qworker \"mail\" spec update to be observed...")
    );
    Api::<QWorker>::namespaced(cluster.client.clone(), &ns)
        .delete("mail", &Default::default())
        .await
        .expect("delete the QWorker");
    let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .expect("rollout status ends once the QWorker is gone")
        .expect("wait");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: qworker \"mail\" was deleted while waiting for its rollout\n"
    );
}

/// `kubectl __complete` is what kubectl's completion scripts run on <TAB>; for a plugin, kubectl
/// 1.26+ asks `kubectl_complete-qworker` (found on PATH) and relays its answer.
async fn complete(cluster: &Cluster, words: &[&str]) -> (Vec<String>, String) {
    let out = run(cluster, &[&["__complete", "qworker"], words].concat()).await;
    assert!(out.status.success(), "kubectl __complete failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let directive = lines.pop().unwrap_or_default();
    let values = lines
        .into_iter()
        .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
        .collect();
    (values, directive)
}

#[tokio::test]
async fn kubectl_completes_subcommands_flags_and_names_through_the_helper() {
    let (cluster, ns) = setup("plugin-complete").await;
    for name in ["mail", "maps", "thumbs"] {
        create_qworker(&cluster, &ns, qworker_json(name, "worker:v1")).await;
    }
    let (values, directive) = complete(&cluster, &[""]).await;
    for sub in ["completion", "rollout", "top"] {
        assert!(values.contains(&sub.to_owned()), "{values:?}");
    }
    assert_eq!(directive, ":4", "no file names among subcommands");
    assert_eq!(complete(&cluster, &["rollout", "st"]).await.0, ["status"]);
    assert_eq!(
        complete(&cluster, &["top", "--sort-by", ""]).await.0,
        ["cpu", "memory"]
    );
    assert!(complete(&cluster, &["top", "--wa"])
        .await
        .0
        .contains(&"--watch".to_owned()));
    // QWorker names, from the namespace given in any form, matched to what is typed.
    assert_eq!(
        complete(&cluster, &["-n", &ns, "rollout", "status", "ma"]).await,
        (vec!["mail".to_owned(), "maps".to_owned()], ":4".to_owned())
    );
    assert_eq!(
        complete(&cluster, &["top", &format!("--namespace={ns}"), ""])
            .await
            .0,
        ["mail", "maps", "thumbs"]
    );
    // Namespaces after -n; contexts after --context, from the kubeconfig named.
    assert!(complete(&cluster, &["-n", &ns[..ns.len() - 1]])
        .await
        .0
        .contains(&ns));
    let kubeconfig = contexts_kubeconfig(&cluster, &ns);
    let kubeconfig = kubeconfig.display().to_string();
    let (contexts, _) = complete(&cluster, &["--kubeconfig", &kubeconfig, "--context", ""]).await;
    for context in ["nobody", "scoped", "unreachable"] {
        assert!(contexts.contains(&context.to_owned()), "{contexts:?}");
    }
    // The context's namespace is where names come from; a forbidden or unreachable cluster gives
    // none, at once and without a word on the command line.
    assert_eq!(
        complete(
            &cluster,
            &[
                "--kubeconfig",
                &kubeconfig,
                "--context",
                "scoped",
                "top",
                "t"
            ]
        )
        .await
        .0,
        ["thumbs"]
    );
    for context in ["nobody", "unreachable"] {
        let started = std::time::Instant::now();
        let out = run(
            &cluster,
            &[
                "__complete",
                "qworker",
                "--kubeconfig",
                &kubeconfig,
                "--context",
                context,
                "-n",
                &ns,
                "top",
                "",
            ],
        )
        .await;
        assert_eq!(String::from_utf8_lossy(&out.stdout), ":4\n", "{context}");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("error"),
            "{context}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{context}");
    }
    // A path: the shell completes file names (directive 0).
    assert_eq!(
        complete(&cluster, &["top", "--kubeconfig", ""]).await,
        (vec![], ":0".to_owned())
    );
    let _ = std::fs::remove_file(&kubeconfig);
}

/// A QWorker with a queue of `depth` and no pods, for `top`.
async fn qworker_with_queue(cluster: &Cluster, ns: &str, depth: i64) {
    let qw = get_qworker(cluster, ns, "mail").await;
    let hash = pod_spec_hash(&qw.spec);
    patch_status(
        cluster,
        ns,
        "mail",
        json!({"observedGeneration": 1, "currentPodSpecHash": hash.full(), "queueDepth": depth, "inFlight": 0,
               "desiredReplicas": 0, "currentReplicas": 0, "updatedReplicas": 0, "drainingReplicas": 0}),
    )
    .await;
}

/// The QUEUE cell of the `mail` row of one look at `top mail`.
fn queue_of(look: &str) -> Option<&str> {
    look.lines()
        .find(|l| l.starts_with("mail "))
        .and_then(|l| l.split_whitespace().nth(1))
}

fn interrupt(pid: Option<u32>) {
    let pid = pid.expect("the child's pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT the plugin");
}

#[tokio::test]
async fn top_watch_streams_each_look_when_not_on_a_terminal() {
    let (cluster, ns) = setup("plugin-watch").await;
    create_qworker(&cluster, &ns, qworker_json("mail", "worker:v1")).await;
    qworker_with_queue(&cluster, &ns, 42).await;
    // kubectl execs the plugin: the child is the plugin itself.
    let mut child = kubectl(
        &cluster,
        &[
            "qworker",
            "-n",
            &ns,
            "top",
            "mail",
            "--watch",
            "--interval",
            "500ms",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start kubectl qworker top --watch");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // One look: the QWorker table, a blank line, the worker table, and a blank line after it.
    let mut next_look = async || {
        let mut look = String::new();
        let mut blanks = 0;
        while blanks < 2 {
            let line = tokio::time::timeout(COMMAND_TIMEOUT, lines.next_line())
                .await
                .expect("a look within the timeout")
                .expect("read stdout")
                .expect("top --watch ended");
            blanks += usize::from(line.is_empty());
            look.push_str(&line);
            look.push('\n');
        }
        look
    };
    let first = next_look().await;
    assert!(first.starts_with("NAME "), "{first}");
    assert!(first.ends_with("\n\nNo worker pods.\n\n"), "{first:?}");
    assert_eq!(queue_of(&first), Some("42"));
    assert!(
        !first.contains('\x1b'),
        "no terminal codes into a pipe: {first:?}"
    );
    // The next looks follow the cluster.
    qworker_with_queue(&cluster, &ns, 7).await;
    let mut looks = 1;
    loop {
        let look = next_look().await;
        looks += 1;
        assert!(look.starts_with("NAME "), "{look}");
        if queue_of(&look) == Some("7") {
            break;
        }
        assert_eq!(queue_of(&look), Some("42"), "{look}");
        assert!(looks < 100, "the new queue depth never showed");
    }
    // Ctrl-C ends it with success.
    interrupt(child.id());
    let status = tokio::time::timeout(COMMAND_TIMEOUT, child.wait())
        .await
        .expect("top --watch exits on SIGINT")
        .expect("wait");
    assert_eq!(status.code(), Some(0));

    // A QWorker that does not exist fails at once, as without --watch.
    let err = plugin_err(&cluster, &ns, &["top", "ghost", "--watch"]).await;
    assert!(err.contains("\"ghost\" not found"), "{err}");
}

#[tokio::test]
async fn top_watch_redraws_in_place_on_a_terminal_and_gives_it_back_on_ctrl_c() {
    const ENTER: &str = "\x1b[?1049h\x1b[?25l";
    const LEAVE: &str = "\x1b[?25h\x1b[?1049l";
    const HOME: &str = "\x1b[1;1H";
    const CLEAR_BELOW: &str = "\x1b[J";
    let (cluster, ns) = setup("plugin-watch-tty").await;
    create_qworker(&cluster, &ns, qworker_json("mail", "worker:v1")).await;
    qworker_with_queue(&cluster, &ns, 42).await;
    // `script` runs the command on a pseudo-terminal of its own and copies what it writes; what is
    // written to its stdin is typed on that terminal (so ^C is a Ctrl-C). It runs the command through
    // `$SHELL -c`, here /bin/sh on every machine (CI has no `$SHELL`). `exec` leaves no shell waiting
    // in between: dash would die of the same Ctrl-C and `script` would report its 130, not the
    // plugin's exit code.
    let command = format!("exec kubectl qworker -n {ns} top mail --watch --interval 500ms");
    let path = std::env::var("PATH").unwrap_or_default();
    let mut child = tokio::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("PATH", format!("{}:{path}", plugin_dir().display()))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start script (util-linux) to give the plugin a terminal");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let mut read_until = async |done: &dyn Fn(&str) -> bool| {
        tokio::time::timeout(COMMAND_TIMEOUT, async {
            let mut buf = [0u8; 4096];
            while !done(&String::from_utf8_lossy(&seen)) {
                let n = stdout.read(&mut buf).await.expect("read the terminal");
                assert!(n > 0, "ended early: {:?}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("not within {COMMAND_TIMEOUT:?}"));
        String::from_utf8_lossy(&seen).into_owned()
    };
    read_until(&|t| t.matches(HOME).count() >= 2).await;
    qworker_with_queue(&cluster, &ns, 7).await;
    // A look showing the new depth (a row `mail   7`), drawn over the last one.
    read_until(&|t| {
        t.rsplit(HOME)
            .next()
            .is_some_and(|look| look.contains("mail   7 ") && look.contains(CLEAR_BELOW))
    })
    .await;
    child
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"\x03")
        .await
        .expect("type Ctrl-C");
    let text = read_until(&|t| t.ends_with(LEAVE)).await;
    let status = tokio::time::timeout(COMMAND_TIMEOUT, child.wait())
        .await
        .expect("script ends with the plugin")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "Ctrl-C is a clean end");

    let body = text
        .strip_prefix(ENTER)
        .unwrap_or_else(|| panic!("the alternate screen first: {text:?}"));
    let looks: Vec<&str> = body.split(HOME).skip(1).collect();
    assert!(looks.len() >= 3, "{text:?}");
    let title = format!("Every 500ms: kubectl qworker top, namespace {ns}");
    for look in &looks[..looks.len() - 1] {
        // Each look: title, tables, and the rest of the screen cleared before the next one.
        assert!(look.contains(&title), "{look:?}");
        assert!(look.contains("No worker pods."), "{look:?}");
        assert!(look.ends_with(CLEAR_BELOW), "{look:?}");
    }
    assert!(looks.iter().any(|l| l.contains("mail   42 ")), "{text:?}");
    assert!(looks.last().is_some_and(|l| l.ends_with(LEAVE)));
}

/// Every short name of every resource the API server serves, with the resources that use it.
async fn short_names(cluster: &Cluster) -> std::collections::BTreeMap<String, Vec<String>> {
    let client = &cluster.client;
    let mut lists = vec![client
        .list_core_api_resources("v1")
        .await
        .expect("core resources")];
    for group in client.list_api_groups().await.expect("API groups").groups {
        let Some(version) = group.preferred_version.or(group.versions.first().cloned()) else {
            continue;
        };
        lists.push(
            client
                .list_api_group_resources(&version.group_version)
                .await
                .expect("group resources"),
        );
    }
    let mut names: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for list in lists {
        for r in list.resources {
            for short in r.short_names.unwrap_or_default() {
                names
                    .entry(short)
                    .or_default()
                    .push(format!("{}.{}", r.name, list.group_version));
            }
        }
    }
    names
}

#[tokio::test]
async fn the_short_names_are_the_crds_own() {
    let (cluster, ns) = setup("plugin-shortnames").await;
    let expected = |short: &str, resource: &str| (short.to_owned(), vec![resource.to_owned()]);
    let wanted = [
        expected("qw", "qworkers.quickube.com/v1alpha1"),
        expected("qsc", "scalerconfigs.quickube.com/v1alpha1"),
        // `sc` stays StorageClass's alone.
        expected("sc", "storageclasses.storage.k8s.io/v1"),
    ];
    // The API server publishes a CRD's new names once its naming controller has accepted them.
    let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
    loop {
        let names = short_names(&cluster).await;
        let found: Vec<(String, Vec<String>)> = wanted
            .iter()
            .map(|(short, _)| (short.clone(), names.get(short).cloned().unwrap_or_default()))
            .collect();
        if found == wanted {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "short names: {found:?}, expected {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = run(&cluster, &["get", "qsc", "-n", &ns]).await;
    assert!(out.status.success(), "kubectl get qsc");
}
