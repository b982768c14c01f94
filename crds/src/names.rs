//! The names every part agrees on. Changing one here changes the protocol between the operator,
//! the supervisor and the plugin, so each is defined once and listed in the README.

/// Label on every worker pod: the name of its QWorker.
pub const LABEL_QWORKER: &str = "quickube.com/qworker";
/// Label on every worker pod: the short pod-spec hash (see [`crate::hash`]) it was created from.
pub const LABEL_POD_SPEC_HASH: &str = "quickube.com/pod-spec-hash";
/// Standard label naming the tool that manages the pod.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`] on pods the operator creates.
pub const MANAGED_BY_VALUE: &str = "qscaler-operator";

/// Annotation the operator sets on a pod it wants gone; the value is the reason (see [`DrainReason`]).
/// The supervisor finishes its current task and exits 0 when it sees it.
pub const ANNOTATION_DRAIN: &str = "quickube.com/drain";
/// Finalizer on every QWorker: its deletion waits until its workers have ended and their
/// in-flight tasks are back in the queue. On a ScalerConfig: its deletion waits until no QWorker
/// uses it (their tasks are returned through it). Without a running operator it blocks the
/// deletion: `kubectl patch qworker NAME --type=merge -p '{"metadata":{"finalizers":null}}'`.
pub const FINALIZER: &str = "quickube.com/return-tasks";

/// Annotation the supervisor keeps on its own pod: its peak usage as JSON (see [`crate::usage`]).
pub const ANNOTATION_USAGE: &str = "quickube.com/usage";
/// Annotation the supervisor may set on its own pod: `idle` or `busy`, when the worker tells it.
pub const ANNOTATION_ACTIVITY: &str = "quickube.com/activity";
/// Annotation the supervisor keeps on its own pod for cluster-autoscaler, with the activity: `"false"`
/// while a task runs (the node is not scaled down under it), `"true"` when idle.
pub const ANNOTATION_SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
/// Annotation the supervisor sets on its own pod for Karpenter, with the activity: `"true"` while a
/// task runs (no voluntary disruption), removed when idle.
pub const ANNOTATION_DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
/// Annotation on a pod: the container requests the operator derived from observed usage (activateVPA).
pub const ANNOTATION_VPA_REQUESTS: &str = "quickube.com/vpa-requests";
/// Annotation on a QWorker's pod metadata that `kubectl qworker rollout restart` sets (new hash).
pub const ANNOTATION_RESTARTED_AT: &str = "quickube.com/restartedAt";
/// Annotation on a ControllerRevision: the full pod-spec hash it records.
pub const ANNOTATION_REVISION_HASH: &str = "quickube.com/pod-spec-hash";
/// Annotation on a QWorker: `"true"` pauses it as `spec.paused` does (README "Controls").
pub const ANNOTATION_PAUSED: &str = "quickube.com/paused";

/// Pod labels the operator sets itself; a QWorker's `podMetadata.labels` may not hold them (the
/// operator's value would silently win, and the pod's identity is what planning reads).
pub const RESERVED_LABELS: [&str; 3] = [LABEL_QWORKER, LABEL_POD_SPEC_HASH, LABEL_MANAGED_BY];

/// Pod annotations of the protocol, written by the operator or the supervisor; a QWorker's
/// `podMetadata.annotations` may not hold them (a drain in the template makes every new pod exit at
/// once, a made-up activity or usage report misleads planning and sizing).
pub const RESERVED_ANNOTATIONS: [&str; 4] = [
    ANNOTATION_DRAIN,
    ANNOTATION_ACTIVITY,
    ANNOTATION_USAGE,
    ANNOTATION_VPA_REQUESTS,
];

/// Whether `key` is a pod label only the operator may set.
pub fn is_reserved_label(key: &str) -> bool {
    RESERVED_LABELS.contains(&key)
}

