//! Pods for tests: a small builder, and waits on what the stand-in kubelet reports.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::wait::wait_for;

/// A pod with one container named `main` (image `busybox`, restartPolicy Never) to start from.
#[derive(Debug, Clone)]
pub struct TestPod {
    pod: Value,
}

impl TestPod {
    pub fn new(name: &str) -> Self {
        TestPod {
            pod: json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": {}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox"}],
                },
            }),
        }
    }

    /// A pod whose container runs `sh -c script`.
    pub fn shell(name: &str, script: &str) -> Self {
        Self::new(name).command(&["sh", "-c", script])
    }

    fn main(&mut self) -> &mut Value {
        &mut self.pod["spec"]["containers"][0]
    }

    pub fn image(mut self, image: &str) -> Self {
        self.main()["image"] = json!(image);
        self
    }

    pub fn command(mut self, command: &[&str]) -> Self {
        self.main()["command"] = json!(command);
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.main()["args"] = json!(args);
        self
    }

    fn push_env(mut self, var: Value) -> Self {
        let c = self.main();
        if c.get("env").is_none() {
            c["env"] = json!([]);
        }
        if let Some(list) = c["env"].as_array_mut() {
            list.push(var);
        }
        self
    }

    pub fn env(self, name: &str, value: &str) -> Self {
        self.push_env(json!({"name": name, "value": value}))
    }

    /// An env var from the downward API (`metadata.name`, ...).
    pub fn env_field(self, name: &str, field_path: &str) -> Self {
        self.push_env(json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}))
    }

    pub fn env_secret(self, name: &str, secret: &str, key: &str) -> Self {
        self.push_env(
            json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}),
        )
    }

    pub fn env_config_map(self, name: &str, config_map: &str, key: &str, optional: bool) -> Self {
        self.push_env(json!({"name": name, "valueFrom": {"configMapKeyRef": {
            "name": config_map, "key": key, "optional": optional}}}))
    }

    /// All keys of a ConfigMap as env vars, named `<prefix><key>`.
    pub fn env_from_config_map(mut self, config_map: &str, prefix: &str) -> Self {
        let c = self.main();
        if c.get("envFrom").is_none() {
            c["envFrom"] = json!([]);
        }
        if let Some(list) = c["envFrom"].as_array_mut() {
            list.push(json!({"configMapRef": {"name": config_map}, "prefix": prefix}));
        }
        self
    }

    /// `Never`, `OnFailure` or `Always`.
    pub fn restart_policy(mut self, policy: &str) -> Self {
        self.pod["spec"]["restartPolicy"] = json!(policy);
        self
    }

    pub fn grace_period(mut self, seconds: i64) -> Self {
        self.pod["spec"]["terminationGracePeriodSeconds"] = json!(seconds);
        self
    }

    pub fn memory_limit(mut self, quantity: &str) -> Self {
        self.main()["resources"] =
            json!({"limits": {"memory": quantity}, "requests": {"memory": quantity}});
        self
    }

    pub fn service_account(mut self, name: &str) -> Self {
        self.pod["spec"]["serviceAccountName"] = json!(name);
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.pod["metadata"]["labels"][key] = json!(value);
        self
    }

    /// Change anything else with a JSON merge into the pod.
    pub fn merge(mut self, patch: Value) -> Self {
        merge(&mut self.pod, patch);
        self
    }

    pub fn build(self) -> Pod {
        serde_json::from_value(self.pod).expect("TestPod builds a valid Pod")
    }
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

/// The state of a container in a pod's status.
pub fn container_state(pod: &Pod, container: &str) -> Option<ContainerState> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?
        .state
        .clone()
}

/// The terminated state of a container, once it has one.
pub fn terminated(pod: &Pod, container: &str) -> Option<ContainerStateTerminated> {
    container_state(pod, container)?.terminated
}

/// The pod's phase ("" when it has none yet).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

impl Cluster {
    pub fn pods(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub async fn create_pod(&self, namespace: &str, pod: TestPod) -> Pod {
        let pod = pod.build();
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.pods(namespace)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("creating pod {namespace}/{name}: {e}"))
    }

    /// Wait until `pred` holds for the pod; returns the pod.
    pub async fn wait_pod<P>(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: P,
    ) -> Pod
    where
        P: Fn(&Pod) -> bool,
    {
        let api = self.pods(namespace);
        let pred = &pred;
        wait_for(&format!("pod {namespace}/{name}: {what}"), timeout, || {
            let api = api.clone();
            async move { api.get_opt(name).await.ok().flatten().filter(|p| pred(p)) }
        })
        .await
    }

    /// Wait until the pod's phase is `phase` (Pending, Running, Succeeded, Failed).
    pub async fn wait_phase(
        &self,
        namespace: &str,
        name: &str,
        want: &str,
        timeout: Duration,
    ) -> Pod {
        self.wait_pod(namespace, name, &format!("phase {want}"), timeout, |p| {
            phase(p) == want
        })
        .await
    }

    /// Wait until the pod object is gone.
    pub async fn wait_gone(&self, namespace: &str, name: &str, timeout: Duration) {
        let api = self.pods(namespace);
        wait_for(
            &format!("pod {namespace}/{name} to be gone"),
            timeout,
            || {
                let api = api.clone();
                async move { matches!(api.get_opt(name).await, Ok(None)).then_some(()) }
            },
        )
        .await
    }

    /// Delete a pod with a grace period (None: the pod's own).
    pub async fn delete_pod(&self, namespace: &str, name: &str, grace_seconds: Option<u32>) {
        let dp = DeleteParams {
            grace_period_seconds: grace_seconds,
            ..Default::default()
        };
        self.pods(namespace)
            .delete(name, &dp)
            .await
            .unwrap_or_else(|e| panic!("deleting pod {namespace}/{name}: {e}"));
    }

    /// Wait until a container's log contains `needle`; returns the whole log.
    pub async fn wait_log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        needle: &str,
        timeout: Duration,
    ) -> String {
        wait_for(
            &format!("{needle:?} in the log of {namespace}/{pod}/{container}"),
            timeout,
            || {
                let log = self.pod_log(namespace, pod, container);
                async move { log.contains(needle).then_some(log) }
            },
        )
        .await
    }
}
