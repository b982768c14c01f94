//! The `ScalerConfig` custom resource: where a queue broker is and how to log in.
//!
//! Shape kept from the original QScaler (`type: redis`, `config.host`, `config.port` as a string,
//! `config.password.value` or `config.password.valueFrom.secretKeyRef`) so its manifests apply unchanged.
//! Beside `host`/`port` (one server), `config.sentinel` (the primary Redis Sentinel names) or
//! `config.cluster` (a Redis Cluster's seed nodes): exactly one of the three.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crdgen::schema;

/// A queue broker that QWorkers in the same namespace refer to by name.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "quickube.com",
    version = "v1alpha1",
    kind = "ScalerConfig",
    plural = "scalerconfigs",
    shortname = "qsc",
    namespaced,
    status = "ScalerConfigStatus",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Healthy","type":"boolean","jsonPath":".status.healthy"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScalerConfigSpec {
    /// The broker kind. Supported: `redis`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1))]
    pub scaler_type: String,
    /// Connection settings of that broker.
    pub config: BrokerConfig,
}

/// Connection settings (Redis today; the fields are the ones any TCP broker needs).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerConfig {
    /// One server's host (not with `sentinel` or `cluster`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// A number or a numeric string ("6379"); default 6379.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int_or_string")]
    pub port: Option<IntOrString>,
    /// Redis database number (default 0; only 0 on a Redis Cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub db: Option<i64>,
    /// ACL username, if the broker uses ACLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password: inline, or from a Secret in the ScalerConfig's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<ValueOrSecret>,
    /// TLS to the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Redis Sentinel: the primary is the one these sentinels name, found again after a failover.
    /// `username`, `password` and `tls` above are the data nodes'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<SentinelConfig>,
    /// Redis Cluster: the nodes are discovered from these seeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

/// Where the sentinels are and how to log in to them (their own credentials and TLS).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentinelConfig {
    /// The sentinels, `host:port` each.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// The monitored primary's name (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// The sentinels' ACL username, if they use ACLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The sentinels' password (`requirepass` of the sentinels), inline or from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<ValueOrSecret>,
    /// TLS to the sentinels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// A Redis Cluster's seed nodes.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    /// Some of the cluster's nodes, `host:port` each; the others are discovered.
    #[serde(default)]
    pub nodes: Vec<String>,
}

/// `host:port` of a sentinel or cluster node → host and port (the port is required). Pure.
pub fn parse_node(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not host:port"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{s:?}: the port is not a number between 1 and 65535"))?;
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    Ok((host.to_owned(), port))
}

/// A value given inline or read from a Secret key.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueOrSecret {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueSource>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the ScalerConfig's own namespace (never another namespace).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

/// TLS to the broker. The server certificate is verified against `caSecretRef` when given (a
/// private CA, as most in-cluster Redis deployments use), else against the system roots, unless
/// `insecureSkipVerify`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Accept any server certificate (test setups only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// A PEM bundle of the CA certificates that sign the broker's certificate, from a Secret in the
    /// ScalerConfig's own namespace (like the password's secretKeyRef). Worker pods get it through
    /// a secretKeyRef too, never inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// Broker health as the operator last saw it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalerConfigStatus {
    /// True when the last connection attempt and health check succeeded.
    #[serde(default)]
    pub healthy: bool,
    /// A short human explanation of `healthy`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (connected and answering), SpecValid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,
}

/// The broker kinds this operator speaks.
pub const SUPPORTED_TYPES: &[&str] = &["redis"];

/// The default Redis port.
pub const DEFAULT_REDIS_PORT: u16 = 6379;

impl BrokerConfig {
    /// The port as a number, if it is one.
    pub fn port_number(&self) -> Result<u16, String> {
        match &self.port {
            None => Ok(DEFAULT_REDIS_PORT),
            Some(IntOrString::Int(p)) => u16::try_from(*p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("port {p} is not between 1 and 65535")),
            Some(IntOrString::String(s)) => s
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("port {s:?} is not a number between 1 and 65535")),
        }
    }

    /// The TLS settings when TLS is on (`tls.enabled`), else `None`.
    pub fn tls_enabled(&self) -> Option<&TlsConfig> {
        self.tls.as_ref().filter(|t| t.enabled)
    }

    /// The Secret reference of the TLS CA bundle, when TLS is on and one is given.
    pub fn tls_ca_secret(&self) -> Option<&SecretKeyRef> {
        self.tls_enabled()?.ca_secret_ref.as_ref()
    }

    /// The Secret reference of the password, if it comes from one.
    pub fn password_secret(&self) -> Option<&SecretKeyRef> {
        self.password.as_ref()?.secret()
    }
}

impl ValueOrSecret {
    /// The Secret reference, if the value comes from one.
    pub fn secret(&self) -> Option<&SecretKeyRef> {
        self.value_from.as_ref()?.secret_key_ref.as_ref()
    }
}

impl SentinelConfig {
    /// The TLS settings when TLS to the sentinels is on.
    pub fn tls_enabled(&self) -> Option<&TlsConfig> {
        self.tls.as_ref().filter(|t| t.enabled)
    }

    /// The Secret reference of the sentinels' TLS CA bundle, when TLS is on and one is given.
    pub fn tls_ca_secret(&self) -> Option<&SecretKeyRef> {
        self.tls_enabled()?.ca_secret_ref.as_ref()
    }

    /// The Secret reference of the sentinels' password, if it comes from one.
    pub fn password_secret(&self) -> Option<&SecretKeyRef> {
        self.password.as_ref()?.secret()
    }
}