/// Whether `key` is a pod annotation of the protocol: one of [`RESERVED_ANNOTATIONS`] or a
/// per-container usage report (`quickube.com/usage-<container>`).
pub fn is_reserved_annotation(key: &str) -> bool {
    RESERVED_ANNOTATIONS.contains(&key)
        || key
            .strip_prefix(ANNOTATION_USAGE)
            .is_some_and(|rest| rest.starts_with('-'))
}

/// Why a pod is drained; the value of [`ANNOTATION_DRAIN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DrainReason {
    ScaleDown,
    Rollout,
    /// The QWorker is being deleted (its finalizer drains every worker).
    Deleted,
}

impl DrainReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DrainReason::ScaleDown => "scale-down",
            DrainReason::Rollout => "rollout",
            DrainReason::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "scale-down" => Some(DrainReason::ScaleDown),
            "rollout" => Some(DrainReason::Rollout),
            "deleted" => Some(DrainReason::Deleted),
            _ => None,
        }
    }
}

/// Env vars the operator injects into every container of a worker pod.
pub mod env {
    /// The QWorker's name.
    pub const QWORKER_NAME: &str = "QWORKER_NAME";
    /// The full pod-spec hash the pod was created from.
    pub const POD_SPEC_HASH: &str = "POD_SPEC_HASH";
    /// The pod's own name (downward API `metadata.name`).
    pub const POD_NAME: &str = "POD_NAME";
    /// The pod's namespace (downward API `metadata.namespace`).
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    /// The name of the container the process runs in (usage reports are per container).
    pub const CONTAINER_NAME: &str = "QSCALER_CONTAINER_NAME";
    /// The queue (Redis list) the worker consumes; with `scaleConfig.queues`, their names joined
    /// by commas, in the order given.
    pub const QUEUE: &str = "QSCALER_QUEUE";
    /// The broker's host.
    pub const REDIS_HOST: &str = "QSCALER_REDIS_HOST";
    /// The broker's port.
    pub const REDIS_PORT: &str = "QSCALER_REDIS_PORT";
    /// The broker's database number.
    pub const REDIS_DB: &str = "QSCALER_REDIS_DB";
    /// The broker's username (ACL), when set.
    pub const REDIS_USERNAME: &str = "QSCALER_REDIS_USERNAME";
    /// The broker's password: always injected through a secretKeyRef, never inline.
    pub const REDIS_PASSWORD: &str = "QSCALER_REDIS_PASSWORD";
    /// `true` when the broker speaks TLS.
    pub const REDIS_TLS: &str = "QSCALER_REDIS_TLS";
    /// `true` to accept any server certificate (the ScalerConfig's `tls.insecureSkipVerify`).
    pub const REDIS_TLS_INSECURE: &str = "QSCALER_REDIS_TLS_INSECURE";
    /// Redis Sentinel: the sentinels, `host:port,host:port` (instead of the host and port).
    pub const REDIS_SENTINELS: &str = "QSCALER_REDIS_SENTINELS";
    /// Redis Sentinel: the monitored primary's name.
    pub const REDIS_SENTINEL_MASTER: &str = "QSCALER_REDIS_SENTINEL_MASTER";
    /// Redis Sentinel: the sentinels' username, when set.
    pub const REDIS_SENTINEL_USERNAME: &str = "QSCALER_REDIS_SENTINEL_USERNAME";
    /// Redis Sentinel: the sentinels' password, always through a secretKeyRef.
    pub const REDIS_SENTINEL_PASSWORD: &str = "QSCALER_REDIS_SENTINEL_PASSWORD";
    /// Redis Sentinel: `true` when the sentinels speak TLS.
    pub const REDIS_SENTINEL_TLS: &str = "QSCALER_REDIS_SENTINEL_TLS";
    /// Redis Sentinel: `true` to accept any sentinel certificate.
    pub const REDIS_SENTINEL_TLS_INSECURE: &str = "QSCALER_REDIS_SENTINEL_TLS_INSECURE";
    /// Redis Sentinel: the PEM CA bundle of the sentinels, through a secretKeyRef.
    pub const REDIS_SENTINEL_TLS_CA: &str = "QSCALER_REDIS_SENTINEL_TLS_CA";
    /// Redis Cluster: seed nodes, `host:port,host:port` (instead of the host and port).
    pub const REDIS_CLUSTER: &str = "QSCALER_REDIS_CLUSTER";
    /// Read by qsupervisor (not injected): task mode on.
    pub const TASK: &str = "QSCALER_TASK";
    /// Read by qsupervisor (not injected): reruns of a failed task before it is dead-lettered. The
    /// operator reads it too ([`crate::task::max_retries`]) to count a dead pod's tasks.
    pub const MAX_RETRIES: &str = "QSCALER_MAX_RETRIES";
    /// The PEM CA bundle that verifies the broker's certificate: always injected through a
    /// secretKeyRef (the ScalerConfig's `tls.caSecretRef`), never inline. Unset: the system roots.
    pub const REDIS_TLS_CA: &str = "QSCALER_REDIS_TLS_CA";
    /// The QWorker's `scaleConfig.maxTaskSeconds` (whole seconds), injected only when set: the
    /// longest a task may run, which qsupervisor uses for its drain deadline.
    pub const MAX_TASK_SECONDS: &str = "QSCALER_MAX_TASK_SECONDS";
    /// Read by the operator and by qsupervisor (not injected): `text` or `json` log lines.
    pub const LOG_FORMAT: &str = "QSCALER_LOG_FORMAT";
    /// The queue's format (`list`, `stream`) as the QWorker says; task mode consumes accordingly.
    pub const QUEUE_FORMAT: &str = "QSCALER_QUEUE_FORMAT";
    /// `format: stream`: the consumer group task mode reads as.
    pub const STREAM_GROUP: &str = "QSCALER_STREAM_GROUP";
}

