//! Every problem of a QWorker or ScalerConfig spec, as structured errors.
//!
//! The CRD schema already refuses most of these at the API server; the operator checks again because
//! schemas can be bypassed (older CRD versions, `x-kubernetes-preserve-unknown-fields` in `podSpec`,
//! cross-field rules 1.20 cannot express) and turns the result into a `SpecValid` condition and an Event.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names;
use crate::qworker::{QWorkerSpec, QueueFormat, RolloutStrategy, ScaleConfig, VpaPolicy};
use crate::scalerconfig::{
    parse_node, BrokerConfig, ScalerConfigSpec, SecretKeyRef, TlsConfig, ValueOrSecret,
    SUPPORTED_TYPES,
};

/// What kind of problem a field has (as `field.ErrorType` in Kubernetes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    Required,
    Invalid,
    OutOfRange,
    Duplicate,
    Unsupported,
}

/// One problem at one field path, e.g. `spec.scaleConfig.maxReplicas`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub kind: ProblemKind,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All problems joined into one line, for a condition message or an Event note.
pub fn summary(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, kind: ProblemKind, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            kind,
            message: message.into(),
        });
    }
}

/// Every problem of a QWorker spec; empty when it is valid.
pub fn validate_qworker(spec: &QWorkerSpec) -> Vec<Problem> {
    let mut p = Problems::default();
    for (field, why) in &spec.parse_problems {
        p.push(
            field.clone(),
            ProblemKind::Invalid,
            format!("not of the expected shape: {why}"),
        );
    }
    if !spec.parse_problems.is_empty() {
        // The other rules would judge defaults standing in for the unreadable fields.
        return p.0;
    }
    validate_containers(spec, &mut p);
    validate_pod_metadata(spec, &mut p);
    validate_scale_config(spec, &mut p);
    if let Some(rollout) = &spec.rollout {
        validate_rollout(rollout, &mut p);
    }
    if let Some(limit) = spec.revision_history_limit.filter(|l| *l < 0) {
        p.push(
            "spec.revisionHistoryLimit",
            ProblemKind::OutOfRange,
            format!("{limit} is negative"),
        );
    }
    if let Some(vpa) = &spec.vpa {
        validate_vpa(vpa, &mut p);
    }
    p.0
}

fn validate_containers(spec: &QWorkerSpec, p: &mut Problems) {
    let containers = &spec.pod_spec.containers;
    if containers.is_empty() {
        p.push(
            "spec.podSpec.containers",
            ProblemKind::Required,
            "at least one container is required",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        let field = format!("spec.podSpec.containers[{i}]");
        if c.name.trim().is_empty() {
            p.push(
                format!("{field}.name"),
                ProblemKind::Required,
                "a container needs a name",
            );
        } else if !seen.insert(c.name.as_str()) {
            p.push(
                format!("{field}.name"),
                ProblemKind::Duplicate,
                format!("container name {:?} is used twice", c.name),
            );
        }
        if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            p.push(
                format!("{field}.image"),
                ProblemKind::Required,
                "a container needs an image",
            );
        }
    }
    if let Some(policy) = spec.pod_spec.restart_policy.as_deref() {
        if policy == "Always" {
            p.push(
                "spec.podSpec.restartPolicy",
                ProblemKind::Unsupported,
                "Always would restart a worker that exited after a drain; use Never or OnFailure (default Never)",
            );
        } else if policy != "Never" && policy != "OnFailure" {
            p.push(
                "spec.podSpec.restartPolicy",
                ProblemKind::Unsupported,
                format!("{policy:?} is not Never or OnFailure"),
            );
        }
    }
}

/// The protocol's own labels and annotations cannot come from the template: the operator and the
/// supervisor write them, and a drain annotation in the template would make every pod exit at once.
fn validate_pod_metadata(spec: &QWorkerSpec, p: &mut Problems) {
    let Some(meta) = &spec.pod_metadata else {
        return;
    };
    for key in meta.labels.keys().filter(|k| names::is_reserved_label(k)) {
        p.push(
            format!("spec.podMetadata.labels[{key}]"),
            ProblemKind::Invalid,
            format!(
                "{key:?} is set by the operator on every worker pod; remove it from podMetadata"
            ),
        );
    }
    for key in meta
        .annotations
        .keys()
        .filter(|k| names::is_reserved_annotation(k))
    {
        p.push(
            format!("spec.podMetadata.annotations[{key}]"),
            ProblemKind::Invalid,
            format!(
                "{key:?} is part of the operator/supervisor protocol (written on each pod, never \
                 in the template); remove it from podMetadata"
            ),
        );
    }
}

