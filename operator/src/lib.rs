//! qscaler-operator: scales QWorker pods by queue depth and drains exactly the pods that must go.
//!
//! Pure core (no I/O, exhaustively tested):
//! - [`scaling`]: desired count from the backlog, scale-down stabilization, hold on missing data.
//! - [`planning`]: observed pods + desired + hash → creates, drains, un-drains, deletes (scale-down
//!   order, rollout pacing).
//! - [`expectations`]: the operator's own writes overlaid on a lagging cache.
//! - [`crash`]: crash-loop backoff and the WorkersCrashing streak.
//! - [`deletion`]: what a QWorker's deletion (its finalizer) does to its pods.
//! - [`observe`]: API objects → planning view, status counts, usage folding.
//! - [`conditions`], [`status`]: the QWorker status (and its conditions) from one reconcile.
//! - [`sizing`]: requests of new pods from observed peaks (activateVPA).
//! - [`rejection`]: the API server's refusal of a worker pod as a readable SpecValid message.
//! - [`pods`], [`revisions`]: the worker pod and the ControllerRevision the operator writes.
//!
//! Effects (thin):
//! - [`broker`] (the seam) and [`redis_broker`]; [`poller`]: one per ScalerConfig.
//! - [`scalerconfig_controller`], [`qworker_controller`]: the reconciles; [`context`]: what they share;
//!   [`pod_index`]: the pod cache, by namespace and QWorker.
//! - [`metrics`], [`server`] (/metrics, /healthz, /readyz), [`leader`] (Lease), [`run`]: wiring.
#![forbid(unsafe_code)]

pub mod broker;
pub mod conditions;
pub mod context;
pub mod crash;
pub mod deletion;
pub mod error;
pub mod expectations;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod planning;
pub mod pod_index;
pub mod pods;
pub mod poller;
pub mod qworker_controller;
pub mod redis_broker;
pub mod rejection;
pub mod revisions;
pub mod run;
pub mod scalerconfig_controller;
pub mod scaling;
pub mod server;
pub mod sizing;
pub mod status;

pub use error::Error;
