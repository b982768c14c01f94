//! The keys of one consumer of one queue. The names themselves are shared names (tests, docs and
//! the README use them) and live in [`qscaler_crds::names::keys`], re-exported here.

pub use qscaler_crds::names::keys::{
    consumer, consumers, dead_letter, hash_tag, keyspace_channel, processing, retries, task_stats,
    STATS_MILLIS, STATS_TASKS,
};

/// A consumer's view of a queue: the queue, its own processing list, and the queue's retry hash
/// and dead-letter list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskKeys {
    /// Producers `LPUSH` here; consumers take from the right end (FIFO).
    pub queue: String,
    /// What this consumer took and has not settled.
    pub processing: String,
    /// Failed runs per payload.
    pub retries: String,
    /// Tasks that failed every retry.
    pub dead: String,
    /// The queue's registry of consumers that may hold a processing list.
    pub registry: String,
    /// This consumer, as the registry names it.
    pub consumer: String,
}

impl TaskKeys {
    /// `consumer`: [`consumer`]`(namespace, pod)`.
    pub fn new(queue: &str, consumer: &str) -> TaskKeys {
        TaskKeys {
            queue: queue.to_owned(),
            processing: processing(queue, consumer),
            retries: retries(queue),
            dead: dead_letter(queue),
            registry: consumers(queue),
            consumer: consumer.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumers_keys() {
        let k = TaskKeys::new("jobs", &consumer(Some("ns"), "w-1"));
        assert_eq!(k.queue, "jobs");
        assert_eq!(k.processing, "{jobs}:processing:ns/w-1");
        assert_eq!(k.retries, "{jobs}:retries");
        assert_eq!(k.dead, "{jobs}:dead");
        assert_eq!(k.registry, "{jobs}:consumers");
        assert_eq!(k.consumer, "ns/w-1");
    }
}
