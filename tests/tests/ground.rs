//! The ground every e2e test stands on: the CRDs install on the real apiserver, objects round-trip,
//! and the stand-in kubelet runs pods truthfully (exit codes, PID 1, signals and grace periods,
//! service-account RBAC, memory limits, env, restart policy).
//!
//! Needs the local cluster: `tests/cluster.sh up && eval "$(tests/cluster.sh env)"`.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use qscaler_crds::{QWorker, ScalerConfig};
use qscaler_tests::{container_state, terminated, wait_for, Cluster, TestPod};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

fn example(file: &str) -> Value {
    let path = qscaler_tests::cluster::workspace_root()
        .join("crds/examples")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every field of `expected` is in `actual` with the same value (the server may add defaults).
fn assert_subset(expected: &Value, actual: &Value, path: &str) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let got = a
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}.{k} missing in {actual}"));
                assert_subset(v, got, &format!("{path}.{k}"));
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            assert_eq!(e.len(), a.len(), "{path}: {expected} vs {actual}");
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                assert_subset(ev, av, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(e), Value::Number(a)) => {
            assert_eq!(e.as_f64(), a.as_f64(), "{path}");
        }
        _ => assert_eq!(expected, actual, "{path}"),
    }
}

fn stdout(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn exit_code(pod: &Pod) -> i32 {
    terminated(pod, "main")
        .unwrap_or_else(|| panic!("no terminated state in {:?}", pod.status))
        .exit_code
}

#[tokio::test]
async fn node_is_registered_and_ready() {
    let c = Cluster::connect().await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let node = nodes.get("qscaler-node").await.expect("node qscaler-node");
    let status = node.status.expect("node status");
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "True");
    assert_eq!(status.addresses.expect("addresses")[0].address, "127.0.0.1");
}

#[tokio::test]
async fn crds_install_and_become_established() {
    let c = Cluster::connect().await;
    c.install_crds().await;
    c.install_crds().await; // idempotent
    for crd in ["qworkers.quickube.com", "scalerconfigs.quickube.com"] {
        let out = c
            .kubectl(&[
                "get",
                "crd",
                crd,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ])
            .await;
        assert_eq!(stdout(&out, "kubectl get crd"), "True", "{crd} Established");
    }
}

