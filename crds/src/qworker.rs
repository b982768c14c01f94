//! The `QWorker` custom resource: a pod spec, and how to scale it by the depth of a queue.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crdgen::schema;

// Deserialization of the spec never fails on a wrongly shaped field (see `QWorkerSpec::parse_problems`):
// the API server keeps `podSpec` as given, and an object it stored for any reason (an older schema, a
// server quirk) could otherwise make the whole list of QWorkers unreadable and stall the operator for
// every QWorker, not just the bad one. Status is read the same way (a bad status reads as empty).
/// A group of identical queue workers, scaled by the depth of one queue.
#[derive(CustomResource, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "quickube.com",
    version = "v1alpha1",
    kind = "QWorker",
    plural = "qworkers",
    shortname = "qw",
    namespaced,
    status = "QWorkerStatus",
    scale(
        spec_replicas_path = ".spec.scaleConfig.minReplicas",
        status_replicas_path = ".status.currentReplicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredReplicas"}"#,
    printcolumn = r#"{"name":"Current","type":"integer","jsonPath":".status.currentReplicas"}"#,
    printcolumn = r#"{"name":"Queue","type":"integer","description":"Queued tasks","jsonPath":".status.queueDepth"}"#,
    printcolumn = r#"{"name":"In-Flight","type":"integer","priority":1,"jsonPath":".status.inFlight"}"#,
    printcolumn = r#"{"name":"Hash","type":"string","priority":1,"jsonPath":".status.currentPodSpecHash"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct QWorkerSpec {
    /// The pod spec of every worker (a core/v1 PodSpec). Its canonical hash identifies a rollout revision.
    #[schemars(schema_with = "schema::pod_spec")]
    pub pod_spec: PodSpec,

    /// How many workers to run for how much work.
    pub scale_config: ScaleConfig,

    /// Labels and annotations for the worker pods. Part of the pod-spec hash: changing them rolls out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_metadata: Option<PodMetadata>,

    /// How a changed pod spec replaces old workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStrategy>,

    /// How many old revisions to keep for `kubectl qworker rollout undo` (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub revision_history_limit: Option<i32>,

    /// Bounds and margins of vertical sizing when `scaleConfig.activateVPA` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpa: Option<VpaPolicy>,

    /// Hold the worker count (`scaleConfig.pausedReplicas`, or what is desired now) and roll
    /// nothing out, as a paused Deployment. The annotation `quickube.com/paused: "true"` does the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,

    /// Fields that could not be read as their type: (field path, why). Such a field holds its default.
    /// Never serialized; validation reports each as a problem.
    #[serde(skip)]
    #[schemars(skip)]
    pub parse_problems: Vec<(String, String)>,
}

/// The wire form of [`QWorkerSpec`]: the same fields, each still raw JSON.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QWorkerSpecWire {
    #[serde(default)]
    pod_spec: serde_json::Value,
    #[serde(default)]
    scale_config: serde_json::Value,
    #[serde(default)]
    pod_metadata: serde_json::Value,
    #[serde(default)]
    rollout: serde_json::Value,
    #[serde(default)]
    revision_history_limit: serde_json::Value,
    #[serde(default)]
    vpa: serde_json::Value,
    #[serde(default)]
    paused: serde_json::Value,
}

impl<'de> Deserialize<'de> for QWorkerSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = QWorkerSpecWire::deserialize(deserializer)?;
        let mut problems = Vec::new();
        Ok(QWorkerSpec {
            pod_spec: lenient("spec.podSpec", wire.pod_spec, &mut problems),
            scale_config: lenient("spec.scaleConfig", wire.scale_config, &mut problems),
            pod_metadata: lenient("spec.podMetadata", wire.pod_metadata, &mut problems),
            rollout: lenient("spec.rollout", wire.rollout, &mut problems),
            revision_history_limit: lenient(
                "spec.revisionHistoryLimit",
                wire.revision_history_limit,
                &mut problems,
            ),
            vpa: lenient("spec.vpa", wire.vpa, &mut problems),
            paused: lenient::<Option<bool>>("spec.paused", wire.paused, &mut problems)
                .unwrap_or(false),
            parse_problems: problems,
        })
    }
}

