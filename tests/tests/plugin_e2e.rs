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
    revision_name, ANNOTATION_ACTIVITY, ANNOTATION_DRAIN, ANNOTATION_RESTARTED_AT,
    ANNOTATION_REVISION_HASH, LABEL_POD_SPEC_HASH, LABEL_QWORKER,
};
use qscaler_crds::usage::{annotation_key, UsageReport};
use qscaler_crds::QWorker;
use qscaler_tests::{workspace_bin, Cluster};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long one plugin command may take before the test calls it hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A directory holding only the plugin (as krew installs it): `target/debug` itself also holds
/// cargo's `kubectl-qworker.d` dep-info file, which `kubectl plugin list` flags as a broken plugin.
/// Made once per test process: the tests run on parallel threads, and a check-then-link per call
/// raced (`File exists`).
fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let bin = workspace_bin("kubectl-qworker");
        assert!(
            bin.is_file(),
            "{} is missing: run cargo build -p kubectl-qworker",
            bin.display()
        );
        let dir = std::env::temp_dir().join(format!("qscaler-plugin-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the plugin dir");
        let link = dir.join("kubectl-qworker");
        match std::os::unix::fs::symlink(&bin, &link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("link the plugin into {}: {e}", dir.display()),
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
    // A usage error is clap's exit 2, not a silent success.
    let bad = run(&cluster, &["qworker", "top", "--sort-by=disk"]).await;
    assert_eq!(bad.status.code(), Some(2));
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
    let before = chrono::Utc::now() - chrono::Duration::seconds(2);
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
    let at = chrono::DateTime::parse_from_rfc3339(&annotations[ANNOTATION_RESTARTED_AT])
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
fn worker_pod(name: &str, qworker: &str, short_hash: &str, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {LABEL_QWORKER: qworker, LABEL_POD_SPEC_HASH: short_hash},
            "annotations": annotations,
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
            "mail",
            hash.short(),
            json!({usage_key.clone(): report(120, 250, 50 * MI, 70 * MI), ANNOTATION_ACTIVITY: "busy"}),
        ),
        worker_pod(
            "mail-old",
            "mail",
            "0123456789",
            json!({usage_key.clone(): report(410, 730, 88 * MI, 120 * MI), ANNOTATION_DRAIN: "rollout"}),
        ),
        worker_pod("mail-new", "mail", hash.short(), json!({})),
        worker_pod(
            "mail-broken",
            "mail",
            hash.short(),
            json!({usage_key.clone(): "{not json"}),
        ),
        worker_pod("stray", "other", hash.short(), json!({})),
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
            "DESIRED",
            "CURRENT",
            "UPDATED",
            "DRAINING"
        ]
    );
    assert_eq!(rows[1], vec!["mail", "42", "3", "3", "3", "2", "1"]);
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
    let mut config: Value = serde_yaml::from_str(&text).expect("parse the kubeconfig");
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
    std::fs::write(&path, serde_yaml::to_string(&config).expect("write YAML"))
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
