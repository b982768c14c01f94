//! The broker seam: everything the operator asks of a queue broker. Redis is [`crate::redis_broker`];
//! another broker (streams, SQS, RabbitMQ) is one more file implementing [`Broker`].

use std::future::Future;

use qscaler_crds::qworker::QueueFormat;

/// One queue to measure and the task-mode pods whose in-flight lists count toward its backlog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueQuery {
    pub queue: String,
    /// How the queue is laid out (what its backlog is made of).
    pub format: QueueFormat,
    /// Consumers ([`qscaler_crds::names::keys::consumer`]) of the pods.
    pub consumers: Vec<String>,
    /// `format: stream`: the consumer group (`None`: the default).
    pub group: Option<String>,
}

/// What a queue holds: tasks waiting and tasks taken but not finished; and how long its tasks take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    pub queued: u64,
    pub in_flight: u64,
    /// The queue's task timings as the broker holds them (task mode); `None`: none recorded.
    pub tally: Option<TaskTally>,
    /// Milliseconds per task learned from the tallies (the poller fills it, see
    /// [`crate::task_rate`]); `None`: too few tasks timed yet.
    pub task_millis: Option<u64>,
    /// The backlog weighted by how long it has waited (the poller fills it with a drain target,
    /// see [`crate::arrivals`]): at least the backlog.
    pub due_backlog: Option<u64>,
}

/// Counters of timed tasks: how many were settled, and the milliseconds their runs took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskTally {
    pub tasks: u64,
    pub millis: u64,
}

impl Depth {
    /// What the scaling rule counts: queued + in flight (not counting in-flight tasks is what makes
    /// KEDA scale to zero under work).
    pub fn backlog(&self) -> u64 {
        self.queued.saturating_add(self.in_flight)
    }
}

/// What returning a dead consumer's tasks did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Returned {
    /// Back in the queue, to be taken next.
    pub requeued: u64,
    /// Past the retry limit: on the dead-letter list.
    pub dead_lettered: u64,
}

/// Why one queue could not be read while the broker itself answered (e.g. its key holds a string):
/// that QWorker's problem alone; the other queues of the same broker are read as usual.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueueError(pub String);

impl QueueError {
    /// "queue key jobs is a string, not a list": `what` names the key's role, `type_` is what
    /// Redis `TYPE` says the key holds, `expects` what the queue's format reads there.
    pub fn wrong_type(what: &str, key: &str, type_: &str, expects: &str) -> QueueError {
        let expected = held(expects).unwrap_or_else(|| format!("a {expects}"));
        match held(type_) {
            Some(held) => QueueError(format!("{what} {key} is {held}, not {expected}")),
            None => QueueError(format!("{what} {key} holds {type_:?}, not {expected}")),
        }
    }
}

/// A Redis `TYPE` answer as words.
fn held(type_: &str) -> Option<String> {
    Some(
        match type_ {
            "string" => "a string",
            "list" => "a list",
            "set" => "a set",
            "zset" => "a sorted set",
            "hash" => "a hash",
            "stream" => "a stream",
            _ => return None,
        }
        .to_string(),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unreachable: {0}")]
    Unreachable(String),
    #[error("broker refused the login: {0}")]
    Auth(String),
    #[error("broker error: {0}")]
    Other(String),
}

/// A queue broker as the operator sees it.
pub trait Broker: Send {
    /// Checks the connection (connecting if needed).
    fn ping(&mut self) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// The depth of every queue, in one round trip where the broker allows it. The outer error is
    /// the broker's (nothing was read); an inner error is one queue's own (the others were read).
    fn depths(
        &mut self,
        queries: &[QueueQuery],
    ) -> impl Future<Output = Result<Vec<Result<Depth, QueueError>>, BrokerError>> + Send;

    /// Moves the tasks a consumer (a pod) took but never finished back to its queue, each in one
    /// atomic step. The pod died holding them, so each counts as a failed run (the retry count the
    /// supervisor keeps per payload): past `max_retries` the task goes to the dead-letter list
    /// instead (a task that kills its container would otherwise run forever). Used for pods that
    /// failed or vanished.
    fn return_in_flight(
        &mut self,
        queue: &str,
        consumer: &str,
        max_retries: u32,
    ) -> impl Future<Output = Result<Returned, BrokerError>> + Send;

    /// The names of the pods of `namespace` that have an in-flight list on `queue` (to find lists
    /// of pods that vanished while the operator was not looking).
    fn in_flight_owners(
        &mut self,
        queue: &str,
        namespace: &str,
    ) -> impl Future<Output = Result<Vec<String>, BrokerError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_type_messages_say_what_the_key_holds() {
        assert_eq!(
            QueueError::wrong_type("queue key", "q", "string", "list").to_string(),
            "queue key q is a string, not a list"
        );
        assert_eq!(
            QueueError::wrong_type("in-flight list", "q:processing:ns/p", "zset", "list")
                .to_string(),
            "in-flight list q:processing:ns/p is a sorted set, not a list"
        );
        assert_eq!(
            QueueError::wrong_type("queue key", "q", "weird", "list").to_string(),
            "queue key q holds \"weird\", not a list"
        );
        assert_eq!(
            QueueError::wrong_type("queue key", "bull:q:wait", "string", "zset").to_string(),
            "queue key bull:q:wait is a string, not a sorted set"
        );
    }
}