/// `value` as a `T`; its default (and a recorded problem) when it is not one.
pub(crate) fn lenient<T: serde::de::DeserializeOwned + Default>(
    field: &str,
    value: serde_json::Value,
    problems: &mut Vec<(String, String)>,
) -> T {
    match serde_json::from_value(value) {
        Ok(v) => v,
        Err(e) => {
            problems.push((field.to_string(), e.to_string()));
            T::default()
        }
    }
}

/// The scaling rule: desired = clamp(ceil(backlog × scalingFactor), minReplicas, maxReplicas).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleConfig {
    /// Name of the ScalerConfig (same namespace) that says where the queue broker is.
    #[schemars(length(min = 1))]
    pub scaler_config_ref: String,

    /// The queue: a Redis list name, or the framework's queue name when `format` names a framework.
    /// Exactly one of `queue` and `queues` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub queue: String,

    /// Several queues instead of `queue` (worker mode only): their backlogs are summed, and the
    /// drain target plans with the slowest queue's task time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueRef>,

    /// How the queue is laid out in Redis, and so what counts as its backlog (default `list`).
    #[serde(default, skip_serializing_if = "QueueFormat::is_list")]
    pub format: QueueFormat,

    /// `format: stream` only: the consumer group whose lag and pending entries are the backlog, and
    /// that task mode consumes as (unset: `qscaler`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_group: Option<String>,

    /// Fewest workers, even with an empty queue.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_replicas: i32,

    /// Most workers, however deep the queue.
    #[schemars(range(min = 0))]
    pub max_replicas: i32,

    /// Workers per queued task: 2 means two workers per task, 0.1 one worker per ten tasks.
    #[serde(default = "default_scaling_factor")]
    #[schemars(schema_with = "schema::positive_number")]
    pub scaling_factor: f64,

    /// Drain-time target: run the workers needed to work off the backlog within this many seconds
    /// at the observed seconds per task (README "Drain-time target"). Unset: `scalingFactor` rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_drain_seconds: Option<i64>,

    /// Seconds one task takes, assumed by the drain target until enough tasks were timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::positive_number")]
    pub task_seconds: Option<f64>,

    /// Size new pods' requests from observed peak usage.
    #[serde(default, rename = "activateVPA")]
    pub activate_vpa: bool,

    /// Scale down only to the highest desired count seen over this many seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_stabilization_seconds: Option<i32>,

    /// The longest a task may run, in seconds. Pods created without their own
    /// `terminationGracePeriodSeconds` get this plus [`GRACE_MARGIN_SECONDS`] as their grace, and
    /// qsupervisor reads it (env `QSCALER_MAX_TASK_SECONDS`) as its drain deadline. A scale setting:
    /// not part of the pod-spec hash, so changing it never rolls out (pods created afterwards get it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_task_seconds: Option<i64>,

    // Controls (README "Controls"): each unset by default, which keeps the plain scaling rule.
    /// While paused, hold this many workers (unset: hold the desired count of when the pause began).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub paused_replicas: Option<i32>,

    /// Most worker pods created by one reconcile (unset: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_pods_added_per_step: Option<i32>,

    /// Most drains started in any 60 seconds (unset: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_drains_per_minute: Option<i32>,

    /// From zero workers, scale up only once the backlog reaches this (unset: any backlog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub activation_backlog: Option<i64>,

    /// Workers to run once the queue has been unreadable for `fallbackAfterSeconds` (unset: hold
    /// the count, never scale on missing data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub fallback_replicas: Option<i32>,

    /// How long the queue must be unreadable before `fallbackReplicas` applies (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub fallback_after_seconds: Option<i32>,

    /// When the count falls to zero, keep one worker until the backlog has been zero this long
    /// (unset: no keep-warm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub keep_warm_seconds: Option<i32>,
}

