//! A pod's identity: a bound service-account token from the TokenRequest API, written into a
//! per-pod kubeconfig that the container gets as `KUBECONFIG` (instead of a projected volume).

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::PostParams;
use kube::config::Kubeconfig;
use kube::{Api, Client};

/// How to reach the apiserver: taken from the kubelet's own kubeconfig.
#[derive(Debug, Clone)]
pub struct ApiEndpoint {
    pub server: String,
    pub certificate_authority: Option<String>,
    pub certificate_authority_data: Option<String>,
    pub insecure_skip_tls_verify: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the kubeconfig names no usable cluster")]
    NoCluster,
    #[error("reading the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("requesting a token for service account {namespace}/{name}: {source}")]
    Token {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ApiEndpoint {
    /// The current context's cluster of a kubeconfig file.
    pub fn from_kubeconfig(path: &Path) -> Result<Self, IdentityError> {
        let kc = Kubeconfig::read_from(path)?;
        let ctx_name = kc.current_context.clone();
        let cluster_name = kc
            .contexts
            .iter()
            .find(|c| Some(&c.name) == ctx_name.as_ref())
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone());
        let named = kc
            .clusters
            .iter()
            .find(|c| Some(&c.name) == cluster_name.as_ref())
            .or_else(|| kc.clusters.first())
            .ok_or(IdentityError::NoCluster)?;
        let cluster = named.cluster.as_ref().ok_or(IdentityError::NoCluster)?;
        let server = cluster.server.clone().ok_or(IdentityError::NoCluster)?;
        // A relative CA path is relative to the kubeconfig's directory.
        let certificate_authority = cluster.certificate_authority.as_ref().map(|ca| {
            let p = Path::new(ca);
            if p.is_relative() {
                path.parent()
                    .unwrap_or(Path::new("."))
                    .join(p)
                    .display()
                    .to_string()
            } else {
                ca.clone()
            }
        });
        Ok(ApiEndpoint {
            server,
            certificate_authority,
            certificate_authority_data: cluster.certificate_authority_data.clone(),
            insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.unwrap_or(false),
        })
    }

    /// A kubeconfig that authenticates with `token` and defaults to `namespace` (as the in-cluster
    /// namespace file would).
    pub fn kubeconfig_yaml(&self, namespace: &str, user: &str, token: &str) -> String {
        let mut cluster = format!("    server: {}\n", self.server);
        if let Some(ca) = &self.certificate_authority {
            cluster.push_str(&format!("    certificate-authority: {ca}\n"));
        }
        if let Some(data) = &self.certificate_authority_data {
            cluster.push_str(&format!("    certificate-authority-data: {data}\n"));
        }
        if self.insecure_skip_tls_verify {
            cluster.push_str("    insecure-skip-tls-verify: true\n");
        }
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: qscaler-local\n  cluster:\n{cluster}\
             users:\n- name: {user:?}\n  user:\n    token: {token}\n\
             contexts:\n- name: pod\n  context:\n    cluster: qscaler-local\n    namespace: {namespace}\n    user: {user:?}\n\
             current-context: pod\n"
        )
    }
}

/// Request a token for the pod's service account, bound to the pod (valid while the pod exists).
pub async fn request_token(
    client: &Client,
    pod: &Pod,
    service_account: &str,
) -> Result<String, IdentityError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(24 * 3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let resp: TokenRequest = api
        .create_subresource("token", service_account, &PostParams::default(), &req)
        .await
        .map_err(|source| IdentityError::Token {
            namespace: ns.clone(),
            name: service_account.to_string(),
            source,
        })?;
    Ok(resp.status.and_then(|s| s.token).unwrap_or_default())
}

/// Write the pod's kubeconfig (mode 0600) and return its path.
pub fn write_kubeconfig(
    endpoint: &ApiEndpoint,
    dir: &Path,
    namespace: &str,
    service_account: &str,
    token: &str,
) -> Result<PathBuf, IdentityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("kubeconfig");
    let user = format!("system:serviceaccount:{namespace}:{service_account}");
    let text = endpoint.kubeconfig_yaml(namespace, &user, token);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(text.as_bytes())
    };
    write().map_err(|source| IdentityError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_parses_back_with_the_token() {
        let ep = ApiEndpoint {
            server: "https://127.0.0.1:6443".into(),
            certificate_authority: Some("/tmp/ca.crt".into()),
            certificate_authority_data: None,
            insecure_skip_tls_verify: false,
        };
        let yaml = ep.kubeconfig_yaml("ns", "system:serviceaccount:ns:default", "tok");
        let kc = Kubeconfig::from_yaml(&yaml).expect("parses");
        assert_eq!(kc.current_context.as_deref(), Some("pod"));
        let ctx = kc.contexts[0].context.as_ref().expect("context");
        assert_eq!(
            ctx.namespace.as_deref(),
            Some("ns"),
            "kubectl in the pod defaults to its namespace"
        );
        let cluster = kc.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some("/tmp/ca.crt")
        );
        let user = kc.auth_infos[0].auth_info.as_ref().expect("user");
        assert!(user.token.is_some());
        assert!(yaml.contains("    token: tok\n"));
    }
}
