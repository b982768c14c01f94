//! What every reconcile shares: the client, the caches, the event recorder, metrics, and the
//! operator's own state, each behind its owner type: [`MemoryStore`] (per-QWorker memory),
//! [`Readings`] (the pollers' queue readings), [`Pollers`] (one per ScalerConfig). No lock of
//! theirs is taken outside their own module.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::Client;
use qscaler_crds::{QWorker, ScalerConfig};

use crate::crash::BackoffSettings;
use crate::memory::MemoryStore;
use crate::metrics::Metrics;
use crate::object_key::ObjectKey;
use crate::pod_index::PodIndex;
use crate::poller::{self, PollerEnv, Pollers, Returner};
use crate::readings::Readings;
use crate::triggers::Triggers;

/// The operator's settings (flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often each ScalerConfig's queues are read.
    pub poll_interval: Duration,
    /// Scale-down stabilization window when the QWorker does not set one.
    pub stabilization: Duration,
    pub backoff: BackoffSettings,
    /// How long a write may stay unseen by the cache before planning stops waiting for it.
    pub expectation_timeout: Duration,
    /// How often a ScalerConfig's secret is re-read and its status refreshed.
    pub health_interval: Duration,
    /// Connect/response timeout towards the broker.
    pub broker_timeout: Duration,
    /// A queue reading older than this is not used (the poller is stuck or gone).
    pub reading_max_age: Duration,
}

pub(crate) struct Context {
    pub(crate) client: Client,
    pub(crate) recorder: Recorder,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) settings: Settings,
    /// Pods by namespace and QWorker.
    pub(crate) pods: Arc<PodIndex>,
    /// True once the pod and ScalerConfig caches have listed everything.
    pub(crate) caches: tokio::sync::watch::Receiver<bool>,
    pub(crate) qworkers: Store<QWorker>,
    pub(crate) scalers: Store<ScalerConfig>,
    pub(crate) memory: MemoryStore,
    pub(crate) readings: Arc<Readings>,
    pub(crate) pollers: Pollers,
    pub(crate) triggers: Triggers,
}

impl Context {
    /// Waits until the caches have listed everything (a cache that has not would look empty).
    pub(crate) async fn caches_synced(&self) {
        let mut rx = self.caches.clone();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// The QWorkers (from the cache) that use ScalerConfig `sc`.
    pub(crate) fn qworkers_of(&self, sc: &ObjectKey) -> Vec<Arc<QWorker>> {
        poller::qworkers_of(&self.qworkers, sc)
    }

    /// What returning a dead pod's tasks needs.
    pub(crate) fn returner(&self) -> Returner {
        Returner {
            client: self.client.clone(),
            metrics: self.metrics.clone(),
            broker_timeout: self.settings.broker_timeout,
        }
    }

    /// What a poller reads and writes: the caches and the narrow sink, not this context.
    pub(crate) fn poller_env(&self) -> PollerEnv {
        PollerEnv {
            pods: self.pods.clone(),
            qworkers: self.qworkers.clone(),
            scalers: self.scalers.clone(),
            caches: self.caches.clone(),
            poll_interval: self.settings.poll_interval,
            readings: self.readings.clone(),
            triggers: self.triggers.clone(),
            returner: self.returner(),
        }
    }
}
