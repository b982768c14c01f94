//! qsupervisor: PID 1 for queue-worker containers.
//!
//! Two halves that never share a thread:
//!
//! * the **init loop** ([`init`]) on the main thread: all catchable signals blocked before any other
//!   thread exists, one `poll` on a signalfd and an eventfd, forwarding, reaping, exit codes. It is
//!   synchronous, allocation-light and has no dependency on the network;
//! * the **agent** ([`agent`]) on one extra thread running a current-thread tokio runtime (it inherits
//!   the blocked mask, so no signal is ever delivered to it): watching the pod for the drain
//!   annotation, task mode against Redis, usage sampling and reporting, the activity socket.
//!
//! They talk through [`bridge`]: the agent sends [`bridge::Request`]s (signal the worker, spawn a task,
//! exit) on a channel and wakes the init loop through the eventfd; the init loop sends
//! [`bridge::Notice`]s (a task started or ended, a signal arrived, the supervisor is exiting) on a
//! tokio channel. Only the init loop creates or reaps processes, so `waitpid(-1)` never steals a
//! status someone else waits for. If the agent fails, the init loop goes on as a plain init.
//!
//! No `unsafe`: processes start through `posix_spawn`'s safe wrappers (see [`sys::Program`]).
#![forbid(unsafe_code)]

pub mod activity;
pub mod agent;
pub mod backoff;
pub mod bridge;
pub mod broker;
pub mod cgroup;
pub mod cli;
pub mod drain;
pub mod ending;
pub mod exit;
pub mod init;
pub mod pod;
pub mod proctree;
pub mod sampler;
pub mod signals;
pub mod sys;
pub mod task;
pub mod task_queue;
pub mod usage;

/// Errors of the supervisor's library parts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("system call failed while {doing}: {source}")]
    Sys {
        doing: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("I/O failed while {doing}: {source}")]
    Io {
        doing: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("Kubernetes API call failed while {doing}: {source}")]
    Kube {
        doing: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("Redis failed while {doing}: {source}")]
    Redis {
        doing: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
