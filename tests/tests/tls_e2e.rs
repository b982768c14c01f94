//! TLS to Redis end to end on the local cluster: a TLS-only redis-server of the test's own (a CA
//! and server certificate made by `openssl` for this run), the CA in a Secret, a ScalerConfig with
//! `tls.enabled` and `tls.caSecretRef`. The operator must verify the server with that CA (Ready),
//! refuse it with the system roots alone, and accept it with `insecureSkipVerify`; a task-mode QWorker's qsupervisor must get the CA
//! through a secretKeyRef and consume tasks pushed over TLS, with the queue depth in its status.
//!
//! Needs the local cluster (`tests/cluster.sh up && eval "$(tests/cluster.sh env)"`) and the
//! binaries built (`cargo build --workspace --bins`).

mod common;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::Api;
use qscaler_crds::conditions as cond;
use qscaler_crds::names::env;
use qscaler_crds::ScalerConfig;
use qscaler_tests::operator::Operator;
use qscaler_tests::{wait_for, Cluster};
use redis::AsyncCommands;
use serde_json::json;

use common::*;

/// The Ready condition of a ScalerConfig: (status, reason, message).
async fn ready(cluster: &Cluster, ns: &str, name: &str) -> Option<(String, String, String)> {
    let sc = Api::<ScalerConfig>::namespaced(cluster.client.clone(), ns)
        .get(name)
        .await
        .ok()?;
    let c = sc
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == cond::READY)?;
    Some((c.status, c.reason, c.message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_from_a_secret() {
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace("tls").await;
    let _guard = NamespaceGuard {
        kubeconfig: cluster.kubeconfig.clone(),
        ns: ns.clone(),
    };
    worker_rbac(&cluster, &ns).await;
    let redis = OwnRedis::start_tls().await;
    let ca_pem = redis.tls().expect("a TLS redis").ca_pem.clone();

    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis-ca"},
        "stringData": {"ca.crt": ca_pem}
    }))
    .expect("Secret");
    Api::<Secret>::namespaced(cluster.client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the CA Secret");
    scaler_config_with(
        &cluster,
        &ns,
        redis.port,
        json!({"tls": {"enabled": true, "caSecretRef": {"name": "redis-ca", "key": "ca.crt"}}}),
    )
    .await;
    // The same server with the system roots only: its certificate must be refused; with
    // verification skipped (test set-ups), accepted.
    for (name, tls) in [
        ("system-roots", json!({"enabled": true})),
        (
            "insecure",
            json!({"enabled": true, "insecureSkipVerify": true}),
        ),
    ] {
        let sc: ScalerConfig = serde_json::from_value(json!({
            "apiVersion": "quickube.com/v1alpha1", "kind": "ScalerConfig",
            "metadata": {"name": name},
            "spec": {"type": "redis", "config": {"host": "127.0.0.1", "port": redis.port, "tls": tls}}
        }))
        .expect("ScalerConfig");
        Api::<ScalerConfig>::namespaced(cluster.client.clone(), &ns)
            .create(&PostParams::default(), &sc)
            .await
            .expect("creating ScalerConfig");
    }
    let op = Operator::start(&cluster, &ns, &[]).await;

    let (_, reason, _) = wait_for("ScalerConfig redis Ready=True over TLS", T, || async {
        ready(&cluster, &ns, "redis")
            .await
            .filter(|(s, _, _)| s == "True")
    })
    .await;
    assert_eq!(reason, cond::reason::CONNECTED, "{}", op.log());
    let (_, reason, message) = wait_for("ScalerConfig system-roots Ready=False", T, || async {
        ready(&cluster, &ns, "system-roots")
            .await
            .filter(|(s, _, _)| s == "False")
    })
    .await;
    assert_eq!(reason, cond::reason::BROKER_UNREACHABLE);
    assert!(message.contains("certificate"), "{message}");
    wait_for("ScalerConfig insecure Ready=True", T, || async {
        ready(&cluster, &ns, "insecure")
            .await
            .filter(|(s, _, _)| s == "True")
    })
    .await;

    // One task-mode worker; each task waits for a gate file, so the depth stays put while we look.
    let dir = std::env::temp_dir().join(format!("qscaler-tls-e2e-{ns}"));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let (gate, out) = (dir.join("gate"), dir.join("out"));
    let queue = format!("{ns}-jobs");
    let script = format!(
        "t=$(cat); while [ ! -e {g} ]; do sleep 0.1; done; echo \"$t\" >> {o}",
        g = gate.display(),
        o = out.display()
    );
    let mut qw = qworker("w", &queue, &[], json!({"maxReplicas": 1}));
    qw["spec"]["podSpec"]["containers"][0]["args"] = json!(["--task", "--", "sh", "-c", script]);
    create_qworker(&cluster, &ns, qw).await;
    let mut conn = redis.conn().await;
    push_tasks(&mut conn, &queue, 0..4).await;

    wait_for("status: 3 queued and 1 in flight", T, || async {
        let st = get_qworker(&cluster, &ns, "w").await.status?;
        (st.queue_depth == Some(3) && st.in_flight == Some(1)).then_some(())
    })
    .await;
    // The worker got the CA as a secretKeyRef, never inline.
    let pods = worker_pods(&cluster, &ns, "w").await;
    let container = &pods[0].spec.as_ref().expect("pod spec").containers[0];
    let vars: BTreeMap<&str, _> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e))
        .collect();
    assert_eq!(vars[env::REDIS_TLS].value.as_deref(), Some("true"));
    assert_eq!(
        vars[env::REDIS_TLS_INSECURE].value.as_deref(),
        Some("false")
    );
    let ca = vars[env::REDIS_TLS_CA];
    assert!(ca.value.is_none());
    let sel = ca
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("a secretKeyRef");
    assert_eq!(
        (sel.name.as_str(), sel.key.as_str()),
        ("redis-ca", "ca.crt")
    );

    std::fs::write(&gate, "").expect("gate");
    wait_for("all 4 tasks done over TLS", T, || async {
        let done = std::fs::read_to_string(&out).unwrap_or_default();
        (done.lines().count() >= 4).then_some(())
    })
    .await;
    let mut done: Vec<String> = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    done.sort();
    assert_eq!(done, ["t0", "t1", "t2", "t3"], "each task exactly once");
    wait_for("status: queue and in-flight empty", T, || async {
        let st = get_qworker(&cluster, &ns, "w").await.status?;
        (st.queue_depth == Some(0) && st.in_flight == Some(0)).then_some(())
    })
    .await;
    let left: usize = conn.llen(&queue).await.expect("LLEN over TLS");
    assert_eq!(left, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
