//! Our own pod through the Kubernetes API: watching it for the drain annotation and patching our
//! annotations (usage, activity) with merge patches. Needs get, watch and patch on pods.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams, WatchEvent, WatchParams};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::{drain, Error, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Our pod.
#[derive(Clone)]
pub struct PodApi {
    api: Api<Pod>,
    name: String,
}

impl PodApi {
    /// Connects (kubeconfig or in-cluster config) and reads the pod once, so that an unreachable or
    /// forbidden API is found out at start.
    pub async fn connect(namespace: &str, name: &str) -> Result<(PodApi, bool)> {
        let client = Client::try_default().await.map_err(|source| Error::Kube {
            doing: "loading the Kubernetes client config",
            source,
        })?;
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let pod = tokio::time::timeout(CONNECT_TIMEOUT, api.get(name))
            .await
            .map_err(|_| Error::Config(format!("reading pod {namespace}/{name} timed out")))?
            .map_err(|source| Error::Kube {
                doing: "reading our own pod",
                source,
            })?;
        let draining = drain::requested(Some(pod.annotations()));
        Ok((
            PodApi {
                api,
                name: name.to_owned(),
            },
            draining,
        ))
    }

    /// Watches the pod and publishes whether it is asked to drain.
    ///
    /// A plain get + watch (not kube-runtime's watcher, which lists): the worker Role grants only
    /// get, watch and patch on pods. After an expired resourceVersion (410) or a lost connection it
    /// reads the pod again and watches from there, with capped backoff on errors.
    pub async fn watch_drain(self, tx: watch::Sender<bool>) {
        let publish = |pod: &Pod| {
            let d = drain::requested(Some(pod.annotations()));
            tx.send_if_modified(|cur| std::mem::replace(cur, d) != d);
        };
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(290);
        let mut failures = 0u32;
        'outer: loop {
            if failures > 0 {
                tokio::time::sleep(Duration::from_millis(250 << failures.min(7))).await;
            }
            let mut version = match self.api.get(&self.name).await {
                Ok(pod) => {
                    publish(&pod);
                    pod.resource_version().unwrap_or_default()
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    debug!("our pod is gone; the pod watch ends");
                    return;
                }
                Err(e) => {
                    warn!("reading our pod: {e} (retrying)");
                    failures += 1;
                    continue;
                }
            };
            loop {
                let stream = match self.api.watch(&params, &version).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        warn!("watching our pod: {e} (retrying)");
                        failures += 1;
                        continue 'outer;
                    }
                };
                let mut stream = stream.boxed();
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(WatchEvent::Added(pod)) | Ok(WatchEvent::Modified(pod)) => {
                            failures = 0;
                            publish(&pod);
                            version = pod.resource_version().unwrap_or(version);
                        }
                        Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                        Ok(WatchEvent::Deleted(_)) => {
                            debug!("our pod was deleted; the pod watch ends");
                            return;
                        }
                        Ok(WatchEvent::Error(status)) => {
                            // 410 Gone: our resourceVersion is too old; read the pod again.
                            debug!("pod watch: {}", status.message);
                            continue 'outer;
                        }
                        Err(e) => {
                            warn!("watching our pod: {e} (retrying)");
                            failures += 1;
                            continue 'outer;
                        }
                    }
                }
                // The server closed the watch (its timeout): watch on from where we are.
            }
        }
    }

    /// Sets one annotation on the pod.
    pub async fn annotate(&self, key: &str, value: &str) -> Result<()> {
        let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|source| Error::Kube {
                doing: "patching our pod's annotations",
                source,
            })
    }
}