fn validate_scale_config(spec: &QWorkerSpec, p: &mut Problems) {
    let s = &spec.scale_config;
    let field = |f: &str| format!("spec.scaleConfig.{f}");
    if s.scaler_config_ref.trim().is_empty() {
        p.push(
            field("scalerConfigRef"),
            ProblemKind::Required,
            "name the ScalerConfig of the queue's broker",
        );
    }
    validate_queues(spec, p);
    if s.min_replicas < 0 {
        p.push(
            field("minReplicas"),
            ProblemKind::OutOfRange,
            format!("{} is negative", s.min_replicas),
        );
    }
    if s.max_replicas < 0 {
        p.push(
            field("maxReplicas"),
            ProblemKind::OutOfRange,
            format!("{} is negative", s.max_replicas),
        );
    }
    if s.min_replicas > s.max_replicas {
        p.push(
            field("minReplicas"),
            ProblemKind::Invalid,
            format!(
                "minReplicas ({}) is greater than maxReplicas ({})",
                s.min_replicas, s.max_replicas
            ),
        );
    }
    if !s.scaling_factor.is_finite() || s.scaling_factor <= 0.0 {
        p.push(
            field("scalingFactor"),
            ProblemKind::OutOfRange,
            format!("{} is not a number greater than 0", s.scaling_factor),
        );
    }
    if let Some(secs) = s.scale_down_stabilization_seconds.filter(|s| *s < 0) {
        p.push(
            field("scaleDownStabilizationSeconds"),
            ProblemKind::OutOfRange,
            format!("{secs} is negative"),
        );
    }
    if let Some(secs) = s.max_task_seconds.filter(|s| *s < 1) {
        p.push(
            field("maxTaskSeconds"),
            ProblemKind::OutOfRange,
            format!("{secs} is not at least 1"),
        );
    }
    validate_stream_group(s, p);
    validate_format_mode(spec, p);
    validate_controls(s, p);
}

/// `streamGroup` names a consumer group of a `stream` queue: not blank, and only with that format.
fn validate_stream_group(s: &ScaleConfig, p: &mut Problems) {
    let Some(group) = &s.stream_group else {
        return;
    };
    if s.format != QueueFormat::Stream {
        p.push(
            "spec.scaleConfig.streamGroup",
            ProblemKind::Invalid,
            format!(
                "a consumer group applies to format stream only, not {}",
                s.format.name()
            ),
        );
    } else if group.trim().is_empty() {
        p.push(
            "spec.scaleConfig.streamGroup",
            ProblemKind::Required,
            "name the stream's consumer group, or leave it unset for the default",
        );
    }
}

/// A framework's queue (rq, celery, sidekiq, bullmq) is consumed by the framework's own workers under
/// qsupervisor (wrap mode); a task-mode supervisor takes only from a list or a stream.
fn validate_format_mode(spec: &QWorkerSpec, p: &mut Problems) {
    let format = spec.scale_config.format;
    if !matches!(format, QueueFormat::List | QueueFormat::Stream)
        && crate::task::any_task_mode(&spec.pod_spec)
    {
        p.push(
            "spec.scaleConfig.format",
            ProblemKind::Unsupported,
            format!(
                "task mode takes from a list or a stream; a {} queue is taken by its framework's own workers (wrap mode)",
                format.name()
            ),
        );
    }
}

/// Exactly one of `queue` and `queues`, names not empty nor repeated, several queues only in
/// worker mode (a task-mode supervisor takes from one queue); the drain target's numbers positive.
fn validate_queues(spec: &QWorkerSpec, p: &mut Problems) {
    let s = &spec.scale_config;
    let field = |f: &str| format!("spec.scaleConfig.{f}");
    match (s.queue.trim().is_empty(), s.queues.is_empty()) {
        (true, true) => p.push(
            field("queue"),
            ProblemKind::Required,
            "name the queue to scale on",
        ),
        (false, false) => p.push(
            field("queues"),
            ProblemKind::Invalid,
            "set either queue or queues, not both",
        ),
        _ => {}
    }
    let mut seen = BTreeSet::new();
    for (i, q) in s.queues.iter().enumerate() {
        if q.name.trim().is_empty() {
            p.push(
                field(&format!("queues[{i}].name")),
                ProblemKind::Required,
                "name the queue",
            );
        } else if !seen.insert(q.name.as_str()) {
            p.push(
                field(&format!("queues[{i}].name")),
                ProblemKind::Duplicate,
                format!("queue {} is listed twice", q.name),
            );
        }
    }
    if !s.queues.is_empty() && crate::task::any_task_mode(&spec.pod_spec) {
        p.push(
            field("queues"),
            ProblemKind::Unsupported,
            "task mode takes from one queue: use queue",
        );
    }
    if let Some(secs) = s.target_drain_seconds.filter(|s| *s < 1) {
        p.push(
            field("targetDrainSeconds"),
            ProblemKind::OutOfRange,
            format!("{secs} is not at least 1"),
        );
    }
    if let Some(secs) = s.task_seconds.filter(|s| !s.is_finite() || *s <= 0.0) {
        p.push(
            field("taskSeconds"),
            ProblemKind::OutOfRange,
            format!("{secs} is not a number greater than 0"),
        );
    }
}

