//! Names for completion that only the cluster or the kubeconfig knows. A completion must come back
//! at once and never print an error into the user's command line: on any failure, or after
//! [`LOOKUP_TIMEOUT`], there are simply no names.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::config::Kubeconfig;
use kube::{Api, Resource};
use qscaler_crds::QWorker;
use serde::de::DeserializeOwned;

use super::words::Lookup;
use crate::cli::KubeArgs;
use crate::client;

/// How long a <TAB> may wait for the API server.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// The names to offer, sorted; empty when they cannot be had in time.
pub async fn lookup(what: Lookup, kube: &KubeArgs) -> Vec<String> {
    let mut names = match what {
        Lookup::Contexts => contexts(kube),
        Lookup::QWorkers | Lookup::Namespaces => {
            match tokio::time::timeout(LOOKUP_TIMEOUT, from_cluster(what, kube)).await {
                Ok(Some(names)) => names,
                Ok(None) | Err(_) => Vec::new(),
            }
        }
    };
    names.sort();
    names
}

/// `None` on any failure (no kubeconfig, unreachable, forbidden, no CRD).
async fn from_cluster(what: Lookup, kube: &KubeArgs) -> Option<Vec<String>> {
    let ctx = client::connect(kube).await.ok()?;
    match what {
        Lookup::QWorkers => names_of(Api::<QWorker>::namespaced(ctx.client, &ctx.namespace)).await,
        _ => names_of(Api::<Namespace>::all(ctx.client)).await,
    }
}

/// The names of every object `api` lists (metadata only).
async fn names_of<K>(api: Api<K>) -> Option<Vec<String>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let list = api.list_metadata(&ListParams::default()).await.ok()?;
    Some(
        list.items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect(),
    )
}

/// The contexts of `--kubeconfig`, else of `$KUBECONFIG` or `~/.kube/config`.
fn contexts(kube: &KubeArgs) -> Vec<String> {
    let config = match &kube.kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    };
    match config {
        Ok(config) => config.contexts.into_iter().map(|c| c.name).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_come_from_the_kubeconfig_named() {
        let dir = std::env::temp_dir().join(format!("qworker-complete-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts:\n\
             - name: zeta\n  context: {cluster: c, user: u}\n\
             - name: alpha\n  context: {cluster: c, user: u}\n",
        )
        .unwrap();
        let kube = KubeArgs {
            kubeconfig: Some(path),
            ..KubeArgs::default()
        };
        let names = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(lookup(Lookup::Contexts, &kube));
        assert_eq!(names, ["alpha", "zeta"]);
        let missing = KubeArgs {
            kubeconfig: Some(dir.join("absent")),
            ..KubeArgs::default()
        };
        assert!(contexts(&missing).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