/// Redis key names of task mode: a documented contract between the supervisor (which moves tasks
/// between them) and the operator (which counts them and returns a dead pod's tasks to the queue).
pub mod keys {
    /// Who holds a processing list: `<namespace>/<pod>` in a cluster, because pod names repeat
    /// across namespaces and two namespaces may consume one queue on one Redis; the bare name
    /// outside a cluster. Neither part can contain `/`, so the form is unambiguous.
    pub fn consumer(namespace: Option<&str>, pod: &str) -> String {
        match namespace.filter(|ns| !ns.is_empty()) {
            Some(ns) => format!("{ns}/{pod}"),
            None => pod.to_string(),
        }
    }

    /// The queue's hash tag: what is between its first `{` and the next `}` when that is not
    /// empty, else the whole name (Redis Cluster's rule for which part of a key picks its slot).
    pub fn hash_tag(queue: &str) -> &str {
        queue
            .find('{')
            .and_then(|open| {
                let rest = &queue[open + 1..];
                rest.find('}').map(|close| &rest[..close])
            })
            .filter(|tag| !tag.is_empty())
            .unwrap_or(queue)
    }

    /// The start of every key of a queue: the name itself when it carries a hash tag, else the
    /// name in braces, so all of them land in the queue's own slot (`BLMOVE` and the scripts
    /// need source and destination in one slot on Redis Cluster).
    fn prefix(queue: &str) -> String {
        if hash_tag(queue) == queue {
            format!("{{{queue}}}")
        } else {
            queue.to_string()
        }
    }

    /// The per-consumer processing list: tasks a pod has taken and not yet finished.
    pub fn processing(queue: &str, consumer: &str) -> String {
        format!("{}:processing:{consumer}", prefix(queue))
    }

    /// The dead-letter list: tasks that failed every retry.
    pub fn dead_letter(queue: &str) -> String {
        format!("{}:dead", prefix(queue))
    }

    /// The hash of retry counts per task payload.
    pub fn retries(queue: &str) -> String {
        format!("{}:retries", prefix(queue))
    }

    /// The channel Redis publishes `key`'s keyspace events on in database `db` (with
    /// `notify-keyspace-events` K): the operator's push trigger subscribes to its queues' channels.
    pub fn keyspace_channel(db: i64, key: &str) -> String {
        format!("__keyspace@{db}__:{key}")
    }

