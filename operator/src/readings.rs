//! The last queue reading of each QWorker: written by its ScalerConfig's poller, read by its
//! reconcile. The only place the readings' lock is taken.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::broker::Depth;
use crate::object_key::ObjectKey;

/// The last queue reading of one QWorker.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reading {
    pub result: Result<Depth, ReadError>,
    pub at: Instant,
}

/// Why a QWorker's queue has no reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The broker did not answer (every QWorker of the ScalerConfig is affected).
    Broker(String),
    /// The broker answered, but this queue's keys could not be read (e.g. a key of the wrong type).
    Queue(String),
}

/// Every QWorker's last reading.
#[derive(Debug, Default)]
pub(crate) struct Readings {
    by_qworker: Mutex<HashMap<ObjectKey, Reading>>,
}

impl Readings {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Reading>> {
        // A panicked holder cannot leave a map of plain values inconsistent.
        self.by_qworker.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn put(&self, qworker: ObjectKey, reading: Reading) {
        self.map().insert(qworker, reading);
    }

    /// The reading of `qworker` if it is at most `max_age` old at `now` (an older one means the
    /// poller is stuck or gone).
    pub fn fresh(&self, qworker: &ObjectKey, max_age: Duration, now: Instant) -> Option<Reading> {
        self.map()
            .get(qworker)
            .filter(|r| now.saturating_duration_since(r.at) <= max_age)
            .cloned()
    }

    pub fn forget(&self, qworker: &ObjectKey) {
        self.map().remove(qworker);
    }

    /// Forgets the readings of `qworkers` (a poller that stops).
    pub fn forget_all<'a>(&self, qworkers: impl IntoIterator<Item = &'a ObjectKey>) {
        let mut map = self.map();
        for k in qworkers {
            map.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_reading_is_not_used() {
        let r = Readings::default();
        let k = ObjectKey::new("ns", "w");
        let t0 = Instant::now();
        let reading = Reading {
            result: Ok(Depth::default()),
            at: t0,
        };
        r.put(k.clone(), reading.clone());
        let max = Duration::from_secs(10);
        assert_eq!(r.fresh(&k, max, t0 + max), Some(reading));
        assert_eq!(r.fresh(&k, max, t0 + max + Duration::from_millis(1)), None);
        r.forget_all([&k]);
        assert_eq!(r.fresh(&k, max, t0), None);
    }
}
