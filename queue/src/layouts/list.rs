//! `list`: a plain Redis list, and in task mode each consumer's processing list.

use super::{KeyRole, Probe, Query};
use crate::keys;

pub(super) fn probes(q: &Query<'_>) -> Vec<Probe> {
    std::iter::once(Probe::llen(KeyRole::Queue, q.queue.to_owned()))
        .chain(
            q.consumers
                .iter()
                .map(|c| Probe::llen(KeyRole::InFlight, keys::processing(q.queue, c))),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use qscaler_crds::qworker::QueueFormat;

    #[test]
    fn the_queue_then_each_consumers_processing_list() {
        let consumers = vec!["ns/a".to_string(), "ns/b".to_string()];
        let q = Query {
            queue: "jobs",
            format: QueueFormat::List,
            consumers: &consumers,
            group: None,
        };
        let got: Vec<_> = probes(&q).into_iter().map(|p| (p.role, p.key)).collect();
        assert_eq!(
            got,
            vec![
                (KeyRole::Queue, "jobs".to_string()),
                (KeyRole::InFlight, keys::processing("jobs", "ns/a")),
                (KeyRole::InFlight, keys::processing("jobs", "ns/b")),
            ]
        );
    }
}
