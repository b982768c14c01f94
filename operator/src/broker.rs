//! The broker seam: everything the operator asks of a queue broker. Redis is [`crate::redis_broker`];
//! another broker (streams, SQS, RabbitMQ) is one more file implementing [`Broker`].

use std::future::Future;

/// One queue to measure and the task-mode pods whose in-flight lists count toward its backlog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueQuery {
    pub queue: String,
    /// Consumers ([`qscaler_crds::names::keys::consumer`]) of the pods.
    pub consumers: Vec<String>,
}

/// What a queue holds: tasks waiting and tasks taken but not finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    pub queued: u64,
    pub in_flight: u64,
}

impl Depth {
    /// What the scaling rule counts: queued + in flight (not counting in-flight tasks is what makes
    /// KEDA scale to zero under work).
    pub fn backlog(&self) -> u64 {
        self.queued.saturating_add(self.in_flight)
    }
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

    /// The depth of every queue, in one round trip where the broker allows it.
    fn depths(
        &mut self,
        queries: &[QueueQuery],
    ) -> impl Future<Output = Result<Vec<Depth>, BrokerError>> + Send;

    /// Moves the tasks a consumer (a pod) took but never finished back to its queue (each move
    /// atomic); returns how many moved. Used for pods that failed or vanished.
    fn return_in_flight(
        &mut self,
        queue: &str,
        consumer: &str,
    ) -> impl Future<Output = Result<u64, BrokerError>> + Send;

    /// The names of the pods of `namespace` that have an in-flight list on `queue` (to find lists
    /// of pods that vanished while the operator was not looking).
    fn in_flight_owners(
        &mut self,
        queue: &str,
        namespace: &str,
    ) -> impl Future<Output = Result<Vec<String>, BrokerError>> + Send;
}