/// The controls (pause, limits, activation, fallback, keep-warm): counts and seconds not negative,
/// limits at least 1, and no held count above `maxReplicas`.
fn validate_controls(s: &ScaleConfig, p: &mut Problems) {
    let field = |f: &str| format!("spec.scaleConfig.{f}");
    let at_least = [
        ("pausedReplicas", s.paused_replicas.map(i64::from), 0),
        (
            "maxPodsAddedPerStep",
            s.max_pods_added_per_step.map(i64::from),
            1,
        ),
        (
            "maxDrainsPerMinute",
            s.max_drains_per_minute.map(i64::from),
            1,
        ),
        ("activationBacklog", s.activation_backlog, 0),
        ("fallbackReplicas", s.fallback_replicas.map(i64::from), 0),
        (
            "fallbackAfterSeconds",
            s.fallback_after_seconds.map(i64::from),
            0,
        ),
        ("keepWarmSeconds", s.keep_warm_seconds.map(i64::from), 0),
    ];
    for (name, value, least) in at_least {
        if let Some(v) = value.filter(|v| *v < least) {
            p.push(
                field(name),
                ProblemKind::OutOfRange,
                format!("{v} is not at least {least}"),
            );
        }
    }
    for (name, value) in [
        ("pausedReplicas", s.paused_replicas),
        ("fallbackReplicas", s.fallback_replicas),
    ] {
        if let Some(v) = value.filter(|v| *v > s.max_replicas) {
            p.push(
                field(name),
                ProblemKind::Invalid,
                format!(
                    "{name} ({v}) is greater than maxReplicas ({})",
                    s.max_replicas
                ),
            );
        }
    }
}

fn validate_rollout(r: &RolloutStrategy, p: &mut Problems) {
    let surge = check_int_or_percent("spec.rollout.maxSurge", r.max_surge.as_ref(), p);
    let unavailable =
        check_int_or_percent("spec.rollout.maxUnavailable", r.max_unavailable.as_ref(), p);
    if surge == Some(true) && unavailable == Some(true) {
        p.push(
            "spec.rollout",
            ProblemKind::Invalid,
            "maxSurge and maxUnavailable cannot both be 0: the rollout could never progress",
        );
    }
}

/// Checks one value; returns whether it is zero (None when absent or invalid).
fn check_int_or_percent(field: &str, v: Option<&IntOrString>, p: &mut Problems) -> Option<bool> {
    match v? {
        IntOrString::Int(n) if *n < 0 => {
            p.push(field, ProblemKind::OutOfRange, format!("{n} is negative"));
            None
        }
        IntOrString::Int(n) => Some(*n == 0),
        IntOrString::String(s) => match parse_percent(s) {
            Some(n) => Some(n == 0),
            None => {
                p.push(
                    field,
                    ProblemKind::Invalid,
                    format!("{s:?} is neither a number nor a percentage like \"25%\""),
                );
                None
            }
        },
    }
}

/// "25%" → 25.
pub fn parse_percent(s: &str) -> Option<u32> {
    s.strip_suffix('%')?.parse().ok()
}

fn validate_vpa(v: &VpaPolicy, p: &mut Problems) {
    if let Some(m) = v.margin_percent.filter(|m| !(0..=1000).contains(m)) {
        p.push(
            "spec.vpa.marginPercent",
            ProblemKind::OutOfRange,
            format!("{m} is not between 0 and 1000"),
        );
    }
    for (name, map) in [
        ("minAllowed", &v.min_allowed),
        ("maxAllowed", &v.max_allowed),
    ] {
        for key in map.keys() {
            if key != "cpu" && key != "memory" {
                p.push(
                    format!("spec.vpa.{name}.{key}"),
                    ProblemKind::Unsupported,
                    "only cpu and memory are sized",
                );
            }
        }
    }
}

/// Every problem of a ScalerConfig spec; empty when it is valid.
pub fn validate_scaler_config(spec: &ScalerConfigSpec) -> Vec<Problem> {
    let mut p = Problems::default();
    let kind = spec.scaler_type.trim();
    if kind.is_empty() {
        p.push(
            "spec.type",
            ProblemKind::Required,
            format!(
                "the broker type is required (one of: {})",
                SUPPORTED_TYPES.join(", ")
            ),
        );
    } else if !SUPPORTED_TYPES.contains(&kind) {
        p.push(
            "spec.type",
            ProblemKind::Unsupported,
            format!(
                "{kind:?} is not supported (one of: {})",
                SUPPORTED_TYPES.join(", ")
            ),
        );
    }
    let c = &spec.config;
    validate_topology(c, &mut p);
    if let Err(e) = c.port_number() {
        p.push("spec.config.port", ProblemKind::Invalid, e);
    }
    if let Some(db) = c.db.filter(|d| *d < 0) {
        p.push(
            "spec.config.db",
            ProblemKind::OutOfRange,
            format!("{db} is negative"),
        );
    }
    if let Some(pw) = &c.password {
        validate_password(&mut p, "spec.config.password", pw);
    }
    if let Some(tls) = &c.tls {
        validate_tls(&mut p, "spec.config.tls", tls);
    }
    p.0
}

