//! A container's environment, as the kubelet builds it: `envFrom`, then `env` (`value`, downward
//! API `fieldRef`, `secretKeyRef`, `configMapKeyRef`, `resourceFieldRef`), with `$(VAR)` expansion.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::{Api, Client};

use qscaler_crds::quantity;

/// Why a container's environment cannot be built (the kubelet's CreateContainerConfigError).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvError {
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("unsupported fieldRef {0}")]
    UnsupportedField(String),
    #[error("unsupported resourceFieldRef {0}")]
    UnsupportedResource(String),
    #[error("reading {what}: {message}")]
    Api { what: String, message: String },
}

/// Secrets and ConfigMaps of the pod's namespace, fetched at most once per build.
struct Sources {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    secret_cache: BTreeMap<String, Option<BTreeMap<String, String>>>,
    cm_cache: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

impl Sources {
    async fn secret(&mut self, name: &str) -> Result<Option<&BTreeMap<String, String>>, EnvError> {
        if !self.secret_cache.contains_key(name) {
            let got = self
                .secrets
                .get_opt(name)
                .await
                .map_err(|e| EnvError::Api {
                    what: format!("secret {name}"),
                    message: e.to_string(),
                })?;
            let data = got.map(|s| {
                let mut m: BTreeMap<String, String> = s.string_data.unwrap_or_default();
                for (k, v) in s.data.unwrap_or_default() {
                    m.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                m
            });
            self.secret_cache.insert(name.to_string(), data);
        }
        Ok(self.secret_cache.get(name).and_then(Option::as_ref))
    }

    async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<&BTreeMap<String, String>>, EnvError> {
        if !self.cm_cache.contains_key(name) {
            let got = self
                .config_maps
                .get_opt(name)
                .await
                .map_err(|e| EnvError::Api {
                    what: format!("configmap {name}"),
                    message: e.to_string(),
                })?;
            let data = got.map(|c| {
                let mut m = c.data.unwrap_or_default();
                for (k, v) in c.binary_data.unwrap_or_default() {
                    m.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                m
            });
            self.cm_cache.insert(name.to_string(), data);
        }
        Ok(self.cm_cache.get(name).and_then(Option::as_ref))
    }
}

/// Build the container's env vars (in order; a later one overrides an earlier one of the same name).
pub async fn resolve(
    client: &Client,
    pod: &Pod,
    container: &Container,
) -> Result<Vec<(String, String)>, EnvError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut src = Sources {
        secrets: Api::namespaced(client.clone(), &ns),
        config_maps: Api::namespaced(client.clone(), &ns),
        secret_cache: BTreeMap::new(),
        cm_cache: BTreeMap::new(),
    };
    let mut out: Vec<(String, String)> = Vec::new();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.secret_ref {
            match src.secret(&r.name).await? {
                Some(data) => out.extend(
                    data.iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), v.clone())),
                ),
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::SecretNotFound(r.name.clone())),
            }
        }
        if let Some(r) = &from.config_map_ref {
            match src.config_map(&r.name).await? {
                Some(data) => out.extend(
                    data.iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), v.clone())),
                ),
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
            }
        }
    }

    for var in container.env.iter().flatten() {
        let value = if let Some(v) = &var.value {
            Some(expand(v, &out))
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                Some(field_ref(pod, &f.field_path)?)
            } else if let Some(r) = &from.resource_field_ref {
                let target = match &r.container_name {
                    Some(name) if !name.is_empty() => pod
                        .spec
                        .iter()
                        .flat_map(|s| s.containers.iter())
                        .find(|c| &c.name == name)
                        .unwrap_or(container),
                    _ => container,
                };
                Some(resource_field_ref(target, &r.resource)?)
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                match src.secret(&r.name).await? {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => Some(v.clone()),
                        None if optional => None,
                        None => {
                            return Err(EnvError::SecretKeyNotFound {
                                namespace: ns.clone(),
                                name: r.name.clone(),
                                key: r.key.clone(),
                            })
                        }
                    },
                    None if optional => None,
                    None => return Err(EnvError::SecretNotFound(r.name.clone())),
                }
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                match src.config_map(&r.name).await? {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => Some(v.clone()),
                        None if optional => None,
                        None => {
                            return Err(EnvError::ConfigMapKeyNotFound {
                                namespace: ns.clone(),
                                name: r.name.clone(),
                                key: r.key.clone(),
                            })
                        }
                    },
                    None if optional => None,
                    None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
                }
            } else {
                None
            }
        } else {
            Some(String::new())
        };
        if let Some(value) = value {
            out.push((var.name.clone(), value));
        }
    }
    Ok(dedup(out))
}