/// How a queue is laid out in Redis. Each layout knows its queued work and the work taken but not
/// finished, and both count toward the backlog.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum QueueFormat {
    /// A Redis list that producers `LPUSH` to; in task mode each pod's processing list is in flight.
    #[default]
    List,
    /// A Redis stream read by a consumer group (`streamGroup`): the group's lag is queued, its
    /// pending entries (delivered, not acknowledged) are in flight.
    Stream,
    /// RQ: the list `rq:queue:<queue>`; in flight, its `:intermediate` list and `rq:wip:<queue>`.
    Rq,
    /// Celery (kombu's Redis transport): the list `<queue>` and its priority lists; in flight, the
    /// entries of the shared `unacked` hash routed to `<queue>`.
    Celery,
    /// Sidekiq: the list `queue:<queue>`; in flight, the busy jobs of `<queue>` in live processes.
    Sidekiq,
    /// BullMQ (prefix `bull`, or `<prefix>:<name>`): `:wait` and `:prioritized`; in flight, `:active`.
    Bullmq,
}

impl QueueFormat {
    pub fn is_list(&self) -> bool {
        *self == QueueFormat::List
    }

    /// The name in `scaleConfig.format` (and in the pod's `QSCALER_QUEUE_FORMAT`): serde's, so
    /// a new variant needs nothing here.
    pub fn name(self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(s)) => s,
            _ => String::new(),
        }
    }

    /// The inverse of [`QueueFormat::name`].
    pub fn parse(s: &str) -> Option<QueueFormat> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// One of a QWorker's several queues.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueRef {
    /// The queue's name, as `queue` would give it.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Seconds of grace beyond `maxTaskSeconds` (signalling the task, returning it, exiting).
pub const GRACE_MARGIN_SECONDS: i64 = 10;

impl ScaleConfig {
    /// Every queue the QWorker scales on: `queue`, or each of `queues`.
    pub fn queue_names(&self) -> Vec<&str> {
        if self.queues.is_empty() {
            vec![self.queue.as_str()]
        } else {
            self.queues.iter().map(|q| q.name.as_str()).collect()
        }
    }

    /// The consumer group of a `stream` queue: `streamGroup`, else the default.
    pub fn stream_group(&self) -> &str {
        self.stream_group
            .as_deref()
            .unwrap_or(crate::names::stream::DEFAULT_GROUP)
    }

    /// The `terminationGracePeriodSeconds` of a new pod when its spec sets none: `maxTaskSeconds`
    /// plus [`GRACE_MARGIN_SECONDS`]; `None` (the Kubernetes default, 30 s) without `maxTaskSeconds`.
    pub fn grace_for_pods(&self) -> Option<i64> {
        self.max_task_seconds
            .filter(|s| *s >= 1)
            .map(|s| s.saturating_add(GRACE_MARGIN_SECONDS))
    }
}

fn default_scaling_factor() -> f64 {
    1.0
}

/// Metadata copied onto every worker pod.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Pacing of a rollout, as a Deployment's RollingUpdate: both an absolute number or a percentage of
/// desired replicas. The default (surge 1, unavailable 0) keeps the worker count at desired throughout.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// Extra new-hash workers allowed above desired while old ones drain (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int_or_percent")]
    pub max_surge: Option<IntOrString>,
    /// Workers allowed below desired while old ones drain (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int_or_percent")]
    pub max_unavailable: Option<IntOrString>,
}

/// Vertical sizing policy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VpaPolicy {
    /// Headroom above the observed peak, in percent (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub margin_percent: Option<i32>,
    /// Lowest requests ever set, per resource (e.g. cpu: 50m, memory: 64Mi).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "schema::quantity_map")]
    pub min_allowed: BTreeMap<String, Quantity>,
    /// Highest requests ever set, per resource.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "schema::quantity_map")]
    pub max_allowed: BTreeMap<String, Quantity>,
}