#[tokio::test]
async fn examples_round_trip_through_kubectl() {
    let c = Cluster::connect().await;
    c.install_crds().await;
    let ns = c.namespace("ground-kubectl").await;
    let dir = qscaler_tests::cluster::workspace_root().join("crds/examples");
    for (file, kind, name) in [
        ("scalerconfig.yaml", "scalerconfig", "example-scaler-config"),
        ("qworker.yaml", "qworker", "example-qworker"),
    ] {
        let path = dir.join(file);
        let path = path.to_str().expect("utf-8 path");
        stdout(
            &c.kubectl(&["apply", "-n", &ns, "-f", path]).await,
            "kubectl apply",
        );
        let got: Value = serde_json::from_str(&stdout(
            &c.kubectl(&["get", kind, name, "-n", &ns, "-o", "json"])
                .await,
            "kubectl get",
        ))
        .expect("kubectl prints JSON");
        let want = example(file);
        assert_subset(&want["spec"], &got["spec"], &format!("{kind}.spec"));
        assert_eq!(got["metadata"]["name"], name);
        assert!(got["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty()));
    }
    // The short name and printer columns work too.
    let out = stdout(
        &c.kubectl(&["get", "qw", "-n", &ns]).await,
        "kubectl get qw",
    );
    assert!(out.contains("example-qworker"), "{out}");
}

#[tokio::test]
async fn objects_round_trip_through_kube_with_status_subresource() {
    let c = Cluster::connect().await;
    c.install_crds().await;
    let ns = c.namespace("ground-kube").await;

    let scs: Api<ScalerConfig> = Api::namespaced(c.client.clone(), &ns);
    let sc: ScalerConfig =
        serde_json::from_value(example("scalerconfig.yaml")).expect("ScalerConfig");
    let created = scs
        .create(&PostParams::default(), &sc)
        .await
        .expect("create ScalerConfig");
    assert_eq!(created.spec, sc.spec);
    assert_eq!(
        scs.get("example-scaler-config").await.expect("get").spec,
        sc.spec
    );

    let qws: Api<QWorker> = Api::namespaced(c.client.clone(), &ns);
    let qw: QWorker = serde_json::from_value(example("qworker.yaml")).expect("QWorker");
    let created = qws
        .create(&PostParams::default(), &qw)
        .await
        .expect("create QWorker");
    assert_eq!(created.spec, qw.spec);
    assert!(created.status.is_none(), "create ignores status");

    let patch = json!({"status": {"desiredReplicas": 3, "currentReplicas": 2, "queueDepth": 7}});
    let patched = qws
        .patch_status(
            "example-qworker",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("patch status");
    let status = patched.status.expect("status after patch");
    assert_eq!(
        (
            status.desired_replicas,
            status.current_replicas,
            status.queue_depth
        ),
        (3, 2, Some(7))
    );
    let got = qws.get("example-qworker").await.expect("get");
    assert_eq!(got.spec, qw.spec, "a status patch leaves spec alone");
    assert_eq!(got.status.expect("status").desired_replicas, 3);

    // Through the main resource, status is ignored (status subresource semantics).
    let spec_patch =
        json!({"spec": {"scaleConfig": {"maxReplicas": 4}}, "status": {"desiredReplicas": 9}});
    let got = qws
        .patch(
            "example-qworker",
            &PatchParams::default(),
            &Patch::Merge(&spec_patch),
        )
        .await
        .expect("patch spec");
    assert_eq!(got.spec.scale_config.max_replicas, 4);
    assert_eq!(got.status.expect("status").desired_replicas, 3);
}

#[tokio::test]
async fn exit_code_three_ends_failed() {
    let c = Cluster::connect().await;
    let ns = c.namespace("ground-exit").await;
    c.create_pod(&ns, TestPod::shell("exit3", "echo bye; exit 3"))
        .await;
    let pod = c.wait_phase(&ns, "exit3", "Failed", T).await;
    let t = terminated(&pod, "main").expect("terminated");
    assert_eq!(t.exit_code, 3);
    assert_eq!(t.reason.as_deref(), Some("Error"));
    assert!(t.started_at.is_some() && t.finished_at.is_some());
    assert_eq!(c.pod_log(&ns, "exit3", "main"), "bye\n");

    c.create_pod(&ns, TestPod::shell("exit0", "exit 0")).await;
    let pod = c.wait_phase(&ns, "exit0", "Succeeded", T).await;
    assert_eq!(exit_code(&pod), 0);
    assert_eq!(
        terminated(&pod, "main").and_then(|t| t.reason).as_deref(),
        Some("Completed")
    );

    // A pod that already ended is finalized at once when deleted.
    let start = Instant::now();
    c.delete_pod(&ns, "exit3", None).await;
    c.wait_gone(&ns, "exit3", T).await;
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn running_pod_reports_running_with_start_time() {
    let c = Cluster::connect().await;
    let ns = c.namespace("ground-running").await;
    c.create_pod(&ns, TestPod::shell("runs", "echo up; sleep 1000 & wait"))
        .await;
    let pod = c.wait_phase(&ns, "runs", "Running", T).await;
    let running = container_state(&pod, "main")
        .and_then(|s| s.running)
        .expect("running state");
    assert!(running.started_at.is_some());
    let status = pod.status.expect("status");
    assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.1"));
    assert!(status.start_time.is_some());
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "True");
    c.delete_pod(&ns, "runs", Some(0)).await;
}

#[tokio::test]
async fn process_is_pid_one_of_its_own_namespace() {
    let c = Cluster::connect().await;
    let ns = c.namespace("ground-pid").await;
    // `$$$$` is `$$` after Kubernetes' own `$(VAR)` expansion of command lines.
    let script =
        "echo pid=$$$$; echo init=$(cat /proc/1/comm); echo host=$(hostname); echo procs=$(ls /proc | grep -c '^[0-9]')";
    c.create_pod(&ns, TestPod::shell("pid1", script)).await;
    c.wait_phase(&ns, "pid1", "Succeeded", T).await;
    let log = c.pod_log(&ns, "pid1", "main");
    assert!(log.contains("pid=1\n"), "{log}");
    assert!(log.contains("init=sh\n"), "{log}");
    assert!(
        log.contains("host=pid1\n"),
        "the hostname is the pod's name: {log}"
    );
    // Only the shell and its children are visible: a fresh /proc of a new PID namespace.
    let procs: u32 = log
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no procs= line in {log}"));
    assert!(procs <= 5, "saw {procs} processes: {log}");
}

/// Host pid of a container's launcher, from the kubelet's pid file.
fn wrapper_pid(c: &Cluster, ns: &str, pod: &str) -> u32 {
    let f = c.pod_dir(ns, pod).join("main.pid");
    std::fs::read_to_string(&f)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {}", f.display()))
}

/// Whether `pid` is still a container launcher (`qscaler-kubelet __launch ...`).
fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == b"__launch"))
}

