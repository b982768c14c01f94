//! An in-memory [`Broker`] for unit tests: Redis lists as vectors, with the queue protocol's key
//! names, so the poller's task return and sweep can be tested without a server.

use std::collections::{BTreeMap, HashMap};

use qscaler_crds::names::keys;

use crate::broker::{Broker, BrokerError, Depth, QueueQuery, Returned};

#[derive(Debug, Default)]
pub(crate) struct FakeBroker {
    /// Lists by key, head first.
    pub lists: BTreeMap<String, Vec<String>>,
    /// Failed runs per payload (`{<queue>}:retries`).
    pub retries: HashMap<String, u32>,
    /// While set, every call fails as an unreachable broker would.
    pub down: bool,
}

impl FakeBroker {
    fn up(&self) -> Result<(), BrokerError> {
        match self.down {
            true => Err(BrokerError::Unreachable("fake broker down".into())),
            false => Ok(()),
        }
    }

    fn len(&self, key: &str) -> u64 {
        self.lists.get(key).map_or(0, |l| l.len() as u64)
    }
}

impl Broker for FakeBroker {
    async fn ping(&mut self) -> Result<(), BrokerError> {
        self.up()
    }

    async fn depths(
        &mut self,
        queries: &[QueueQuery],
    ) -> Result<Vec<Result<Depth, crate::broker::QueueError>>, BrokerError> {
        self.up()?;
        Ok(queries
            .iter()
            .map(|q| {
                Ok(Depth {
                    queued: self.len(&q.queue),
                    in_flight: q
                        .consumers
                        .iter()
                        .map(|c| self.len(&keys::processing(&q.queue, c)))
                        .sum(),
                    ..Depth::default()
                })
            })
            .collect())
    }

    /// Each task of the list counts one failed run: back to the queue, or to the dead-letter list
    /// past `max_retries`.
    async fn return_in_flight(
        &mut self,
        queue: &str,
        consumer: &str,
        max_retries: u32,
    ) -> Result<Returned, BrokerError> {
        self.up()?;
        let mut out = Returned::default();
        for task in self
            .lists
            .remove(&keys::processing(queue, consumer))
            .unwrap_or_default()
        {
            let n = self.retries.entry(task.clone()).or_default();
            *n += 1;
            if *n > max_retries {
                self.lists
                    .entry(keys::dead_letter(queue))
                    .or_default()
                    .push(task);
                out.dead_lettered += 1;
            } else {
                self.lists.entry(queue.to_string()).or_default().push(task);
                out.requeued += 1;
            }
        }
        Ok(out)
    }

    async fn in_flight_owners(
        &mut self,
        queue: &str,
        namespace: &str,
    ) -> Result<Vec<String>, BrokerError> {
        self.up()?;
        let prefix = keys::processing(queue, &keys::consumer(Some(namespace), ""));
        Ok(self
            .lists
            .iter()
            .filter(|(_, l)| !l.is_empty())
            .filter_map(|(k, _)| k.strip_prefix(&prefix).map(str::to_string))
            .collect())
    }
}