/// Exactly one of `host` (one server), `sentinel` and `cluster`, each complete; a cluster has
/// only database 0.
fn validate_topology(c: &BrokerConfig, p: &mut Problems) {
    let given = [
        !c.host.trim().is_empty(),
        c.sentinel.is_some(),
        c.cluster.is_some(),
    ];
    match given.iter().filter(|g| **g).count() {
        0 => p.push(
            "spec.config.host",
            ProblemKind::Required,
            "the broker's host is required (or sentinel, or cluster)",
        ),
        1 => {}
        _ => p.push(
            "spec.config",
            ProblemKind::Invalid,
            "set one of host, sentinel and cluster: they are different ways to reach the broker",
        ),
    }
    let nodes = |p: &mut Problems, field: &str, nodes: &[String]| {
        if nodes.is_empty() {
            p.push(field, ProblemKind::Required, "give at least one host:port");
        }
        for (i, n) in nodes.iter().enumerate() {
            if let Err(e) = parse_node(n) {
                p.push(format!("{field}[{i}]"), ProblemKind::Invalid, e);
            }
        }
    };
    if let Some(s) = &c.sentinel {
        nodes(p, "spec.config.sentinel.nodes", &s.nodes);
        if s.master_name.trim().is_empty() {
            p.push(
                "spec.config.sentinel.masterName",
                ProblemKind::Required,
                "name the primary the sentinels monitor",
            );
        }
        if let Some(pw) = &s.password {
            validate_password(p, "spec.config.sentinel.password", pw);
        }
        if let Some(tls) = &s.tls {
            validate_tls(p, "spec.config.sentinel.tls", tls);
        }
    }
    if let Some(cl) = &c.cluster {
        nodes(p, "spec.config.cluster.nodes", &cl.nodes);
        if let Some(db) = c.db.filter(|d| *d != 0) {
            p.push(
                "spec.config.db",
                ProblemKind::Unsupported,
                format!("Redis Cluster has only database 0 (db {db} is given)"),
            );
        }
    }
}

/// A password is given inline or from a Secret key, not both.
fn validate_password(p: &mut Problems, field: &str, pw: &ValueOrSecret) {
    let from = pw.value_from.as_ref();
    match (&pw.value, from) {
        (Some(_), Some(_)) => p.push(
            field,
            ProblemKind::Invalid,
            "set either value or valueFrom, not both",
        ),
        (None, None) => p.push(
            field,
            ProblemKind::Required,
            "set value or valueFrom.secretKeyRef",
        ),
        (None, Some(src)) => match &src.secret_key_ref {
            None => p.push(
                format!("{field}.valueFrom.secretKeyRef"),
                ProblemKind::Required,
                "valueFrom needs a secretKeyRef",
            ),
            Some(r) => secret_key_ref(p, &format!("{field}.valueFrom.secretKeyRef"), r),
        },
        (Some(_), None) => {}
    }
}

/// A CA only with TLS, and not with verification skipped.
fn validate_tls(p: &mut Problems, field: &str, tls: &TlsConfig) {
    if let Some(r) = &tls.ca_secret_ref {
        // A CA for a plain connection would be silently unused: the user meant TLS.
        if !tls.enabled {
            p.push(
                format!("{field}.caSecretRef"),
                ProblemKind::Invalid,
                "a CA is only used with TLS: set tls.enabled",
            );
        }
        // Verify with this CA, or verify nothing: both at once is a contradiction.
        if tls.insecure_skip_verify {
            p.push(
                format!("{field}.caSecretRef"),
                ProblemKind::Invalid,
                "set either caSecretRef or insecureSkipVerify, not both",
            );
        }
        secret_key_ref(p, &format!("{field}.caSecretRef"), r);
    }
}

