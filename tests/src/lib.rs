//! QScaler's e2e harness, against the real local cluster of `tests/cluster.sh`.
//!
//! - [`cluster`]: [`Cluster`], attaching to the running cluster: a fresh namespace per test, CRDs,
//!   Redis, kubectl, pod logs.
//! - [`pods`]: [`TestPod`], a small builder for pods, and waits on their phase and exit.
//! - [`wait`]: [`wait_for`], polling a condition with a timeout (no fixed sleeps in tests).
//! - [`operator`]: [`operator::Operator`], the operator as a child process watching one test namespace.
//! - [`real_node`]: attaching to the real node of `tests/node.sh` (kubelet + Docker), its images.
//!
//! Start the cluster first: `tests/cluster.sh up && eval "$(tests/cluster.sh env)"`.

pub mod cluster;
pub mod operator;
pub mod pods;
pub mod real_node;
pub mod tls;
pub mod wait;

pub use cluster::{workspace_bin, Cluster, CLUSTER_HINT};
pub use pods::{container_state, terminated, TestPod};
pub use wait::wait_for;
