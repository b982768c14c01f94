//! The Node object: registered at start, its Ready condition kept fresh by a heartbeat.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node as NodeObject;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

/// What the node advertises.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub cpu: String,
    pub memory: String,
    pub pods: String,
}

/// The node's status at `now`: Ready, no pressure, loopback address.
pub fn node_status(
    name: &str,
    capacity: &Capacity,
    ready_since: Timestamp,
    now: Timestamp,
) -> Value {
    let cond = |ty: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": ty, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now.to_string(),
            "lastTransitionTime": ready_since.to_string(),
        })
    };
    let resources = json!({
        "cpu": capacity.cpu, "memory": capacity.memory, "pods": capacity.pods,
        "ephemeral-storage": "100Gi",
    });
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "qscaler stand-in kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": super::status::LOOPBACK},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": "qscaler", "systemUUID": "qscaler", "bootID": "qscaler",
            "kernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "osImage": "qscaler stand-in", "containerRuntimeVersion": "qscaler-local://0.1",
            "kubeletVersion": "v1.20.2-qscaler", "kubeProxyVersion": "v1.20.2-qscaler",
            "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
        },
    })
}

/// Create the Node (or take over an existing one) and post a Ready status.
pub async fn register(
    client: &Client,
    name: &str,
    capacity: &Capacity,
) -> anyhow::Result<Timestamp> {
    let api: Api<NodeObject> = Api::all(client.clone());
    let node: NodeObject = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "qscaler-local",
            },
        },
    }))?;
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = name, "registered"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(node = name, "already registered")
        }
        Err(e) => return Err(anyhow::anyhow!("creating node {name}: {e}")),
    }
    let since = Timestamp::now();
    post_status(&api, name, capacity, since).await?;
    Ok(since)
}

async fn post_status(
    api: &Api<NodeObject>,
    name: &str,
    capacity: &Capacity,
    since: Timestamp,
) -> anyhow::Result<()> {
    let status = node_status(name, capacity, since, Timestamp::now());
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(|e| anyhow::anyhow!("posting node status: {e}"))?;
    Ok(())
}

/// Keep the node Ready: post its status every `period`, recreating the node if it was deleted.
pub async fn heartbeat(
    client: Client,
    name: String,
    capacity: Capacity,
    since: Timestamp,
    period: Duration,
) {
    let api: Api<NodeObject> = Api::all(client.clone());
    let mut since = since;
    loop {
        tokio::time::sleep(period).await;
        if let Err(e) = post_status(&api, &name, &capacity, since).await {
            tracing::warn!(error = %e, "heartbeat failed; re-registering");
            match register(&client, &name, &capacity).await {
                Ok(t) => since = t,
                Err(e) => tracing::warn!(error = %e, "re-registering failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_ready_with_loopback_address_and_capacity() {
        let cap = Capacity {
            cpu: "64".into(),
            memory: "256Gi".into(),
            pods: "1000".into(),
        };
        let now = Timestamp::from_second(1_700_000_000).expect("valid");
        let s = node_status("n", &cap, now, now);
        let node: NodeObject =
            serde_json::from_value(json!({"metadata": {"name": "n"}, "status": s}))
                .expect("a valid NodeStatus");
        let status = node.status.expect("status");
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.status, "True");
        assert_eq!(status.addresses.expect("addresses")[0].address, "127.0.0.1");
        assert_eq!(status.capacity.expect("capacity")["pods"].0, "1000");
    }
}
