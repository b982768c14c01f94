//! Builders of typed objects for unit and golden tests: `qworker("mail").image("mail:v2").build()`.
//! Not part of the plugin's behaviour; public only so that the golden tests under `tests/` can use it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use qscaler_crds::hash::{pod_spec_hash, template_value};
use qscaler_crds::names::{
    revision_name, ANNOTATION_ACTIVITY, ANNOTATION_DRAIN, ANNOTATION_REVISION_HASH,
    LABEL_POD_SPEC_HASH, LABEL_QWORKER,
};
use qscaler_crds::qworker::{ContainerUsage, PodMetadata};
use qscaler_crds::{QWorker, QWorkerSpec, QWorkerStatus, ScaleConfig};

/// A QWorker under construction.
pub struct QWorkerBuilder {
    qw: QWorker,
}

/// A QWorker `name` in namespace `default` with one container `worker` running `worker:v1`.
pub fn qworker(name: &str) -> QWorkerBuilder {
    let spec = QWorkerSpec {
        pod_spec: PodSpec {
            containers: vec![Container {
                name: "worker".into(),
                image: Some("worker:v1".into()),
                ..Default::default()
            }],
            ..Default::default()
        },
        scale_config: ScaleConfig {
            scaler_config_ref: "redis".into(),
            queue: "jobs".into(),
            min_replicas: 0,
            max_replicas: 10,
            scaling_factor: 1.0,
            activate_vpa: false,
            scale_down_stabilization_seconds: None,
            max_task_seconds: None,
            ..Default::default()
        },
        pod_metadata: None,
        rollout: None,
        revision_history_limit: None,
        vpa: None,
        paused: false,
        parse_problems: Vec::new(),
    };
    let mut qw = QWorker::new(name, spec);
    qw.metadata.namespace = Some("default".into());
    qw.metadata.uid = Some(format!("uid-{name}"));
    qw.metadata.generation = Some(1);
    QWorkerBuilder { qw }
}

impl QWorkerBuilder {
    pub fn namespace(mut self, ns: &str) -> Self {
        self.qw.metadata.namespace = Some(ns.into());
        self
    }

    pub fn image(mut self, image: &str) -> Self {
        self.qw.spec.pod_spec.containers[0].image = Some(image.into());
        self
    }

    /// Adds a container with requests and limits (`None` leaves one out).
    pub fn container(
        mut self,
        name: &str,
        requests: (Option<&str>, Option<&str>),
        limits: (Option<&str>, Option<&str>),
    ) -> Self {
        let c = Container {
            name: name.into(),
            image: Some(format!("{name}:v1")),
            resources: Some(ResourceRequirements {
                requests: resources(requests),
                limits: resources(limits),
                ..Default::default()
            }),
            ..Default::default()
        };
        if self
            .qw
            .spec
            .pod_spec
            .containers
            .first()
            .is_some_and(|c| c.name == "worker" && c.resources.is_none())
        {
            self.qw.spec.pod_spec.containers.clear();
        }
        self.qw.spec.pod_spec.containers.push(c);
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.qw
            .spec
            .pod_metadata
            .get_or_insert_with(PodMetadata::default)
            .annotations
            .insert(key.into(), value.into());
        self
    }

    pub fn vpa(mut self) -> Self {
        self.qw.spec.scale_config.activate_vpa = true;
        self
    }

    pub fn generation(mut self, generation: i64) -> Self {
        self.qw.metadata.generation = Some(generation);
        self
    }

    /// A status as the operator writes it for the current spec, observed at the current generation.
    pub fn status(mut self, f: impl FnOnce(&mut QWorkerStatus)) -> Self {
        let mut status = QWorkerStatus {
            current_pod_spec_hash: pod_spec_hash(&self.qw.spec).full().to_owned(),
            observed_generation: self.qw.metadata.generation,
            ..Default::default()
        };
        f(&mut status);
        self.qw.status = Some(status);
        self
    }

    pub fn build(self) -> QWorker {
        self.qw
    }
}

