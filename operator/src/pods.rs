//! The worker pod the operator creates: a bare Pod (no ReplicaSet: it would restart a worker that
//! exited on purpose and pick victims at random) built from the QWorker's template.
//!
//! - `generateName: <qworker>-<short hash>-`, a controller owner reference to the QWorker (garbage
//!   collection, `Controller::owns`), labels `quickube.com/qworker`, `quickube.com/pod-spec-hash`
//!   (short), `app.kubernetes.io/managed-by` over the user's podMetadata labels.
//! - restartPolicy `Never` unless the user chose `OnFailure`: a clean exit (drain) ends the pod.
//! - env injected first into every container (a user's own variable of the same name comes later
//!   and wins): QWorker name, full hash, pod name/namespace (downward API), container name, queue and
//!   broker address; the password only as a secretKeyRef (an inline password is not injected: it would
//!   be readable in the pod spec; see [`BuiltPod::warnings`]); with TLS, whether to skip verification
//!   and the CA bundle, again only as a secretKeyRef.

use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, ObjectFieldSelector, Pod, SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;

use kube::Resource;
use qscaler_crds::hash::PodSpecHash;
use qscaler_crds::names::{self, env};
use qscaler_crds::scalerconfig::{SecretKeyRef, SentinelConfig};
use qscaler_crds::{QWorker, ScalerConfig};

use crate::sizing::{quantities, Requests};

/// A pod to create and what the user should know about it.
#[derive(Clone, Debug)]
pub struct BuiltPod {
    pub pod: Pod,
    pub warnings: Vec<String>,
}

fn var(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.into(),
            }),
            ..Default::default()
        }),
    }
}

