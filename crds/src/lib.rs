//! QScaler's API, shared by every binary of the project.
//!
//! - [`qworker`]: the `QWorker` custom resource (what to run and how to scale it).
//! - [`scalerconfig`]: the `ScalerConfig` custom resource (where the queue broker is).
//! - [`names`]: labels, annotations, env vars and Redis key names: the operator/supervisor contract.
//! - [`hash`]: the canonical pod-spec hash that identifies a rollout revision.
//! - [`gojson`]: JSON as the API server re-encodes it (ControllerRevision data).
//! - [`validation`]: every problem of an object, as structured errors for conditions and Events.
//! - [`conditions`]: the condition types and reasons in status, shared by the operator and the plugin.
//! - [`ownership`]: which pods and revisions belong to a QWorker.
//! - [`quantity`]: resource quantities as millicores and bytes.
//! - [`sizing`]: vertical sizing, peaks to requests (activateVPA).
//! - [`task`]: task-mode settings read from a pod spec (the retry limit).
//! - [`usage`]: the usage report a supervisor writes on its pod.
//! - [`worker_pod`]: one typed view of a worker pod (ownership, phase, drain, activity, hash).
//! - [`crdgen`]: the CRD manifests generated from the types.
//! - [`duration`]: Go-style durations (`1h30m`, `1.5s`), the one parser of every binary's flags.
#![forbid(unsafe_code)]

pub mod conditions;
pub mod crdgen;
pub mod duration;
pub mod gojson;
pub mod hash;
pub mod names;
pub mod ownership;
pub mod quantity;
pub mod qworker;
pub mod scalerconfig;
pub mod sizing;
pub mod task;
pub mod usage;
pub mod validation;
pub mod worker_pod;

pub use qworker::{QWorker, QWorkerSpec, QWorkerStatus, ScaleConfig};
pub use scalerconfig::{ScalerConfig, ScalerConfigSpec, ScalerConfigStatus};

/// The API group and version of both resources.
pub const GROUP: &str = "quickube.com";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "quickube.com/v1alpha1";
