//! Our own pod through the Kubernetes API: watching it for the drain annotation and patching our
//! annotations (usage, activity) with merge patches. Needs get, watch and patch on pods.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
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
    pub async fn watch_drain(self, tx: watch::Sender<bool>) {
        let cfg = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        let mut stream = watcher(self.api, cfg)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(pod) => {
                    let d = drain::requested(Some(pod.annotations()));
                    tx.send_if_modified(|cur| std::mem::replace(cur, d) != d);
                }
                Err(e) => warn!("watching our pod: {e} (retrying)"),
            }
        }
        debug!("pod watch ended");
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