#[tokio::test]
async fn deletion_sends_sigterm_then_sigkill_after_the_grace_period() {
    let c = Cluster::connect().await;
    let ns = c.namespace("ground-grace").await;
    // Traps TERM, says so, and keeps running: only SIGKILL ends it.
    let stubborn = "trap 'echo got TERM' TERM; echo ready; while true; do sleep 0.1; done";
    c.create_pod(&ns, TestPod::shell("stubborn", stubborn).grace_period(2))
        .await;
    c.wait_phase(&ns, "stubborn", "Running", T).await;
    c.wait_log(&ns, "stubborn", "main", "ready", T).await;
    let pid = wrapper_pid(&c, &ns, "stubborn");
    assert!(alive(pid));

    let start = Instant::now();
    c.delete_pod(&ns, "stubborn", None).await;
    c.wait_log(&ns, "stubborn", "main", "got TERM", Duration::from_secs(5))
        .await;
    c.wait_gone(&ns, "stubborn", T).await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "killed after {took:?}, before the 2 s grace period"
    );
    assert!(
        took < Duration::from_secs(8),
        "took {took:?} for a 2 s grace period"
    );
    assert!(!alive(pid), "the container's processes are gone");

    // One that exits on TERM goes quickly, long before its 30 s grace period.
    let polite = "trap 'echo got TERM; exit 0' TERM; echo ready; sleep 1000 & wait";
    c.create_pod(&ns, TestPod::shell("polite", polite).grace_period(30))
        .await;
    c.wait_log(&ns, "polite", "main", "ready", T).await;
    let pid = wrapper_pid(&c, &ns, "polite");
    let start = Instant::now();
    c.delete_pod(&ns, "polite", None).await;
    c.wait_gone(&ns, "polite", T).await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(c.pod_log(&ns, "polite", "main").contains("got TERM"));
    assert!(!alive(pid));
}

#[tokio::test]
async fn service_account_token_is_bound_by_rbac() {
    let c = Cluster::connect().await;
    let ns = c.namespace("ground-rbac").await;
    c.grant_pods(&ns, "pod-reader", &["get", "list"]).await;
    let script = "kubectl get pods -o name; echo pods=$?; kubectl get secrets; echo secrets=$?";
    c.create_pod(&ns, TestPod::shell("reader", script)).await;
    c.wait_phase(&ns, "reader", "Succeeded", T).await;
    let log = c.pod_log(&ns, "reader", "main");
    assert!(log.contains("pod/reader\n"), "lists pods: {log}");
    assert!(log.contains("pods=0\n"), "{log}");
    assert!(
        log.contains("Forbidden") || log.contains("forbidden"),
        "secrets are forbidden: {log}"
    );
    assert!(log.contains("secrets=1\n"), "{log}");
    assert!(
        log.contains(&format!("system:serviceaccount:{ns}:default")),
        "the error names the service account: {log}"
    );
}

#[tokio::test]
async fn memory_limit_ends_oom_killed() {
    let c = Cluster::connect().await;
    let ns = c.namespace("ground-oom").await;
    // `tail` keeps the current line; /dev/zero has no newline, so it grows until killed.
    c.create_pod(
        &ns,
        TestPod::shell("hog", "echo start; tail /dev/zero").memory_limit("32Mi"),
    )
    .await;
    let pod = c.wait_phase(&ns, "hog", "Failed", T).await;
    let t = terminated(&pod, "main").expect("terminated");
    assert_eq!(t.reason.as_deref(), Some("OOMKilled"), "{t:?}");
    assert_eq!(t.exit_code, 137);
    let qos = pod.status.as_ref().and_then(|s| s.qos_class.as_deref());
    assert_eq!(qos, Some("Burstable"), "a memory limit without a cpu limit");

    // Within the limit, the same pod shape runs fine.
    c.create_pod(
        &ns,
        TestPod::shell("small", "head -c 1000000 /dev/zero | wc -c").memory_limit("32Mi"),
    )
    .await;
    let pod = c.wait_phase(&ns, "small", "Succeeded", T).await;
    assert_eq!(
        terminated(&pod, "main").and_then(|t| t.reason).as_deref(),
        Some("Completed")
    );
}