/// Keep the last value of each name, in first-appearance order.
fn dedup(vars: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut order: Vec<String> = Vec::new();
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in vars {
        if !map.contains_key(&k) {
            order.push(k.clone());
        }
        map.insert(k, v);
    }
    order
        .into_iter()
        .filter_map(|k| map.remove(&k).map(|v| (k, v)))
        .collect()
}

/// The downward API's `fieldRef` paths this node knows. Addresses are all loopback.
pub fn field_ref(pod: &Pod, path: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let v = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => service_account(pod),
        "status.podIP" | "status.hostIP" | "status.podIPs" | "status.hostIPs" => {
            "127.0.0.1".to_string()
        }
        _ => {
            if let Some(v) = keyed("metadata.labels['", meta.labels.as_ref()) {
                v
            } else if let Some(v) = keyed("metadata.annotations['", meta.annotations.as_ref()) {
                v
            } else {
                return Err(EnvError::UnsupportedField(path.to_string()));
            }
        }
    };
    Ok(v)
}

/// `resourceFieldRef` (divisor 1): cpu rounded up to whole cores, memory in bytes.
pub fn resource_field_ref(container: &Container, resource: &str) -> Result<String, EnvError> {
    let res = container.resources.as_ref();
    let (map, name) = match resource.split_once('.') {
        Some(("limits", n)) => (res.and_then(|r| r.limits.as_ref()), n),
        Some(("requests", n)) => (res.and_then(|r| r.requests.as_ref()), n),
        _ => return Err(EnvError::UnsupportedResource(resource.to_string())),
    };
    let q = map.and_then(|m| m.get(name)).map(|q| q.0.as_str());
    let value = match (name, q) {
        ("cpu", Some(q)) => quantity::cpu_millis(q).map(|m| m.div_ceil(1000).max(1)),
        ("memory", Some(q)) => quantity::bytes(q),
        // Unset limits are the node's allocatable, unset requests 0 (close enough here).
        ("cpu", None) | ("memory", None) => Some(0),
        _ => None,
    };
    value
        .map(|v| v.to_string())
        .ok_or_else(|| EnvError::UnsupportedResource(resource.to_string()))
}

/// The pod's service account ("default" when unset).
pub fn service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| {
            s.service_account_name
                .clone()
                .filter(|n| !n.is_empty())
                .or_else(|| s.service_account.clone().filter(|n| !n.is_empty()))
        })
        .unwrap_or_else(|| "default".to_string())
}

/// Kubernetes' `$(VAR)` expansion against earlier vars; `$$(VAR)` escapes, unknown refs stay.
pub fn expand(input: &str, vars: &[(String, String)]) -> String {
    let lookup = |name: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::api::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u-1".into()),
                labels: Some([("app".to_string(), "w".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("qscaler-node".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn field_refs() {
        let p = pod();
        assert_eq!(field_ref(&p, "metadata.name").unwrap(), "p");
        assert_eq!(field_ref(&p, "metadata.namespace").unwrap(), "ns");
        assert_eq!(field_ref(&p, "metadata.uid").unwrap(), "u-1");
        assert_eq!(field_ref(&p, "spec.nodeName").unwrap(), "qscaler-node");
        assert_eq!(field_ref(&p, "spec.serviceAccountName").unwrap(), "default");
        assert_eq!(field_ref(&p, "status.podIP").unwrap(), "127.0.0.1");
        assert_eq!(field_ref(&p, "metadata.labels['app']").unwrap(), "w");
        assert_eq!(field_ref(&p, "metadata.annotations['x']").unwrap(), "");
        assert_eq!(
            field_ref(&p, "spec.whatever"),
            Err(EnvError::UnsupportedField("spec.whatever".into()))
        );
    }

    #[test]
    fn resource_field_refs() {
        let c = Container {
            resources: Some(ResourceRequirements {
                limits: Some(
                    [
                        ("memory".to_string(), Quantity("64Mi".into())),
                        ("cpu".to_string(), Quantity("1500m".into())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(resource_field_ref(&c, "limits.memory").unwrap(), "67108864");
        assert_eq!(resource_field_ref(&c, "limits.cpu").unwrap(), "2");
        assert_eq!(resource_field_ref(&c, "requests.memory").unwrap(), "0");
        assert!(resource_field_ref(&c, "bogus").is_err());
    }

    #[test]
    fn dollar_expansion() {
        let vars = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("cost $5 $(A", &vars), "cost $5 $(A");
    }

    #[test]
    fn later_vars_override_earlier_ones_in_place() {
        let v = dedup(vec![
            ("A".into(), "1".into()),
            ("B".into(), "2".into()),
            ("A".into(), "3".into()),
        ]);
        assert_eq!(v, vec![("A".into(), "3".into()), ("B".into(), "2".into())]);
    }
}
