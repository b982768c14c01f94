//! The scheduler this cluster lacks: every pod without a node is bound to this node.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::json;

/// The Binding that puts `pod` on `node`.
pub fn binding(namespace: &str, pod: &str, node: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": { "name": pod, "namespace": namespace },
        "target": { "apiVersion": "v1", "kind": "Node", "name": node },
    })
}

async fn bind(client: Client, namespace: String, name: String, node: String) {
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let body = binding(&namespace, &name, &node);
    for attempt in 0..20 {
        match api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &body,
            )
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %format!("{namespace}/{name}"), "bound");
                return;
            }
            // Already bound, or deleted meanwhile.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => return,
            Err(e) => {
                tracing::warn!(pod = %name, attempt, error = %e, "binding failed; retrying");
                tokio::time::sleep(Duration::from_millis(250 * (attempt + 1))).await;
            }
        }
    }
}

/// Watch unbound pods forever and bind each.
pub async fn run(client: Client, node: String) {
    let api: Api<Pod> = Api::all(client.clone());
    let stream = watcher(api, watcher::Config::default().fields("spec.nodeName="))
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(pod) => {
                let unbound = pod
                    .spec
                    .as_ref()
                    .is_none_or(|s| s.node_name.as_deref().unwrap_or("").is_empty());
                if unbound && pod.metadata.deletion_timestamp.is_none() {
                    let ns = pod.metadata.namespace.clone().unwrap_or_default();
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    tokio::spawn(bind(client.clone(), ns, name, node.clone()));
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching unbound pods"),
        }
    }
}