#[tokio::test]
async fn env_is_resolved_from_secrets_config_maps_and_the_downward_api() {
    let c = Cluster::connect().await;
    let ns = c.namespace("ground-env").await;
    let pod = TestPod::shell(
        "envy",
        "echo name=$POD_NAME ns=$POD_NAMESPACE uid=$POD_UID app=$APP pw=$PASSWORD opt=[$OPT] \
         plain=$PLAIN ref=$REF from=$CFG_KEY; test -r \"$KUBECONFIG\" && echo kubeconfig=ok",
    )
    .label("app", "ground")
    .env_field("POD_NAME", "metadata.name")
    .env_field("POD_NAMESPACE", "metadata.namespace")
    .env_field("POD_UID", "metadata.uid")
    .env_field("APP", "metadata.labels['app']")
    .env_secret("PASSWORD", "creds", "password")
    .env_config_map("OPT", "missing-config", "key", true)
    .env("PLAIN", "hello")
    .env("REF", "$(PLAIN)-world")
    .env_from_config_map("settings", "CFG_");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"}, "data": {"KEY": "v"},
    }))
    .expect("ConfigMap");
    Api::<ConfigMap>::namespaced(c.client.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect("create ConfigMap");
    let created = c.create_pod(&ns, pod).await;
    let uid = created.metadata.uid.clone().expect("uid");

    // The secret does not exist yet: the container is not started.
    let pod = c
        .wait_pod(&ns, "envy", "CreateContainerConfigError", T, |p| {
            container_state(p, "main")
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason)
                .as_deref()
                == Some("CreateContainerConfigError")
        })
        .await;
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    assert_eq!(c.pod_log(&ns, "envy", "main"), "");

    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds"}, "stringData": {"password": "s3cret"},
    }))
    .expect("Secret");
    Api::<Secret>::namespaced(c.client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
    c.wait_phase(&ns, "envy", "Succeeded", T).await;
    let log = c.pod_log(&ns, "envy", "main");
    assert_eq!(
        log,
        format!(
            "name=envy ns={ns} uid={uid} app=ground pw=s3cret opt=[] plain=hello ref=hello-world from=v\n\
             kubeconfig=ok\n"
        )
    );
}

#[tokio::test]
async fn restart_policies_restart_with_a_growing_count() {
    let c = Cluster::connect().await;
    let ns = c.namespace("ground-restart").await;
    // OnFailure: fails twice, then succeeds; the count lives in a file outside the pod.
    let counter = std::env::temp_dir().join(format!("qscaler-ground-{ns}.count"));
    let _ = std::fs::remove_file(&counter);
    let script = format!(
        "n=$(cat {f} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {f}; echo run $n; [ $n -ge 3 ]",
        f = counter.display()
    );
    c.create_pod(
        &ns,
        TestPod::shell("flaky", &script).restart_policy("OnFailure"),
    )
    .await;
    // Restarts are visible while they happen.
    c.wait_pod(
        &ns,
        "flaky",
        "restartCount 1 with the failure as last state",
        T,
        |p| {
            let s = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|v| v.first());
            s.is_some_and(|s| {
                s.restart_count >= 1
                    && s.last_state
                        .as_ref()
                        .and_then(|l| l.terminated.as_ref())
                        .is_some_and(|t| t.exit_code == 1)
            })
        },
    )
    .await;
    let pod = c.wait_phase(&ns, "flaky", "Succeeded", T).await;
    let status = &pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .expect("statuses")[0];
    assert_eq!(status.restart_count, 2);
    assert_eq!(c.pod_log(&ns, "flaky", "main"), "run 1\nrun 2\nrun 3\n");
    // And show up as Events, as `kubectl describe pod` lists them.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.client.clone(), &ns);
    let reasons = wait_for("Started and BackOff events of flaky", T, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await.ok()?;
            let reasons: Vec<String> = list
                .items
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("flaky"))
                .filter_map(|e| e.reason)
                .collect();
            (reasons.iter().any(|r| r == "BackOff") && reasons.iter().any(|r| r == "Started"))
                .then_some(reasons)
        }
    })
    .await;
    assert!(!reasons.is_empty());
    let _ = std::fs::remove_file(&counter);

    // Always: even a clean exit is restarted, and the pod stays Running.
    c.create_pod(
        &ns,
        TestPod::shell("again", "echo run").restart_policy("Always"),
    )
    .await;
    let pod = c
        .wait_pod(&ns, "again", "restartCount >= 2", T, |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|v| v.first())
                .is_some_and(|s| s.restart_count >= 2)
        })
        .await;
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));

    // Never: no restart.
    c.create_pod(&ns, TestPod::shell("once", "echo run; exit 1"))
        .await;
    let pod = c.wait_phase(&ns, "once", "Failed", T).await;
    assert_eq!(
        pod.status
            .and_then(|s| s.container_statuses)
            .expect("statuses")[0]
            .restart_count,
        0
    );
    assert_eq!(c.pod_log(&ns, "once", "main"), "run\n");
    c.delete_pod(&ns, "again", Some(0)).await;
}