/// A Secret key reference names both the Secret and the key.
fn secret_key_ref(p: &mut Problems, field: &str, r: &SecretKeyRef) {
    if r.name.trim().is_empty() {
        p.push(
            format!("{field}.name"),
            ProblemKind::Required,
            "name the Secret",
        );
    }
    if r.key.trim().is_empty() {
        p.push(
            format!("{field}.key"),
            ProblemKind::Required,
            "name the key in the Secret",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn qworker(patch: impl FnOnce(&mut Value)) -> Vec<Problem> {
        let mut v = json!({
            "podSpec": {"containers": [{"name": "worker", "image": "w:1"}]},
            "scaleConfig": {"scalerConfigRef": "sc", "queue": "q", "minReplicas": 1, "maxReplicas": 3, "scalingFactor": 0.5}
        });
        patch(&mut v);
        validate_qworker(&serde_json::from_value(v).expect("parses"))
    }

    fn scaler(patch: impl FnOnce(&mut Value)) -> Vec<Problem> {
        let mut v = json!({"type": "redis", "config": {"host": "redis", "port": "6379"}});
        patch(&mut v);
        validate_scaler_config(&serde_json::from_value(v).expect("parses"))
    }

    /// A change to a valid spec, and the problems it must cause.
    type Case = (
        Box<dyn FnOnce(&mut Value)>,
        Vec<(&'static str, ProblemKind)>,
    );

    fn fields(problems: &[Problem]) -> Vec<(&str, ProblemKind)> {
        problems
            .iter()
            .map(|p| (p.field.as_str(), p.kind))
            .collect()
    }

    #[test]
    fn the_seed_example_is_valid() {
        let text = include_str!("../examples/qworker.yaml");
        let qw: crate::QWorker = serde_saphyr::from_str(text).expect("the seed example parses");
        assert_eq!(validate_qworker(&qw.spec), vec![]);
        assert_eq!(qw.spec.scale_config.scaling_factor, 2.0);
        assert!(qw.spec.scale_config.activate_vpa);
        let sc: crate::ScalerConfig =
            serde_saphyr::from_str(include_str!("../examples/scalerconfig.yaml")).expect("parses");
        assert_eq!(validate_scaler_config(&sc.spec), vec![]);
    }

    #[test]
    fn a_valid_qworker_has_no_problems() {
        assert_eq!(qworker(|_| {}), vec![]);
    }

    #[test]
    fn framework_formats_are_wrap_mode_only() {
        let task =
            |v: &mut Value| v["podSpec"]["containers"][0]["args"] = json!(["--task", "--", "run"]);
        for f in ["rq", "celery", "sidekiq", "bullmq"] {
            assert_eq!(
                qworker(|v| v["scaleConfig"]["format"] = json!(f)),
                vec![],
                "{f}"
            );
            let problems = qworker(|v| {
                v["scaleConfig"]["format"] = json!(f);
                task(v);
            });
            assert_eq!(
                fields(&problems),
                vec![("spec.scaleConfig.format", ProblemKind::Unsupported)],
                "{f}"
            );
            assert!(problems[0].message.contains(f), "{problems:?}");
        }
        for f in ["list", "stream"] {
            let problems = qworker(|v| {
                v["scaleConfig"]["format"] = json!(f);
                task(v);
            });
            assert_eq!(problems, vec![], "{f}");
        }
    }

    #[test]
    fn several_queues_in_worker_mode_and_a_drain_target_are_valid() {
        let problems = qworker(|v| {
            v["scaleConfig"]["queue"] = json!("");
            v["scaleConfig"]["queues"] = json!([{"name": "a"}, {"name": "b"}]);
            v["scaleConfig"]["targetDrainSeconds"] = json!(30);
            v["scaleConfig"]["taskSeconds"] = json!(0.5);
        });
        assert_eq!(problems, vec![]);
    }

    #[test]
    fn qworker_rules() {
        use ProblemKind::*;
        let cases: Vec<Case> = vec![
            (
                Box::new(|v| v["podSpec"]["containers"] = json!([])),
                vec![("spec.podSpec.containers", Required)],
            ),
            (
                Box::new(|v| v["podSpec"]["containers"][0]["name"] = json!("")),
                vec![("spec.podSpec.containers[0].name", Required)],
            ),
            (
                Box::new(|v| v["podSpec"]["containers"][0]["image"] = json!(" ")),
                vec![("spec.podSpec.containers[0].image", Required)],
            ),
            (
                Box::new(|v| {
                    v["podSpec"]["containers"] =
                        json!([{"name": "a", "image": "i"}, {"name": "a", "image": "i"}])
                }),
                vec![("spec.podSpec.containers[1].name", Duplicate)],
            ),
            (
                Box::new(|v| v["podSpec"]["restartPolicy"] = json!("Always")),
                vec![("spec.podSpec.restartPolicy", Unsupported)],
            ),
            (
                Box::new(|v| v["podSpec"]["restartPolicy"] = json!("Sometimes")),
                vec![("spec.podSpec.restartPolicy", Unsupported)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["queue"] = json!("")),
                vec![("spec.scaleConfig.queue", Required)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["queues"] = json!([{"name": "a"}])),
                vec![("spec.scaleConfig.queues", Invalid)],
            ),
            (
                Box::new(|v| {
                    v["scaleConfig"]["queue"] = json!("");
                    v["scaleConfig"]["queues"] =
                        json!([{"name": "a"}, {"name": " "}, {"name": "a"}])
                }),
                vec![
                    ("spec.scaleConfig.queues[1].name", Required),
                    ("spec.scaleConfig.queues[2].name", Duplicate),
                ],
            ),
            (
                Box::new(|v| {
                    v["scaleConfig"]["queue"] = json!("");
                    v["scaleConfig"]["queues"] = json!([{"name": "a"}, {"name": "b"}]);
                    v["podSpec"]["containers"][0]["args"] = json!(["--task", "--", "run"])
                }),
                vec![("spec.scaleConfig.queues", Unsupported)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["targetDrainSeconds"] = json!(0)),
                vec![("spec.scaleConfig.targetDrainSeconds", OutOfRange)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["taskSeconds"] = json!(-1.5)),
                vec![("spec.scaleConfig.taskSeconds", OutOfRange)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["scalerConfigRef"] = json!("")),
                vec![("spec.scaleConfig.scalerConfigRef", Required)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["minReplicas"] = json!(5)),
                vec![("spec.scaleConfig.minReplicas", Invalid)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["minReplicas"] = json!(-1)),
                vec![("spec.scaleConfig.minReplicas", OutOfRange)],
            ),
            (
                Box::new(|v| {
                    v["scaleConfig"]["minReplicas"] = json!(0);
                    v["scaleConfig"]["maxReplicas"] = json!(-2)
                }),
                vec![
                    ("spec.scaleConfig.maxReplicas", OutOfRange),
                    ("spec.scaleConfig.minReplicas", Invalid),
                ],
            ),
            (
                Box::new(|v| v["scaleConfig"]["scalingFactor"] = json!(0)),
                vec![("spec.scaleConfig.scalingFactor", OutOfRange)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["scalingFactor"] = json!(-0.5)),
                vec![("spec.scaleConfig.scalingFactor", OutOfRange)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["scaleDownStabilizationSeconds"] = json!(-1)),
                vec![("spec.scaleConfig.scaleDownStabilizationSeconds", OutOfRange)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["maxTaskSeconds"] = json!(0)),
                vec![("spec.scaleConfig.maxTaskSeconds", OutOfRange)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["pausedReplicas"] = json!(-1)),
                vec![("spec.scaleConfig.pausedReplicas", OutOfRange)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["pausedReplicas"] = json!(4)),
                vec![("spec.scaleConfig.pausedReplicas", Invalid)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["maxPodsAddedPerStep"] = json!(0)),
                vec![("spec.scaleConfig.maxPodsAddedPerStep", OutOfRange)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["maxDrainsPerMinute"] = json!(0)),
                vec![("spec.scaleConfig.maxDrainsPerMinute", OutOfRange)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["activationBacklog"] = json!(-5)),
                vec![("spec.scaleConfig.activationBacklog", OutOfRange)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["fallbackReplicas"] = json!(-1)),
                vec![("spec.scaleConfig.fallbackReplicas", OutOfRange)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["fallbackReplicas"] = json!(9)),
                vec![("spec.scaleConfig.fallbackReplicas", Invalid)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["fallbackAfterSeconds"] = json!(-1)),
                vec![("spec.scaleConfig.fallbackAfterSeconds", OutOfRange)],
            ),
            (
                Box::new(|v| v["scaleConfig"]["keepWarmSeconds"] = json!(-1)),
                vec![("spec.scaleConfig.keepWarmSeconds", OutOfRange)],
            ),
            (
                Box::new(|v| v["paused"] = json!("yes")),
                vec![("spec.paused", Invalid)],
            ),
            (
                Box::new(|v| v["revisionHistoryLimit"] = json!(-1)),
                vec![("spec.revisionHistoryLimit", OutOfRange)],
            ),
            (
                Box::new(|v| v["rollout"] = json!({"maxSurge": -1})),
                vec![("spec.rollout.maxSurge", OutOfRange)],
            ),
            (
                Box::new(|v| v["rollout"] = json!({"maxUnavailable": "lots"})),
                vec![("spec.rollout.maxUnavailable", Invalid)],
            ),
            (
                Box::new(|v| v["rollout"] = json!({"maxSurge": 0, "maxUnavailable": "0%"})),
                vec![("spec.rollout", Invalid)],
            ),
            (
                Box::new(|v| v["vpa"] = json!({"marginPercent": 5000})),
                vec![("spec.vpa.marginPercent", OutOfRange)],
            ),
            (
                Box::new(|v| v["vpa"] = json!({"minAllowed": {"gpu": "1"}})),
                vec![("spec.vpa.minAllowed.gpu", Unsupported)],
            ),
            (
                Box::new(|v| {
                    v["podMetadata"] = json!({"annotations": {"quickube.com/drain": "scale-down"}})
                }),
                vec![("spec.podMetadata.annotations[quickube.com/drain]", Invalid)],
            ),
            (
                Box::new(|v| {
                    v["podMetadata"] = json!({"annotations": {
                        "quickube.com/activity": "idle",
                        "quickube.com/usage-worker": "{}",
                        "quickube.com/vpa-requests": "{}",
                        "quickube.com/restartedAt": "2024-01-01T00:00:00Z",
                        "note": "fine"
                    }})
                }),
                vec![
                    (
                        "spec.podMetadata.annotations[quickube.com/activity]",
                        Invalid,
                    ),
                    (
                        "spec.podMetadata.annotations[quickube.com/usage-worker]",
                        Invalid,
                    ),
                    (
                        "spec.podMetadata.annotations[quickube.com/vpa-requests]",
                        Invalid,
                    ),
                ],
            ),
            (
                Box::new(|v| {
                    v["podMetadata"] = json!({"labels": {
                        "quickube.com/qworker": "other",
                        "quickube.com/pod-spec-hash": "0123456789",
                        "app.kubernetes.io/managed-by": "me",
                        "team": "a"
                    }})
                }),
                vec![
                    (
                        "spec.podMetadata.labels[app.kubernetes.io/managed-by]",
                        Invalid,
                    ),
                    (
                        "spec.podMetadata.labels[quickube.com/pod-spec-hash]",
                        Invalid,
                    ),
                    ("spec.podMetadata.labels[quickube.com/qworker]", Invalid),
                ],
            ),
        ];
        for (patch, expected) in cases {
            let problems = qworker(patch);
            assert_eq!(fields(&problems), expected, "{problems:?}");
            assert!(problems.iter().all(|p| !p.message.is_empty()));
        }
    }

    #[test]
    fn a_pod_spec_of_the_wrong_shape_is_a_problem_not_a_parse_error() {
        let problems = qworker(|v| v["podSpec"]["restartPolicy"] = json!(5));
        assert_eq!(
            fields(&problems),
            vec![("spec.podSpec", ProblemKind::Invalid)]
        );
        assert!(
            problems[0].message.contains("not of the expected shape"),
            "{problems:?}"
        );
        let problems = qworker(|v| v["podSpec"]["containers"][0]["ports"] = json!("eighty"));
        assert_eq!(
            fields(&problems),
            vec![("spec.podSpec", ProblemKind::Invalid)]
        );
        // The rest of the spec is still read.
        let spec: QWorkerSpec = serde_json::from_value(json!({
            "podSpec": {"containers": 7},
            "scaleConfig": {"scalerConfigRef": "sc", "queue": "q", "maxReplicas": 3}
        }))
        .expect("a bad podSpec does not fail deserialization");
        assert_eq!(spec.scale_config.max_replicas, 3);
        assert_eq!(spec.parse_problems.len(), 1);
        // Any field: each wrongly shaped one is a problem of its own.
        let problems = qworker(|v| {
            v["vpa"] = json!({"marginPercent": ""});
            v["scaleConfig"]["maxReplicas"] = json!("3");
        });
        assert_eq!(
            fields(&problems),
            vec![
                ("spec.scaleConfig", ProblemKind::Invalid),
                ("spec.vpa", ProblemKind::Invalid)
            ]
        );
        // A status of the wrong shape reads as empty instead of failing the whole object.
        let qw: crate::QWorker = serde_json::from_value(json!({
            "apiVersion": "quickube.com/v1alpha1", "kind": "QWorker", "metadata": {"name": "x"},
            "spec": {"podSpec": {"containers": [{"name": "w", "image": "i"}]},
                     "scaleConfig": {"scalerConfigRef": "sc", "queue": "q", "maxReplicas": 3}},
            "status": {"desiredReplicas": "many"}
        }))
        .expect("a bad status does not fail deserialization");
        assert_eq!(qw.status, Some(Default::default()));
        let good: crate::QWorkerStatus =
            serde_json::from_value(json!({"desiredReplicas": 4})).expect("status");
        assert_eq!(good.desired_replicas, 4);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let problems = qworker(|v| {
            v["podSpec"]["containers"] = json!([]);
            v["scaleConfig"]["queue"] = json!("");
            v["scaleConfig"]["scalingFactor"] = json!(0);
        });
        assert_eq!(problems.len(), 3);
        let s = summary(&problems);
        assert!(
            s.contains("spec.podSpec.containers") && s.contains("spec.scaleConfig.queue"),
            "{s}"
        );
    }

    #[test]
    fn valid_rollout_values() {
        assert_eq!(
            qworker(|v| v["rollout"] = json!({"maxSurge": "25%", "maxUnavailable": 0})),
            vec![]
        );
        assert_eq!(parse_percent("25%"), Some(25));
        assert_eq!(parse_percent("25"), None);
    }

    #[test]
    fn scaler_config_topologies() {
        use ProblemKind::*;
        let sentinel = json!({"nodes": ["s1:26379", "s2:26379"], "masterName": "mymaster",
            "password": {"valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            "tls": {"enabled": true, "insecureSkipVerify": true}});
        let cluster = json!({"nodes": ["c1:7000"]});
        let only = |key: &'static str, block: Value| {
            move |v: &mut Value| {
                v["config"] = json!({});
                v["config"][key] = block;
            }
        };
        assert_eq!(scaler(only("sentinel", sentinel.clone())), vec![]);
        assert_eq!(scaler(only("cluster", cluster.clone())), vec![]);
        let cases: Vec<Case> = vec![
            (
                Box::new(|v| v["config"] = json!({})),
                vec![("spec.config.host", Required)],
            ),
            (
                Box::new({
                    let s = sentinel.clone();
                    move |v| v["config"]["sentinel"] = s
                }),
                vec![("spec.config", Invalid)],
            ),
            (
                Box::new({
                    let c = cluster.clone();
                    move |v| {
                        only("cluster", c)(v);
                        v["config"]["sentinel"] = json!({"nodes": ["s:1"], "masterName": "m"});
                    }
                }),
                vec![("spec.config", Invalid)],
            ),
            (
                Box::new({
                    let c = cluster.clone();
                    move |v| {
                        only("cluster", c)(v);
                        v["config"]["db"] = json!(2);
                    }
                }),
                vec![("spec.config.db", Unsupported)],
            ),
            (
                Box::new(only("cluster", json!({"nodes": []}))),
                vec![("spec.config.cluster.nodes", Required)],
            ),
            (
                Box::new(only("cluster", json!({"nodes": ["c1", "c2:0", "c3:7000"]}))),
                vec![
                    ("spec.config.cluster.nodes[0]", Invalid),
                    ("spec.config.cluster.nodes[1]", Invalid),
                ],
            ),
            (
                Box::new(only(
                    "sentinel",
                    json!({"nodes": ["s:1"], "masterName": " ",
                        "password": {"value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                        "tls": {"caSecretRef": {"name": "ca", "key": ""}}}),
                )),
                vec![
                    ("spec.config.sentinel.masterName", Required),
                    ("spec.config.sentinel.password", Invalid),
                    ("spec.config.sentinel.tls.caSecretRef", Invalid),
                    ("spec.config.sentinel.tls.caSecretRef.key", Required),
                ],
            ),
        ];
        for (patch, want) in cases {
            assert_eq!(fields(&scaler(patch)), want);
        }
    }

    #[test]
    fn scaler_config_rules() {
        use ProblemKind::*;
        assert_eq!(scaler(|_| {}), vec![]);
        assert_eq!(scaler(|v| v["config"]["port"] = json!(6380)), vec![]);
        // TLS: verified with a CA from a Secret, with the system roots, or not verified.
        for tls in [
            json!({"enabled": true, "caSecretRef": {"name": "ca", "key": "ca.crt"}}),
            json!({"enabled": true}),
            json!({"enabled": true, "insecureSkipVerify": true}),
            json!({"enabled": false}),
        ] {
            assert_eq!(
                scaler(|v| v["config"]["tls"] = tls.clone()),
                vec![],
                "{tls}"
            );
        }
        let cases: Vec<Case> = vec![
            (
                Box::new(|v| v["type"] = json!("")),
                vec![("spec.type", Required)],
            ),
            (
                Box::new(|v| v["type"] = json!("kafka")),
                vec![("spec.type", Unsupported)],
            ),
            (
                Box::new(|v| v["config"]["host"] = json!("")),
                vec![("spec.config.host", Required)],
            ),
            (
                Box::new(|v| v["config"]["port"] = json!("http")),
                vec![("spec.config.port", Invalid)],
            ),
            (
                Box::new(|v| v["config"]["port"] = json!(70000)),
                vec![("spec.config.port", Invalid)],
            ),
            (
                Box::new(|v| v["config"]["port"] = json!(0)),
                vec![("spec.config.port", Invalid)],
            ),
            (
                Box::new(|v| v["config"]["db"] = json!(-1)),
                vec![("spec.config.db", OutOfRange)],
            ),
            (
                Box::new(|v| v["config"]["password"] = json!({})),
                vec![("spec.config.password", Required)],
            ),
            (
                Box::new(
                    |v| v["config"]["password"] = json!({"value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
                ),
                vec![("spec.config.password", Invalid)],
            ),
            (
                Box::new(|v| v["config"]["password"] = json!({"valueFrom": {}})),
                vec![("spec.config.password.valueFrom.secretKeyRef", Required)],
            ),
            (
                Box::new(|v| {
                    v["config"]["password"] =
                        json!({"valueFrom": {"secretKeyRef": {"name": "", "key": ""}}})
                }),
                vec![
                    ("spec.config.password.valueFrom.secretKeyRef.name", Required),
                    ("spec.config.password.valueFrom.secretKeyRef.key", Required),
                ],
            ),
            (
                Box::new(|v| {
                    v["config"]["tls"] = json!({"caSecretRef": {"name": "ca", "key": "ca.crt"}})
                }),
                vec![("spec.config.tls.caSecretRef", Invalid)],
            ),
            (
                Box::new(|v| {
                    v["config"]["tls"] = json!({"enabled": true, "insecureSkipVerify": true,
                                                "caSecretRef": {"name": "ca", "key": "ca.crt"}})
                }),
                vec![("spec.config.tls.caSecretRef", Invalid)],
            ),
            (
                Box::new(|v| {
                    v["config"]["tls"] =
                        json!({"enabled": true, "caSecretRef": {"name": " ", "key": ""}})
                }),
                vec![
                    ("spec.config.tls.caSecretRef.name", Required),
                    ("spec.config.tls.caSecretRef.key", Required),
                ],
            ),
        ];
        for (patch, expected) in cases {
            let problems = scaler(patch);
            assert_eq!(fields(&problems), expected, "{problems:?}");
        }
    }

    #[test]
    fn a_stream_group_goes_with_the_stream_format_and_is_not_blank() {
        use ProblemKind::*;
        let stream = |group: Option<&str>| {
            qworker(|v| {
                v["scaleConfig"]["format"] = json!("stream");
                if let Some(g) = group {
                    v["scaleConfig"]["streamGroup"] = json!(g);
                }
            })
        };
        assert_eq!(stream(None), vec![]);
        assert_eq!(stream(Some("billing")), vec![]);
        assert_eq!(
            fields(&stream(Some(" "))),
            vec![("spec.scaleConfig.streamGroup", Required)]
        );
        let on_a_list = qworker(|v| v["scaleConfig"]["streamGroup"] = json!("g"));
        assert_eq!(
            fields(&on_a_list),
            vec![("spec.scaleConfig.streamGroup", Invalid)]
        );
        assert!(
            on_a_list[0].to_string().contains("not list"),
            "{}",
            on_a_list[0]
        );
    }

    #[test]
    fn queue_formats_read_back_their_names() {
        for f in [QueueFormat::List, QueueFormat::Stream] {
            assert_eq!(QueueFormat::parse(&f.name()), Some(f));
        }
        assert_eq!(QueueFormat::Stream.name(), "stream");
        assert_eq!(QueueFormat::parse("Stream"), None);
        assert_eq!(QueueFormat::parse(""), None);
    }
}
