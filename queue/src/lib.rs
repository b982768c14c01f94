//! The task queue on Redis, written once for both of its users: the operator (depths, returning a
//! dead pod's tasks) and qsupervisor's task mode (taking, settling, giving back).
//!
//! * [`params`]: where the broker is and how its TLS certificate is checked → a client and
//!   connections with timeouts; never shows the password;
//! * [`keys`]: the lists and hash of one consumer of one queue (names from `qscaler_crds`);
//! * [`task`]: take (`BLMOVE`), settle (acknowledge, count a failed run, dead-letter), give back and
//!   return a consumer's tasks;
//! * [`stream_task`]: the same moves on a Redis stream's consumer group (`format: stream`);
//! * [`layouts`]: each queue format's keys and how their answers count (one file per format);
//! * [`topology`]: one server, Sentinel or Cluster → [`Conn`], and which errors mean the
//!   topology is moving;
//! * [`depth`]: every queue's reading in one pipeline, and which consumers hold tasks.

pub mod depth;
pub mod keys;
pub mod layouts;
pub mod params;
pub mod stream_task;
pub mod task;
pub mod topology;

pub use keys::TaskKeys;
pub use params::{check_ca_pem, Connector, ParamsError, RedisParams, Timeouts};
pub use topology::{Conn, Node, SentinelParams, Topology};