    /// The hash of task timings of the queue (task mode): field [`STATS_TASKS`] counts settled
    /// tasks, [`STATS_MILLIS`] the milliseconds their runs took; the operator learns seconds per
    /// task from their growth.
    pub fn task_stats(queue: &str) -> String {
        format!("{}:stats", prefix(queue))
    }

    /// Field of [`task_stats`]: tasks settled.
    pub const STATS_TASKS: &str = "tasks";
    /// Field of [`task_stats`]: milliseconds of work on them.
    pub const STATS_MILLIS: &str = "ms";

    /// The set of consumers that may hold a processing list of the queue: lets the operator find
    /// a vanished pod's list without a cluster-wide `SCAN`.
    pub fn consumers(queue: &str) -> String {
        format!("{}:consumers", prefix(queue))
    }
}

/// Redis Streams as a queue (`format: stream`): shared by the operator, qsupervisor and the docs.
pub mod stream {
    /// The consumer group when `scaleConfig.streamGroup` is unset.
    pub const DEFAULT_GROUP: &str = "qscaler";
    /// The entry field whose value task mode gives the task on stdin (`XADD jobs * task <payload>`).
    pub const PAYLOAD_FIELD: &str = "task";
}

/// Name of the ControllerRevision that records `hash` of a QWorker.
pub fn revision_name(qworker: &str, short_hash: &str) -> String {
    format!("{qworker}-{short_hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_reason_round_trips() {
        for r in [
            DrainReason::ScaleDown,
            DrainReason::Rollout,
            DrainReason::Deleted,
        ] {
            assert_eq!(DrainReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(DrainReason::parse("whatever"), None);
    }

    #[test]
    fn reserved_pod_labels_and_annotations() {
        for k in [LABEL_QWORKER, LABEL_POD_SPEC_HASH, LABEL_MANAGED_BY] {
            assert!(is_reserved_label(k), "{k}");
        }
        for k in ["team", "app.kubernetes.io/name", "quickube.com/qworker-x"] {
            assert!(!is_reserved_label(k), "{k}");
        }
        for k in [
            ANNOTATION_DRAIN,
            ANNOTATION_ACTIVITY,
            ANNOTATION_USAGE,
            "quickube.com/usage-worker",
            "quickube.com/usage-",
            ANNOTATION_VPA_REQUESTS,
        ] {
            assert!(is_reserved_annotation(k), "{k}");
        }
        // restartedAt is the plugin's way to roll out: it belongs in podMetadata.
        for k in [
            ANNOTATION_RESTARTED_AT,
            "quickube.com/usages",
            "note",
            "drain",
        ] {
            assert!(!is_reserved_annotation(k), "{k}");
        }
    }

    #[test]
    fn task_keys_are_derived_from_queue_and_pod() {
        assert_eq!(keys::consumer(Some("team-a"), "w-abc"), "team-a/w-abc");
        assert_eq!(keys::consumer(Some(""), "w-abc"), "w-abc");
        assert_eq!(keys::consumer(None, "w-abc"), "w-abc");
        assert_eq!(
            keys::processing("jobs", &keys::consumer(Some("team-a"), "w-abc")),
            "{jobs}:processing:team-a/w-abc"
        );
        assert_eq!(keys::dead_letter("jobs"), "{jobs}:dead");
        assert_eq!(keys::retries("jobs"), "{jobs}:retries");
        assert_eq!(keys::consumers("jobs"), "{jobs}:consumers");
        // A queue with its own hash tag keeps it: its keys share its slot.
        assert_eq!(keys::retries("{app}:jobs"), "{app}:jobs:retries");
        assert_eq!(keys::hash_tag("{app}:jobs"), "app");
        assert_eq!(keys::hash_tag("a{b}c{d}"), "b");
        // An empty or unclosed tag is no tag: the whole name is hashed.
        for q in ["{}jobs", "jobs{", "jobs"] {
            assert_eq!(keys::hash_tag(q), q);
            assert_eq!(keys::dead_letter(q), format!("{{{q}}}:dead"));
        }
    }
}