/// What the operator last saw and did.
#[derive(Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QWorkerStatus {
    /// Worker pods alive (not Succeeded or Failed), draining ones included.
    #[serde(default)]
    pub current_replicas: i32,
    /// Workers the scaling rule asks for.
    #[serde(default)]
    pub desired_replicas: i32,
    /// Full hash of the current pod spec (see the `hash` module).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_pod_spec_hash: String,
    /// Peak usage observed per container, from the supervisors' reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub max_container_resources_usage: Vec<ContainerUsage>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// See [`crate::conditions`]: Ready, SpecValid, ScalerHealthy, Progressing, WorkersCrashing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,
    /// Tasks waiting in the queue at the last poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<i64>,
    /// Tasks taken by task-mode workers and not yet finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<i64>,
    /// Seconds per task learned from timed tasks (task mode), as the drain target plans with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_seconds: Option<f64>,
    /// Alive workers of the current hash that are not draining.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Updated workers that are Running.
    #[serde(default)]
    pub available_replicas: i32,
    /// Alive workers of an older hash, draining or not.
    #[serde(default)]
    pub old_replicas: i32,
    /// Alive workers told to drain.
    #[serde(default)]
    pub draining_replicas: i32,
    /// When the operator last changed the number of workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Until when keep-warm (`scaleConfig.keepWarmSeconds`) keeps a worker on an empty queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_warm_until: Option<Time>,
    /// Requests given to new pods by vertical sizing, per container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recommended_requests: Vec<ContainerUsage>,
    /// The label selector of the workers (`quickube.com/qworker=<name>`), for the `/scale`
    /// subresource (PodDisruptionBudgets, `kubectl get --subresource=scale`, autoscalers).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
}

/// The typed reading of [`QWorkerStatus`] (serde's derive, as a remote definition).
#[derive(Deserialize)]
#[serde(remote = "QWorkerStatus", rename_all = "camelCase")]
struct QWorkerStatusWire {
    #[serde(default)]
    current_replicas: i32,
    #[serde(default)]
    desired_replicas: i32,
    #[serde(default)]
    current_pod_spec_hash: String,
    #[serde(default)]
    max_container_resources_usage: Vec<ContainerUsage>,
    #[serde(default)]
    observed_generation: Option<i64>,
    #[serde(default)]
    conditions: Vec<Condition>,
    #[serde(default)]
    queue_depth: Option<i64>,
    #[serde(default)]
    in_flight: Option<i64>,
    #[serde(default)]
    task_seconds: Option<f64>,
    #[serde(default)]
    updated_replicas: i32,
    #[serde(default)]
    available_replicas: i32,
    #[serde(default)]
    old_replicas: i32,
    #[serde(default)]
    draining_replicas: i32,
    #[serde(default)]
    last_scale_time: Option<Time>,
    #[serde(default)]
    keep_warm_until: Option<Time>,
    #[serde(default)]
    recommended_requests: Vec<ContainerUsage>,
    #[serde(default)]
    selector: String,
}

impl<'de> Deserialize<'de> for QWorkerStatus {
    /// A status that is not of the expected shape reads as empty: the operator rewrites it.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(QWorkerStatusWire::deserialize(value).unwrap_or_default())
    }
}

/// Peak (or recommended) cpu and memory of one container.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerUsage {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::quantity")]
    pub cpu: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::quantity")]
    pub memory: Option<Quantity>,
}

impl QWorker {
    /// The rollout pacing with defaults applied.
    pub fn rollout_strategy(&self) -> RolloutStrategy {
        self.spec.rollout.clone().unwrap_or_default()
    }

    /// Whether scaling and rollout are paused: `spec.paused`, or the annotation
    /// [`crate::names::ANNOTATION_PAUSED`] set to `"true"`.
    pub fn paused(&self) -> bool {
        self.spec.paused
            || self
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::names::ANNOTATION_PAUSED))
                .is_some_and(|v| v == "true")
    }
}