#[tokio::test]
async fn workspace_images_map_to_workspace_binaries() {
    let c = Cluster::connect().await;
    let ns = c.namespace("ground-image").await;
    // An image from the table runs the workspace binary first in PATH.
    let pod = TestPod::new("which")
        .image("qscaler/test-worker:dev")
        .command(&[
            "sh",
            "-c",
            "command -v qscaler-kubelet; echo $PATH | cut -d: -f1",
        ]);
    c.create_pod(&ns, pod).await;
    c.wait_phase(&ns, "which", "Succeeded", T).await;
    let log = c.pod_log(&ns, "which", "main");
    let bin = qscaler_tests::workspace_bin("qscaler-kubelet");
    let dir = bin.parent().expect("target/debug");
    let canon = std::fs::canonicalize(dir).unwrap_or(dir.to_path_buf());
    assert!(log.contains(&format!("{}\n", canon.display())), "{log}");
}

#[tokio::test]
async fn init_containers_run_first_and_in_order() {
    let c = Cluster::connect().await;
    let ns = c.namespace("ground-init").await;
    // Containers start in the pod's directory, so files there are shared between them.
    let pod = TestPod::shell("inits", "cat order; echo main >> order").merge(
        json!({"spec": {"initContainers": [
            {"name": "first", "image": "busybox", "command": ["sh", "-c", "echo first > order"]},
            {"name": "second", "image": "busybox", "command": ["sh", "-c", "echo second >> order"]},
        ]}}),
    );
    c.create_pod(&ns, pod).await;
    let pod = c.wait_phase(&ns, "inits", "Succeeded", T).await;
    assert_eq!(c.pod_log(&ns, "inits", "main"), "first\nsecond\n");
    let inits = pod
        .status
        .and_then(|s| s.init_container_statuses)
        .expect("init container statuses");
    let codes: Vec<_> = inits
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code),
            )
        })
        .collect();
    assert_eq!(codes, [("first", Some(0)), ("second", Some(0))]);

    // A failing init container fails a restartPolicy Never pod; the main container never runs.
    let pod =
        TestPod::shell("badinit", "echo should not run").merge(json!({"spec": {"initContainers": [
            {"name": "init", "image": "busybox", "command": ["sh", "-c", "exit 2"]},
        ]}}));
    c.create_pod(&ns, pod).await;
    let pod = c.wait_phase(&ns, "badinit", "Failed", T).await;
    assert_eq!(c.pod_log(&ns, "badinit", "main"), "");
    let waiting = container_state(&pod, "main").and_then(|s| s.waiting);
    assert!(waiting.is_some(), "main never started: {:?}", pod.status);
}

#[tokio::test]
async fn containers_of_a_pod_run_side_by_side() {
    let c = Cluster::connect().await;
    let ns = c.namespace("ground-multi").await;
    let pod = TestPod::shell("pair", "echo a; exit 0").merge(json!({"spec": {"containers": [
        {"name": "main", "image": "busybox", "command": ["sh", "-c", "echo a; exit 0"]},
        {"name": "side", "image": "busybox", "command": ["sh", "-c", "echo b; exit 4"]},
    ]}}));
    c.create_pod(&ns, pod).await;
    let pod = c.wait_phase(&ns, "pair", "Failed", T).await;
    assert_eq!(terminated(&pod, "main").map(|t| t.exit_code), Some(0));
    assert_eq!(terminated(&pod, "side").map(|t| t.exit_code), Some(4));
    assert_eq!(c.pod_log(&ns, "pair", "main"), "a\n");
    assert_eq!(c.pod_log(&ns, "pair", "side"), "b\n");
}

#[tokio::test]
async fn pod_waiting_for_its_config_is_finalized_on_deletion() {
    let c = Cluster::connect().await;
    let ns = c.namespace("ground-pending").await;
    let pod = TestPod::shell("stuck", "echo never").env_secret("X", "no-such-secret", "k");
    c.create_pod(&ns, pod).await;
    c.wait_pod(&ns, "stuck", "CreateContainerConfigError", T, |p| {
        container_state(p, "main")
            .and_then(|s| s.waiting)
            .and_then(|w| w.reason)
            .as_deref()
            == Some("CreateContainerConfigError")
    })
    .await;
    let start = Instant::now();
    c.delete_pod(&ns, "stuck", None).await;
    c.wait_gone(&ns, "stuck", T).await;
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(c.pod_log(&ns, "stuck", "main"), "");
}
