//! qscaler-operator: scales QWorker pods by queue depth and drains exactly the pods that must go.
//!
//! Pure core (no I/O, exhaustively tested):
//! - [`scaling`]: desired count from the backlog, scale-down stabilization, hold on missing data.
//! - [`task_rate`]: seconds per task learned from the queue's timing counters, and [`arrivals`]:
//!   when the backlog arrived (the drain target).
//! - [`planning`]: observed pods + desired + hash → creates, drains, un-drains, deletes (scale-down
//!   order, rollout pacing).
//! - [`expectations`]: the operator's own writes overlaid on a lagging cache.
//! - [`crash`]: crash-loop backoff and the WorkersCrashing streak.
//! - [`controls`]: pause, rate limits, activation, fallback and keep-warm over the scaling rule.
//! - [`deletion`]: what a QWorker's deletion (its finalizer) does to its pods.
//! - [`observe`]: worker pods (`qscaler_crds::worker_pod`) → planning view, status counts, usage folding.
//! - [`conditions`], [`status`]: the QWorker status (and its conditions) from one reconcile;
//!   [`status_write`]: whether it is worth a write.
//! - [`sizing`]: requests of new pods from observed peaks (activateVPA).
//! - [`rejection`]: the API server's refusal of a worker pod as a readable SpecValid message.
//! - [`pods`], [`revisions`]: the worker pod and the ControllerRevision the operator writes.
//!
//! Effects (thin):
//! - [`broker`] (the seam) and [`redis_broker`]; [`poller`]: one per ScalerConfig (a pure tick and
//!   a thin I/O loop); [`readings`]: the queue readings it leaves; [`triggers`]: how it asks for a
//!   reconcile.
//! - [`scalerconfig_controller`], [`qworker_controller`]: the reconciles; [`context`]: what they share;
//!   [`memory`]: what the operator remembers per QWorker (one owner); [`pod_index`]: the pod cache,
//!   by namespace and QWorker; [`object_key`]: namespace/name keys.
//! - [`metrics`], [`server`] (/metrics, /healthz, /readyz), [`leader`] (Lease), [`run`]: wiring.
#![forbid(unsafe_code)]

pub(crate) mod arrivals;
pub mod broker;
pub(crate) mod conditions;
pub mod context;
pub(crate) mod controls;
pub mod crash;
pub(crate) mod deletion;
pub(crate) mod error;
pub(crate) mod expectations;
#[cfg(test)]
pub(crate) mod fake_broker;
pub mod leader;
pub(crate) mod memory;
pub mod metrics;
pub(crate) mod object_key;
pub(crate) mod observe;
pub(crate) mod planning;
pub(crate) mod pod_index;
pub(crate) mod pods;
pub(crate) mod poller;
pub(crate) mod qworker_controller;
pub(crate) mod readings;
pub mod redis_broker;
pub(crate) mod rejection;
pub(crate) mod revisions;
pub mod run;
pub(crate) mod scalerconfig_controller;
pub(crate) mod scaling;
pub mod server;
pub(crate) mod sizing;
pub(crate) mod status;
pub(crate) mod status_write;
pub(crate) mod task_rate;
#[cfg(test)]
pub(crate) mod test_redis;
pub(crate) mod triggers;

pub use error::Error;
