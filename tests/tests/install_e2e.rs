//! install.sh against the real local cluster: the operator runs as a pod (under the stand-in kubelet, through
//! the image table), a QWorker scales, a second install changes nothing, the worker ServiceAccount is held
//! to its Role, and `--uninstall` removes everything.
//!
//! One test, because `--uninstall` removes the CRDs: test binaries run one after another, so no other
//! test is running while this one installs and uninstalls; every test installs the CRDs it needs.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::Api;
use qscaler_crds::{QWorker, ScalerConfig};
use qscaler_tests::cluster::workspace_root;
use qscaler_tests::{wait_for, Cluster};

fn install_sh(cluster: &Cluster, args: &[&str]) -> Output {
    std::process::Command::new("bash")
        .arg(workspace_root().join("install.sh"))
        .args(args)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .unwrap_or_else(|e| panic!("running install.sh: {e}"))
}

fn ok(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `kind/name` → the fields that change when an object is written (resourceVersion, or the
/// generation for objects whose status others keep updating).
async fn fingerprint(cluster: &Cluster, ns: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let objects = [
        (
            "deployment",
            Some(ns),
            "qscaler-operator",
            ".metadata.generation",
        ),
        (
            "service",
            Some(ns),
            "qscaler-operator-metrics",
            ".metadata.resourceVersion",
        ),
        (
            "serviceaccount",
            Some(ns),
            "qscaler-operator",
            ".metadata.resourceVersion",
        ),
        (
            "role",
            Some(ns),
            "qscaler-operator-leader-election",
            ".metadata.resourceVersion",
        ),
        (
            "rolebinding",
            Some(ns),
            "qscaler-operator-leader-election",
            ".metadata.resourceVersion",
        ),
        (
            "clusterrole",
            None,
            "qscaler-operator",
            ".metadata.resourceVersion",
        ),
        (
            "clusterrolebinding",
            None,
            "qscaler-operator",
            ".metadata.resourceVersion",
        ),
        ("crd", None, "qworkers.quickube.com", ".metadata.generation"),
        (
            "crd",
            None,
            "scalerconfigs.quickube.com",
            ".metadata.generation",
        ),
    ];
    for (kind, namespace, name, field) in objects {
        let jsonpath = format!("jsonpath={{{field}}}");
        let mut args = vec!["get", kind, name, "-o", jsonpath.as_str()];
        if let Some(n) = namespace {
            args.extend(["-n", n]);
        }
        let value = ok(
            &format!("kubectl get {kind} {name}"),
            &cluster.kubectl(&args).await,
        );
        out.insert(format!("{kind}/{name}"), value);
    }
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test]
async fn install_scale_reinstall_restrict_and_uninstall() {
    let cluster = Cluster::connect().await;
    let ns = format!("qscaler-install-{}", std::process::id());

    // --dry-run prints every manifest and changes nothing.
    let printed = ok(
        "install.sh --dry-run",
        &install_sh(&cluster, &["--dry-run", "--namespace", &ns]),
    );
    for kind in [
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(
            printed.contains(&format!("kind: {kind}\n")),
            "--dry-run does not print a {kind}"
        );
    }
    let absent = cluster.kubectl(&["get", "namespace", &ns]).await;
    assert!(!absent.status.success(), "--dry-run created namespace {ns}");

    // Install: the operator Deployment becomes available, its pod runs under the stand-in kubelet.
    ok(
        "install.sh",
        &install_sh(
            &cluster,
            &[
                "--namespace",
                &ns,
                "--image",
                "qscaler/operator",
                "--tag",
                "dev",
                "--timeout",
                "120",
            ],
        ),
    );
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let lp = ListParams::default().labels("app.kubernetes.io/name=qscaler-operator");
    wait_for("the operator pod Running", Duration::from_secs(60), || {
        let (pods, lp) = (pods.clone(), lp.clone());
        async move {
            let list = pods.list(&lp).await.ok()?;
            list.items
                .iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .then_some(())
        }
    })
    .await;

    // Installing twice changes nothing.
    let before = fingerprint(&cluster, &ns).await;
    ok(
        "install.sh (again)",
        &install_sh(
            &cluster,
            &[
                "--namespace",
                &ns,
                "--image",
                "qscaler/operator",
                "--tag",
                "dev",
                "--timeout",
                "120",
            ],
        ),
    );
    assert_eq!(
        fingerprint(&cluster, &ns).await,
        before,
        "a second install changed objects"
    );

    // Workers: RBAC for them, a ScalerConfig on the cluster's Redis, a QWorker; tasks make it scale.
    let workers = cluster.namespace("install-workers").await;
    ok(
        "install.sh --worker-rbac",
        &install_sh(&cluster, &["--worker-rbac", &workers]),
    );
    let redis_port = cluster
        .redis_url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap_or("6379")
        .to_string();
    let queue = format!("install-e2e-{}", std::process::id());
    let sc: ScalerConfig = serde_json::from_value(serde_json::json!({
        "apiVersion": "quickube.com/v1alpha1", "kind": "ScalerConfig",
        "metadata": {"name": "redis"},
        "spec": {"type": "redis", "config": {"host": "127.0.0.1", "port": redis_port}}
    }))
    .expect("a valid ScalerConfig");
    Api::<ScalerConfig>::namespaced(cluster.client.clone(), &workers)
        .create(&PostParams::default(), &sc)
        .await
        .expect("creating the ScalerConfig");
    let qw: QWorker = serde_json::from_value(serde_json::json!({
        "apiVersion": "quickube.com/v1alpha1", "kind": "QWorker",
        "metadata": {"name": "worker"},
        "spec": {
            "podSpec": {
                "serviceAccountName": "qscaler-worker",
                "containers": [{"name": "worker", "image": "qscaler/qsupervisor:dev",
                    "args": ["--", "qscaler-test-worker", "--task-ms", "300"]}]
            },
            "scaleConfig": {"scalerConfigRef": "redis", "queue": queue, "minReplicas": 0, "maxReplicas": 3,
                "scalingFactor": 1, "scaleDownStabilizationSeconds": 2}
        }
    }))
    .expect("a valid QWorker");
    Api::<QWorker>::namespaced(cluster.client.clone(), &workers)
        .create(&PostParams::default(), &qw)
        .await
        .expect("creating the QWorker");
    let mut redis = cluster.redis().await;
    for i in 0..3 {
        let _: i64 = redis::cmd("LPUSH")
            .arg(&queue)
            .arg(format!("t{i}"))
            .query_async(&mut redis)
            .await
            .expect("LPUSH");
    }
    let worker_pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &workers);
    let worker_lp =
        ListParams::default().labels(&format!("{}=worker", qscaler_crds::names::LABEL_QWORKER));
    wait_for(
        "the operator (running as a pod) to create worker pods",
        Duration::from_secs(30),
        || {
            let (p, lp) = (worker_pods.clone(), worker_lp.clone());
            async move { (!p.list(&lp).await.ok()?.items.is_empty()).then_some(()) }
        },
    )
    .await;
    let events = format!("{queue}:events");
    wait_for("every task to end", Duration::from_secs(60), || {
        let (mut redis, events) = (redis.clone(), events.clone());
        async move {
            let log: Vec<String> = redis::cmd("LRANGE")
                .arg(&events)
                .arg(0)
                .arg(-1)
                .query_async(&mut redis)
                .await
                .ok()?;
            (log.iter().filter(|l| l.starts_with("end ")).count() >= 3).then_some(())
        }
    })
    .await;

    // The worker ServiceAccount's token reads and patches pods, and nothing more.
    let token = ok(
        "kubectl create token qscaler-worker",
        &cluster
            .kubectl(&["create", "token", "qscaler-worker", "-n", &workers])
            .await,
    );
    let token = token.trim();
    let as_worker = |args: &[&str]| {
        let mut all = vec!["--token", token, "-n", workers.as_str()];
        all.extend_from_slice(args);
        all.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let cluster = cluster.clone();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            cluster.kubectl(&refs).await
        }
    };
    let secrets = run(as_worker(&["get", "secrets"])).await;
    assert!(
        !secrets.status.success() && stderr(&secrets).contains("Forbidden"),
        "the worker token read secrets: {}",
        stderr(&secrets)
    );
    let other = ok(
        "creating a bystander pod",
        &cluster
            .kubectl(&[
                "run",
                "bystander",
                "-n",
                &workers,
                "--image",
                "busybox",
                "--restart",
                "Never",
                "--",
                "sleep",
                "300",
            ])
            .await,
    );
    assert!(other.contains("bystander"));
    // Its Role: get, watch and patch pods (the supervisor watches and annotates its own pod).
    ok(
        "the worker token gets a pod",
        &run(as_worker(&["get", "pod", "bystander"])).await,
    );
    ok(
        "the worker token patches a pod",
        &run(as_worker(&[
            "annotate",
            "pod",
            "bystander",
            "qscaler-test/touched=yes",
        ]))
        .await,
    );
    let listed = run(as_worker(&["get", "pods"])).await;
    assert!(
        !listed.status.success() && stderr(&listed).contains("Forbidden"),
        "the worker token listed pods: {}",
        stderr(&listed)
    );
    let deleted = run(as_worker(&["delete", "pod", "bystander", "--wait=false"])).await;
    assert!(
        !deleted.status.success() && stderr(&deleted).contains("Forbidden"),
        "the worker token deleted a pod: {}",
        stderr(&deleted)
    );

    // --uninstall removes everything install.sh made, and the CRDs with the QWorkers.
    ok(
        "install.sh --uninstall",
        &install_sh(
            &cluster,
            &["--uninstall", "--namespace", &ns, "--timeout", "120"],
        ),
    );
    for (kind, name) in [
        ("namespace", ns.as_str()),
        ("clusterrole", "qscaler-operator"),
        ("clusterrolebinding", "qscaler-operator"),
        ("crd", "qworkers.quickube.com"),
        ("crd", "scalerconfigs.quickube.com"),
    ] {
        let out = cluster.kubectl(&["get", kind, name]).await;
        assert!(
            !out.status.success() && stderr(&out).contains("NotFound"),
            "{kind}/{name} survived --uninstall"
        );
    }
    // Leave the CRDs installed for the test binaries that run after this one.
    cluster.install_crds().await;
}