/// A variable read by the kubelet from a key of a Secret in the pod's namespace (the ScalerConfig's
/// namespace too): the value never appears in the pod spec. Not optional: a missing key keeps the
/// container from starting, which is clearer than a worker without its password or CA.
fn secret_var(name: &str, r: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name.clone(),
                key: r.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

/// The controller owner reference pointing at `qw`.
pub fn owner_reference(qw: &QWorker) -> OwnerReference {
    OwnerReference {
        api_version: QWorker::api_version(&()).into_owned(),
        kind: QWorker::kind(&()).into_owned(),
        name: qw.metadata.name.clone().unwrap_or_default(),
        uid: qw.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The env every container of `qw`'s pods gets, and warnings about what was left out.
pub fn injected_env(
    qw: &QWorker,
    hash: &PodSpecHash,
    container: &str,
    scaler: Option<&ScalerConfig>,
) -> (Vec<EnvVar>, Vec<String>) {
    let mut warnings = vec![];
    let mut vars = vec![
        var(
            env::QWORKER_NAME,
            qw.metadata.name.clone().unwrap_or_default(),
        ),
        var(env::POD_SPEC_HASH, hash.full()),
        field(env::POD_NAME, "metadata.name"),
        field(env::POD_NAMESPACE, "metadata.namespace"),
        var(env::CONTAINER_NAME, container),
        var(env::QUEUE, qw.spec.scale_config.queue_names().join(",")),
    ];
    if let Some(secs) = qw.spec.scale_config.max_task_seconds.filter(|s| *s >= 1) {
        vars.push(var(env::MAX_TASK_SECONDS, secs.to_string()));
    }
    // Task mode consumes a stream with its group; a list needs nothing (the default).
    let s = &qw.spec.scale_config;
    if s.format == qscaler_crds::qworker::QueueFormat::Stream {
        vars.push(var(env::QUEUE_FORMAT, s.format.name()));
        vars.push(var(env::STREAM_GROUP, s.stream_group()));
    }
    if let Some(sc) = scaler {
        let c = &sc.spec.config;
        match (&c.sentinel, &c.cluster) {
            (Some(s), _) => {
                sentinel_env(&mut vars, s);
                if s.password_secret().is_none()
                    && s.password.as_ref().is_some_and(|p| p.value.is_some())
                {
                    warnings.push(format!(
                        "ScalerConfig {} has an inline sentinel password: it is not injected into \
                         worker pods ({} unset); use sentinel.password.valueFrom.secretKeyRef",
                        sc.metadata.name.as_deref().unwrap_or_default(),
                        env::REDIS_SENTINEL_PASSWORD
                    ));
                }
            }
            (None, Some(cl)) => vars.push(var(env::REDIS_CLUSTER, cl.nodes.join(","))),
            (None, None) => {
                vars.push(var(env::REDIS_HOST, c.host.clone()));
                if let Ok(port) = c.port_number() {
                    vars.push(var(env::REDIS_PORT, port.to_string()));
                }
            }
        }
        vars.push(var(env::REDIS_DB, c.db.unwrap_or(0).to_string()));
        if let Some(u) = &c.username {
            vars.push(var(env::REDIS_USERNAME, u.clone()));
        }
        let tls = c.tls_enabled();
        vars.push(var(env::REDIS_TLS, tls.is_some().to_string()));
        if let Some(t) = tls {
            vars.push(var(
                env::REDIS_TLS_INSECURE,
                t.insecure_skip_verify.to_string(),
            ));
        }
        if let Some(ca) = c.tls_ca_secret() {
            vars.push(secret_var(env::REDIS_TLS_CA, ca));
        }
        if let Some(secret) = c.password_secret() {
            vars.push(secret_var(env::REDIS_PASSWORD, secret));
        } else if c.password.as_ref().is_some_and(|p| p.value.is_some()) {
            warnings.push(format!(
                "ScalerConfig {} has an inline password: it is not injected into worker pods \
                 ({} unset); use password.valueFrom.secretKeyRef",
                sc.metadata.name.as_deref().unwrap_or_default(),
                env::REDIS_PASSWORD
            ));
        }
    }
    (vars, warnings)
}

/// Where the sentinels are and how to log in to them (a password only from its Secret).
fn sentinel_env(vars: &mut Vec<EnvVar>, s: &SentinelConfig) {
    vars.push(var(env::REDIS_SENTINELS, s.nodes.join(",")));
    vars.push(var(env::REDIS_SENTINEL_MASTER, s.master_name.clone()));
    if let Some(u) = &s.username {
        vars.push(var(env::REDIS_SENTINEL_USERNAME, u.clone()));
    }
    if let Some(r) = s.password_secret() {
        vars.push(secret_var(env::REDIS_SENTINEL_PASSWORD, r));
    }
    if let Some(t) = s.tls_enabled() {
        vars.push(var(env::REDIS_SENTINEL_TLS, "true"));
        vars.push(var(
            env::REDIS_SENTINEL_TLS_INSECURE,
            t.insecure_skip_verify.to_string(),
        ));
    }
    if let Some(r) = s.tls_ca_secret() {
        vars.push(secret_var(env::REDIS_SENTINEL_TLS_CA, r));
    }
}

/// The pod to create for `qw` at `hash`; `sizes` are the vertical-sizing requests per container
/// (activateVPA), recorded in the `quickube.com/vpa-requests` annotation too.
pub fn build_pod(
    qw: &QWorker,
    hash: &PodSpecHash,
    scaler: Option<&ScalerConfig>,
    sizes: &BTreeMap<String, Requests>,
) -> BuiltPod {
    let name = qw.metadata.name.clone().unwrap_or_default();
    let meta = qw.spec.pod_metadata.clone().unwrap_or_default();
    let mut labels = meta.labels;
    labels.insert(names::LABEL_QWORKER.into(), name.clone());
    labels.insert(names::LABEL_POD_SPEC_HASH.into(), hash.short().into());
    labels.insert(
        names::LABEL_MANAGED_BY.into(),
        names::MANAGED_BY_VALUE.into(),
    );

    let mut spec = qw.spec.pod_spec.clone();
    if spec.restart_policy.as_deref() != Some("OnFailure") {
        spec.restart_policy = Some("Never".into());
    }
    // The user's own grace wins; otherwise maxTaskSeconds + the margin (none: Kubernetes' 30 s).
    if spec.termination_grace_period_seconds.is_none() {
        spec.termination_grace_period_seconds = qw.spec.scale_config.grace_for_pods();
    }
    let mut warnings = vec![];
    let mut applied = serde_json::Map::new();
    for c in &mut spec.containers {
        if let Some(r) = sizes.get(&c.name) {
            let q = quantities(r);
            if !q.is_empty() {
                let res = c.resources.get_or_insert_with(Default::default);
                let requests = res.requests.get_or_insert_with(Default::default);
                requests.extend(q.clone());
                applied.insert(c.name.clone(), serde_json::to_value(&q).unwrap_or_default());
            }
        }
        let (mut vars, w) = injected_env(qw, hash, &c.name, scaler);
        if warnings.is_empty() {
            warnings = w;
        }
        vars.extend(c.env.take().unwrap_or_default());
        c.env = Some(vars);
    }
    let mut annotations = meta.annotations;
    if !applied.is_empty() {
        annotations.insert(
            names::ANNOTATION_VPA_REQUESTS.into(),
            serde_json::Value::Object(applied).to_string(),
        );
    }
    BuiltPod {
        pod: Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}-{}-", hash.short())),
                namespace: qw.metadata.namespace.clone(),
                labels: Some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                owner_references: Some(vec![owner_reference(qw)]),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        },
        warnings,
    }
}

/// The broker a worker pod consumes from, as its env says: the operator copied the ScalerConfig's
/// settings into the pod when it created it, and a later ScalerConfig change does not reach a
/// running pod. The tasks a dead pod held are in this broker, whatever the ScalerConfig says now.
#[derive(Clone, Debug, PartialEq)]
pub struct PodBroker {
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub username: Option<String>,
    pub tls: bool,
    pub tls_insecure: bool,
    /// The password's Secret (in the pod's namespace), when the pod reads one.
    pub password: Option<SecretKeyRef>,
    /// The CA bundle's Secret, when the pod reads one.
    pub ca: Option<SecretKeyRef>,
}

/// Where `pod` consumes from: the first container with a `QSCALER_REDIS_HOST` (the last definition
/// of each variable wins, as in Kubernetes). `None` when no container says (not a task-mode pod of
/// this operator) or one sets `QSCALER_REDIS_URL` (the URL overrides the variables).
pub fn broker_of(pod: &Pod) -> Option<PodBroker> {
    let containers = &pod.spec.as_ref()?.containers;
    let c = containers.iter().find(|c| {
        c.env
            .iter()
            .flatten()
            .any(|e| e.name == env::REDIS_HOST && e.value.is_some())
    })?;
    let last = |name: &str| c.env.iter().flatten().rev().find(|e| e.name == name);
    let value = |name: &str| last(name).and_then(|e| e.value.clone());
    let secret = |name: &str| {
        last(name)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|f| f.secret_key_ref.as_ref())
            .map(|r| SecretKeyRef {
                name: r.name.clone(),
                key: r.key.clone(),
            })
    };
    if last("QSCALER_REDIS_URL").is_some() {
        return None;
    }
    Some(PodBroker {
        host: value(env::REDIS_HOST)?,
        port: value(env::REDIS_PORT)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(6379),
        db: value(env::REDIS_DB)
            .and_then(|d| d.trim().parse().ok())
            .unwrap_or(0),
        username: value(env::REDIS_USERNAME).filter(|u| !u.is_empty()),
        tls: value(env::REDIS_TLS).is_some_and(|v| v == "true"),
        tls_insecure: value(env::REDIS_TLS_INSECURE).is_some_and(|v| v == "true"),
        password: secret(env::REDIS_PASSWORD),
        ca: secret(env::REDIS_TLS_CA),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use qscaler_crds::hash::pod_spec_hash;
    use serde_json::json;

    fn qworker(restart: Option<&str>) -> QWorker {
        let mut spec = json!({
            "podSpec": {"containers": [
                {"name": "main", "image": "i", "env": [{"name": "QSCALER_QUEUE", "value": "mine"}]},
                {"name": "side", "image": "j"}
            ]},
            "podMetadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}},
            "scaleConfig": {"scalerConfigRef": "redis", "queue": "jobs", "maxReplicas": 3}
        });
        if let Some(r) = restart {
            spec["podSpec"]["restartPolicy"] = json!(r);
        }
        let mut qw = QWorker::new("w", serde_json::from_value(spec).unwrap());
        qw.metadata.namespace = Some("ns".into());
        qw.metadata.uid = Some("uid-1".into());
        qw
    }

    fn scaler(password: serde_json::Value) -> ScalerConfig {
        ScalerConfig::new(
            "redis",
            serde_json::from_value(json!({
                "type": "redis",
                "config": {"host": "r.local", "port": "6380", "db": 2, "username": "u", "password": password}
            }))
            .unwrap(),
        )
    }

    fn env_of(pod: &Pod, container: usize) -> Vec<EnvVar> {
        pod.spec.as_ref().unwrap().containers[container]
            .env
            .clone()
            .unwrap()
    }

    #[test]
    fn pod_shape() {
        let qw = qworker(None);
        let hash = pod_spec_hash(&qw.spec);
        let built = build_pod(&qw, &hash, None, &BTreeMap::new());
        let pod = built.pod;
        let meta = &pod.metadata;
        assert_eq!(
            meta.generate_name.as_deref(),
            Some(format!("w-{}-", hash.short()).as_str())
        );
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[names::LABEL_QWORKER], "w");
        assert_eq!(labels[names::LABEL_POD_SPEC_HASH], hash.short());
        assert_eq!(labels[names::LABEL_MANAGED_BY], names::MANAGED_BY_VALUE);
        assert_eq!(labels["team"], "a");
        assert_eq!(meta.annotations.as_ref().unwrap()["note"], "x");
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("QWorker", "uid-1", Some(true))
        );
        assert_eq!(owner.api_version, "quickube.com/v1alpha1");
        assert_eq!(
            pod.spec.as_ref().unwrap().restart_policy.as_deref(),
            Some("Never")
        );
        let env = env_of(&pod, 0);
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names[..6],
            [
                env::QWORKER_NAME,
                env::POD_SPEC_HASH,
                env::POD_NAME,
                env::POD_NAMESPACE,
                env::CONTAINER_NAME,
                env::QUEUE
            ]
        );
        assert_eq!(env[1].value.as_deref(), Some(hash.full()));
        assert_eq!(env[4].value.as_deref(), Some("main"));
        // The user's own variable comes last and wins.
        assert_eq!(env.last().unwrap().value.as_deref(), Some("mine"));
        assert_eq!(env_of(&pod, 1)[4].value.as_deref(), Some("side"));
    }

    #[test]
    fn max_task_seconds_sets_grace_and_env_but_not_the_hash() {
        let plain = qworker(None);
        let mut qw = plain.clone();
        qw.spec.scale_config.max_task_seconds = Some(120);
        // A scale setting: the template's identity does not change, so no rollout.
        assert_eq!(pod_spec_hash(&qw.spec), pod_spec_hash(&plain.spec));
        let hash = pod_spec_hash(&qw.spec);
        let pod = build_pod(&qw, &hash, None, &BTreeMap::new()).pod;
        assert_eq!(
            pod.spec.as_ref().unwrap().termination_grace_period_seconds,
            Some(120 + qscaler_crds::qworker::GRACE_MARGIN_SECONDS)
        );
        for c in 0..2 {
            let env = env_of(&pod, c);
            let v = find(&env, env::MAX_TASK_SECONDS).and_then(|e| e.value.as_deref());
            assert_eq!(v, Some("120"));
        }
        // The user's own grace wins; the supervisor still learns the task limit.
        qw.spec.pod_spec.termination_grace_period_seconds = Some(7);
        let pod = build_pod(&qw, &hash, None, &BTreeMap::new()).pod;
        assert_eq!(
            pod.spec.as_ref().unwrap().termination_grace_period_seconds,
            Some(7)
        );
        assert!(find(&env_of(&pod, 0), env::MAX_TASK_SECONDS).is_some());
        // Unset: neither (the Kubernetes default grace applies).
        let pod = build_pod(&plain, &hash, None, &BTreeMap::new()).pod;
        assert_eq!(
            pod.spec.as_ref().unwrap().termination_grace_period_seconds,
            None
        );
        assert!(find(&env_of(&pod, 0), env::MAX_TASK_SECONDS).is_none());
    }

    #[test]
    fn a_stream_queue_tells_the_supervisor_its_format_and_group() {
        let value = |qw: &QWorker, name: &str| {
            let pod = build_pod(qw, &pod_spec_hash(&qw.spec), None, &BTreeMap::new()).pod;
            find(&env_of(&pod, 0), name).and_then(|e| e.value.clone())
        };
        let mut qw = qworker(None);
        assert_eq!(value(&qw, env::QUEUE_FORMAT), None);
        assert_eq!(value(&qw, env::STREAM_GROUP), None);
        qw.spec.scale_config.format = qscaler_crds::qworker::QueueFormat::Stream;
        assert_eq!(value(&qw, env::QUEUE_FORMAT).as_deref(), Some("stream"));
        assert_eq!(
            value(&qw, env::STREAM_GROUP).as_deref(),
            Some(names::stream::DEFAULT_GROUP)
        );
        qw.spec.scale_config.stream_group = Some("billing".into());
        assert_eq!(value(&qw, env::STREAM_GROUP).as_deref(), Some("billing"));
    }

    #[test]
    fn on_failure_is_kept_anything_else_becomes_never() {
        let h = |qw: &QWorker| pod_spec_hash(&qw.spec);
        for (given, want) in [
            (Some("OnFailure"), "OnFailure"),
            (Some("Always"), "Never"),
            (None, "Never"),
        ] {
            let qw = qworker(given);
            let pod = build_pod(&qw, &h(&qw), None, &BTreeMap::new()).pod;
            assert_eq!(pod.spec.unwrap().restart_policy.as_deref(), Some(want));
        }
    }

    #[test]
    fn broker_env_with_secret_password() {
        let qw = qworker(None);
        let sc = scaler(json!({"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}));
        let built = build_pod(&qw, &pod_spec_hash(&qw.spec), Some(&sc), &BTreeMap::new());
        assert!(built.warnings.is_empty());
        let env = env_of(&built.pod, 0);
        let get = |n: &str| env.iter().find(|e| e.name == n).cloned();
        assert_eq!(
            get(env::REDIS_HOST).unwrap().value.as_deref(),
            Some("r.local")
        );
        assert_eq!(get(env::REDIS_PORT).unwrap().value.as_deref(), Some("6380"));
        assert_eq!(get(env::REDIS_DB).unwrap().value.as_deref(), Some("2"));
        assert_eq!(
            get(env::REDIS_USERNAME).unwrap().value.as_deref(),
            Some("u")
        );
        assert_eq!(get(env::REDIS_TLS).unwrap().value.as_deref(), Some("false"));
        assert!(get(env::REDIS_TLS_INSECURE).is_none());
        assert!(get(env::REDIS_TLS_CA).is_none());
        let pw = get(env::REDIS_PASSWORD).unwrap();
        assert!(pw.value.is_none());
        let sel = pw.value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("s", "k"));
    }

    #[test]
    fn sentinel_and_cluster_env_instead_of_the_host() {
        let qw = qworker(None);
        let mut sc = scaler(json!({"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}));
        sc.spec.config.host = String::new();
        sc.spec.config.sentinel = Some(
            serde_json::from_value(json!({"nodes": ["s1:26379", "s2:26379"], "masterName": "m",
                "username": "su", "password": {"valueFrom": {"secretKeyRef": {"name": "sp", "key": "pw"}}},
                "tls": {"enabled": true, "insecureSkipVerify": true}}))
            .unwrap(),
        );
        let built = build_pod(&qw, &pod_spec_hash(&qw.spec), Some(&sc), &BTreeMap::new());
        assert!(built.warnings.is_empty(), "{:?}", built.warnings);
        let env = env_of(&built.pod, 0);
        let value = |n: &str| find(&env, n).and_then(|e| e.value.clone());
        assert_eq!(
            value(env::REDIS_SENTINELS).as_deref(),
            Some("s1:26379,s2:26379")
        );
        assert_eq!(value(env::REDIS_SENTINEL_MASTER).as_deref(), Some("m"));
        assert_eq!(value(env::REDIS_SENTINEL_USERNAME).as_deref(), Some("su"));
        assert_eq!(value(env::REDIS_SENTINEL_TLS).as_deref(), Some("true"));
        assert_eq!(
            value(env::REDIS_SENTINEL_TLS_INSECURE).as_deref(),
            Some("true")
        );
        let pw = find(&env, env::REDIS_SENTINEL_PASSWORD).unwrap();
        assert!(pw.value.is_none(), "never inline");
        assert!(find(&env, env::REDIS_HOST).is_none() && find(&env, env::REDIS_PORT).is_none());
        // The data nodes' own password still comes from its Secret.
        assert!(find(&env, env::REDIS_PASSWORD).is_some());
        // An inline sentinel password is not injected, and said so.
        sc.spec.config.sentinel.as_mut().unwrap().password =
            Some(serde_json::from_value(json!({"value": "hunter2"})).unwrap());
        let built = build_pod(&qw, &pod_spec_hash(&qw.spec), Some(&sc), &BTreeMap::new());
        assert!(built
            .warnings
            .iter()
            .any(|w| w.contains("inline sentinel password")));
        let env = env_of(&built.pod, 0);
        assert!(find(&env, env::REDIS_SENTINEL_PASSWORD).is_none());
        assert!(!format!("{env:?}").contains("hunter2"));

        sc.spec.config.sentinel = None;
        sc.spec.config.cluster =
            Some(serde_json::from_value(json!({"nodes": ["c1:7000", "c2:7000"]})).unwrap());
        let built = build_pod(&qw, &pod_spec_hash(&qw.spec), Some(&sc), &BTreeMap::new());
        let env = env_of(&built.pod, 0);
        assert_eq!(
            find(&env, env::REDIS_CLUSTER).and_then(|e| e.value.as_deref()),
            Some("c1:7000,c2:7000")
        );
        assert!(
            find(&env, env::REDIS_HOST).is_none() && find(&env, env::REDIS_SENTINELS).is_none()
        );
    }

    fn tls_env(tls: serde_json::Value) -> Vec<EnvVar> {
        let qw = qworker(None);
        let mut sc = scaler(json!({"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}));
        sc.spec.config.tls = Some(serde_json::from_value(tls).unwrap());
        let built = build_pod(&qw, &pod_spec_hash(&qw.spec), Some(&sc), &BTreeMap::new());
        env_of(&built.pod, 0)
    }

    fn find<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a EnvVar> {
        env.iter().find(|e| e.name == name)
    }

    #[test]
    fn tls_env_with_a_ca_from_a_secret() {
        let env =
            tls_env(json!({"enabled": true, "caSecretRef": {"name": "redis-ca", "key": "ca.crt"}}));
        let value = |n: &str| find(&env, n).and_then(|e| e.value.as_deref());
        assert_eq!(value(env::REDIS_TLS), Some("true"));
        assert_eq!(value(env::REDIS_TLS_INSECURE), Some("false"));
        let ca = find(&env, env::REDIS_TLS_CA).unwrap();
        // Never inline: the kubelet reads the Secret.
        assert!(ca.value.is_none());
        let sel = ca
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (sel.name.as_str(), sel.key.as_str(), sel.optional),
            ("redis-ca", "ca.crt", Some(false))
        );
    }

    #[test]
    fn tls_env_without_a_ca_or_insecure() {
        let env = tls_env(json!({"enabled": true, "insecureSkipVerify": true}));
        let value = |n: &str| find(&env, n).and_then(|e| e.value.as_deref());
        assert_eq!(value(env::REDIS_TLS), Some("true"));
        assert_eq!(value(env::REDIS_TLS_INSECURE), Some("true"));
        assert!(find(&env, env::REDIS_TLS_CA).is_none());
        // TLS off: neither TLS variable beyond QSCALER_REDIS_TLS=false, even with a stray caSecretRef
        // (validation reports that spec).
        let env = tls_env(json!({"enabled": false, "caSecretRef": {"name": "c", "key": "k"}}));
        assert_eq!(
            find(&env, env::REDIS_TLS).and_then(|e| e.value.as_deref()),
            Some("false")
        );
        assert!(find(&env, env::REDIS_TLS_INSECURE).is_none());
        assert!(find(&env, env::REDIS_TLS_CA).is_none());
    }

    #[test]
    fn vpa_requests_are_applied_and_annotated_without_touching_the_hash() {
        let qw = qworker(None);
        let hash = pod_spec_hash(&qw.spec);
        let sizes: BTreeMap<String, Requests> = [(
            "main".to_string(),
            Requests {
                cpu_millis: Some(250),
                memory_bytes: Some(1 << 20),
            },
        )]
        .into();
        let pod = build_pod(&qw, &hash, None, &sizes).pod;
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let req = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(req["cpu"].0, "250m");
        assert_eq!(req["memory"].0, "1048576");
        assert!(pod.spec.as_ref().unwrap().containers[1].resources.is_none());
        let ann = &pod.metadata.annotations.as_ref().unwrap()[names::ANNOTATION_VPA_REQUESTS];
        let v: serde_json::Value = serde_json::from_str(ann).unwrap();
        assert_eq!(v["main"]["cpu"], "250m");
        assert_eq!(
            pod.metadata.labels.as_ref().unwrap()[names::LABEL_POD_SPEC_HASH],
            hash.short()
        );
        assert_eq!(pod_spec_hash(&qw.spec), hash);
    }

    #[test]
    fn a_pod_says_which_broker_it_consumes_from() {
        let qw = qworker(None);
        let mut sc = scaler(json!({"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}));
        sc.spec.config.tls = Some(
            serde_json::from_value(
                json!({"enabled": true, "caSecretRef": {"name": "ca", "key": "ca.crt"}}),
            )
            .unwrap(),
        );
        let pod = build_pod(&qw, &pod_spec_hash(&qw.spec), Some(&sc), &BTreeMap::new()).pod;
        let b = broker_of(&pod).expect("a broker");
        assert_eq!(
            b,
            PodBroker {
                host: "r.local".into(),
                port: 6380,
                db: 2,
                username: Some("u".into()),
                tls: true,
                tls_insecure: false,
                password: Some(SecretKeyRef {
                    name: "s".into(),
                    key: "k".into()
                }),
                ca: Some(SecretKeyRef {
                    name: "ca".into(),
                    key: "ca.crt".into()
                }),
            }
        );
        // No ScalerConfig, nothing injected: unknown.
        let bare = build_pod(&qw, &pod_spec_hash(&qw.spec), None, &BTreeMap::new()).pod;
        assert_eq!(broker_of(&bare), None);
        // A user's own variable comes later and wins, as the supervisor sees it.
        let mut own = pod.clone();
        own.spec.as_mut().unwrap().containers[0]
            .env
            .as_mut()
            .unwrap()
            .push(var(env::REDIS_DB, "5"));
        assert_eq!(broker_of(&own).unwrap().db, 5);
        // A URL overrides the variables: not read here.
        own.spec.as_mut().unwrap().containers[0]
            .env
            .as_mut()
            .unwrap()
            .push(var("QSCALER_REDIS_URL", "redis://elsewhere/1"));
        assert_eq!(broker_of(&own), None);
    }

    #[test]
    fn inline_password_is_never_injected() {
        let qw = qworker(None);
        let sc = scaler(json!({"value": "hunter2"}));
        let built = build_pod(&qw, &pod_spec_hash(&qw.spec), Some(&sc), &BTreeMap::new());
        assert_eq!(built.warnings.len(), 1);
        let text = serde_json::to_string(&built.pod).unwrap();
        assert!(!text.contains("hunter2"));
        assert!(!text.contains(env::REDIS_PASSWORD));
    }
}