fn resources(pair: (Option<&str>, Option<&str>)) -> Option<BTreeMap<String, Quantity>> {
    let map: BTreeMap<String, Quantity> = [("cpu", pair.0), ("memory", pair.1)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), Quantity(v.into()))))
        .collect();
    (!map.is_empty()).then_some(map)
}

/// A condition as the operator sets it.
pub fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(Default::default()),
        observed_generation: None,
    }
}

/// A recommendation or peak for one container.
pub fn container_usage(name: &str, cpu: &str, memory: &str) -> ContainerUsage {
    ContainerUsage {
        name: name.into(),
        cpu: Some(Quantity(cpu.into())),
        memory: Some(Quantity(memory.into())),
    }
}

/// The ControllerRevision the operator records for `qw`'s current template.
pub fn revision(qw: &QWorker, number: i64) -> ControllerRevision {
    let name = qw.metadata.name.clone().unwrap_or_default();
    let hash = pod_spec_hash(&qw.spec);
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&name, hash.short())),
            namespace: qw.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                (LABEL_QWORKER.to_owned(), name.clone()),
                (LABEL_POD_SPEC_HASH.to_owned(), hash.short().to_owned()),
            ])),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_REVISION_HASH.to_owned(),
                hash.full().to_owned(),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: qscaler_crds::API_VERSION.into(),
                kind: "QWorker".into(),
                name,
                uid: qw.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        data: RawExtension(template_value(&qw.spec)),
        revision: Some(number),
    }
}

/// A pod under construction.
pub struct PodBuilder {
    pod: Pod,
}

/// A Running worker pod of `qw` created from its current spec.
pub fn pod(qw: &QWorker, name: &str) -> PodBuilder {
    let qname = qw.metadata.name.clone().unwrap_or_default();
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: qw.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                (LABEL_QWORKER.to_owned(), qname),
                (
                    LABEL_POD_SPEC_HASH.to_owned(),
                    pod_spec_hash(&qw.spec).short().to_owned(),
                ),
            ])),
            // Controlled by the QWorker, as the operator creates them.
            owner_references: Some(vec![OwnerReference {
                api_version: qscaler_crds::API_VERSION.into(),
                kind: "QWorker".into(),
                name: qw.metadata.name.clone().unwrap_or_default(),
                uid: qw.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(qw.spec.pod_spec.clone()),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        }),
    };
    PodBuilder { pod }
}

impl PodBuilder {
    pub fn hash(mut self, short: &str) -> Self {
        self.pod
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(LABEL_POD_SPEC_HASH.into(), short.into());
        self
    }

    pub fn phase(mut self, phase: &str) -> Self {
        self.pod.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.pod
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        self
    }

    pub fn draining(self, reason: &str) -> Self {
        self.annotation(ANNOTATION_DRAIN, reason)
    }

    pub fn activity(self, activity: &str) -> Self {
        self.annotation(ANNOTATION_ACTIVITY, activity)
    }

    /// A usage report of `container`: peaks and current values.
    pub fn usage(self, container: &str, cpu: (u64, u64), memory: (u64, u64)) -> Self {
        let report = qscaler_crds::usage::UsageReport {
            cpu_millicores: cpu.1,
            memory_bytes: memory.1,
            oom_kills: 0,
            current_cpu_millicores: Some(cpu.0),
            current_memory_bytes: Some(memory.0),
            reported_at: Some(1_800_000_000),
        };
        self.annotation(
            &qscaler_crds::usage::annotation_key(container),
            &report.to_json(),
        )
    }

    /// Sets the requests of `container` as vertical sizing would.
    pub fn requests(mut self, container: &str, cpu: &str, memory: &str) -> Self {
        if let Some(c) = self
            .pod
            .spec
            .as_mut()
            .and_then(|s| s.containers.iter_mut().find(|c| c.name == container))
        {
            let res = c.resources.get_or_insert_with(Default::default);
            let req = res.requests.get_or_insert_with(Default::default);
            req.insert("cpu".into(), Quantity(cpu.into()));
            req.insert("memory".into(), Quantity(memory.into()));
        }
        self
    }

    pub fn build(self) -> Pod {
        self.pod
    }
}
